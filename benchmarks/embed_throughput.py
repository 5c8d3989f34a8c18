"""Embedding throughput of `i2i index` / `embed` / `eval` / `serve`: notes/s per precision.

    .venv/bin/python benchmarks/embed_throughput.py --checkpoint runs/notellm2 \
        --notes data/notes.parquet --count 512 --threads 1       # bf16 vs fp32 on this CPU
    .venv/bin/python benchmarks/embed_throughput.py --config demo --count 256 # untrained demo shape

What is timed: `train.embed.NoteEmbedder.embed` over `--count` notes (images decoded,
prompts collated, one forward per `--batch-size` notes), the call every embedding command
makes, once per precision, alternating `--repeats` times; the median is kept. The peer
is the same call in fp32 (`--precision fp32`, what `auto` runs on a CPU).

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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, help="run or checkpoint directory")
    parser.add_argument("--config", default="demo", help="model preset when no --checkpoint (untrained)")
    parser.add_argument("--notes", type=Path, help="notes Parquet file (default: a fresh synth platform)")
    parser.add_argument("--count", type=int, default=256, help="notes embedded per measurement")
    parser.add_argument("--batch-size", type=int, default=32, help="notes per forward pass")
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
        embedder.embed(notes[: args.batch_size], image_root=image_root, batch_size=args.batch_size)

    seconds: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for p, embedder in embedders.items():
            t0 = time.perf_counter()
            vectors[p] = embedder.embed(notes, image_root=image_root, batch_size=args.batch_size)
            seconds[p].append(time.perf_counter() - t0)
    rate = {p: args.count / statistics.median(s) for p, s in seconds.items()}
    cosine = (vectors["bf16"] * vectors["fp32"]).sum(1)
    result = {
        "model": model_name,
        "notes": args.count,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "cpu": torch.cpu.get_capabilities().get("cpu_name"),
        "native_bf16": native,
        "notes_per_s": rate,
        "notes_per_s_all": {p: [round(args.count / s, 2) for s in v] for p, v in seconds.items()},
        "ratio_bf16_fp32": rate["bf16"] / rate["fp32"],
        "cosine_bf16_fp32": {"min": float(cosine.min()), "mean": float(cosine.mean())},
        "top10_overlap": neighbour_overlap(vectors["bf16"], vectors["fp32"]),
    }
    print(
        f"embed: {model_name}, {args.count} notes, batch {args.batch_size}, "
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
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
