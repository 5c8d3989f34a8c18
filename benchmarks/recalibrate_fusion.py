"""Choose late fusion's image weight g again for a finished training run, with the current
calibration (`train.fusion_calibration`), and write the result as a new run directory.

The calibration is the last thing a run does before its final validation and
checkpoint. A quality.py run validates only at its last step, so its best/ is that final
checkpoint, and choosing g again on its stored weights gives what training the run again
with the current code would save, without the 15 minutes of training. Used to re-score
stored runs after a change in how g is chosen (benchmarks/QUALITY.md, "Choosing the image
weight on every val pair"):

    python benchmarks/recalibrate_fusion.py bench_out/q/runs/notellm2 \
        --out bench_out/q/runs/notellm2-recal
    python benchmarks/quality.py --out bench_out/q --variants notellm2 \
        --add notellm2-recal=bench_out/q/runs/notellm2-recal

The new run holds `best/` (the same weights with the new g), the source run's
`config.json`, and `summary.json` with the new calibration under `fusion_calibration`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from core.errors import UserError
from core.io import atomic_path
from train.checkpoint import load_checkpoint, load_extra, save_checkpoint
from train.data import NoteImageLoader
from train.distributed import init_distributed
from train.fusion_calibration import calibrate_image_gain, calibration_metric
from train.run_data import image_root, load_splits
from train.run_dir import CONFIG, SUMMARY
from train.train_config import TrainConfig, read_config_file
from train.validation import build_val_set


def recalibrate(run: Path, out: Path) -> dict[str, Any]:
    """Calibrate `run`'s best/ checkpoint on its val split; write the new run to `out`."""
    if out.exists():
        raise UserError(f"--out {out} already exists; pass a new directory (nothing was written)")
    for need in (run / CONFIG, run / SUMMARY, run / "best"):
        if not need.exists():
            raise UserError(f"{run} is not a finished training run (no {need.name}); pass a run directory")
    cfg = TrainConfig.from_dict(read_config_file(run / CONFIG))
    _, val_split = load_splits(cfg)
    if val_split is None or not len(val_split):
        raise UserError(f"no val pairs in {cfg.pairs}/val.parquet; the calibration chooses g on them")
    model = load_checkpoint(run / "best")
    if model.fusion is None:
        raise UserError(f"{run} has no late fusion (variant {model.config.variant!r}); nothing to calibrate")
    # From the weight training starts with (the paper's 1 unless configured), as a fresh run
    # does: a tie keeps the g nearest to it.
    model.set_fusion_image_gain(cfg.model.fusion_image_gain)
    val = build_val_set(val_split, cfg.val_max_queries)
    images = NoteImageLoader(image_root(cfg), model.vision.transform if model.vision is not None else None)
    t0 = time.perf_counter()
    result = calibrate_image_gain(
        model,
        val,
        images,
        init_distributed("cpu"),  # one process: this script is not run under torchrun
        metric=calibration_metric(cfg.best_metric, cfg.val_ks, val.all_pairs_pool),
        ks=cfg.val_ks,
        batch_size=cfg.val_batch_size,
        num_workers=0,
    )
    summary = json.loads((run / SUMMARY).read_text())
    summary["fusion_calibration"] = {**result.to_dict(), "seconds": round(time.perf_counter() - t0, 1)}
    summary["recalibrated_from"] = str(run)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        shutil.copy2(run / CONFIG, tmp / CONFIG)
        save_checkpoint(model, tmp / "best", extra=load_extra(run / "best"))
        (tmp / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary["fusion_calibration"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a finished notellm2 or late-fusion training run")
    p.add_argument("--out", type=Path, required=True, help="the new run directory (must not exist)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        record = recalibrate(args.run, args.out)
    except UserError as e:
        p.error(str(e))
    print(
        f"{args.out}: image share weight {record['previous_gain']:g} -> {record['gain']:g} "
        f"({record['metric']} over {record['pairs']} val pairs, {record['seconds']} s)"
    )
    return record


if __name__ == "__main__":
    main()
