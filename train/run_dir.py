"""The files of a training run directory (`TrainConfig.out`), apart from checkpoints.

    config.json      the resolved TrainConfig (model config included)
    metrics.jsonl    one JSON object per train log / validation, keyed by `step`
    last/            latest checkpoint + trainer state (train.checkpoint)
    best/            checkpoint with the best `cfg.best_metric` on val (the final one when
                     finishing steps ran: W_v aligned at the end, g calibrated; train.loop)
    summary.json     counts, final and best validation metrics (`TrainResult`)
    .lock            held by the training process (`locked`): one run per directory

A new run goes only into a directory that holds nothing but a run's own files
(`check_new_run_dir`): training never overwrites a `config.json` or `summary.json` that
another command wrote. Only rank 0 writes; every function here is a no-op on the other
ranks where it says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.io import atomic_path, write_json_atomic
from core.outputs import check_output_dir
from train.checkpoint import STATE_JSON
from train.train_config import RESUME_CHANGEABLE, TrainConfig, read_config_file

CONFIG = "config.json"
LOCK = ".lock"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
# Everything a run writes into its directory, checkpoint builds and swaps included
# (`train.checkpoint.replace_run_checkpoint`: .last.XXXX.tmp, .last.new, .last.old).
RUN_FILES = (CONFIG, LOCK, METRICS, SUMMARY, "last/*", "best/*", ".last.*", ".best.*")


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


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir/.lock` (an exclusive `flock`, released by the OS when the process
    ends, even on kill -9) for the block; a second holder gets a `UserError` naming the
    first one's pid."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise UserError(
                f"{run_dir} is in use by another training process (pid {holder}); "
                "wait for it to end or choose another --out"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()


def check_new_run_dir(run_dir: Path, cfg: TrainConfig, force: bool = False) -> None:
    """Refuse, before anything is written, a new run's directory that holds files no run
    wrote, or that is or holds its notes or pairs (`core.outputs.check_output_dir`).

    The image root is not an input here: runs/ under the folder the images resolve
    from (often the working directory) is normal. `force` writes the run's files there
    anyway, touching nothing else.
    """
    inputs = [p for p in (cfg.notes, cfg.pairs) if p is not None]
    check_output_dir(run_dir, RUN_FILES, label="train", inputs=inputs, force=force)


def starts_from_checkpoint(run_dir: Path, resume: bool) -> bool:
    """Whether the run continues from last/ (else it starts at step 0).

    A run killed before its first checkpoint (config.json but no last/) has nothing to
    continue: it starts over, with or without `resume`. A run with a checkpoint needs
    `resume`; `resume` with no run at all is a mistake.
    """
    has_checkpoint = (run_dir / "last" / STATE_JSON).exists()
    if resume and not has_checkpoint and not (run_dir / CONFIG).exists():
        raise UserError(f"nothing to resume in {run_dir}: no run there; drop --resume to start a new run")
    if not resume and has_checkpoint:
        raise UserError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    return has_checkpoint


def check_resume_config(run_dir: Path, cfg: TrainConfig) -> list[str]:
    """Compare `cfg` with the run's config.json: a changed setting in
    `RESUME_CHANGEABLE` is allowed (returned as "name: old -> new" lines); any other is
    a `UserError` naming both values."""
    saved = TrainConfig.from_dict(read_config_file(run_dir / CONFIG)).to_dict()
    now = config_record(cfg)
    changed = []
    for key in sorted(set(saved) | set(now)):
        if key == "model":
            for mkey in sorted(set(saved["model"]) | set(now["model"])):
                was, new = saved["model"].get(mkey), now["model"].get(mkey)
                if was != new:
                    raise _cannot_change(f"model.{mkey}", was, new)
        elif saved.get(key) != now.get(key):
            if key not in RESUME_CHANGEABLE:
                raise _cannot_change(key, saved.get(key), now.get(key))
            changed.append(f"{key}: {saved.get(key)} -> {now.get(key)}")
    return changed


def _cannot_change(key: str, was: Any, new: Any) -> UserError:
    return UserError(
        f"cannot change {key} on resume: the run has {was!r}, this command {new!r}; "
        f"drop the setting to continue the run, or start a new run with another --out"
    )


def config_record(cfg: TrainConfig) -> dict[str, Any]:
    """The config.json record: `cfg` with absolute data paths, so `i2i eval RUN` and
    `--resume` work from any directory."""
    resolved = {k: str(Path(v).resolve()) for k in ("notes", "images", "pairs") if (v := getattr(cfg, k))}
    return {**cfg.to_dict(), **resolved}


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    write_json_atomic(run_dir / CONFIG, config_record(cfg))


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
