"""The NoteLLM-2 training loop, written out (nanoGPT / torchtune-recipe style).

    train(cfg) ─ setup: process group, data, model, AdamW, resume state
               └ for step in range(start, total):
                     train_step(...)   lr = schedule(step); grad_accum x [forward -> loss / grad_accum
                                       -> backward]; clip -> AdamW step -> zero grad (train.step);
                                       LLM frozen for the first connector_warmup_steps
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

The run directory's files are described in `train.run_dir`; `last/` (weights, optimizer,
RNG, data position) in `train.checkpoint`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.nn.parallel import DistributedDataParallel as DDP

from core.errors import UserError
from train import run_dir as files
from train.checkpoint import (
    COUNTERS,
    TrainerState,
    load_checkpoint,
    load_trainer_state,
    recover_run_checkpoints,
    save_trainer_checkpoint,
)
from train.data import ImageLoader, NoteImageLoader, PairBatchSampler, PairCollate, PairDataset, PairSplit
from train.distributed import DistEnv, all_reduce_sum, barrier, init_distributed, teardown
from train.fusion_calibration import calibrate_image_gain, calibration_metric
from train.fusion_pretrain import pretrain_fusion_projection
from train.model import NoteLLM2, build_model
from train.run_data import (
    epoch_loader,
    image_root,
    load_splits,
    run_notes,
    split_counts,
    split_line,
    vision_cache,
)
from train.run_dir import TrainResult
from train.schedule import lr_at, warmup_steps_for
from train.step import StepWindow, autocast_for, make_optimizer, train_step
from train.train_config import TrainConfig
from train.validation import ValSet, build_val_set, is_better, model_embed_fn, model_loss_fn, validate

__all__ = ["TrainConfig", "TrainResult", "train"]

# Called on every rank after each optimizer step with (steps done, last train record).
# Raising from it stops the run (tests use this to simulate a kill).
StepHook = Callable[[int, dict[str, float]], None]


@dataclass
class _Run:
    """What one training process set up; the loop's helpers read it and never change it."""

    cfg: TrainConfig
    env: DistEnv
    run_dir: Path
    model: NoteLLM2
    ddp_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    autocast: contextlib.AbstractContextManager
    images: ImageLoader
    val: ValSet | None
    console: Console

    def say(self, text: str) -> None:
        if self.env.is_main:
            self.console.print(text)


# --- the loop ------------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    console: Console | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    on_step: StepHook | None = None,
) -> TrainResult:
    """Train a NoteLLM-2 model as `cfg` says; `resume` continues the run in `cfg.out`.

    A new run refuses a `cfg.out` that holds files no run wrote, unless `force`
    (`train.run_dir.check_new_run_dir`).
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # workers fork after the tokenizer ran
    env = init_distributed(cfg.device)
    console = console or Console()
    run_dir = Path(cfg.out)
    try:
        if resume and not run_dir.is_dir():
            raise UserError(
                f"nothing to resume in {run_dir}: no such directory; drop --resume to start a new run"
            )
        if not resume:
            files.check_new_run_dir(run_dir, cfg, force)
        # Rank 0 holds the run directory's lock for the whole run; other ranks follow it.
        with files.locked(run_dir) if env.is_main else contextlib.nullcontext():
            if env.is_main:
                for line in recover_run_checkpoints(run_dir):
                    console.print(f"{run_dir}: {line}", soft_wrap=True)
            barrier(env)  # every rank sees the recovered run dir
            return _train(cfg, env, console, resume, on_step)
    finally:
        teardown(env)


def _train(
    cfg: TrainConfig, env: DistEnv, console: Console, resume_flag: bool, on_step: StepHook | None
) -> TrainResult:
    run_dir = Path(cfg.out)
    resume = files.starts_from_checkpoint(run_dir, resume_flag)
    changes = files.check_resume_config(run_dir, cfg) if resume else []
    if resume_flag and not resume and env.is_main:
        console.print(
            f"{run_dir} has no checkpoint yet (killed before step {cfg.val_every}?): starting it over"
        )
    barrier(env)  # every rank has checked the run dir before rank 0 writes into it
    seed_everything(cfg.seed)  # same on every rank: identical initial weights

    # Data: pairs joined to notes (missing notes dropped and counted).
    train_split, val_split = load_splits(cfg)
    if env.is_main:
        console.print(split_line("train", train_split))
        if val_split is not None:
            console.print(split_line("val", val_split))

    # Model: vision frozen (by construction), LLM full / frozen / LoRA.
    model = load_checkpoint(run_dir / "last") if resume else build_model(cfg.model)
    model.set_llm_trainable(cfg.llm_train)
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.to(env.device).train()
    loader = NoteImageLoader(image_root(cfg), model.vision.transform if model.vision is not None else None)
    images: ImageLoader = loader
    if cfg.cache_vision and model.vision is not None:
        images = vision_cache(model.vision, loader, run_notes(train_split, val_split), cfg, env, console)

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

    optimizer = make_optimizer(model, cfg)
    state = TrainerState(
        world_size=env.world_size,
        pairs_per_step=cfg.pairs_per_step,
        grad_accum=cfg.grad_accum,
        sampler_seed=cfg.seed,
    )
    if resume:
        state = load_trainer_state(run_dir / "last", optimizer, env, expected=state)
        if env.is_main:
            files.truncate_metrics(run_dir, state.step)
            if changes:  # settings a resume may change, recorded for the next one
                files.write_config(run_dir, cfg)
                console.print("changed on resume: " + "; ".join(changes), soft_wrap=True)
            # soft_wrap: a path is never broken across lines
            console.print(f"resuming {run_dir} at step {state.step} of {total_steps}", soft_wrap=True)
    elif env.is_main:
        files.write_config(run_dir, cfg)
        (run_dir / files.METRICS).unlink(missing_ok=True)
    # Before DDP: its constructor hands every rank rank 0's weights.
    align_fusion = bool(cfg.fusion_pretrain_steps) and model.fusion is not None
    if not resume and align_fusion and cfg.fusion_pretrain_at == "start":
        _pretrain_fusion(cfg, env, run_dir, model, train_split, images, console, step=0)
    # Frozen encoder in eval mode, constant rotary tables: no buffer needs a per-forward broadcast.
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    ddp_model = DDP(model, device_ids=device_ids, broadcast_buffers=False) if env.distributed else model
    val = build_val_set(val_split, cfg.val_max_queries) if val_split is not None and len(val_split) else None
    run = _Run(
        cfg,
        env,
        run_dir,
        model,
        ddp_model,
        optimizer,
        autocast_for(cfg.precision, env.device),
        images,
        val,
        console,
    )

    last_val: dict[str, float] = {}
    if not resume and cfg.val_at_start:
        last_val = _validate(run, 0)  # the untrained baseline: nothing to checkpoint yet

    # ---- the loop ----------------------------------------------------------------------
    counts_at_start = dict(state.counts)  # totals in the checkpoint (0 for a new run)
    local_counts = dict.fromkeys(COUNTERS, 0)  # this rank's images since this process started
    pairs_per_opt_step = cfg.pairs_per_step * env.world_size * cfg.grad_accum
    collate = PairCollate(model.collator)
    window = StepWindow()
    data_iter: Iterator | None = None
    start_step = state.step
    record: dict[str, float] = {}
    progress = _progress(console, env)
    task = progress.add_task("train", total=total_steps, completed=start_step, status="")
    with progress:
        for step in range(start_step, total_steps):
            epoch, step_in_epoch = divmod(step, steps_per_epoch)
            if data_iter is None or step_in_epoch == 0:  # new epoch (or resumed mid-epoch): new loader
                dataset = PairDataset(train_split, images)
                data_iter = iter(epoch_loader(dataset, sampler, collate, cfg, env, epoch, step_in_epoch))
            lr = lr_at(step, cfg.lr, warmup, total_steps, cfg.min_lr_ratio)
            batches = _counted(data_iter, local_counts)
            out = train_step(
                ddp_model,
                model,
                optimizer,
                batches,
                lr=lr,
                autocast=run.autocast,
                clip=cfg.clip,
                grad_accum=cfg.grad_accum,
                freeze_llm=step < cfg.connector_warmup_steps,
            )
            window.add(out)
            done = step + 1

            if done % cfg.log_every == 0 or done == total_steps:
                record = window.record(epoch, lr, model, pairs_per_opt_step, env)
                if env.is_main:
                    files.log_record(run_dir, {"step": done, "split": "train", **record})
                status = f"loss {record['loss']:.4f}  lr {lr:.2e}  {record['pairs_per_s']:.1f} pairs/s"
                progress.update(task, status=status)
                window = StepWindow()
            progress.update(task, completed=done)

            if done % cfg.val_every == 0 or done == total_steps:
                val_start = time.perf_counter()
                finished = False  # the finishing steps ran: this is the model to serve
                if done == total_steps and align_fusion and cfg.fusion_pretrain_at == "end":
                    _pretrain_fusion(cfg, env, run_dir, model, train_split, images, console, step=done)
                    finished = True
                if done == total_steps and cfg.fusion_calibrate and model.fusion is not None:
                    finished = _calibrate_fusion(run, done) or finished
                last_val = _validate(run, done)
                counts = _total_counts(counts_at_start, local_counts, env)
                state = _save(run, state, done, last_val, counts, finished=finished)
                window.t0 += time.perf_counter() - val_start  # throughput counts training time only
            if on_step is not None:
                on_step(done, record)

    # ---- wrap up -------------------------------------------------------------------------
    if start_step == total_steps and not last_val:  # resumed a finished run: nothing left to do
        last_val = files.last_logged_val(run_dir)
    final_counts = {**state.counts, **split_counts(train_split, val_split)}
    best_dir = run_dir / "best" if (run_dir / "best").exists() else None
    best_val = state.best["metrics"] if state.best else None
    result = TrainResult(
        run_dir, run_dir / "last", best_dir, total_steps, last_val, best_val, final_counts, cfg.best_metric
    )
    if env.is_main:
        files.write_summary(result)
    barrier(env)
    return result


def _pretrain_fusion(
    cfg: TrainConfig,
    env: DistEnv,
    run_dir: Path,
    model: NoteLLM2,
    train_split: PairSplit,
    images: ImageLoader,
    console: Console,
    step: int,
) -> None:
    """The late fusion's image projection aligned on the train pairs (train.fusion_pretrain),
    before the first step (`step` 0) or after the last. Every rank computes the same (and
    before the first step DDP starts from rank 0's weights anyway)."""
    progress = Progress(console=console, disable=not env.is_main, transient=True)
    with progress:
        task = progress.add_task("align W_v", total=cfg.fusion_pretrain_steps)
        result = pretrain_fusion_projection(
            model,
            train_split,
            images,
            steps=cfg.fusion_pretrain_steps,
            pairs_per_step=cfg.fusion_pretrain_pairs,
            lr=cfg.lr,
            seed=cfg.seed,
            on_step=lambda done, _: progress.update(task, completed=done),
        )
    if env.is_main:
        files.log_record(run_dir, {"step": step, "split": "fusion_pretrain", **result.to_dict()})
        when = "pre-aligned" if step == 0 else f"aligned after step {step}"
        console.print(
            f"late fusion {when}: {result.steps} steps x {result.pairs_per_step} pairs over "
            f"{result.notes} notes' image features, loss {result.loss_first:.3f} -> {result.loss_last:.3f} "
            f"in {result.seconds:.1f} s"
        )


def _counted(data_iter: Iterator, local_counts: dict[str, int]) -> Iterator[dict[str, torch.Tensor]]:
    """The loader's batches without their image counters, which are added to `local_counts`."""
    for batch, batch_counts in data_iter:
        for k in COUNTERS:
            local_counts[k] += batch_counts[k]
        yield batch


def _validate(run: _Run, step: int) -> dict[str, float]:
    """Val loss and rank metrics on every rank (the same numbers), logged by rank 0."""
    if run.val is None:
        return {}
    model, cfg, env = run.model, run.cfg, run.env
    model.eval()
    record = validate(
        run.val,
        embed=model_embed_fn(model, run.autocast),
        loss_fn=model_loss_fn(model),
        images=run.images,
        note_collator=model.collator,
        env=env,
        ks=cfg.val_ks,
        loss_batch_pairs=cfg.pairs_per_step * env.world_size,
        batch_size=cfg.val_batch_size,
        num_workers=cfg.num_workers,
    )
    model.train()
    if env.is_main:
        files.log_record(run.run_dir, {"step": step, "split": "val", **record})
    run.say(_val_line(step, record))
    return record


def _calibrate_fusion(run: _Run, step: int) -> bool:
    """The image share's weight chosen on the val split (train.fusion_calibration), before
    the final validation and checkpoint, which then carry it. False when skipped (no val)."""
    if run.val is None:
        run.say("fusion calibration skipped: no val split to choose the image share's weight on")
        return False
    cfg = run.cfg
    result = calibrate_image_gain(
        run.model,
        run.val,
        run.images,
        run.env,
        metric=calibration_metric(cfg.best_metric, cfg.val_ks, run.val.all_pairs_pool),
        ks=cfg.val_ks,
        batch_size=cfg.val_batch_size,
        num_workers=cfg.num_workers,
        autocast=run.autocast,
    )
    if run.env.is_main:
        files.log_record(run.run_dir, {"step": step, "split": "fusion_calibration", **result.to_dict()})
    best, before = result.scores[result.gain], result.scores[result.previous]
    run.say(
        f"late fusion calibrated on val ({result.pairs} pairs): "
        f"image share weight {result.previous:g} -> {result.gain:g} "
        f"({result.metric} {before:.4f} -> {best:.4f})"
    )
    return True


def _save(
    run: _Run,
    state: TrainerState,
    step: int,
    record: dict[str, float],
    counts: dict[str, int],
    finished: bool = False,
) -> TrainerState:
    """The state after `step` (best/ moves when `record` improves on it), saved to last/ (+ best/).

    `finished`: the finishing steps ran on this model (late fusion's W_v aligned after the
    joint stage, its image weight calibrated), so it becomes best/ whatever an earlier
    validation read: an earlier checkpoint never had them (W_v as initialised, g = 1), so
    its val score ranks a model nobody serves, and on a tie best/ used to keep it (a synth
    run of 480 steps kept step 420's unfinished weights; benchmarks/QUALITY.md)."""
    if broken := counts["images_broken"]:
        run.say(f"images missing or unreadable so far (a blank image was used): {broken}")
    metric = run.cfg.best_metric
    better = improved = False  # no val split or no metric: no best/
    if run.val is not None and metric is not None:
        better = is_better(record, state.best, metric)
        improved = finished or better
    if improved and not better and state.best is not None:
        run.say(
            f"best/ is the finished model of step {step}: the checkpoint of step {state.best['step']} "
            f"read higher on val ({metric}) but never had the finishing steps (W_v aligned, g calibrated)"
        )
    best = {"step": step, "metric": metric, "metrics": record} if improved else state.best
    state = dataclasses.replace(state, step=step, counts=counts, best=best)
    save_trainer_checkpoint(
        run.run_dir, run.model, run.optimizer, state, run.env, metric if improved else None
    )
    return state


# --- setup helpers -------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- logging ------------------------------------------------------------------------------


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


def _val_line(step: int, record: dict[str, float]) -> str:
    shown = {k: v for k, v in record.items() if k.startswith("recall@") or k in ("val_loss", "mrr")}
    return f"val @ step {step}: " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items())


def _total_counts(at_start: dict[str, int], local: dict[str, int], env: DistEnv) -> dict[str, int]:
    """Image counters: the checkpoint's totals plus every rank's count since this process started."""
    summed = all_reduce_sum([local[k] for k in COUNTERS], env)
    return {k: at_start[k] + int(v) for k, v in zip(COUNTERS, summed, strict=True)}
