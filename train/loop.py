"""The NoteLLM-2 training loop, written out (nanoGPT / torchtune-recipe style).

    train(cfg) ─ setup: process group, data, model, AdamW, resume state
               └ for step in range(start, total):
                     lr = schedule(step)
                     grad_accum x [forward (bf16 autocast on CUDA) -> loss / grad_accum -> backward]
                     clip -> AdamW step -> zero grad
                     every log_every: metrics.jsonl train line, progress line
                     every val_every (and at the end): val loss + Recall@K, save last/ (+ best/)

Multi-GPU / multi-node: launch with `torchrun` (see infra/launch/README.md); each rank
runs this same function. DDP averages gradients over ranks; the loss gathers every
rank's embeddings *with gradients* (`torch.distributed.nn.all_gather`), so each
contrastive batch has `pairs_per_step * world_size` pairs and negatives come from the
global batch. Scaling: every rank computes the loss of the whole global batch, so
autograd through the gather hands each rank world_size x the gradient of its own
embeddings, and DDP's mean over ranks divides it back: the update equals one process
on the concatenated batch (tests/train/test_ddp.py checks loss and gradients).

Run directory (`cfg.out`):

    config.json      the resolved TrainConfig (model config included)
    metrics.jsonl    one JSON object per train log / validation, keyed by `step`
    last/            latest checkpoint (train.checkpoint format) + trainer_state.{json,pt}
    best/            checkpoint with the best `cfg.best_metric` on val
    summary.json     counts, final and best validation metrics, timing

`last/trainer_state.pt` holds the optimizer state and torch RNG states (tensors only,
loaded with `weights_only=True`); `trainer_state.json` holds the step (= data position:
every epoch has the same number of steps), best metric, counters and the python /
numpy RNG states. Both are written inside the same atomic directory as the weights, so
a kill can never pair new weights with an old optimizer.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from core.contracts import notes_to_dicts, read_notes
from core.errors import UserError
from core.io import atomic_path, write_json_atomic
from train.checkpoint import load_checkpoint, save_checkpoint
from train.data import NoteImageLoader, PairBatchSampler, PairCollate, PairDataset, PairSplit, load_pairs
from train.distributed import DistEnv, all_gather_objects, all_reduce_sum, barrier, init_distributed, teardown
from train.loss import notellm2_loss
from train.model import NoteEmbeddings, NoteLLM2, build_model
from train.schedule import lr_at, warmup_steps_for
from train.train_config import TrainConfig
from train.validation import build_val_set, validate

__all__ = ["TrainConfig", "TrainResult", "train"]

STATE_JSON = "trainer_state.json"
STATE_PT = "trainer_state.pt"
COUNTERS = ("images_loaded", "images_absent", "images_broken")

# Called on every rank after each optimizer step with (steps done, last train record).
# Raising from it stops the run (tests use this to simulate a kill).
StepHook = Callable[[int, dict[str, float]], None]


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


# --- the loop ------------------------------------------------------------------------------


def train(
    cfg: TrainConfig, console: Console | None = None, *, resume: bool = False, on_step: StepHook | None = None
) -> TrainResult:
    """Train a NoteLLM-2 model as `cfg` says; `resume` continues the run in `cfg.out`."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers fork after the tokenizer ran
    env = init_distributed(cfg.device)
    try:
        return _train(cfg, env, console or Console(), resume, on_step)
    finally:
        teardown(env)


def _train(
    cfg: TrainConfig, env: DistEnv, console: Console, resume: bool, on_step: StepHook | None
) -> TrainResult:
    run_dir = Path(cfg.out)
    say = console.print if env.is_main else (lambda *a, **k: None)
    _check_run_dir(run_dir, resume)
    barrier(env)  # every rank has checked the run dir before rank 0 writes into it
    seed_everything(cfg.seed)  # same on every rank: identical initial weights

    # Data: pairs joined to notes (missing notes dropped and counted).
    train_split, val_split = load_splits(cfg)
    say(_split_line("train", train_split))
    if val_split is not None:
        say(_split_line("val", val_split))

    # Model: vision frozen (by construction), LLM full / frozen / LoRA.
    model = load_checkpoint(run_dir / "last") if resume else build_model(cfg.model)
    model.set_llm_trainable(cfg.llm_train)
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.to(env.device).train()
    autocast = autocast_for(cfg.precision, env.device)
    images = NoteImageLoader(_image_root(cfg), model.vision.transform if model.vision is not None else None)
    collate = PairCollate(model.collator)

    sampler = PairBatchSampler(
        train_split, cfg.pairs_per_step, cfg.seed, env.rank, env.world_size, cfg.unique_notes_in_batch
    )
    steps_per_epoch = sampler.batches_per_epoch // cfg.grad_accum
    if steps_per_epoch < 1:
        need = cfg.pairs_per_step * env.world_size * cfg.grad_accum
        raise UserError(
            f"the train split has {len(train_split)} usable pairs but one optimizer step needs {need} "
            f"(pairs_per_step {cfg.pairs_per_step} x {env.world_size} rank(s) x grad_accum "
            f"{cfg.grad_accum}); lower --pairs-per-step / --grad-accum or mine more pairs"
        )
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    warmup = warmup_steps_for(total_steps, cfg.warmup_ratio)
    pairs_per_opt_step = cfg.pairs_per_step * env.world_size * cfg.grad_accum

    optimizer = make_optimizer(model, cfg)
    state: dict[str, Any] = {"step": 0, "best": None, "counts": dict.fromkeys(COUNTERS, 0)}
    if resume:
        state = load_trainer_state(run_dir / "last", optimizer, env, cfg)
        if env.is_main:
            _truncate_metrics(run_dir / "metrics.jsonl", state["step"])
        say(f"resuming {run_dir} at step {state['step']} of {total_steps}")
    elif env.is_main:
        # Absolute data paths, so `i2i eval RUN` and `--resume` work from any directory.
        resolved = {k: str(Path(v).resolve()) for k in ("notes", "images", "pairs") if (v := getattr(cfg, k))}
        write_json_atomic(run_dir / "config.json", {**cfg.to_dict(), **resolved})
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    ddp_model = (
        # Frozen encoder in eval mode, constant rotary tables: no buffer needs a per-forward broadcast.
        DDP(
            model,
            device_ids=[env.device.index] if env.device.type == "cuda" else None,
            broadcast_buffers=False,
        )
        if env.distributed
        else model
    )

    val = build_val_set(val_split, cfg.val_max_queries) if val_split is not None and len(val_split) else None
    last_val: dict[str, float] = {}
    best_val: dict[str, float] | None = state["best"]["metrics"] if state["best"] else None

    def run_validation(step: int) -> dict[str, float]:
        """Validate, log, save last/ (and best/) on rank 0; every rank gets the same numbers."""
        nonlocal last_val, best_val
        record: dict[str, float] = {}
        if val is not None:
            model.eval()
            record = validate(
                val,
                embed=lambda b: _embed(model, b, autocast),
                loss_fn=lambda q, t: _val_loss(model, q, t),
                images=images,
                note_collator=model.collator,
                env=env,
                ks=cfg.val_ks,
                loss_batch_pairs=cfg.pairs_per_step * env.world_size,
                batch_size=cfg.val_batch_size,
                num_workers=cfg.num_workers,
            )
            model.train()
            _log(run_dir, env, {"step": step, "split": "val", **record})
            say(_val_line(step, record))
            last_val = record
        if step == 0:  # the untrained baseline: nothing to checkpoint yet
            return record
        # Image counters: the checkpoint's totals plus every rank's count since this process started.
        since_start = _global_counts(local_counts, env)
        state["counts"] = {k: counts_at_start[k] + since_start[k] for k in COUNTERS}
        if broken := state["counts"]["images_broken"]:
            say(f"images missing or unreadable so far (a blank image was used): {broken}")
        improved = val is not None and _better(record, state["best"], cfg.best_metric)
        if improved:
            state["best"] = {"step": step, "metric": cfg.best_metric, "metrics": record}
            best_val = record
        state["step"] = step
        save_trainer_checkpoint(run_dir, model, optimizer, state, env, cfg, best=improved)
        return record

    counts_at_start = dict(state["counts"])  # totals in the checkpoint (0 for a new run)
    local_counts = dict.fromkeys(COUNTERS, 0)  # this rank's images since this process started
    if not resume and cfg.val_at_start:
        run_validation(0)

    # ---- the loop ----------------------------------------------------------------------
    window = {"loss": torch.zeros((), device=env.device), "steps": 0, "tokens": 0, "t0": time.perf_counter()}
    data_iter = None
    start_step = state["step"]
    record: dict[str, float] = {}
    progress = _progress(console, env)
    task = progress.add_task("train", total=total_steps, completed=start_step, status="")
    with progress:
        for step in range(start_step, total_steps):
            epoch, step_in_epoch = divmod(step, steps_per_epoch)
            if data_iter is None or step_in_epoch == 0:  # new epoch (or resumed mid-epoch): new loader
                data_iter = iter(
                    epoch_loader(
                        PairDataset(train_split, images), sampler, collate, cfg, env, epoch, step_in_epoch
                    )
                )
            lr = lr_at(step, cfg.lr, warmup, total_steps, cfg.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]

            for micro in range(cfg.grad_accum):
                batch, batch_counts = next(data_iter)
                for k in COUNTERS:
                    local_counts[k] += batch_counts[k]
                window["tokens"] += _llm_tokens(batch, cfg)
                batch = {k: v.to(env.device, non_blocking=True) for k, v in batch.items()}
                # Gradients are all-reduced only on the last micro-batch of the step.
                last_micro = micro == cfg.grad_accum - 1
                sync = contextlib.nullcontext() if last_micro or not env.distributed else ddp_model.no_sync()
                with sync:
                    with autocast:
                        loss, _parts = forward_loss(ddp_model, model, batch)
                    (loss / cfg.grad_accum).backward()
                window["loss"] += loss.detach() / cfg.grad_accum

            grad_norm = _clip(model, cfg.clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            window["steps"] += 1
            done = step + 1

            if done % cfg.log_every == 0 or done == total_steps:
                record = _train_record(window, done, epoch, lr, grad_norm, model, pairs_per_opt_step, env)
                _log(run_dir, env, {"step": done, "split": "train", **record})
                status = f"loss {record['loss']:.4f}  lr {lr:.2e}  {record['pairs_per_s']:.1f} pairs/s"
                progress.update(task, status=status)
                window = {"loss": torch.zeros((), device=env.device), "steps": 0, "tokens": 0}
                window["t0"] = time.perf_counter()
            progress.update(task, completed=done)

            if done % cfg.val_every == 0 or done == total_steps:
                val_start = time.perf_counter()
                run_validation(done)
                window["t0"] += time.perf_counter() - val_start  # throughput counts training time only
            if on_step is not None:
                on_step(done, record)

    # ---- wrap up -------------------------------------------------------------------------
    if start_step == total_steps and not last_val:  # resumed a finished run: nothing left to do
        last_val = _last_logged_val(run_dir / "metrics.jsonl")
    final_counts = {**state["counts"], **_split_counts(train_split, val_split)}
    best_dir = run_dir / "best" if (run_dir / "best").exists() else None
    result = TrainResult(run_dir, run_dir / "last", best_dir, total_steps, last_val, best_val, final_counts)
    if env.is_main:
        write_json_atomic(run_dir / "summary.json", _summary(result, cfg))
        console.print(_summary_table(result, cfg))
    barrier(env)
    return result


# --- setup helpers -------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_splits(cfg: TrainConfig) -> tuple[PairSplit, PairSplit | None]:
    """Read notes once; join the train split (required) and the val split (optional)."""
    for name in ("notes", "pairs"):
        if not getattr(cfg, name):
            raise UserError(f"no {name} given; pass --{name} (or set `{name} = ...` in the config file)")
    pairs_dir = Path(cfg.pairs)  # type: ignore[arg-type]
    if not pairs_dir.is_dir():
        raise UserError(f"pairs directory not found: {pairs_dir} (expected the --out of `i2i mine-pairs`)")
    notes_df = read_notes(cfg.notes)  # type: ignore[arg-type]
    note_list = notes_to_dicts(notes_df)
    train_split = load_pairs(notes_df, pairs_dir / "train.parquet", note_list)
    if len(train_split) == 0:
        raise UserError(
            f"no usable train pairs in {pairs_dir / 'train.parquet'}: {train_split.pairs_read} read, "
            f"{train_split.dropped_missing_note} name notes missing from {cfg.notes}, "
            f"{train_split.dropped_self_pair} are self pairs; check the pairs were mined from these notes"
        )
    val_path = pairs_dir / "val.parquet"
    val_split = load_pairs(notes_df, val_path, note_list) if val_path.exists() else None
    return train_split, val_split


def make_optimizer(model: NoteLLM2, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over trainable parameters; no weight decay on biases, norms and the temperature.

    Each group carries `lr_scale`: 1 for the new modules, `llm_lr / lr` for the LLM's
    own weights; the schedule sets every group's lr to `lr_at(step) * lr_scale`.
    """
    llm_params = {id(p) for p in model.llm.parameters()}
    llm_scale = (cfg.llm_lr / cfg.lr) if cfg.llm_lr is not None else 1.0
    buckets: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            buckets.setdefault((id(p) in llm_params, p.ndim >= 2), []).append(p)
    groups = [
        {
            "params": params,
            "weight_decay": cfg.weight_decay if decays else 0.0,
            "lr_scale": llm_scale if in_llm else 1.0,
        }
        for (in_llm, decays), params in sorted(buckets.items())
    ]
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused or None)


def epoch_loader(
    dataset: PairDataset,
    sampler: PairBatchSampler,
    collate: PairCollate,
    cfg: TrainConfig,
    env: DistEnv,
    epoch: int,
    step_in_epoch: int,
) -> DataLoader:
    """The DataLoader for one epoch, starting at `step_in_epoch` (resume) and yielding whole steps."""
    sampler.set_epoch(
        epoch,
        start=step_in_epoch * cfg.grad_accum,
        limit=(sampler.batches_per_epoch // cfg.grad_accum) * cfg.grad_accum,
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.num_workers,
        pin_memory=env.device.type == "cuda",
        # Its own generator: the loader's base seed never draws from the global torch RNG,
        # so the model's dropout stream is the same whether or not we resumed here.
        generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 1009 + env.rank),
    )


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (`auto` / `bf16`), fp32 on CPU (`auto` / `fp32`)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    if device.type != "cuda":
        raise UserError("precision bf16 is for CUDA; on CPU use --precision fp32 (or auto)")
    if not torch.cuda.is_bf16_supported():
        raise UserError("this GPU does not support bf16; use --precision fp32")
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16)


def _image_root(cfg: TrainConfig) -> Path:
    """--images, or the notes file's folder (where `i2i synth` puts relative image paths)."""
    if cfg.images is None:
        return Path(cfg.notes).parent  # type: ignore[arg-type]
    root = Path(cfg.images)
    if not root.is_dir():
        raise UserError(f"image root not found: {root}; pass --images DIR (relative image paths start there)")
    return root


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    has_run = (run_dir / "config.json").exists()
    if resume and not (run_dir / "last" / STATE_JSON).exists():
        raise UserError(
            f"nothing to resume in {run_dir}: no last/ checkpoint; drop --resume to start a new run"
        )
    if not resume and has_run:
        raise UserError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )


# --- forward, loss, embeddings ----------------------------------------------------------------


def forward_loss(
    ddp_model: torch.nn.Module, model: NoteLLM2, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """One forward over the 2N notes [q..., d...] of the local batch, then the NoteLLM-2 loss."""
    emb: NoteEmbeddings = ddp_model(batch)
    queries, targets = emb.split_pairs()
    return notellm2_loss(queries, targets, model.logit_scale, model.config.micl_weights)


@torch.no_grad()
def _embed(
    model: NoteLLM2, batch: dict[str, torch.Tensor], autocast: contextlib.AbstractContextManager
) -> tuple[torch.Tensor, torch.Tensor | None]:
    with autocast:
        emb = model(batch)
    return emb.multimodal, emb.visual


@torch.no_grad()
def _val_loss(
    model: NoteLLM2,
    q: tuple[torch.Tensor, torch.Tensor | None],
    t: tuple[torch.Tensor, torch.Tensor | None],
) -> torch.Tensor:
    """The training loss on already-computed embeddings (no gather: every rank holds all of them)."""
    loss, _ = notellm2_loss(
        NoteEmbeddings(q[0], q[1]),
        NoteEmbeddings(t[0], t[1]),
        model.logit_scale,
        model.config.micl_weights,
        gather=False,
    )
    return loss


def _llm_tokens(batch: dict[str, torch.Tensor], cfg: TrainConfig) -> int:
    """Tokens the LLM reads: text tokens plus `num_query_tokens - 1` visual ones per image note."""
    text = int(batch["attention_mask"].sum())
    if "pixel_values" in batch:
        text += batch["pixel_values"].shape[0] * (cfg.model.num_query_tokens - 1)
    return text


def _clip(model: NoteLLM2, clip: float | None) -> float:
    """Clip the global gradient norm (after DDP's all-reduce, so identical on every rank)."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    max_norm = clip if clip else float("inf")
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))


# --- logging ------------------------------------------------------------------------------


def _train_record(
    window: dict[str, Any],
    step: int,
    epoch: int,
    lr: float,
    grad_norm: float,
    model: NoteLLM2,
    pairs_per_opt_step: int,
    env: DistEnv,
) -> dict[str, float]:
    """Mean loss over the window (and over ranks), throughput since the last record."""
    loss_sum, tokens = all_reduce_sum([float(window["loss"]), float(window["tokens"])], env)
    seconds = max(time.perf_counter() - window["t0"], 1e-9)
    steps = max(window["steps"], 1)
    return {
        "epoch": float(epoch),
        "loss": loss_sum / steps / env.world_size,
        "lr": lr,
        "grad_norm": grad_norm,
        "logit_scale": float(model.logit_scale.detach()),
        "pairs_per_s": steps * pairs_per_opt_step / seconds,
        "tokens_per_s": tokens / seconds,
    }


def _log(run_dir: Path, env: DistEnv, record: dict[str, Any]) -> None:
    """Append one JSON line to metrics.jsonl (rank 0)."""
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop lines logged after the checkpoint (they will be logged again)."""
    if not path.exists():
        return
    kept = [
        line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step
    ]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept))


def _last_logged_val(path: Path) -> dict[str, float]:
    """The last validation record in metrics.jsonl (without its step / split keys)."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    vals = [r for r in records if r.get("split") == "val"]
    return {k: v for k, v in vals[-1].items() if k not in ("step", "split")} if vals else {}


def _progress(console: Console, env: DistEnv) -> Progress:
    return Progress(
        TextColumn("[bold]step"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=not env.is_main,
        transient=False,
    )


def _split_line(name: str, split: PairSplit) -> str:
    return (
        f"{name}: {len(split)} pairs ({split.pairs_read} read, {split.dropped_missing_note} dropped: "
        f"note missing from notes; {split.dropped_self_pair} self pairs dropped)"
    )


def _val_line(step: int, record: dict[str, float]) -> str:
    shown = {k: v for k, v in record.items() if k.startswith("recall@") or k in ("val_loss", "mrr")}
    return f"val @ step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items())


def _better(record: dict[str, float], best: dict[str, Any] | None, metric: str) -> bool:
    """Whether `record` beats the best so far on `metric` (MRR when the val pool is too
    small for that recall@K to be reported: the pool never changes within a run)."""
    if metric not in record and metric.startswith("recall@"):
        metric = "mrr"
    if metric not in record or math.isnan(record[metric]):
        return best is None  # nothing to compare: keep the first checkpoint as best
    if best is None:
        return True
    old = best["metrics"].get(metric, float("nan"))
    if math.isnan(old):
        return True
    return record[metric] < old if metric == "val_loss" else record[metric] > old


def _global_counts(counts: dict[str, int], env: DistEnv) -> dict[str, int]:
    return dict(
        zip(COUNTERS, (int(v) for v in all_reduce_sum([counts[k] for k in COUNTERS], env)), strict=True)
    )


def _split_counts(train_split: PairSplit, val_split: PairSplit | None) -> dict[str, int]:
    out = {
        "train_pairs": len(train_split),
        "train_pairs_dropped_missing_note": train_split.dropped_missing_note,
        "train_pairs_dropped_self": train_split.dropped_self_pair,
    }
    if val_split is not None:
        out |= {"val_pairs": len(val_split), "val_pairs_dropped_missing_note": val_split.dropped_missing_note}
    return out


def _summary(result: TrainResult, cfg: TrainConfig) -> dict[str, Any]:
    return {
        "steps": result.steps,
        "last_checkpoint": str(result.last_checkpoint),
        "best_checkpoint": None if result.best_checkpoint is None else str(result.best_checkpoint),
        "best_metric": cfg.best_metric,
        "final_val": result.metrics,
        "best_val": result.best,
        "counts": result.counts,
    }


def _summary_table(result: TrainResult, cfg: TrainConfig) -> Table:
    table = Table(title=f"i2i train: {result.run_dir}")
    table.add_column("metric")
    table.add_column("final", justify="right")
    table.add_column(f"best ({cfg.best_metric})", justify="right")

    def fmt(value: float) -> str:
        return f"{value:.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.4f}"

    for key, value in result.metrics.items():
        best = "" if result.best is None else fmt(result.best.get(key, float("nan")))
        table.add_row(key, fmt(value), best)
    for key, value in result.counts.items():
        table.add_row(key, str(value), "")
    return table


# --- checkpoint + trainer state -------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    """This rank's RNG states: torch as tensors, python / numpy as JSON-able lists."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else None,
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"])
    np_state = s["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    random.setstate((s["python"][0], tuple(s["python"][1]), s["python"][2]))


def save_trainer_checkpoint(
    run_dir: Path,
    model: NoteLLM2,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    env: DistEnv,
    cfg: TrainConfig,
    best: bool,
) -> None:
    """Write last/ (weights + trainer state, one atomic directory) and best/ (weights)."""
    rngs = all_gather_objects(_rng_state(), env)  # every rank's RNG, saved by rank 0
    if env.is_main:
        with atomic_path(run_dir / "last") as tmp:
            save_checkpoint(model, tmp, extra={"step": state["step"]})
            torch.save(
                {
                    "optimizer": optimizer.state_dict(),
                    "rng_torch": [r["torch"] for r in rngs],
                    "rng_cuda": [r["cuda"] for r in rngs],
                },
                tmp / STATE_PT,
            )
            meta = {
                "step": state["step"],
                "best": state["best"],
                "counts": state["counts"],
                "world_size": env.world_size,
                "pairs_per_step": cfg.pairs_per_step,
                "grad_accum": cfg.grad_accum,
                "sampler_seed": cfg.seed,
                "rng_numpy": [r["numpy"] for r in rngs],
                "rng_python": [r["python"] for r in rngs],
            }
            (tmp / STATE_JSON).write_text(json.dumps(meta))
        if best:
            with atomic_path(run_dir / "best") as tmp:
                save_checkpoint(model, tmp, extra={"step": state["step"], "metric": cfg.best_metric})
    barrier(env)


def load_trainer_state(
    last: Path, optimizer: torch.optim.Optimizer, env: DistEnv, cfg: TrainConfig
) -> dict[str, Any]:
    """Restore optimizer + this rank's RNG from last/; return step, best and counters."""
    meta = json.loads((last / STATE_JSON).read_text())
    layout = (meta["world_size"], meta["pairs_per_step"], meta["grad_accum"], meta["sampler_seed"])
    if layout != (env.world_size, cfg.pairs_per_step, cfg.grad_accum, cfg.seed):
        raise UserError(
            f"cannot resume {last.parent}: it ran with world size {layout[0]}, pairs_per_step {layout[1]}, "
            f"grad_accum {layout[2]}, seed {layout[3]}, now {env.world_size}, {cfg.pairs_per_step}, "
            f"{cfg.grad_accum}, {cfg.seed}; the data position depends on them: resume with the same values"
        )
    tensors = torch.load(last / STATE_PT, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(tensors["optimizer"])
    _set_rng_state(
        {
            "torch": tensors["rng_torch"][env.rank],
            "cuda": tensors["rng_cuda"][env.rank],
            "numpy": meta["rng_numpy"][env.rank],
            "python": meta["rng_python"][env.rank],
        }
    )
    return {"step": meta["step"], "best": meta["best"], "counts": meta["counts"]}
