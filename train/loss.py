"""The NoteLLM-2 pair contrastive loss: symmetric in-batch cross-entropy over related pairs.

Batch convention (one forward per step)
---------------------------------------
A training batch of N related pairs is collated as ONE batch of 2N notes laid out
`[q_1..q_N, d_1..d_N]` and run through the model once; the output is split:

    out = model(model.collate(queries + targets, pixels))   # 2N rows
    out_q, out_d = out.split_pairs()                       # N rows each
    loss, stats = notellm2_loss(out_q, out_d, model.logit_scale, config.micl_weights)  # stats: tensors

(Calling the model twice, on queries then targets, gives the same values: rows never
interact in the forward.)

The loss
--------
With embeddings E = [q_1..q_N, d_1..d_N] (2N x dim, L2-normalised), logits
`exp(t) * E E^T` with the diagonal masked out (a note is not its own candidate); row
`q_i` must pick `d_i` and row `d_i` must pick `q_i` among the other 2N - 1 notes
(cross-entropy both ways: every other query and target is a negative). `exp(t)` is the
learnable logit scale (t initialised to 3.0, scale ~20): a larger scale is a lower
softmax temperature.

Gathered negatives and DDP scaling
----------------------------------
Under `torch.distributed` (and `gather=True`) each rank's q and d are gathered from all
K ranks with `torch.distributed.nn.all_gather`, which carries gradients back to the
rank that produced each row. Every rank then computes the same global loss: the mean
over all 2KN rows. Backward of the gather sums, onto each rank's local rows, the
gradients that all K ranks computed for them (K identical copies), so the local
parameter gradient is K x the single-process gradient of that rank's share; DDP then
averages over K ranks, which cancels the K: K ranks x N pairs give exactly the
gradient of one process on the concatenated K*N pairs (same loss value too). The
global layout is `[q(rank 0), q(rank 1), ..., d(rank 0), d(rank 1), ...]`.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from train.model import NoteEmbeddings


def _gather(x: torch.Tensor) -> torch.Tensor:
    """All ranks' `x` concatenated along dim 0, gradients flowing back to each rank."""
    import torch.distributed as dist
    import torch.distributed.nn as dist_nn

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    with warnings.catch_warnings():  # deprecated in torch 2.14 in favour of a private API; still correct
        warnings.simplefilter("ignore", FutureWarning)
        parts = dist_nn.all_gather(x.contiguous())
    return torch.cat(parts, dim=0)


def pair_contrastive_loss(
    q: torch.Tensor, d: torch.Tensor, logit_scale: torch.Tensor, gather: bool = True
) -> torch.Tensor:
    """Symmetric in-batch contrastive loss over pairs `(q_i, d_i)`.

    q, d: (N, dim) L2-normalised; logit_scale: scalar exp(t). Returns the mean
    cross-entropy over the (global) 2N rows. See the module docstring for gathering.
    """
    if q.shape != d.shape:
        raise ValueError(f"q and d must have the same shape, got {tuple(q.shape)} and {tuple(d.shape)}")
    if gather:
        q, d = _gather(q), _gather(d)
    n = q.shape[0]
    emb = torch.cat([q, d], dim=0).float()  # (2N, dim)
    # In fp32 even under bf16 autocast: bf16 keeps ~3 digits, so a logit of ~20 would be
    # rounded in steps of 0.125, coarser than the differences the loss must rank.
    with torch.autocast(device_type=emb.device.type, enabled=False):
        logits = logit_scale.float() * emb @ emb.T  # (2N, 2N)
    eye = torch.eye(2 * n, dtype=torch.bool, device=emb.device)
    logits = logits.masked_fill(eye, float("-inf"))  # a note is not its own candidate
    idx = torch.arange(n, device=emb.device)
    labels = torch.cat([idx + n, idx])  # q_i -> d_i, d_i -> q_i
    return F.cross_entropy(logits, labels)


def notellm2_loss(
    out_q: NoteEmbeddings,
    out_d: NoteEmbeddings,
    logit_scale: torch.Tensor,
    micl_weights: tuple[float, float] = (9.0, 1.0),
    gather: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training loss for one batch of pairs, and detached scalar tensors to log.

    Without a visual embedding (variants without mICL) it is the multimodal loss; with
    one, `(w_t * L_multimodal + w_v * L_visual) / (w_t + w_v)`.
    Logged: `loss`, `loss_multimodal`, `loss_visual` (mICL), `gate` (late fusion),
    `logit_scale`. They stay on the loss's device (no host sync per micro-batch); read
    them with `float()` when logging.
    """
    loss_m = pair_contrastive_loss(out_q.multimodal, out_d.multimodal, logit_scale, gather)
    stats = {"loss_multimodal": loss_m.detach()}
    loss = loss_m
    if out_q.visual is not None and out_d.visual is not None:
        w_t, w_v = micl_weights
        loss_v = pair_contrastive_loss(out_q.visual, out_d.visual, logit_scale, gather)
        loss = (w_t * loss_m + w_v * loss_v) / (w_t + w_v)
        stats["loss_visual"] = loss_v.detach()
    if out_q.gate is not None:
        stats["gate"] = out_q.gate.detach()
    stats["loss"] = loss.detach()
    stats["logit_scale"] = logit_scale.detach()
    return loss, stats
