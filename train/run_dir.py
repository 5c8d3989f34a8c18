"""The files of a training run directory (`TrainConfig.out`), apart from checkpoints.

    config.json      the resolved TrainConfig (model config included)
    metrics.jsonl    one JSON object per train log / validation, keyed by `step`
    last/            latest checkpoint + trainer state (train.checkpoint)
    best/            checkpoint with the best `cfg.best_metric` on val
    summary.json     counts, final and best validation metrics (`TrainResult`)

Only rank 0 writes; every function here is a no-op on the other ranks where it says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.io import atomic_path, write_json_atomic
from train.checkpoint import STATE_JSON
from train.train_config import TrainConfig

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"


@dataclass
class TrainResult:
    """What a finished run produced (the same on every rank)."""

    run_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    steps: int
    metrics: dict[str, float]  # the final validation
    best: dict[str, float] | None  # the validation that made best/
    counts: dict[str, int] = field(default_factory=dict)
    best_metric: str | None = None  # what picked best/

    def summary(self) -> dict[str, Any]:
        """The summary.json record."""
        return {
            "steps": self.steps,
            "last_checkpoint": str(self.last_checkpoint),
            "best_checkpoint": None if self.best_checkpoint is None else str(self.best_checkpoint),
            "best_metric": self.best_metric,
            "final_val": self.metrics,
            "best_val": self.best,
            "counts": self.counts,
        }


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """A new run needs a fresh directory; a resumed one needs its last/ checkpoint."""
    has_run = (run_dir / CONFIG).exists()
    if resume and not (run_dir / "last" / STATE_JSON).exists():
        raise UserError(
            f"nothing to resume in {run_dir}: no last/ checkpoint; drop --resume to start a new run"
        )
    if not resume and has_run:
        raise UserError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    """config.json, with absolute data paths so `i2i eval RUN` and `--resume` work from anywhere."""
    resolved = {k: str(Path(v).resolve()) for k in ("notes", "images", "pairs") if (v := getattr(cfg, k))}
    write_json_atomic(run_dir / CONFIG, {**cfg.to_dict(), **resolved})


def log_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to metrics.jsonl."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_metrics(run_dir: Path, step: int) -> None:
    """On resume, drop lines logged after the checkpoint (they will be logged again)."""
    path = run_dir / METRICS
    if not path.exists():
        return
    kept = [
        line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step
    ]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept))


def last_logged_val(run_dir: Path) -> dict[str, float]:
    """The last validation record in metrics.jsonl (without its step / split keys)."""
    path = run_dir / METRICS
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    vals = [r for r in records if r.get("split") == "val"]
    return {k: v for k, v in vals[-1].items() if k not in ("step", "split")} if vals else {}


def write_summary(result: TrainResult) -> None:
    write_json_atomic(result.run_dir / SUMMARY, result.summary())
