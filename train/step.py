"""One optimizer step of NoteLLM-2 training, and what it needs: the optimizer, the
precision context, the forward + loss.

    optimizer = make_optimizer(model, cfg)
    autocast = autocast_for(cfg.precision, device)
    out = train_step(model, model, optimizer, batches, lr=..., autocast=autocast, clip=cfg.clip)

`train.loop` runs this step for every optimizer step of a run; the throughput benchmark
(`benchmarks/train_throughput.py`) times the same function.

A step is `grad_accum` micro-batches: each is one forward over the 2N notes
`[q..., d...]` of its pairs (its own contrastive batch), `loss / grad_accum` backward;
then the global gradient norm is clipped, AdamW steps and the gradients are cleared.
Under DDP the gradients are all-reduced only on the last micro-batch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from core.errors import UserError
from train.distributed import DistEnv, all_reduce_sum
from train.loss import notellm2_loss
from train.model import NoteEmbeddings, NoteLLM2
from train.train_config import TrainConfig

Batch = dict[str, torch.Tensor]


@dataclass
class StepOutput:
    """What one optimizer step reports. Tensors stay on the device: reading them
    (`float()`) waits for the GPU, so the loop reads them only when it logs."""

    loss: torch.Tensor  # mean training loss over the micro-batches (detached scalar)
    grad_norm: torch.Tensor  # global gradient norm before clipping (0 when nothing has a gradient)
    tokens: int  # tokens the LLM read (text + visual tokens), padding excluded
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # loss statistics, mean over micro-batches


def train_step(
    ddp_model: Any,  # `model`, or its DistributedDataParallel wrapper
    model: NoteLLM2,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Batch],
    *,
    lr: float,
    autocast: contextlib.AbstractContextManager,
    clip: float | None,
    grad_accum: int = 1,
    freeze_llm: bool = False,
) -> StepOutput:
    """One optimizer step over `grad_accum` micro-batches drawn from `batches`.

    `ddp_model` is `model` itself, or its `DistributedDataParallel` wrapper. Every
    parameter group's lr is set to `lr * group["lr_scale"]` (see `make_optimizer`).
    Batches are pulled one at a time, so data loading stays interleaved with compute.
    `freeze_llm` (the connector warm-up): the LLM's gradients are dropped before
    clipping, so AdamW leaves its weights and moments untouched (no decay either) and
    the gradient norm is the new modules' own.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    distributed = ddp_model is not model
    device = next(model.parameters()).device
    total = torch.zeros((), device=device)
    stats: dict[str, torch.Tensor] = {}
    tokens = 0
    iterator = iter(batches)
    for micro in range(grad_accum):
        batch = next(iterator)
        tokens += llm_tokens(batch, model.config.num_query_tokens)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        last_micro = micro == grad_accum - 1
        # Gradients are all-reduced only on the last micro-batch of the step.
        sync = contextlib.nullcontext() if last_micro or not distributed else ddp_model.no_sync()
        with sync:
            with autocast:
                loss, parts = forward_loss(ddp_model, model, batch)
            (loss / grad_accum).backward()
        total += loss.detach() / grad_accum
        for key, value in parts.items():
            stats[key] = stats.get(key, 0) + value.float() / grad_accum
    if freeze_llm:
        drop_llm_grads(model)
    grad_norm = clip_grad_norm(model, clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepOutput(total, grad_norm, tokens, stats)


def drop_llm_grads(model: NoteLLM2) -> None:
    """Clear the LLM's gradients: AdamW skips a parameter whose gradient is None, so this
    step leaves the LLM's weights and moments exactly as they were."""
    for p in model.llm.parameters():
        p.grad = None


def forward_loss(
    ddp_model: torch.nn.Module, model: NoteLLM2, batch: Batch
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward over the 2N notes [q..., d...] of the local batch, then the NoteLLM-2 loss."""
    emb: NoteEmbeddings = ddp_model(batch)
    queries, targets = emb.split_pairs()
    return notellm2_loss(queries, targets, model.logit_scale, model.config.micl_weights)


def make_optimizer(model: NoteLLM2, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over trainable parameters; no weight decay on biases, norms and the temperature.

    Each group carries `lr_scale`: 1 for the new modules, `llm_lr / lr` for the LLM's
    own weights, `fusion_lr / lr` for the late fusion; `train_step` sets every group's lr
    to `lr_at(step) * lr_scale`.
    """
    # Parts in group order: new modules, LLM, then the fusion (its own groups only when
    # fusion_lr is set, so a run without it keeps the optimizer layout of its checkpoints).
    part_of = {id(p): 1 for p in model.llm.parameters()}
    if model.fusion is not None and cfg.fusion_lr is not None:
        part_of.update({id(p): 2 for p in model.fusion.parameters()})
    scale = (
        1.0,
        (cfg.llm_lr / cfg.lr) if cfg.llm_lr is not None else 1.0,
        (cfg.fusion_lr / cfg.lr) if cfg.fusion_lr is not None else 1.0,
    )
    buckets: dict[tuple[int, bool], list[torch.nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            buckets.setdefault((part_of.get(id(p), 0), p.ndim >= 2), []).append(p)
    groups = [
        {
            "params": params,
            "weight_decay": cfg.weight_decay if decays else 0.0,
            "lr_scale": scale[part],
        }
        for (part, decays), params in sorted(buckets.items())
    ]
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused or None)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 dot products in hardware (AVX512-BF16 or AMX-BF16).

    Elsewhere oneDNN emulates bf16, which is slower than fp32."""
    caps = torch.cpu.get_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (`auto` / `bf16`); on CPU fp32 (`auto` / `fp32`), or bf16
    autocast when asked for (`bf16`) on a CPU with native bf16.

    `auto` stays fp32 on CPU so that a run's numbers do not depend on which CPU ran it."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    if device.type == "cpu":
        if not cpu_has_native_bf16():
            raise UserError(
                "precision bf16 on this CPU would be emulated (no avx512_bf16 or amx_bf16 in "
                "torch.cpu.get_capabilities()) and slower than fp32; use --precision fp32 (or auto)"
            )
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    if device.type != "cuda":
        raise UserError(f"precision bf16 is for CUDA or a CPU with native bf16, not {device.type}; use fp32")
    if not torch.cuda.is_bf16_supported():
        raise UserError("this GPU does not support bf16; use --precision fp32")
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16)


def llm_tokens(batch: Batch, num_query_tokens: int) -> int:
    """Tokens the LLM reads: text tokens plus `num_query_tokens - 1` visual ones per image note."""
    text = int(batch["attention_mask"].sum())
    for key in ("pixel_values", "vision_features"):  # pixels, or the cached encoder output
        if key in batch:
            text += batch[key].shape[0] * (num_query_tokens - 1)
    return text


def clip_grad_norm(model: NoteLLM2, clip: float | None) -> torch.Tensor:
    """Clip the global gradient norm (after DDP's all-reduce, so identical on every rank)."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return torch.zeros(())
    max_norm = clip if clip else float("inf")
    return torch.nn.utils.clip_grad_norm_(params, max_norm).detach()


@dataclass
class StepWindow:
    """Steps since the last train log line: summed on the device, read once by `record`."""

    t0: float = field(default_factory=time.perf_counter)
    steps: int = 0
    tokens: int = 0
    loss: torch.Tensor | float = 0.0
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    grad_norm: torch.Tensor | float = 0.0  # the last step's

    def add(self, out: StepOutput) -> None:
        self.steps += 1
        self.tokens += out.tokens
        self.loss = self.loss + out.loss
        for key in ("loss_multimodal", "loss_visual", "gate"):
            if key in out.stats:
                self.stats[key] = self.stats.get(key, 0) + out.stats[key]
        self.grad_norm = out.grad_norm

    def record(
        self, epoch: int, lr: float, model: NoteLLM2, pairs_per_opt_step: int, env: DistEnv
    ) -> dict[str, float]:
        """Mean loss (and loss statistics) over the window and over ranks, throughput since the
        last record. The one place the step's tensors are read."""
        keys = sorted(self.stats)
        sums = all_reduce_sum(
            [float(self.loss), float(self.tokens), *(float(self.stats[k]) for k in keys)], env
        )
        loss_sum, tokens, stat_sums = sums[0], sums[1], sums[2:]
        seconds = max(time.perf_counter() - self.t0, 1e-9)
        steps = max(self.steps, 1)
        record = {
            "epoch": float(epoch),
            "loss": loss_sum / steps / env.world_size,
            "lr": lr,
            "grad_norm": float(self.grad_norm),
            "logit_scale": float(model.logit_scale.detach()),
            "pairs_per_s": steps * pairs_per_opt_step / seconds,
            "tokens_per_s": tokens / seconds,
        }
        record.update({k: v / steps / env.world_size for k, v in zip(keys, stat_sums, strict=True)})
        return record
