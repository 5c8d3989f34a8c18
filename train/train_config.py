"""`TrainConfig`: what `i2i train` runs, loadable from TOML with flag overrides.

A TOML file holds the training options at the top level and the model in a `[model]`
table (any `train.model_config.ModelConfig` field):

    notes = "data/notes.parquet"
    images = "data"
    pairs = "data/pairs"
    out = "runs/notellm2"
    lr = 1e-4
    pairs_per_step = 16
    val_every = 200

    [model]
    preset = "default"      # optional: a named model from train.presets, the keys below on top
    variant = "notellm2"
    llm = "smollm2-135m"
    vision = "efficientnet-lite0"
    connector = "qformer"

Command-line flags win over the file; the resolved config is written to the run
directory as config.json (and read back by `--resume`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as a package
    import tomli as tomllib  # type: ignore[no-redef]

from core.errors import UserError
from train.model_config import LLM_MODES, ModelConfig, check_keys
from train.presets import resolve_model_table

PRECISIONS = ("auto", "bf16", "fp32")
DEVICES = ("auto", "cuda", "cpu")
FUSION_PRETRAIN_AT = ("start", "end")  # when late fusion's W_v is aligned (train.fusion_pretrain)


# Settings a resumed run may change (recorded in config.json); any other must match the run.
RESUME_CHANGEABLE = frozenset(
    {
        "out",
        "epochs",
        "max_steps",
        "val_every",
        "val_at_start",
        "val_batch_size",
        "log_every",
        "num_workers",
        "device",
        "precision",
        "gradient_checkpointing",
        "cache_vision",
        "vision_cache_max_gb",
    }
)


@dataclass
class TrainConfig:
    """Data, run directory and optimisation. Defaults follow the paper where it says."""

    # --- data (paths) ----------------------------------------------------------------
    notes: str | None = None  # notes.parquet
    images: str | None = None  # image root that relative `image` paths resolve against
    pairs: str | None = None  # directory with train.parquet and val.parquet from `i2i mine-pairs`
    out: str = "runs/default"  # the run directory (config.json, metrics.jsonl, last/, best/)

    model: ModelConfig = field(default_factory=ModelConfig)

    # --- optimisation ----------------------------------------------------------------
    lr: float = 3e-6  # paper: AdamW 3e-6 for the full LLM; a frozen LLM / tiny model wants ~1e-4..1e-3
    # Peak learning rate of the pretrained LLM's weights; None = `lr` (the paper: one lr).
    # The connector, fusion, head and temperature start from random and use `lr`; a
    # short CPU budget wants them faster than the LLM: the demo uses lr 1e-3 and llm_lr
    # 5e-4, LoRA or full. (An early recipe, head dim 64 without the fusion residual,
    # collapsed every embedding at a full-LLM lr of 3e-4.)
    llm_lr: float | None = None
    # Peak learning rate of the late fusion (W_v and the gate W_g); None = `lr`. The
    # reference trains every module at one rate, so the gate never outruns the LLM whose
    # state it weighs; why a short full update wants it slower: train.presets.
    fusion_lr: float | None = None
    weight_decay: float = 0.001  # paper: 0.001; not applied to biases, norms, the temperature
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_ratio: float = 0.1  # paper: 10% linear warm-up, then cosine decay
    # LLaVA's stage 1 as a warm-up: for the first N optimizer steps only the randomly
    # initialised modules (connector, late fusion, head, temperature) learn; the LLM's
    # weights (full or LoRA) get no update until step N. 0 = off (the paper: one stage).
    connector_warmup_steps: int = 0
    # Train the late fusion's image projection W_v alone on the train pairs, through the
    # frozen encoder's cached features (no LLM: seconds), then restore its loudness
    # (train.fusion_pretrain; when: `fusion_pretrain_at`). 0 = off (the paper).
    fusion_pretrain_steps: int = 0
    fusion_pretrain_pairs: int = 64  # pairs per pre-alignment step (in-batch negatives)
    # When W_v is aligned: "start" (before the first step; the joint stage then trains
    # with an image share that already knows the pairs) or "end" (after the last step,
    # through the trained head, before the calibration; the joint stage runs the paper's
    # equation with W_v as initialised). See train.fusion_pretrain.
    fusion_pretrain_at: str = "start"
    # After the last step, choose the weight of late fusion's image share on every val pair
    # (train.fusion_calibration); the checkpoint keeps it. False: the paper's equation.
    fusion_calibrate: bool = False
    min_lr_ratio: float = 0.1  # cosine floor as a share of lr
    epochs: int = 1  # paper: one epoch
    max_steps: int | None = None  # cap on optimizer steps (the schedule spans min(epochs, max_steps))
    pairs_per_step: int = 16  # pairs per rank per forward (paper: 16 per GPU); negatives: x world size
    grad_accum: int = 1  # forwards per optimizer step (each forward is its own contrastive batch)
    clip: float | None = 1.0  # max global gradient norm; None / 0 = no clipping
    unique_notes_in_batch: bool = True  # keep a note from appearing twice in one global batch
    llm_train: str = "full"  # full | frozen | lora
    gradient_checkpointing: bool = False  # recompute LLM activations in backward (less memory)
    # Encode each note's image once with the frozen vision encoder before the first step
    # (train.vision_cache), instead of both images of every pair at every step. Same
    # numbers; skipped with a message when the cache would exceed `vision_cache_max_gb`.
    cache_vision: bool = True
    vision_cache_max_gb: float = 4.0
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU; bf16 also on a CPU with native bf16
    device: str = "auto"  # auto | cuda | cpu
    seed: int = 0
    num_workers: int = 2  # DataLoader workers per rank (image decoding + tokenization)

    # --- validation, logging, checkpoints --------------------------------------------
    val_every: int = 500  # validate + save last/ (and best/) every N optimizer steps, and at the end
    val_at_start: bool = True  # validate the untrained model at step 0 (the baseline)
    val_ks: tuple[int, ...] = (10, 100, 1000)  # Recall@K reported (those smaller than the pool)
    val_max_queries: int | None = None  # cap on val queries (None = all greedy-unique val pairs)
    val_batch_size: int = 64  # notes per forward when embedding the val split
    # Picks best/: recall@K, mrr, ndcg@10 (higher is better) or val_loss (lower is better);
    # None = recall at the smallest of val_ks (recall@10 with the defaults). A run with
    # finishing steps (fusion_pretrain_at "end", fusion_calibrate) makes its final model best/.
    best_metric: str | None = None
    log_every: int = 10  # a metrics.jsonl train line every N steps

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelConfig.from_dict(self.model)
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        self.val_ks = tuple(int(k) for k in self.val_ks)
        if self.best_metric is None and self.val_ks:
            self.best_metric = f"recall@{min(self.val_ks)}"
        self.validate()

    def validate(self) -> None:
        """Raise `UserError` naming the bad value, what is allowed and the fix."""
        if self.llm_train not in LLM_MODES:
            modes = ", ".join(LLM_MODES)
            raise UserError(f"unknown llm_train {self.llm_train!r}; choose one of {modes}")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.device not in DEVICES:
            raise UserError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        for name in ("pairs_per_step", "grad_accum", "epochs", "val_every", "log_every", "val_batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.connector_warmup_steps < 0:
            raise UserError(
                f"connector_warmup_steps must be >= 0 (0 = off), got {self.connector_warmup_steps}"
            )
        if self.fusion_pretrain_steps < 0:
            raise UserError(f"fusion_pretrain_steps must be >= 0 (0 = off), got {self.fusion_pretrain_steps}")
        if self.fusion_pretrain_pairs < 2:
            raise UserError(
                f"fusion_pretrain_pairs must be >= 2 (in-batch negatives), got {self.fusion_pretrain_pairs}"
            )
        if self.fusion_pretrain_at not in FUSION_PRETRAIN_AT:
            raise UserError(
                f"fusion_pretrain_at must be one of {', '.join(FUSION_PRETRAIN_AT)}, "
                f"got {self.fusion_pretrain_at!r}"
            )
        if self.pairs_per_step < 2:
            raise UserError(f"pairs_per_step must be >= 2 (in-batch negatives), got {self.pairs_per_step}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError(f"max_steps must be >= 1 or unset, got {self.max_steps}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"lr must be a number > 0, got {self.lr}")
        if self.llm_lr is not None and not (math.isfinite(self.llm_lr) and self.llm_lr > 0):
            raise UserError(f"llm_lr must be a number > 0 or unset, got {self.llm_lr}")
        if self.fusion_lr is not None and not (math.isfinite(self.fusion_lr) and self.fusion_lr > 0):
            raise UserError(f"fusion_lr must be a number > 0 or unset, got {self.fusion_lr}")
        metrics = ["val_loss", "mrr", "ndcg@10", *(f"recall@{k}" for k in self.val_ks)]
        if self.best_metric not in metrics:
            raise UserError(f"unknown best_metric {self.best_metric!r}; choose one of {', '.join(metrics)}")
        if not 0 <= self.warmup_ratio < 1:
            raise UserError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")

    # Serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        d["betas"], d["val_ks"] = list(self.betas), list(self.val_ks)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        check_keys(cls, data, "training config", " (model keys go in a [model] table)")
        data = dict(data)
        data["model"] = ModelConfig.from_dict(resolve_model_table(data.get("model") or {}))
        return cls(**data)

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        overrides: dict[str, Any] | None = None,
        model_overrides: dict[str, Any] | None = None,
    ) -> TrainConfig:
        """Defaults <- TOML (or JSON) file at `path` <- overrides; `None` overrides are ignored."""
        data: dict[str, Any] = {}
        if path is not None:
            data = read_config_file(Path(path))
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        model = resolve_model_table(dict(data.get("model") or {}))
        flags = {k: v for k, v in (model_overrides or {}).items() if v is not None}
        # A flag that names another LLM or vision encoder replaces the file's choice whole,
        # so an inline random config (the `tiny` preset's) does not outlive it.
        for name, inline in (("llm", "llm_config"), ("vision", "vision_config")):
            if name in flags and flags[name] != model.get(name):
                model.pop(inline, None)
        model.update(flags)
        data["model"] = model
        return cls.from_dict(data)


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML config, or a run's config.json."""
    if not path.exists():
        raise UserError(f"config file not found: {path} (expected a TOML file, see `i2i train --help`)")
    try:
        if path.suffix == ".json":
            return json.loads(path.read_text())
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot parse config file {path}: {exc}") from None
