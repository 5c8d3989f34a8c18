"""Embedding throughput of `i2i index` / `embed` / `eval` / `serve`: notes/s per precision.

    .venv/bin/python benchmarks/embed_throughput.py --checkpoint runs/notellm2 \
        --notes data/notes.parquet --count 512 --threads 1       # bf16 vs fp32 on this CPU
    .venv/bin/python benchmarks/embed_throughput.py --config demo --count 256 # untrained demo shape

What is timed: `train.embed.NoteEmbedder.embed` over `--count` notes (images decoded,
prompts collated, one forward per `--batch-size` notes), the call every embedding command
makes, once per precision, alternating `--repeats` times; the median is kept. The peer
is the same call in fp32 (`--precision fp32`, what `auto` runs on a CPU).

With several batch sizes (`--batch-size 1,16`), each precision runs at each, and the peer
of a batch size is batch size 1 at the same precision: what dynamic batching in `i2i
serve` can gain at most. Beside it, the matmul ceiling: GFLOP/s of one MLP matmul of
the LLM at one note's prompt length against the same at `batch` notes' rows, and at a
large square product (the machine's peak for that precision).

Beside the speed, what bf16 does to the vectors: the cosine between each note's bf16
and fp32 vector, and how many of each note's 10 nearest neighbours among the embedded
notes stay the same.

bf16 on a CPU needs native bf16 (AVX512-BF16 or AMX: `torch.cpu.get_capabilities()`);
elsewhere the embedder refuses it, since oneDNN would emulate it slower than fp32.
`--emulate` measures only what bf16 does to the vectors on such a CPU: it lets the
embedder run emulated bf16 (the same rounding of every matmul's inputs to bf16, fp32
accumulation) and reports no speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

PRECISIONS = ("bf16", "fp32")


def load_notes(path: Path | None, count: int) -> tuple[list[dict[str, Any]], Path]:
    """`count` notes from `path` (a notes Parquet file), else from a fresh synth platform."""
    from core.contracts import notes_to_dicts, read_notes

    if path is None:
        from pipeline.synth import generate_platform

        root = Path(tempfile.mkdtemp(prefix="i2i-embed-bench-")) / "p"
        generate_platform(root, notes=count, users=count, days=2, events=10 * count)
        path = root / "notes.parquet"
    notes = notes_to_dicts(read_notes(path))[:count]
    if len(notes) < count:
        raise SystemExit(f"{path} holds {len(notes)} notes, fewer than --count {count}")
    return notes, path.parent


def neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean share of each row's k nearest rows (cosine, itself excluded) that a and b agree on."""

    def top(x: np.ndarray) -> np.ndarray:
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        return np.argsort(-sims, axis=1, kind="stable")[:, :k]

    ta, tb = top(a), top(b)
    return float(np.mean([len(set(r) & set(s)) / k for r, s in zip(ta, tb, strict=True)]))


def gemm_gflops(rows: int, k: int, n: int, dtype: Any, seconds: float = 0.5) -> float:
    """GFLOP/s of a (rows x k) @ (k x n) product on this process's threads."""
    import torch

    a, w = torch.randn(rows, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ w
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ w
        calls += 1
    return 2 * rows * k * n * calls / (time.perf_counter() - t0) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, help="run or checkpoint directory")
    parser.add_argument("--config", default="demo", help="model preset when no --checkpoint (untrained)")
    parser.add_argument("--notes", type=Path, help="notes Parquet file (default: a fresh synth platform)")
    parser.add_argument("--count", type=int, default=256, help="notes embedded per measurement")
    parser.add_argument(
        "--batch-size", default="32", help="notes per forward pass; a list (1,16) compares them"
    )
    parser.add_argument("--threads", type=int, default=None, help="intra-op CPU threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each precision, alternating")
    parser.add_argument(
        "--emulate", action="store_true", help="no native bf16 here: vector agreement only, no speed"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import torch

    import train.step

    native = train.step.cpu_has_native_bf16()
    if not native and not args.emulate:
        raise SystemExit(
            "this CPU has no native bf16 (avx512_bf16 / amx_bf16); --emulate measures agreement only"
        )
    if args.emulate:
        train.step.cpu_has_native_bf16 = lambda: True  # let the embedder run oneDNN's emulated bf16

    from train.embed import NoteEmbedder, load_embedder
    from train.model import build_model
    from train.presets import preset

    if args.threads:
        torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in str(args.batch_size).split(",")]
    largest = max(batch_sizes)
    notes, image_root = load_notes(args.notes, args.count)
    if args.checkpoint is not None:
        embedders = {p: load_embedder(args.checkpoint, device="cpu", precision=p) for p in PRECISIONS}
        model_name = str(args.checkpoint)
    else:
        torch.manual_seed(0)
        model = build_model(preset(args.config)).eval()
        embedders = {p: NoteEmbedder(model, device="cpu", precision=p) for p in PRECISIONS}
        model_name = f"preset {args.config} (untrained)"
    for embedder in embedders.values():  # warm-up: first-call allocations, oneDNN kernels
        for b in batch_sizes:
            embedder.embed(notes[:b], image_root=image_root, batch_size=b)

    cells = [(p, b) for p in PRECISIONS for b in batch_sizes]
    seconds: dict[tuple[str, int], list[float]] = {c: [] for c in cells}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for p, b in cells:
            t0 = time.perf_counter()
            out = embedders[p].embed(notes, image_root=image_root, batch_size=b)
            seconds[p, b].append(time.perf_counter() - t0)
            if b == largest:
                vectors[p] = out
    per_cell = {c: args.count / statistics.median(s) for c, s in seconds.items()}
    rate = {p: per_cell[p, largest] for p in PRECISIONS}
    cosine = (vectors["bf16"] * vectors["fp32"]).sum(1)
    result = {
        "model": model_name,
        "notes": args.count,
        "batch_size": largest,
        "threads": torch.get_num_threads(),
        "cpu": torch.cpu.get_capabilities().get("cpu_name"),
        "native_bf16": native,
        "notes_per_s": rate,
        "notes_per_s_all": {p: [round(args.count / s, 2) for s in seconds[p, largest]] for p in PRECISIONS},
        "by_batch_size": [
            {"precision": p, "batch_size": b, "notes_per_s": per_cell[p, b]}
            | ({"x_batch_1": per_cell[p, b] / per_cell[p, 1]} if 1 in batch_sizes else {})
            for p, b in cells
        ],
        "ratio_bf16_fp32": rate["bf16"] / rate["fp32"],
        "cosine_bf16_fp32": {"min": float(cosine.min()), "mean": float(cosine.mean())},
        "top10_overlap": neighbour_overlap(vectors["bf16"], vectors["fp32"]),
    }
    print(
        f"embed: {model_name}, {args.count} notes, batch {largest}, "
        f"{result['threads']} thread(s); peer = the same call in fp32"
    )
    for p in PRECISIONS:
        print(f"  {p:<5} {rate[p]:8.2f} notes/s   runs {result['notes_per_s_all'][p]}")
    if native:
        print(f"  ratio bf16/fp32: x{result['ratio_bf16_fp32']:.2f}")
    else:
        result["ratio_bf16_fp32"] = None
        print("  ratio bf16/fp32: not measured (bf16 emulated on this CPU)")
    print(
        f"  bf16 vs fp32 vectors: cosine min {cosine.min():.4f}, mean {cosine.mean():.5f}; "
        f"top-10 neighbours shared {result['top10_overlap']:.3f}"
    )
    if len(batch_sizes) > 1:
        print("  by batch size (peer: batch size 1 at the same precision):")
        for row in result["by_batch_size"]:
            gain = f"  x{row['x_batch_1']:.2f} batch 1" if "x_batch_1" in row else ""
            cell = f"{row['precision']:<5} batch {row['batch_size']:>3}"
            print(f"    {cell}: {row['notes_per_s']:7.2f} notes/s{gain}")
        result["matmul_ceiling"] = matmul_ceiling(embedders["fp32"], notes, largest, native)
        for row in result["matmul_ceiling"]:
            print(
                f"  matmul {row['dtype']:<8} {row['shape']}: {row['gflops']:6.0f} GFLOP/s "
                f"({row['share_of_peak']:.0%} of the large product)"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def matmul_ceiling(
    embedder: Any, notes: list[dict[str, Any]], batch: int, native: bool
) -> list[dict[str, Any]]:
    """GFLOP/s of the LLM's MLP up-projection at one note's prompt rows, at `batch` notes'
    rows, and at a 2048-square product, per precision."""
    import torch

    from train.collate import NoteCollator

    model = embedder.model
    pixels = None
    if model.uses_images:
        size = model.vision.image_size
        pixels = torch.zeros(1, 3, size, size)
    rows = int(NoteCollator(model.tokenizer, model.config)(notes[:1], pixels)["input_ids"].shape[1])
    if model.uses_images:  # the <IMG> placeholder becomes the connector's visual tokens
        rows += int(model.config.num_query_tokens) - 1
    cfg = model.llm.config
    k, n = int(cfg.hidden_size), int(cfg.intermediate_size)
    out = []
    for dtype in (torch.float32, *((torch.bfloat16,) if native else ())):
        peak = gemm_gflops(2048, 2048, 2048, dtype)
        for m in (rows, rows * batch):
            g = gemm_gflops(m, k, n, dtype)
            name = str(dtype).removeprefix("torch.")
            out.append({"dtype": name, "shape": f"{m}x{k}x{n}", "gflops": g, "share_of_peak": g / peak})
        out.append({"dtype": name, "shape": "2048^3", "gflops": peak, "share_of_peak": 1.0})
    return out


if __name__ == "__main__":
    main()
