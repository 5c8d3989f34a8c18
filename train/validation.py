"""Validation during training: val loss and Recall@K on the val pairs.

The protocol is the shared one (`core.metrics`, described there):
greedy unique val pairs, the pool is every val-split note that is not a query, rank
the pool by dot product, Recall@K / MRR / NDCG@10. Every val-split note is embedded
once (ranks embed contiguous shards and all-gather them), then every rank computes the
same numbers, so the best-checkpoint decision agrees across ranks without a broadcast.

Val loss is the training loss over the greedy unique pairs in batches of the training
global batch size, computed from those same embeddings (no second forward; no note is
twice in a batch, so the loss has no false negatives).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from core import metrics
from core.contracts import Note
from train.data import ImageLoader, NoteCollate, NoteDataset, PairSplit
from train.distributed import DistEnv, all_gather_rows
from train.loss import notellm2_loss
from train.model import NoteEmbeddings, NoteLLM2

# (batch on device) -> (multimodal (B, d), visual (B, d) or None), no grad, eval mode.
EmbedFn = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor | None]]
# (query parts, target parts) -> scalar loss, each part (multimodal, visual or None).
LossFn = Callable[
    [tuple[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor | None]], torch.Tensor
]


# Cap on `ValSet.all_pairs`: each pair ranks its target against every val note, so a large
# platform's val split (a million pairs over 100k notes: 1e11 scores per weight) would
# cost hours on a CPU; the cap bounds it to 20,000 scores per val note and weight.
MAX_ALL_PAIRS = 20_000


@dataclass(frozen=True)
class ValSet:
    """The val split laid out for the protocol; rows index `notes` (the embedding order)."""

    notes: list[Note]  # every note of the val split, sorted by note_id
    query_rows: np.ndarray  # (Q,) greedy unique queries
    target_rows: np.ndarray  # (Q,) their targets
    pool_rows: np.ndarray  # (P,) every split note that is not a query
    target_in_pool: np.ndarray  # (Q,) position of each target within pool_rows
    # Every distinct pair of the split, not only the greedy ones (A, 2): (query row, target
    # row), at most MAX_ALL_PAIRS of them. The late-fusion calibration scores these
    # (train.fusion_calibration).
    all_pairs: np.ndarray

    @property
    def all_pairs_pool(self) -> int:
        """How many notes each of `all_pairs`' targets competes with: every val note but the query."""
        return len(self.notes) - 1


def build_val_set(split: PairSplit, max_queries: int | None = None) -> ValSet:
    """Greedy unique pairs in the protocol's order (query id, rank, target id), as `i2i
    eval` takes them, and the pool: every note of the split (`PairSplit.note_indices`)
    that is not a query."""
    rows = split.note_indices()
    notes = sorted((split.notes[int(i)] for i in rows), key=lambda n: n["note_id"])
    ids = [n["note_id"] for n in notes]
    row_of = {nid: r for r, nid in enumerate(ids)}
    q_ids = [split.notes[int(i)]["note_id"] for i in split.query]
    t_ids = [split.notes[int(i)]["note_id"] for i in split.target]
    queries, targets = metrics.protocol_pairs(q_ids, t_ids, split.rank.tolist())
    if max_queries is not None:
        queries, targets = queries[:max_queries], targets[:max_queries]
    pool = metrics.candidate_pool(ids, queries)
    pos_in_pool = {nid: p for p, nid in enumerate(pool)}
    all_pairs = sorted({(row_of[q], row_of[t]) for q, t in zip(q_ids, t_ids, strict=True) if q != t})
    if len(all_pairs) > MAX_ALL_PAIRS:  # a fixed draw: the same on every rank and every run
        keep = np.random.default_rng(0).choice(len(all_pairs), MAX_ALL_PAIRS, replace=False)
        all_pairs = [all_pairs[i] for i in sorted(keep)]
    return ValSet(
        notes=notes,
        query_rows=np.array([row_of[q] for q in queries], dtype=np.int64),
        target_rows=np.array([row_of[t] for t in targets], dtype=np.int64),
        pool_rows=np.array([row_of[p] for p in pool], dtype=np.int64),
        target_in_pool=np.array([pos_in_pool[t] for t in targets], dtype=np.int64),
        all_pairs=np.array(all_pairs, dtype=np.int64).reshape(-1, 2),
    )


@torch.no_grad()
def embed_notes(
    notes: Sequence[Note],
    embed: EmbedFn,
    images: ImageLoader,
    note_collator: Callable[..., dict[str, torch.Tensor]],
    env: DistEnv,
    batch_size: int,
    num_workers: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Embed `notes` across ranks; every rank returns all (N, d) rows in order (+ visual)."""
    n = len(notes)
    lo, hi = env.rank * n // env.world_size, (env.rank + 1) * n // env.world_size  # contiguous shard
    loader = DataLoader(
        NoteDataset(notes[lo:hi], images),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=NoteCollate(note_collator),
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),  # keep the global RNG untouched (resume equality)
    )
    mm_parts: list[torch.Tensor] = []
    vis_parts: list[torch.Tensor] = []
    for batch, _counts in loader:
        mm, vis = embed({k: v.to(env.device, non_blocking=True) for k, v in batch.items()})
        mm_parts.append(mm.float())
        if vis is not None:
            vis_parts.append(vis.float())
    mm_local = torch.cat(mm_parts) if mm_parts else torch.empty(0, 0, device=env.device)
    vis_local = torch.cat(vis_parts) if vis_parts else None
    # Every rank must join the collective even with an empty shard: give it the right width.
    return all_gather_rows(mm_local, env), None if vis_local is None else all_gather_rows(vis_local, env)


@torch.no_grad()
def validate(
    val: ValSet,
    embed: EmbedFn,
    loss_fn: LossFn,
    images: ImageLoader,
    note_collator: Callable[..., dict[str, torch.Tensor]],
    env: DistEnv,
    ks: Sequence[int],
    loss_batch_pairs: int,
    batch_size: int,
    num_workers: int,
) -> dict[str, float]:
    """Val loss and the protocol's rank metrics (`recall@K`, `mrr`, `ndcg@10`, ...)."""
    mm, vis = embed_notes(val.notes, embed, images, note_collator, env, batch_size, num_workers)
    mm = torch.nn.functional.normalize(mm, dim=-1)  # the protocol ranks by normalised dot product
    ranks = metrics.exact_target_ranks(
        mm[val.query_rows].cpu().numpy(),
        mm[val.pool_rows].cpu().numpy(),
        val.target_in_pool,
        device=mm.device,
    )
    out = metrics.rank_metrics(ranks, pool_size=len(val.pool_rows), ks=ks)

    losses = []
    q_all, t_all = torch.as_tensor(val.query_rows), torch.as_tensor(val.target_rows)
    size = min(loss_batch_pairs, len(q_all))
    for start in range(0, len(q_all) - size + 1, size) if size >= 2 else []:
        q, t = q_all[start : start + size], t_all[start : start + size]
        part = lambda rows: (mm[rows], None if vis is None else vis[rows])  # noqa: E731
        losses.append(float(loss_fn(part(q), part(t))))
    out["val_loss"] = float(np.mean(losses)) if losses else float("nan")
    return out


def is_better(record: dict[str, float], best: dict[str, Any] | None, metric: str) -> bool:
    """Whether `record` beats `best` (a `TrainerState.best`) on `metric`.

    `val_loss` is lower-is-better, every other metric higher-is-better. When the val pool
    is too small for that recall@K to be reported, MRR decides (the pool never changes
    within a run). With nothing to compare, the first validation is the best so far.
    """
    if metric not in record and metric.startswith("recall@"):
        metric = "mrr"
    if metric not in record or math.isnan(record[metric]):
        return best is None
    if best is None:
        return True
    old = best["metrics"].get(metric, float("nan"))
    if math.isnan(old):
        return True
    return record[metric] < old if metric == "val_loss" else record[metric] > old


def model_embed_fn(model: NoteLLM2, autocast: contextlib.AbstractContextManager) -> EmbedFn:
    """`validate`'s `embed` for a NoteLLM-2 model (call it in eval mode)."""

    @torch.no_grad()
    def embed(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        with autocast:
            emb = model(batch)
        return emb.multimodal, emb.visual

    return embed


def model_loss_fn(model: NoteLLM2) -> LossFn:
    """`validate`'s `loss_fn`: the training loss on already-computed embeddings (no gather:
    every rank holds all of them)."""

    @torch.no_grad()
    def loss_fn(
        q: tuple[torch.Tensor, torch.Tensor | None], t: tuple[torch.Tensor, torch.Tensor | None]
    ) -> torch.Tensor:
        loss, _ = notellm2_loss(
            NoteEmbeddings(*q), NoteEmbeddings(*t), model.logit_scale, model.config.micl_weights, gather=False
        )
        return loss

    return loss_fn
