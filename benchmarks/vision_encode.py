"""Images/s of the frozen EfficientNet-Lite0: i2i's forward against the package's own.

    .venv/bin/python benchmarks/vision_encode.py --count 256 --threads 1
    .venv/bin/python benchmarks/vision_encode.py --notes data/notes.parquet --vision efficientnet-lite0+stem

What is timed: the encoder's forward over `--count` decoded images, `--batch-size` at a
time (what the training vision cache, `i2i index`, `eval`, `embed` and `serve` run). i2i's
forward (`EfficientNetLite0Encoder.forward`) runs a copy of the network with every
BatchNorm folded into its convolution and channels-last weights. The peer is the
package's network as it loads (`net.extract_features` on contiguous pixels), the forward
before this change. The two alternate `--repeats` times; the median is kept. Beside the
speed, the largest relative difference between their token features (the same function
up to float rounding).

Decoding is not timed: both paths read the same pixels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch


def pixels(notes_path: Path | None, count: int, transform: Any) -> torch.Tensor:
    """(count, 3, H, W): the images of `notes_path`'s first notes, else random pixels."""
    if notes_path is None:
        return torch.randn(count, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    from core.contracts import notes_to_dicts, read_notes
    from train.data import NoteImageLoader

    notes = notes_to_dicts(read_notes(notes_path))[:count]
    if len(notes) < count:
        raise SystemExit(f"{notes_path} holds {len(notes)} notes, fewer than --count {count}")
    loader = NoteImageLoader(notes_path.parent, transform)
    return torch.stack([loader(n)[0] for n in notes])  # type: ignore[misc]


def timed(forward: Any, x: torch.Tensor, batch: int) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = [forward(x[i : i + batch]) for i in range(0, len(x), batch)]
    return time.perf_counter() - t0, torch.cat(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--vision", default="efficientnet-lite0", choices=("efficientnet-lite0", "efficientnet-lite0+stem")
    )
    p.add_argument("--notes", type=Path, default=None, help="a notes Parquet file (default: random pixels)")
    p.add_argument("--count", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from train.vision import build_vision

    enc: Any = build_vision(args.vision)  # an EfficientNetLite0Encoder (its package is untyped)
    x = pixels(args.notes, args.count, enc.transform)

    def i2i_forward(batch: torch.Tensor) -> torch.Tensor:
        return enc(batch)[1]

    def package_forward(batch: torch.Tensor) -> torch.Tensor:
        fmap = enc.net.extract_features(batch)
        if enc.stem_colour:
            fmap = torch.cat([fmap, enc.stem_cell_statistics(batch, (fmap.shape[-2], fmap.shape[-1]))], dim=1)
        return fmap.flatten(2).transpose(1, 2)

    seconds: dict[str, list[float]] = {"i2i": [], "package": []}
    with torch.no_grad():
        i2i_forward(x[:2]), package_forward(x[:2])  # warm-up (and the folded copy built)
        for _ in range(args.repeats):
            for name, forward in (("package", package_forward), ("i2i", i2i_forward)):
                s, out = timed(forward, x, args.batch_size)
                seconds[name].append(s)
                if name == "i2i":
                    ours = out
                else:
                    theirs = out
    rel = float(((ours - theirs).norm(dim=-1) / theirs.norm(dim=-1).clamp_min(1e-12)).max())
    median = {k: statistics.median(v) for k, v in seconds.items()}
    result = {
        "vision": args.vision,
        "images": args.count,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "source": str(args.notes) if args.notes else "random pixels",
        "images_per_s": {k: round(args.count / v, 2) for k, v in median.items()},
        "speedup": round(median["package"] / median["i2i"], 3),
        "seconds": seconds,
        "max_relative_difference": rel,
    }
    print(
        f"{args.vision}, {args.count} images, batch {args.batch_size}, {result['threads']} thread(s): "
        f"i2i {result['images_per_s']['i2i']:.1f} images/s, package {result['images_per_s']['package']:.1f} "
        f"-> {result['speedup']:.2f}x; largest relative difference {rel:.1e}"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
