"""`i2i serve` under load, side by side with its peers (127.0.0.1 only, bounded).

Read path, against a server holding `--notes` (default 100k) clustered random vectors
(64-d; a collection built for the benchmark checkpoint's model id, so readyz passes):

- `GET /v1/related/{id}?k=10` at concurrency 1, 8, 32 (keep-alive connections, one
  request in flight per connection): QPS, p50, p99, and the server's CPU time per request;
- the store's own in-process query (`retriever.related` on the `EdgeStore`, the limit for
  this path) at the same concurrency levels: as many threads sharing one store, each
  querying in a closed loop like an HTTP connection;
- one `i2i related ID --json` process per query (what users had before `i2i serve`).

Write path, with a checkpoint (default: a tiny random NoteLLM-2, the `tiny` preset of
`train.presets` at dim 64: 2-layer Llama hidden 64, 2-layer ViT 64 px, Q-Former;
pass `--checkpoint` for another): `POST /v1/related` (embed an unseen note, query) and
`PUT /v1/notes/{id}` (embed, upsert) with one note and a 64 px PNG per request, at
concurrency 1 and 16, with dynamic batching on (`--max-batch 32`) and off (`--max-batch 1`):
notes/s and p99.

Every cell is bounded by a request count and a time limit. The load generator is one
asyncio process speaking raw HTTP/1.1 (a few microseconds per request of client work),
on the same machine as the server: on 2 cores the two compete, as they would for an app
server and i2i on one host.

    nice -n 19 .venv/bin/python benchmarks/serve_load.py            # ~10 min on 2 cores
    nice -n 19 .venv/bin/python benchmarks/serve_load.py --notes 20000 --requests 500

Targets on 2 cores: GET p99 <= 5 ms at concurrency 8 and p50 <= 2x the in-process query
(reported against the in-process query at concurrency 8, like for like, and at 1);
batching >= 3x the notes/s of batch size 1 at concurrency 16. Results print as tables
and go to `bench_out/serve_load/results.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from indexer.edge import EdgeStore  # noqa: E402
from indexer.store import CollectionMeta, point_id  # noqa: E402
from retriever.related import related  # noqa: E402

console = Console(width=150)
HOST = "127.0.0.1"  # the load generator talks to this machine only
WORDS = [
    *("red", "bike", "sunset", "pasta", "garden", "mountain", "cat", "coffee", "beach", "recipe"),
    *("travel", "paris", "skincare", "serum", "workout", "stretch", "yoga", "lamp", "sofa", "camera"),
]


# -- data -----------------------------------------------------------------------------
def clustered(n: int, d: int, centres: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around random unit centres (in-cluster cosine ~0.85)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, d)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(0, centres, n)] + rng.standard_normal((n, d)).astype(np.float32) * (0.6 / np.sqrt(d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_checkpoint(out: Path) -> Path:
    import torch

    from train.checkpoint import save_checkpoint
    from train.model import build_model
    from train.presets import preset

    run = out / "tiny-run"
    if not (run / "best").exists():
        torch.manual_seed(0)
        save_checkpoint(build_model(preset("tiny", dim=64)), run / "best")
    return run


def build_collection(ws: Path, n: int, checkpoint: Path, keep: bool) -> list[str]:
    """`n` clustered vectors under the checkpoint's model id in `ws`; returns the note ids."""
    from train.checkpoint import checkpoint_id, load_checkpoint, resolve_checkpoint

    ckpt = resolve_checkpoint(checkpoint)
    model_id, dim = checkpoint_id(ckpt), int(load_checkpoint(ckpt).out_dim)
    note_ids = [f"n{i}" for i in range(n)]
    path = ws / "qdrant" / "notes"
    stamp = path / "bench_build.json"
    want = {"n": n, "model_id": model_id, "dim": dim}
    if keep and stamp.exists() and json.loads(stamp.read_text()) == want:
        console.print(f"reusing {path} ({n:,} points)")
        return note_ids
    shutil.rmtree(path, ignore_errors=True)
    x = clustered(n, dim, centres=max(100, n // 500))
    t0 = time.perf_counter()
    with EdgeStore(path) as store:
        store.create(CollectionMeta(model_id=model_id, dim=dim))
        for s in range(0, n, 4096):
            ids = note_ids[s : s + 4096]
            payloads = [
                {"note_id": t, "title": f"note {t}", "content_hash": "bench", "model_id": model_id}
                for t in ids
            ]
            store.upsert([point_id(t) for t in ids], x[s : s + 4096], payloads)
        store.flush()
        store.optimize()
        indexed = store.indexed_vectors()
    stamp.write_text(json.dumps(want))
    console.print(f"built {n:,} x {dim} in {time.perf_counter() - t0:.1f} s (HNSW-indexed {indexed:,})")
    return note_ids


# -- measurements ---------------------------------------------------------------------
@dataclass
class Cell:
    """One measured configuration."""

    name: str
    concurrency: int
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    server_cpu_s: float | None = None

    @property
    def done(self) -> int:
        return len(self.latencies)

    def pct(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.latencies), q)) * 1e3 if self.latencies else float("nan")

    def mean(self) -> float:
        return float(np.mean(self.latencies)) * 1e3 if self.latencies else float("nan")

    def row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "concurrency": self.concurrency,
            "requests": self.done,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "qps": self.done / self.seconds if self.seconds else 0.0,
            "p50_ms": self.pct(50),
            "p99_ms": self.pct(99),
            "mean_ms": self.mean(),
            "server_cpu_ms_per_request": (self.server_cpu_s / self.done * 1e3)
            if self.server_cpu_s is not None and self.done
            else None,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


def in_process(store: EdgeStore, note_ids: list[str], queries: int, concurrency: int) -> Cell:
    """`related` on one open EdgeStore in this process from `concurrency` threads, each
    one query after another (closed loop, like the HTTP clients): the store's own latency
    at the same number of requests in flight, with no HTTP, JSON or event loop."""
    cell = Cell("in-process EdgeStore related", concurrency)
    next_i = 0
    lock = threading.Lock()

    def worker(seed: int) -> None:
        nonlocal next_i
        rng = random.Random(seed)
        while True:
            with lock:
                if next_i >= queries:
                    return
                next_i += 1
            t = time.perf_counter()
            related(store, rng.choice(note_ids), 10)
            cell.latencies.append(time.perf_counter() - t)  # list.append is atomic

    threads = [threading.Thread(target=worker, args=(1 + w,)) for w in range(concurrency)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cell.seconds = time.perf_counter() - t0
    return cell


def app_cpu_per_get(ws: Path, checkpoint: Path, note_ids: list[str], queries: int, rounds: int = 5) -> dict:
    """CPU per `GET /v1/related/{id}` inside the ASGI application, with no HTTP: the
    FastAPI route against the fast path (`i2i.serve.fast_related`) and against the store
    query alone (`related`). The three run on the same open collection and the same ids,
    in alternating rounds; the median round of each is reported (microseconds)."""
    from i2i.serve.app import create_app
    from i2i.serve.server import build_service
    from i2i.serve.settings import ServeSettings
    from indexer.backends import StoreSpec

    settings = ServeSettings(checkpoint=checkpoint, store=StoreSpec(workspace=ws))
    service, _ = build_service(settings)
    apps = {
        "fast path": create_app(settings, service),
        "FastAPI route": create_app(settings, service, fast_related=False),
    }
    rng = random.Random(3)
    ids = [rng.choice(note_ids) for _ in range(queries)]

    async def get(app: Callable, note_id: str) -> None:
        path = f"/v1/related/{note_id}"
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
        }
        scope |= {"scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"k=10"}
        scope |= {"root_path": "", "headers": [(b"host", b"127.0.0.1")], "client": (HOST, 1)}
        status = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        assert status == [200], status

    async def measure() -> dict[str, list[float]]:
        for app in apps.values():  # warm
            for note_id in ids[:200]:
                await get(app, note_id)
        samples: dict[str, list[float]] = {"store query (`related`)": [], **{name: [] for name in apps}}
        for _ in range(rounds):
            t = time.process_time()
            for note_id in ids:
                related(service.store, note_id, 10)
            samples["store query (`related`)"].append(time.process_time() - t)
            for name, app in apps.items():
                t = time.process_time()
                for note_id in ids:
                    await get(app, note_id)
                samples[name].append(time.process_time() - t)
        return samples

    try:
        samples = asyncio.run(measure())
    finally:
        service.close()
    return {name: float(np.median(v)) / queries * 1e6 for name, v in samples.items()}


def cli_per_query(ws: Path, note_ids: list[str], queries: int, time_limit: float) -> Cell:
    """One `i2i related ID --json` process per query."""
    cell = Cell("one `i2i related` process per query", 1)
    rng = random.Random(2)
    env = _env()
    t0 = time.perf_counter()
    for _ in range(queries):
        if time.perf_counter() - t0 > time_limit:
            break
        t = time.perf_counter()
        cmd = [
            sys.executable,
            "-m",
            "i2i.cli",
            "related",
            rng.choice(note_ids),
            "--json",
            "--workspace",
            str(ws),
        ]
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        cell.latencies.append(time.perf_counter() - t)
        cell.statuses[done.returncode] = cell.statuses.get(done.returncode, 0) + 1
        if done.returncode != 0:
            cell.errors += 1
    cell.seconds = time.perf_counter() - t0
    return cell


# -- HTTP load generator --------------------------------------------------------------
async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length) if length else b""


async def load(
    port: int, make: Callable[[int], bytes], concurrency: int, requests: int, time_limit: float, cell: Cell
) -> None:
    """`concurrency` keep-alive connections send `make(i)` until `requests` or the time limit."""
    next_i = 0
    deadline = time.perf_counter() + time_limit

    async def worker() -> None:
        nonlocal next_i
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while next_i < requests and time.perf_counter() < deadline:
                i, next_i = next_i, next_i + 1
                data = make(i)
                t = time.perf_counter()
                writer.write(data)
                status, _ = await _read_response(reader)
                cell.latencies.append(time.perf_counter() - t)
                cell.statuses[status] = cell.statuses.get(status, 0) + 1
                if status >= 300:
                    cell.errors += 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cell.seconds = time.perf_counter() - t0


def get_request(note_ids: list[str], seed: int) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    ids = [rng.choice(note_ids) for _ in range(100_000)]
    return lambda i: f"GET /v1/related/{ids[i % len(ids)]}?k=10 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


def _png(seed: int) -> str:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def note_request(method: str, prefix: str) -> Callable[[int], bytes]:
    """One note per request (random words and one of a few 64 px images); PUT ids are new."""
    images = [_png(s) for s in range(8)]
    rng = random.Random(hash(prefix) & 0xFFFF)

    def make(i: int) -> bytes:
        words = rng.choices(WORDS, k=rng.randint(8, 40))
        body = json.dumps(
            {
                "title": " ".join(words[:4]),
                "content": " ".join(words),
                "image_base64": images[i % len(images)],
            }
        ).encode()
        target = f"/v1/notes/{prefix}-{i}" if method == "PUT" else "/v1/related?k=10"
        head = f"{method} {target} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    return make


# -- the server -----------------------------------------------------------------------
def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("I2I_API_KEY", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, checkpoint: Path, ws: Path, log: Path, *extra: str) -> None:
        self.port = _free_port()
        cmd = [
            sys.executable,
            "-m",
            "i2i.cli",
            "serve",
            "--checkpoint",
            str(checkpoint),
            "--workspace",
            str(ws),
        ]
        cmd += ["--host", HOST, "--port", str(self.port), *extra]
        self.log = log.open("ab")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}; see {log}")
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as s:
                    s.sendall(f"GET /readyz HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
                    if b" 200 " in s.recv(200):
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"server not ready after 300 s; see {log}")

    def cpu_seconds(self) -> float:
        """utime + stime of the server process (all its threads)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def measure(self, cell: Cell, make: Callable[[int], bytes], requests: int, time_limit: float) -> Cell:
        cpu = self.cpu_seconds()
        asyncio.run(load(self.port, make, cell.concurrency, requests, time_limit, cell))
        cell.server_cpu_s = self.cpu_seconds() - cpu
        return cell

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(120)
        self.log.close()
        if code != 0:
            raise SystemExit(f"server exited with {code} after SIGTERM")


# -- report ---------------------------------------------------------------------------
def table(title: str, rows: list[dict], notes_per_request: bool = False) -> Table:
    t = Table(title=title)
    rate = "notes/s" if notes_per_request else "QPS"
    cols = ("what", "conc.", "requests", "errors", rate, "p50 ms", "p99 ms", "mean ms", "server CPU ms/req")
    for col in cols:
        t.add_column(col, justify="right" if col != "what" else "left")
    for r in rows:
        cpu = r["server_cpu_ms_per_request"]
        t.add_row(
            r["name"], str(r["concurrency"]), str(r["requests"]), str(r["errors"]), f"{r['qps']:,.1f}",
            f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['mean_ms']:.2f}",
            "" if cpu is None else f"{cpu:.2f}",
        )  # fmt: skip
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--notes", type=int, default=100_000, help="points in the served collection")
    ap.add_argument("--requests", type=int, default=3000, help="GET requests per concurrency level")
    ap.add_argument("--concurrency", default="1,8,32", help="GET concurrency levels")
    ap.add_argument("--in-process-queries", type=int, default=3000, help="per concurrency level")
    ap.add_argument("--cli-queries", type=int, default=10, help="`i2i related` processes")
    ap.add_argument("--embed-requests", type=int, default=240, help="POST/PUT requests per cell")
    ap.add_argument("--embed-concurrency", default="1,16")
    ap.add_argument("--time-limit", type=float, default=40.0, help="seconds per cell at most")
    ap.add_argument("--checkpoint", type=Path, help="run or checkpoint dir (default: a tiny random model)")
    ap.add_argument("--threads", type=int, default=1, help="server's torch threads (`i2i serve --threads`)")
    ap.add_argument(
        "--precision", default="auto", help="server's embedding precision (`i2i serve --precision`)"
    )
    ap.add_argument("--skip-embed", action="store_true", help="read path only")
    ap.add_argument("--out", type=Path, default=Path("bench_out/serve_load"))
    ap.add_argument("--keep", action="store_true", help="reuse a collection built by an earlier --keep run")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    console.print(f"nice {os.nice(0)}; {os.cpu_count()} CPUs; load average {os.getloadavg()}")

    checkpoint = args.checkpoint or make_checkpoint(args.out)
    ws = args.out / "ws"
    note_ids = build_collection(ws, args.notes, checkpoint, args.keep)
    log = args.out / "serve.log"
    results: dict[str, object] = {"notes": args.notes, "checkpoint": str(checkpoint), "nice": os.nice(0)}

    # Read path: the store alone, one process per query, then the server.
    levels = [int(c) for c in args.concurrency.split(",")]
    with EdgeStore(ws / "qdrant" / "notes") as store:  # closed before the server opens it
        warm = random.Random(0)
        for _ in range(50):  # warm caches
            related(store, warm.choice(note_ids), 10)
        base = {c: in_process(store, note_ids, args.in_process_queries, c) for c in sorted({1, *levels})}
    app_cpu = app_cpu_per_get(ws, checkpoint, note_ids, args.in_process_queries)
    results["app_cpu_us_per_get"] = app_cpu
    store_us = app_cpu["store query (`related`)"]
    console.print(
        "CPU per GET inside the app (no HTTP), median of 5 alternating rounds: "
        + "; ".join(
            f"{name} {us:.0f} us ({us - store_us:+.0f} over the store)" for name, us in app_cpu.items()
        )
    )
    cli = cli_per_query(ws, note_ids, args.cli_queries, args.time_limit)
    server = Server(checkpoint, ws, log)
    get_cells = []
    try:
        server.measure(Cell("warm-up", 4), get_request(note_ids, 0), 500, 10)
        for c in levels:
            cell = Cell("GET /v1/related/{id}", c)
            get_cells.append(server.measure(cell, get_request(note_ids, c), args.requests, args.time_limit))
    finally:
        server.stop()
    read_rows = [b.row() for b in base.values()] + [cli.row()] + [c.row() for c in get_cells]
    results["read"] = read_rows
    console.print(table(f"related by id, {args.notes:,} notes (k=10)", read_rows))
    for cell in get_cells:
        same = base[cell.concurrency]
        console.print(
            f"GET at concurrency {cell.concurrency}: p50 {cell.pct(50):.2f} ms, mean {cell.mean():.2f} ms; "
            f"in-process at the same concurrency p50 {same.pct(50):.2f}, mean {same.mean():.2f} "
            f"(ratios {cell.pct(50) / same.pct(50):.2f}x, {cell.mean() / same.mean():.2f}x); "
            f"p50 {cell.pct(50) / base[1].pct(50):.2f}x the sequential in-process query"
        )
    results["ratio_to_in_process_same_concurrency"] = {
        str(c.concurrency): {
            "p50": c.pct(50) / base[c.concurrency].pct(50),
            "mean": c.mean() / base[c.concurrency].mean(),
        }
        for c in get_cells
    }
    c8 = next((c for c in get_cells if c.concurrency == 8), None)
    if c8:
        console.print(
            f"targets at concurrency 8: p99 {c8.pct(99):.2f} ms (<= 5); p50 "
            f"{c8.pct(50) / base[8].pct(50):.2f}x the in-process query at concurrency 8 (<= 2x); "
            f"`i2i related` process p50 {cli.pct(50):.0f} ms"
        )
        cpu = c8.server_cpu_s / c8.done if c8.server_cpu_s else float("nan")
        console.print(
            f"server CPU {cpu * 1e3:.2f} ms per GET: one event loop answers at most {1 / cpu:,.0f} QPS; "
            f"8 requests in flight then wait {8 * cpu * 1e3:.1f} ms on average (Little's law)"
        )

    # Write path: embedding with dynamic batching on and off.
    if not args.skip_embed:
        embed_rows = []
        for label, max_batch in (("batching on (max 32)", "32"), ("batching off (max 1)", "1")):
            extra: tuple[str, ...] = (
                "--max-batch",
                max_batch,
                "--queue-size",
                "1024",
                "--threads",
                str(args.threads),
            )
            extra += ("--precision", args.precision)
            server = Server(checkpoint, ws, log, *extra)
            try:
                server.measure(Cell("warm-up", 4), note_request("POST", "warm"), 16, 60)
                for c in map(int, args.embed_concurrency.split(",")):
                    for method, route in (("POST", "POST /v1/related"), ("PUT", "PUT /v1/notes/{id}")):
                        cell = Cell(f"{route}, {label}", c)
                        make = note_request(method, f"bench-{max_batch}-{c}-{time.time_ns()}")
                        embed_rows.append(
                            server.measure(cell, make, args.embed_requests, args.time_limit).row()
                        )
                        console.print(embed_rows[-1])
            finally:
                server.stop()
        (ws / "qdrant" / "notes" / "bench_build.json").unlink(missing_ok=True)  # PUT added notes
        results["embed"] = embed_rows
        console.print(table("embedding one note per request (notes/s = requests/s)", embed_rows, True))
        for route in ("POST /v1/related", "PUT /v1/notes/{id}"):
            on = next(
                r
                for r in embed_rows
                if r["name"].startswith(route) and "on" in r["name"] and r["concurrency"] == 16
            )
            off = next(
                r
                for r in embed_rows
                if r["name"].startswith(route) and "off" in r["name"] and r["concurrency"] == 16
            )
            ratio = on["qps"] / off["qps"] if off["qps"] else float("nan")
            cpu_ratio = off["server_cpu_ms_per_request"] / on["server_cpu_ms_per_request"]
            results[f"batching_ratio {route}"] = {"notes_per_s": ratio, "server_cpu_per_note": cpu_ratio}
            console.print(
                f"{route} at concurrency 16: batching on / off = {ratio:.2f}x notes/s (target >= 3x); "
                f"{cpu_ratio:.2f}x fewer server CPU-ms per note (the notes/s ratio of a CPU-bound server)"
            )

    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    console.print(f"results in {args.out / 'results.json'}; server log {log}")


if __name__ == "__main__":
    main()
