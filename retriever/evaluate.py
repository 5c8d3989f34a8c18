"""Offline evaluation: the reference protocol (described in core.metrics) on a pairs split.

One harness for every method, so numbers are comparable:

- `build_eval_set(notes, pairs, truth, split_notes=...)`: greedy unique query/target
  pairs (pairs taken in the one protocol order, (query_id, rank, target_id)), pool =
  split notes minus queries, text-length slices and, with a synthetic platform's truth
  table, which factor made each pair related.
- `evaluate_embedder(embedder, ...)`: embeds the split notes once, ranks the pool by
  exact dot product (`core.metrics.exact_target_ranks`, chunked, CPU or GPU), and runs
  the same queries through a Qdrant collection (a temporary embedded Qdrant Edge
  collection of the pool, built like the production one) to report the ANN's recall
  against exact and the metrics as served.
- `evaluate_scores(score_rows, ...)`: any scorer of (queries x pool), e.g. BM25.
- Every metric carries a 95% bootstrap interval over queries (`core.bootstrap`), and
  `paired_differences(a, b, es)` gives paired intervals of a - b on the same queries.

Definitions (also written into every report):
- "split notes": every note the mined split assigned to the split (`split_notes`, from
  mine-pairs' `notes_split.parquet`), including notes with no pair in it, plus every
  note of the split's pairs; only notes in the notes table count. Without
  `split_notes` (pairs from elsewhere), the notes of the split's pairs only, which
  reads optimistic. Pairs naming a note missing from the table are dropped and counted.
- text length: characters of title + content. Short means <= `short_chars`, which
  defaults to the median text length of the split's notes (so both halves are
  populated); pass `short_chars` to fix it across datasets.
- ties: every method ranks with the shared rule (`core.metrics.TiedRanks`): a target
  tied with other pool notes counts by its expectation under random tie-breaking.
  Score baselines (BM25, image-only) produce large exact ties (a query with no matching
  word scores the whole pool 0); identical embeddings do too.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from core.bootstrap import Bootstrap, intervals, paired_intervals
from core.contracts import Embedder, Note, notes_to_dicts, text_length
from core.errors import UserError
from core.metrics import (
    DEFAULT_KS,
    TiedRanks,
    candidate_pool,
    exact_target_ranks,
    exact_top_k,
    per_query_metrics,
    protocol_pairs,
    rank_metrics,
    recall_at_k,
)
from indexer.store import HnswParams

ANN_RECALL_K = 10


@dataclass
class EvalSet:
    """The queries, their targets and the candidate pool of one split."""

    split: str
    queries: list[Note]
    targets: list[str]
    pool: list[Note]
    target_index: np.ndarray  # row of each query's target in `pool`
    slices: dict[str, np.ndarray]  # slice name -> boolean mask over queries
    short_chars: int
    dropped_pairs: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def build_eval_set(
    notes: pl.DataFrame,
    pairs: pl.DataFrame,
    truth: pl.DataFrame | None = None,
    split: str = "test",
    short_chars: int | None = None,
    max_queries: int | None = None,
    split_notes: Sequence[str] | None = None,
) -> EvalSet:
    """Greedy unique pairs, pool and slices of one split (see the module docstring).

    `split_notes`: the ids of every note of the split (the reference pool before the
    queries are taken out); None falls back to the notes of the split's pairs.
    """
    missing = [c for c in ("query_id", "target_id", "rank") if c not in pairs.columns]
    if missing:
        raise UserError(
            f"pairs of split {split!r} lack column(s) {', '.join(missing)}; "
            "expected query_id, target_id, rank"
        )
    known = set(notes["note_id"].to_list())
    pairs = pairs.with_columns(pl.col("query_id").cast(pl.Utf8), pl.col("target_id").cast(pl.Utf8))
    ok = pairs["query_id"].is_in(list(known)) & pairs["target_id"].is_in(list(known))
    dropped = int((~ok).sum())
    pairs = pairs.filter(ok)
    if pairs.is_empty():
        raise UserError(
            f"split {split!r} has no pairs whose notes are in the notes table ({dropped} dropped); "
            "check that --notes and --pairs come from the same data"
        )
    split_ids = set(pairs["query_id"].to_list()) | set(pairs["target_id"].to_list())
    in_pairs = len(split_ids)
    if split_notes is not None:
        split_ids |= known.intersection(split_notes)
    q_ids, t_ids = protocol_pairs(
        pairs["query_id"].to_list(), pairs["target_id"].to_list(), pairs["rank"].to_list()
    )
    if max_queries is not None:
        q_ids, t_ids = q_ids[:max_queries], t_ids[:max_queries]
    pool_ids = candidate_pool(split_ids, q_ids)
    by_id = {n["note_id"]: n for n in notes_to_dicts(notes.filter(pl.col("note_id").is_in(list(split_ids))))}
    pool = [by_id[i] for i in pool_ids]
    row = {nid: i for i, nid in enumerate(pool_ids)}
    queries = [by_id[i] for i in q_ids]

    lengths = np.array([text_length(by_id[i]) for i in sorted(split_ids)])
    threshold = int(np.median(lengths)) if short_chars is None else int(short_chars)
    q_len = np.array([text_length(n) for n in queries])
    t_len = np.array([text_length(by_id[t]) for t in t_ids])
    slices = {
        "query_text=short": q_len <= threshold,
        "query_text=long": q_len > threshold,
        "target_text=short": t_len <= threshold,
        "target_text=long": t_len > threshold,
    }
    if truth is not None:
        from pipeline.synth import pair_relation

        relation = np.array(pair_relation(truth, q_ids, t_ids))
        for factor in ("text", "image", "both", "none"):
            slices[f"relation={factor}"] = relation == factor
    return EvalSet(
        split=split,
        queries=queries,
        targets=t_ids,
        pool=pool,
        target_index=np.array([row[t] for t in t_ids], dtype=np.int64),
        slices=slices,
        short_chars=threshold,
        dropped_pairs=dropped,
        info={
            "split_notes": len(split_ids),
            "split_notes_without_pairs": len(split_ids) - in_pairs,
            "pool_source": "split" if split_notes is not None else "pairs",
            "pairs": pairs.height,
        },
    )


def recall_curve(ranks: TiedRanks, pool_size: int) -> dict[str, float]:
    """Recall@K on a 1-2-5 grid of K up to the pool size (for the plot)."""
    grid = [m * 10**e for e in range(7) for m in (1, 2, 5) if m * 10**e <= pool_size]
    return {str(k): recall_at_k(ranks, k) for k in grid}


def summarize_ranks(
    ranks: TiedRanks, es: EvalSet, ks: Sequence[int] = DEFAULT_KS, boot: Bootstrap | None = None
) -> dict[str, Any]:
    """Protocol metrics over all queries and per slice (slices with no query are left out),
    each with its bootstrap interval over queries, plus the recall curve behind the plot.

    `metrics` / `slices[name]`: the means; `intervals` / `slice_intervals[name]`: metric ->
    {estimate, low, high}; `per_query`: metric -> (Q,) values over all queries, kept for
    paired comparisons (`paired_differences`; reports leave it out of the JSON).
    """
    boot = boot or Bootstrap()
    per_query = per_query_metrics(ranks, len(es.pool), ks)
    out: dict[str, Any] = {
        "metrics": rank_metrics(ranks, len(es.pool), ks),
        "intervals": _interval_dicts(per_query, boot),
        "recall_curve": recall_curve(ranks, len(es.pool)),
        "slices": {},
        "slice_intervals": {},
        "per_query": per_query,
    }
    for name, mask in es.slices.items():
        if mask.any():
            out["slices"][name] = rank_metrics(ranks.subset(mask), len(es.pool), ks)
            out["slice_intervals"][name] = _interval_dicts({k: v[mask] for k, v in per_query.items()}, boot)
    return out


def _interval_dicts(values: dict[str, np.ndarray], boot: Bootstrap) -> dict[str, dict[str, float]]:
    return {k: iv.to_dict() for k, iv in intervals(values, boot).items()}


def paired_differences(
    reference: dict[str, Any], other: dict[str, Any], es: EvalSet, boot: Bootstrap | None = None
) -> dict[str, Any]:
    """reference - other, per metric, with paired bootstrap intervals (the same resampled
    queries for both), over all queries (`metrics`) and per slice (`slices`).

    Both are results of this harness on `es` (they hold `per_query`). Each value is
    {estimate, low, high}; an interval that excludes 0 is a difference the queries support.
    """
    boot = boot or Bootstrap()
    a, b = reference["per_query"], other["per_query"]
    out: dict[str, Any] = {"metrics": _paired_dicts(a, b, boot), "slices": {}}
    for name, mask in es.slices.items():
        if mask.any():
            out["slices"][name] = _paired_dicts(
                {k: v[mask] for k, v in a.items()}, {k: v[mask] for k, v in b.items()}, boot
            )
    return out


def _paired_dicts(
    a: dict[str, np.ndarray], b: dict[str, np.ndarray], boot: Bootstrap
) -> dict[str, dict[str, float]]:
    return {k: iv.to_dict() for k, iv in paired_intervals(a, b, boot).items()}


def _device(device: str | None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def evaluate_ann(
    query_emb: np.ndarray,
    pool_emb: np.ndarray,
    es: EvalSet,
    k: int = 100,
    hnsw: HnswParams | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """The same queries through a temporary Qdrant Edge collection of the pool.

    Returns recall@10 of the ANN top-10 against the exact top-10, the served metrics
    (Recall@K for the K <= k; a target beyond the k returned counts as a miss), query
    latency, and how many pool vectors sat in HNSW-indexed segments (0 means Qdrant
    answered by full scan, as it does for small collections, so recall is 1 by design).
    """
    from indexer.edge import EdgeStore
    from indexer.store import CollectionMeta, point_id

    k = min(k, len(es.pool))
    pool_pids = [point_id(n["note_id"]) for n in es.pool]
    with tempfile.TemporaryDirectory(prefix="i2i-eval-") as tmp:
        store = EdgeStore(Path(tmp) / "pool", hnsw=hnsw or HnswParams())
        store.create(CollectionMeta(model_id="eval-pool", dim=int(pool_emb.shape[1])))
        for s in range(0, len(pool_pids), 4096):
            payloads = [{"note_id": n["note_id"]} for n in es.pool[s : s + 4096]]
            store.upsert(pool_pids[s : s + 4096], pool_emb[s : s + 4096], payloads)
        store.optimize()
        indexed = store.indexed_vectors()
        t0 = time.perf_counter()
        hits = []
        for s in range(0, len(query_emb), 256):
            hits.extend(store.query_batch(query_emb[s : s + 256], k))
        seconds = time.perf_counter() - t0
        store.close()
    row = {pid: i for i, pid in enumerate(pool_pids)}
    ann_idx = [[row[h.id] for h in q] for q in hits]
    top = min(ANN_RECALL_K, k)
    exact_scores, _ = exact_top_k(query_emb, pool_emb, top, device=_device(device))
    # An ANN hit is right when it scores at least the exact top-k's last score: items
    # tied at the boundary are interchangeable (identical notes give identical vectors).
    threshold = exact_scores[:, top - 1] - 1e-5
    hits_ok = [np.sum(pool_emb[a[:top]] @ query_emb[i] >= threshold[i]) / top for i, a in enumerate(ann_idx)]
    recall = float(np.mean(hits_ok))
    ranks = TiedRanks.untied(
        [
            (a.index(t) + 1) if t in a else len(es.pool) + 1
            for a, t in zip(ann_idx, es.target_index.tolist(), strict=True)
        ]
    )
    served = summarize_ranks(ranks, es, [kk for kk in DEFAULT_KS if kk <= k])
    return {
        f"recall@{ANN_RECALL_K}_vs_exact": recall,
        "k": k,
        "indexed_vectors": indexed,
        "pool": len(es.pool),
        "queries_per_s": len(query_emb) / seconds if seconds > 0 else float("nan"),
        "served": served["metrics"],
    }


def evaluate_embedder(
    embedder: Embedder,
    eval_set: EvalSet,
    image_root: str | Path | None = None,
    *,
    name: str | None = None,
    ann: bool = True,
    ann_k: int = 100,
    hnsw: HnswParams | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 32,
    device: str | None = None,
    boot: Bootstrap | None = None,
) -> dict[str, Any]:
    """Embed the split's notes with `embedder`, rank exactly, and (ann) through Qdrant.

    Metrics come with bootstrap intervals over queries (`boot`, default 2000 resamples, 95%).
    """
    t0 = time.perf_counter()
    notes = eval_set.queries + eval_set.pool
    emb = np.asarray(embedder.embed(notes, image_root=image_root, batch_size=batch_size), dtype=np.float32)
    q, p = emb[: len(eval_set.queries)], emb[len(eval_set.queries) :]
    embed_s = time.perf_counter() - t0
    ranks = exact_target_ranks(q, p, eval_set.target_index, device=_device(device))
    result: dict[str, Any] = {
        "name": name or embedder.model_id,
        "kind": "embedding",
        "model_id": embedder.model_id,
        "dim": int(embedder.dim),
        "embed_seconds": embed_s,
        **summarize_ranks(ranks, eval_set, ks, boot),
    }
    if ann:
        result["ann"] = evaluate_ann(q, p, eval_set, k=ann_k, hnsw=hnsw, device=device)
    return result


def tie_aware_ranks(scores: np.ndarray, target_index: np.ndarray) -> TiedRanks:
    """Per row of (queries x pool) scores, the target's `TiedRanks`: 1 + items scoring
    higher, and the *other* items scoring the same."""
    t = scores[np.arange(len(scores)), target_index][:, None]
    higher = (scores > t).sum(axis=1)
    ties = (scores == t).sum(axis=1) - 1
    return TiedRanks((1 + higher).astype(np.int64), ties.astype(np.int64))


def evaluate_scores(
    score_rows: Callable[[list[int]], np.ndarray],
    eval_set: EvalSet,
    name: str,
    ks: Sequence[int] = DEFAULT_KS,
    chunk: int = 256,
    boot: Bootstrap | None = None,
) -> dict[str, Any]:
    """Evaluate any scorer: `score_rows(query_indices) -> (len, pool)` scores, higher better."""
    t0 = time.perf_counter()
    best = np.empty(len(eval_set.queries), dtype=np.int64)
    ties = np.empty(len(eval_set.queries), dtype=np.int64)
    for s in range(0, len(eval_set.queries), chunk):
        idx = list(range(s, min(s + chunk, len(eval_set.queries))))
        part = tie_aware_ranks(np.asarray(score_rows(idx)), eval_set.target_index[idx])
        best[s : s + len(idx)], ties[s : s + len(idx)] = part.best, part.ties
    ranks = TiedRanks(best, ties)
    return {
        "name": name,
        "kind": "scores",
        "score_seconds": time.perf_counter() - t0,
        **summarize_ranks(ranks, eval_set, ks, boot),
    }
