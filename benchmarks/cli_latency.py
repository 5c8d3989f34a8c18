"""How long one CLI call takes as a whole process, next to what the work itself needs.

Every row is a fresh `python` process, timed from spawn to exit (wall clock) with its
CPU time (user + system) and peak resident memory (ru_maxrss), median of `--repeats`
runs (CPU time is the steadier number on a shared machine):

- `i2i --help` and every command's `--help`, next to the peer `python -c pass` (the
  interpreter alone);
- `i2i related NOTE -k 10 --json` on an embedded Qdrant Edge collection of `--notes`
  points, next to the peer: a process that imports only the store and `related`, opens
  the same collection and answers the same query (the store's own open-and-query time).
  The goal: `i2i related` within 2x of the peer.

    .venv/bin/python benchmarks/cli_latency.py                  # 20k notes x 64, 5 repeats
    .venv/bin/python benchmarks/cli_latency.py --notes 100000 --repeats 9

Results print as a table and go to `bench_out/cli_latency/results.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from indexer.edge import EdgeStore  # noqa: E402
from indexer.store import CollectionMeta, point_id  # noqa: E402

COMMANDS = ("synth", "emoji", "mine-pairs", "train", "models", "index", "related", "eval", "demo")

# Runs a module or code as __main__, then reports its peak RSS (KB) and CPU seconds on fd $RSS_FD.
_WRAPPER = """
import os, resource, runpy, sys
def report():
    use = resource.getrusage(resource.RUSAGE_SELF)
    with os.fdopen(int(os.environ["RSS_FD"]), "w") as f:
        f.write(f"{use.ru_maxrss} {use.ru_utime + use.ru_stime}")
kind, target, *argv = sys.argv[1:]
sys.argv = [target, *argv]
try:
    if kind == "module":
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        exec(compile(target, "<peer>", "exec"), {"__name__": "__main__"})
except SystemExit as exc:
    report()
    raise
report()
"""

_PEER_RELATED = """
import sys
from indexer.edge import EdgeStore
from retriever.related import related
store = EdgeStore(sys.argv[1])
hits = related(store, sys.argv[2], 10)
store.close()
assert len(hits) == 10
"""


def timed(kind: str, target: str, *argv: str) -> tuple[float, float, float]:
    """(wall seconds, peak MB, CPU seconds) of one fresh process."""
    read, write = os.pipe()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRAPPER, kind, target, *argv],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**env, "PYTHONWARNINGS": "ignore", "RSS_FD": str(write)},
        cwd=REPO,
    )
    os.close(write)
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    with os.fdopen(read) as f:
        rss, cpu = f.read().split()
    if proc.returncode != 0:
        raise RuntimeError(f"{target} {' '.join(argv)} exited {proc.returncode}: {err.decode()[-500:]}")
    return wall, int(rss) / 1024, float(cpu)


def median_of(repeats: int, *args: str) -> dict[str, float]:
    runs = [timed(*args) for _ in range(repeats)]
    return {
        "seconds": statistics.median(r[0] for r in runs),
        "min_seconds": min(r[0] for r in runs),
        "cpu_seconds": statistics.median(r[2] for r in runs),
        "peak_mb": statistics.median(r[1] for r in runs),
    }


def build_collection(folder: Path, n: int, dim: int) -> str:
    """An Edge collection of `n` random unit vectors (HNSW built) laid out as `i2i index`
    writes it under `folder` (the workspace); returns a note id to query."""
    rng = np.random.default_rng(0)
    store = EdgeStore(folder / "qdrant" / "notes")
    store.create(CollectionMeta("bench", dim))
    ids = [f"n{i:07d}" for i in range(n)]
    for s in range(0, n, 5000):
        vec = rng.standard_normal((min(5000, n - s), dim)).astype(np.float32)
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        chunk = ids[s : s + len(vec)]
        store.upsert(
            [point_id(i) for i in chunk],
            vec,
            [{"note_id": i, "title": f"note {i}", "content_hash": "x", "model_id": "bench"} for i in chunk],
        )
    store.optimize()
    store.close()
    return ids[7]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notes", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "bench_out" / "cli_latency")
    args = ap.parse_args()
    console = Console(width=140)

    rows: list[dict[str, object]] = []
    interpreter = median_of(args.repeats, "code", "pass")
    rows.append({"call": "python -c pass", "peer": "-", **interpreter, "ratio": None})
    for cmd in (None, *COMMANDS):
        argv = ["--help"] if cmd is None else [cmd, "--help"]
        res = median_of(args.repeats, "module", "i2i.cli", *argv)
        rows.append(
            {
                "call": f"i2i {' '.join(argv)}",
                "peer": "python -c pass",
                **res,
                "ratio": res["seconds"] / interpreter["seconds"],
                "cpu_ratio": res["cpu_seconds"] / interpreter["cpu_seconds"],
            }
        )

    with tempfile.TemporaryDirectory(prefix="i2i-cli-latency-") as tmp:
        ws = Path(tmp)
        t0 = time.perf_counter()
        note = build_collection(ws, args.notes, args.dim)
        console.print(
            f"[dim]collection of {args.notes:,} x {args.dim} built in {time.perf_counter() - t0:.1f} s[/]"
        )
        store_dir = str(ws / "qdrant" / "notes")
        timed("code", _PEER_RELATED, store_dir, note)  # warm the page cache for both
        peer = median_of(args.repeats, "code", _PEER_RELATED, store_dir, note)
        rows.append({"call": "store open + related (peer process)", "peer": "-", **peer, "ratio": None})
        cli = median_of(
            args.repeats, "module", "i2i.cli", "related", note, "-k", "10", "--json", "--workspace", str(ws)
        )
        rows.append(
            {
                "call": "i2i related NOTE -k 10 --json",
                "peer": "store open + related",
                **cli,
                "ratio": cli["seconds"] / peer["seconds"],
                "cpu_ratio": cli["cpu_seconds"] / peer["cpu_seconds"],
            }
        )

    table = Table(
        title=f"CLI latency: median of {args.repeats} processes ({args.notes:,} x {args.dim} collection)"
    )
    for col in ("call", "seconds", "min s", "CPU s", "peak MB", "peer", "ratio vs peer", "CPU ratio"):
        table.add_column(col, justify="left" if col in ("call", "peer") else "right")
    for r in rows:
        table.add_row(
            str(r["call"]),
            f"{r['seconds']:.3f}",
            f"{r['min_seconds']:.3f}",
            f"{r['cpu_seconds']:.3f}",
            f"{r['peak_mb']:.0f}",
            str(r["peer"]),
            "-" if r["ratio"] is None else f"{r['ratio']:.2f}x",
            f"{r['cpu_ratio']:.2f}x" if r.get("cpu_ratio") else "-",
        )
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"notes": args.notes, "dim": args.dim, "repeats": args.repeats, "rows": rows}, indent=2)
        + "\n"
    )


if __name__ == "__main__":
    main()
