"""Index and `related` query performance: Qdrant Edge (HNSW) against exact brute force.

For each size (default 100k x 64, 1M x 64, 100k x 1024) on clustered unit vectors
(a Gaussian mixture around a few thousand random centres; uniform random vectors have
no neighbourhoods and say nothing about HNSW recall):

- upsert throughput into an `EdgeStore` (the store `i2i index` writes) and the time
  `optimize()` takes to build the HNSW index;
- `related` latency p50 / p99 and sequential throughput, through `retriever.related`
  (retrieve the note's vector by id, query with the note excluded), exactly as the CLI;
  and the same queries with Edge's own search pool instead of one thread per query
  (`indexer.edge.SEARCH_THREADS`), latency and CPU per query;
- the same queries answered by exact brute force (one matmul + top-k over all points,
  numpy and torch), latency p50 / p99 and throughput, in the same process;
- ANN recall@10 against the exact answer;
- the cold start of `i2i related` (load the shard from disk, answer one query).

    .venv/bin/python benchmarks/index_query.py                 # all three sizes
    .venv/bin/python benchmarks/index_query.py --sizes 100k:64 --queries 300
    .venv/bin/python benchmarks/index_query.py --build-only --sizes 1m:64   # HNSW build vs raw Edge

Results print as a table (with ratios, brute force / Edge) and go to
`bench_out/index_query/results.json`. The target: at 1M x 64, `related` p99 at least
10x faster than brute force with recall@10 >= 0.95.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.edge import EdgeStore, pack_payload
from indexer.store import CollectionMeta, HnswParams, point_id
from retriever.related import related

console = Console(width=170)


def parse_size(text: str) -> tuple[int, int]:
    n, d = text.lower().split(":")
    mult = {"k": 1_000, "m": 1_000_000}.get(n[-1], 1)
    return int(float(n.rstrip("km")) * mult), int(d)


def clustered(n: int, d: int, centres: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around `centres` random unit centres; noise norm ~0.6 (cos ~0.85 in-cluster)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    out = np.empty((n, d), np.float32)
    step = 100_000
    for s in range(0, n, step):
        m = min(step, n - s)
        x = c[rng.integers(0, centres, m)] + rng.standard_normal((m, d)).astype(np.float32) * (
            0.6 / np.sqrt(d)
        )
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) * 1e3  # ms


def run_size(
    n: int, d: int, queries: int, out: Path, hnsw: HnswParams, batch: int, keep: bool
) -> dict[str, float]:
    label = f"{n // 1000}k x {d}" if n < 1_000_000 else f"{n // 1_000_000}M x {d}"
    console.rule(label)
    x = clustered(n, d, centres=max(100, n // 500))
    note_ids = [f"n{i}" for i in range(n)]
    ids = [point_id(t) for t in note_ids]
    path = out / f"edge_{n}_{d}_m{hnsw.m}_ef{hnsw.ef_construct}"
    build_file = path / "bench_build.json"
    if keep and build_file.exists():
        # Same data (seeded) and HNSW settings, built by an earlier --keep run: measure
        # queries again (e.g. on a quieter machine) without a rebuild of several minutes.
        store = EdgeStore(path, hnsw=hnsw)
        upsert_s, optimize_s = json.loads(build_file.read_text())
    else:
        shutil.rmtree(path, ignore_errors=True)
        store = EdgeStore(path, hnsw=hnsw)
        store.create(CollectionMeta(model_id="bench", dim=d))
        t0 = time.perf_counter()
        for s in range(0, n, batch):
            payloads = [{"note_id": t, "title": t} for t in note_ids[s : s + batch]]
            store.upsert(ids[s : s + batch], x[s : s + batch], payloads)
        store.flush()
        upsert_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.optimize()
        optimize_s = time.perf_counter() - t0
        build_file.write_text(json.dumps([upsert_s, optimize_s]))
    console.print(
        f"upsert {n / upsert_s:,.0f} pts/s ({upsert_s:.1f} s); optimize {optimize_s:.1f} s; "
        f"indexed {store.indexed_vectors():,}"
    )

    rng = np.random.default_rng(1)
    qidx = rng.choice(n, size=queries, replace=False)
    for i in qidx[:20]:  # warm caches
        related(store, note_ids[i], 10)

    # Wall time is what a caller sees; process CPU time (all threads) is what a query
    # costs, and does not grow when other jobs preempt this one on a shared machine.
    ann_lat, ann_cpu, ann_ids = [], [], []
    for i in qidx:
        t, c = time.perf_counter(), time.process_time()
        res = related(store, note_ids[i], 10)
        ann_lat.append(time.perf_counter() - t)
        ann_cpu.append(time.process_time() - c)
        ann_ids.append({r.note_id for r in res})

    # The same queries with Edge's own search pool (8 threads) instead of one thread per
    # query (`indexer.edge.SEARCH_THREADS`): the peer for that setting.
    store.close()
    store = EdgeStore(path, hnsw=hnsw, search_threads=0)
    for i in qidx[:20]:
        related(store, note_ids[i], 10)
    pool_lat, pool_cpu = [], []
    for i in qidx:
        t, c = time.perf_counter(), time.process_time()
        related(store, note_ids[i], 10)
        pool_lat.append(time.perf_counter() - t)
        pool_cpu.append(time.process_time() - c)
    store.close()
    store = EdgeStore(path, hnsw=hnsw)

    # Exact brute force over every point, one query at a time (what `related` would do
    # without an index): matmul + top-k, excluding the note itself.
    def exact_np(i: int) -> np.ndarray:
        s = x @ x[i]
        s[i] = -np.inf
        top = np.argpartition(-s, 10)[:10]
        return top[np.argsort(-s[top])]

    xt = torch.from_numpy(x)

    def exact_torch(i: int) -> np.ndarray:
        s = xt @ xt[i]
        s[i] = -float("inf")
        return s.topk(10).indices.numpy()

    res_np, np_lat, np_cpu = [], [], []
    for i in qidx:
        t, c = time.perf_counter(), time.process_time()
        res_np.append(exact_np(int(i)))
        np_lat.append(time.perf_counter() - t)
        np_cpu.append(time.process_time() - c)
    torch_lat, torch_cpu = [], []
    for i in qidx:
        t, c = time.perf_counter(), time.process_time()
        exact_torch(int(i))
        torch_lat.append(time.perf_counter() - t)
        torch_cpu.append(time.process_time() - c)
    # Batched brute force (all queries in one go) is the best exact throughput can do.
    t = time.perf_counter()
    for s in range(0, len(qidx), 256):
        q = xt[torch.as_tensor(qidx[s : s + 256])]
        (q @ xt.T).topk(11, dim=1)
    torch_batch_qps = len(qidx) / (time.perf_counter() - t)

    recall = float(
        np.mean([len(a & {note_ids[j] for j in e}) / 10 for a, e in zip(ann_ids, res_np, strict=True)])
    )
    store.close()
    # Cold start of `i2i related`: each CLI call loads the shard from disk first.
    t = time.perf_counter()
    reopened = EdgeStore(path, hnsw=hnsw)
    related(reopened, note_ids[int(qidx[0])], 10)
    open_s = time.perf_counter() - t
    reopened.close()
    if not keep:
        shutil.rmtree(path, ignore_errors=True)
    row = {
        "n": n,
        "dim": d,
        "upsert_pts_per_s": n / upsert_s,
        "optimize_s": optimize_s,
        "open_and_first_query_s": open_s,
        "edge_p50_ms": pct(ann_lat, 50),
        "edge_p99_ms": pct(ann_lat, 99),
        "edge_qps": len(ann_lat) / sum(ann_lat),
        "edge_pool_p50_ms": pct(pool_lat, 50),
        "edge_pool_p99_ms": pct(pool_lat, 99),
        "edge_pool_cpu_p50_ms": pct(pool_cpu, 50),
        "edge_pool_cpu_p99_ms": pct(pool_cpu, 99),
        "numpy_p50_ms": pct(np_lat, 50),
        "numpy_p99_ms": pct(np_lat, 99),
        "numpy_qps": len(np_lat) / sum(np_lat),
        "torch_p50_ms": pct(torch_lat, 50),
        "torch_p99_ms": pct(torch_lat, 99),
        "torch_qps": len(torch_lat) / sum(torch_lat),
        "torch_batched_qps": torch_batch_qps,
        "edge_cpu_p50_ms": pct(ann_cpu, 50),
        "edge_cpu_p99_ms": pct(ann_cpu, 99),
        "numpy_cpu_p99_ms": pct(np_cpu, 99),
        "torch_cpu_p99_ms": pct(torch_cpu, 99),
        "recall@10": recall,
        "p99_speedup_vs_best_exact": min(pct(np_lat, 99), pct(torch_lat, 99)) / pct(ann_lat, 99),
        "p50_speedup_vs_best_exact": min(pct(np_lat, 50), pct(torch_lat, 50)) / pct(ann_lat, 50),
        "cpu_p99_speedup_vs_best_exact": min(pct(np_cpu, 99), pct(torch_cpu, 99)) / pct(ann_cpu, 99),
    }
    console.print(row)
    return row


def notes_and_vectors(root: Path, x: np.ndarray) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """A notes table of len(x) notes under `root` (`notes.parquet`) and `i2i embed` vector
    parts of `x` for it (`vectors/`), as `i2i index --vectors` reads them; returns the
    note ids, the notes and their content hashes."""
    import polars as pl

    from core.contracts import notes_to_dicts, read_notes
    from indexer.content import content_hash
    from indexer.vectors import part_name, write_part

    n = len(x)
    shutil.rmtree(root, ignore_errors=True)
    (root / "vectors").mkdir(parents=True)
    note_ids = [f"n{i:07d}" for i in range(n)]
    pl.DataFrame(
        {
            "note_id": note_ids,
            "title": [f"title of note {i}" for i in range(n)],
            "content": [f"the content of note {i}" for i in range(n)],
        }
    ).write_parquet(root / "notes.parquet")
    notes = notes_to_dicts(read_notes(root / "notes.parquet"))
    hashes = [content_hash(note, root) for note in notes]
    for part, s in enumerate(range(0, n, 100_000)):
        write_part(
            root / "vectors" / part_name(0, 1, part),
            note_ids[s : s + 100_000],
            hashes[s : s + 100_000],
            "bench",
            x[s : s + 100_000],
        )
    return note_ids, notes, hashes


def load_rates(n: int, d: int, out: Path, batch: int, repeats: int = 3) -> dict[str, float]:
    """Bulk-load rates at n x d, each into a fresh Edge shard, in the same process.

    - `index_vectors`: `index_notes` over a notes table and `i2i embed` vector parts, as
      `i2i index --vectors` runs it (read the notes, point ids, content hashes, scroll,
      look up vectors, payloads, upserts; no HNSW build);
    - `index_vectors_rerun`: the same run again on the loaded collection (every note
      unchanged: read, hash, scroll the stored hashes, write nothing);
    - `store_upsert`: `EdgeStore.upsert` with the payloads the index writes, ids and
      payloads precomputed;
    - `raw_payload`: `qe.Point(id, row.tolist(), payload)` + `EdgeShard.update` with the
      same payloads: plain Edge calls, as Qdrant Edge's examples write them;
    - `raw_payload_model_id`: the same with `model_id` in every payload (what the index
      wrote before it was dropped: 4 strings per point);
    - `raw_payload_packed`: the same payload packed into one string
      (`indexer.edge.pack_payload`), what `EdgeStore.upsert` hands the binding;
    - `raw_no_payload`: `tolist()` rows, no payload: what plain Edge calls sustain;
    - `raw_no_payload_mv`: memoryview rows, no payload: the cheapest vector conversion.

    Each is run `repeats` times, interleaved and in a rotated order (a busy machine slows
    all alike; a run is a little slower right after some others), and the best run
    counts. Rates are points per wall-clock second; CPU seconds (all threads of the
    process) beside them, steadier than wall clock on a shared machine.

    Measured at 100k x 64 (README, "index load rate"; benchmarks/results/index-load-100k.md):
    index --vectors went from 0.21-0.22 to 0.34-0.35 of raw Edge without payload, and from
    0.56-0.59 to 0.84 of raw Edge with the payload it writes (20.4-20.8k -> 34.5-35.0k
    pts/s, 32 -> 19 us CPU per point); the binding's ~2.5 us per payload string is most
    of what is left. Then the Edge payload was packed into one string: 0.31-0.32 -> 0.42-0.44
    of raw Edge without payload (benchmarks/results/index-load-100k-packed.md).
    """
    import qdrant_edge as qe

    from indexer.job import index_notes, note_payload
    from indexer.vectors import VectorFiles

    root = out / f"load_{n}_{d}"
    x = clustered(n, d, centres=max(100, n // 500))
    note_ids, notes, hashes = notes_and_vectors(root, x)
    ids = [point_id(t) for t in note_ids]
    payloads = [note_payload(t, note["title"], h) for t, note, h in zip(note_ids, notes, hashes, strict=True)]
    old_payloads = [{**p, "model_id": "bench"} for p in payloads]
    packed_payloads = [pack_payload(p) for p in payloads]
    meta = CollectionMeta(model_id="bench", dim=d)
    best: dict[str, tuple[float, float]] = {}  # name -> (wall s, CPU s) of the fastest run

    def timed(name: str, fn: Callable[[EdgeStore], None], setup: Callable[[EdgeStore], None] | None) -> None:
        store = EdgeStore(root / name)
        store.create(meta)
        if setup is not None:
            setup(store)
        gc.collect()  # not the garbage of the previous run
        wall, cpu = time.perf_counter(), time.process_time()
        fn(store)
        store.flush()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert store.count() == n
        store.close()
        shutil.rmtree(root / name, ignore_errors=True)
        if name not in best or wall < best[name][0]:
            best[name] = (wall, cpu)

    def index_from_vectors(store: EdgeStore) -> None:
        index_notes(
            root / "notes.parquet", VectorFiles(root / "vectors"), store, batch_size=batch, optimize=False
        )

    def store_upsert(store: EdgeStore) -> None:
        for s in range(0, n, batch):
            store.upsert(ids[s : s + batch], x[s : s + batch], payloads[s : s + batch])

    def raw(pays: Sequence[dict[str, Any]] | None, memoryviews: bool = False) -> Callable[[EdgeStore], None]:
        def load(store: EdgeStore) -> None:
            for s in range(0, n, batch):
                rows = [memoryview(r) for r in x[s : s + batch]] if memoryviews else x[s : s + batch].tolist()
                pay = pays[s : s + batch] if pays is not None else [None] * len(rows)
                points = [qe.Point(i, v, p) for i, v, p in zip(ids[s : s + batch], rows, pay, strict=True)]
                store.shard.update(qe.UpdateOperation.upsert_points(points))

        return load

    variants = {  # name -> (timed load, untimed setup)
        "index_vectors": (index_from_vectors, None),
        "index_vectors_rerun": (index_from_vectors, index_from_vectors),  # all unchanged: nothing written
        "store_upsert": (store_upsert, None),
        "raw_payload": (raw(payloads), None),
        "raw_payload_model_id": (raw(old_payloads), None),
        "raw_payload_packed": (raw(packed_payloads), None),
        "raw_no_payload": (raw(None), None),
        "raw_no_payload_mv": (raw(None, memoryviews=True), None),
    }
    names = list(variants)
    for rep in range(repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:  # each in a new place
            fn, setup = variants[name]
            timed(name, fn, setup)
    shutil.rmtree(root, ignore_errors=True)
    rates: dict[str, float] = {}
    floor = n / best["raw_no_payload"][0]
    for name, (wall, cpu) in best.items():
        rates[name] = n / wall
        rates[name + "_cpu_s"] = cpu
        console.print(
            f"{name:>22}: {n / wall:>9,.0f} pts/s ({wall:5.2f} s wall, {cpu:5.2f} s CPU, "
            f"{cpu / n * 1e6:5.1f} us CPU/pt) = {n / wall / floor:.2f} of raw_no_payload"
        )
    return rates


def build_times(
    n: int, d: int, out: Path, batch: int, repeats: int = 2, end_to_end: bool = False
) -> dict[str, list[dict[str, float]]]:
    """HNSW build at n x d: the index's store against raw Edge, each loaded then optimized.

    - `index_store`: `EdgeStore.upsert` with the payload `i2i index` writes (`note_id`,
      `title`, `content_hash`), then `optimize()`;
    - `raw_edge`: `EdgeShard.update` with `tolist()` rows and no payload, then `optimize()`;
    - `index_vectors` (with `end_to_end`): `i2i index --vectors` whole, as the command runs
      it (`index_notes` over a notes table and vector parts, HNSW build included); "upsert"
      is everything before the build starts (reading, hashing, looking up, upserting).

    Rotating, `repeats` runs each; upsert and build are timed apart (wall and CPU)."""
    import qdrant_edge as qe

    from indexer.job import index_notes, note_payload
    from indexer.vectors import VectorFiles

    x = clustered(n, d, centres=max(100, n // 500))
    note_ids = [f"n{i:07d}" for i in range(n)]
    ids = [point_id(t) for t in note_ids]
    runs: dict[str, list[dict[str, float]]] = {"raw_edge": [], "index_store": []}
    if end_to_end:
        notes_and_vectors(out / f"build_input_{n}_{d}", x)
        runs["index_vectors"] = []
    for rep in range(repeats):
        names = list(runs)
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            path = out / f"build_{name}"
            shutil.rmtree(path, ignore_errors=True)
            store = EdgeStore(path)
            store.create(CollectionMeta(model_id="bench", dim=d))
            gc.collect()
            t = time.perf_counter()
            if name == "index_vectors":  # the command whole: the build starts at "optimize"
                marks: dict[str, float] = {}

                def on_stage(stage: str, marks: dict[str, float] = marks) -> None:
                    marks[stage], marks[stage + "_cpu"] = time.perf_counter(), time.process_time()

                source = out / f"build_input_{n}_{d}"
                index_notes(
                    source / "notes.parquet", VectorFiles(source / "vectors"), store, on_stage=on_stage
                )
                upsert_s = marks["optimize"] - t
                build_s = time.perf_counter() - marks["optimize"]
                build_cpu_s = time.process_time() - marks["optimize_cpu"]
            else:
                for s in range(0, n, batch):
                    if name == "index_store":
                        pays = [
                            note_payload(i, f"title of note {i}", "0123456789abcdef")
                            for i in note_ids[s : s + batch]
                        ]
                        store.upsert(ids[s : s + batch], x[s : s + batch], pays)
                    else:
                        rows = x[s : s + batch].tolist()
                        points = [qe.Point(i, v, None) for i, v in zip(ids[s : s + batch], rows, strict=True)]
                        store.shard.update(qe.UpdateOperation.upsert_points(points))
                store.flush()
                upsert_s = time.perf_counter() - t
                t, c = time.perf_counter(), time.process_time()
                store.optimize()
                build_s, build_cpu_s = time.perf_counter() - t, time.process_time() - c
            assert store.indexed_vectors() == n
            store.close()
            shutil.rmtree(path, ignore_errors=True)
            runs[name].append(
                {"upsert_pts_per_s": n / upsert_s, "build_s": build_s, "build_cpu_s": build_cpu_s}
            )
            console.print(
                f"{name:>13}: load {n / upsert_s:,.0f} pts/s, HNSW build {build_s:.1f} s "
                f"({build_cpu_s:.1f} s CPU), total {upsert_s + build_s:.1f} s"
            )
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100k:64,1m:64,100k:1024", help="comma list of N:DIM (k/m suffixes)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--m", type=int, default=HnswParams.m)
    ap.add_argument("--ef-construct", type=int, default=HnswParams.ef_construct)
    ap.add_argument("--ef", type=int, default=HnswParams.ef)
    ap.add_argument("--batch", type=int, default=4096, help="points per upsert")
    ap.add_argument("--out", type=Path, default=Path("bench_out/index_query"))
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep built collections in --out and reuse them on the next --keep run",
    )
    ap.add_argument("--repeats", type=int, default=3, help="--load-only: runs of each path (best counts)")
    ap.add_argument(
        "--load-only",
        action="store_true",
        help="only bulk-load rates: i2i index --vectors vs store.upsert vs raw Edge (no HNSW, no queries)",
    )
    ap.add_argument(
        "--build-only",
        action="store_true",
        help="only the HNSW build: the index's store (with payload) vs raw Edge (none), --repeats 2",
    )
    ap.add_argument(
        "--end-to-end",
        action="store_true",
        help="--build-only: also `i2i index --vectors` whole (read, hash, upsert, build)",
    )
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.build_only:
        builds = {
            f"{n}x{d}": build_times(n, d, args.out, args.batch, min(args.repeats, 2), args.end_to_end)
            for n, d in map(parse_size, args.sizes.split(","))
        }
        (args.out / "build_times.json").write_text(json.dumps(builds, indent=2))
        for size, runs in builds.items():
            ours = [r["build_s"] for r in runs["index_store"]]
            raw_s = [r["build_s"] for r in runs["raw_edge"]]
            console.print(
                f"{size}: HNSW build {min(ours):.1f}-{max(ours):.1f} s for the index's store, "
                f"{min(raw_s):.1f}-{max(raw_s):.1f} s raw Edge "
                f"({min(ours) / min(raw_s):.2f}x, best against best)"
            )
            n_pts = int(size.split("x")[0])
            totals = {
                name: [n_pts / r["upsert_pts_per_s"] + r["build_s"] for r in rs] for name, rs in runs.items()
            }
            if "index_vectors" in totals:
                ours_t, raw_t = min(totals["index_vectors"]), min(totals["raw_edge"])
                console.print(
                    f"{size}: `i2i index --vectors` whole {ours_t:.1f} s against raw Edge load + build "
                    f"{raw_t:.1f} s ({ours_t / raw_t:.2f}x, {ours_t - raw_t:.1f} s more; best against best)"
                )
        return
    if args.load_only:
        results = {
            f"{n}x{d}": load_rates(n, d, args.out, args.batch, args.repeats)
            for n, d in map(parse_size, args.sizes.split(","))
        }
        (args.out / "load_rates.json").write_text(json.dumps(results, indent=2))
        for size, r in results.items():
            idx, raw, same = r["index_vectors"], r["raw_no_payload"], r["raw_payload"]
            cpu_ratio = r["raw_no_payload_cpu_s"] / r["index_vectors_cpu_s"]
            console.print(
                f"{size}: index --vectors {idx:,.0f} pts/s = {idx / raw:.2f} of raw Edge without payload "
                f"({raw:,.0f}; in CPU time {cpu_ratio:.2f}) and {idx / same:.2f} of raw Edge with the same "
                f"payload ({same:,.0f}); store.upsert {r['store_upsert']:,.0f}",
                soft_wrap=True,
            )
        return
    hnsw = HnswParams(m=args.m, ef_construct=args.ef_construct, ef=args.ef)
    console.print(f"torch threads {torch.get_num_threads()}; HNSW {hnsw}")
    rows = [
        run_size(n, d, args.queries, args.out, hnsw, args.batch, args.keep)
        for n, d in map(parse_size, args.sizes.split(","))
    ]
    (args.out / "results.json").write_text(json.dumps({"hnsw": hnsw.__dict__, "rows": rows}, indent=2))

    table = Table(title="related: Qdrant Edge HNSW vs exact brute force (same queries, same process)")
    for col in (
        "size", "upsert pts/s", "optimize s", "open+1st query s", "Edge p50/p99 ms", "Edge QPS",
        "numpy p50/p99 ms", "torch p50/p99 ms", "torch batched QPS", "speedup p50 / p99",
        "CPU-time p99 speedup", "recall@10",
    ):  # fmt: skip
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            f"{r['n']:,} x {r['dim']}",
            f"{r['upsert_pts_per_s']:,.0f}",
            f"{r['optimize_s']:.1f}",
            f"{r['open_and_first_query_s']:.2f}",
            f"{r['edge_p50_ms']:.2f} / {r['edge_p99_ms']:.2f}",
            f"{r['edge_qps']:,.0f}",
            f"{r['numpy_p50_ms']:.1f} / {r['numpy_p99_ms']:.1f}",
            f"{r['torch_p50_ms']:.1f} / {r['torch_p99_ms']:.1f}",
            f"{r['torch_batched_qps']:,.0f}",
            f"{r['p50_speedup_vs_best_exact']:.1f}x / {r['p99_speedup_vs_best_exact']:.1f}x",
            f"{r['cpu_p99_speedup_vs_best_exact']:.1f}x",
            f"{r['recall@10']:.3f}",
        )
    console.print(table)
    for r in rows:
        one, pool = r["edge_cpu_p50_ms"], r["edge_pool_cpu_p50_ms"]
        console.print(
            f"{r['n']:,} x {r['dim']}: one search thread per query p50 {r['edge_p50_ms']:.3f} ms, CPU p50 "
            f"{one:.3f} ms; Edge's search pool p50 {r['edge_pool_p50_ms']:.3f} ms, CPU p50 "
            f"{pool:.3f} ms ({pool / one:.2f}x the CPU)"
        )


if __name__ == "__main__":
    main()
