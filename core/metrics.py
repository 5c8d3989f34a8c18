"""The reference evaluation protocol (NOTELLM2.md, "How it is evaluated").

Shared by training validation (`train/`) and offline evaluation (`retriever/`):

1. From a split's pairs, take pairs greedily so that no note is used twice, as a query
   or as a target (`greedy_unique_pairs`). A note used as a query is never a target, so
   every target stays in the pool.
2. The candidate pool is every note of the split that is not one of the queries.
3. Rank the pool by dot product of normalised embeddings; record each target's rank
   (`exact_target_ranks`, chunked brute force, 1-based; a target tied with other pool
   notes ranks at the middle of its tie group, so identical vectors neither help nor
   hurt, the same rule the BM25 and image-only baselines use).
4. Recall@K for K in 10, 100, 1k, 10k, 100k that fit the pool, plus MRR and NDCG@10.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

DEFAULT_KS = (10, 100, 1_000, 10_000, 100_000)


def greedy_unique_pairs(query_ids: Sequence[str], target_ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """Keep pairs in the given order while neither note has been used before.

    Pass pairs ordered by preference (e.g. by query, then rank): the first usable pair
    of each query wins. Self pairs are skipped.
    """
    used: set[str] = set()
    queries: list[str] = []
    targets: list[str] = []
    for q, t in zip(query_ids, target_ids, strict=True):
        if q == t or q in used or t in used:
            continue
        used.add(q)
        used.add(t)
        queries.append(q)
        targets.append(t)
    return queries, targets


def candidate_pool(split_note_ids: Iterable[str], queries: Iterable[str]) -> list[str]:
    """Every split note that is not a query, sorted for determinism."""
    query_set = set(queries)
    return sorted({n for n in split_note_ids if n not in query_set})


def ks_that_fit(pool_size: int, ks: Sequence[int] = DEFAULT_KS) -> list[int]:
    """The K values smaller than the pool (Recall@K at K >= pool size is trivially 1)."""
    return [k for k in ks if k < pool_size]


@torch.no_grad()
def exact_target_ranks(
    query_emb: np.ndarray | torch.Tensor,
    pool_emb: np.ndarray | torch.Tensor,
    target_index: Sequence[int] | np.ndarray,
    chunk_size: int = 4096,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """1-based rank of each query's target among the pool, by dot product.

    query_emb: (Q, d); pool_emb: (P, d); target_index[i] is the row of query i's target
    in pool_emb. rank = 1 + (pool items scoring higher) + (other items scoring the
    same) / 2, so a rank can be a half. Works in chunks of queries so memory stays at
    chunk_size x P.
    """
    q = torch.as_tensor(np.asarray(query_emb, dtype=np.float32), device=device)
    p = torch.as_tensor(np.asarray(pool_emb, dtype=np.float32), device=device)
    t = torch.as_tensor(np.asarray(target_index, dtype=np.int64), device=device)
    ranks = torch.empty(q.shape[0], dtype=torch.float64, device=q.device)
    for start in range(0, q.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        scores = q[sl] @ p.T  # (chunk, P)
        target_scores = scores.gather(1, t[sl, None])  # (chunk, 1)
        higher = (scores > target_scores).sum(dim=1)
        others_tied = (scores == target_scores).sum(dim=1) - 1
        ranks[sl] = 1.0 + higher + others_tied / 2.0
    return ranks.cpu().numpy()


@torch.no_grad()
def exact_top_k(
    query_emb: np.ndarray | torch.Tensor,
    pool_emb: np.ndarray | torch.Tensor,
    k: int,
    chunk_size: int = 4096,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by dot product, chunked: returns (scores (Q, k), indices (Q, k))."""
    q = torch.as_tensor(np.asarray(query_emb, dtype=np.float32), device=device)
    p = torch.as_tensor(np.asarray(pool_emb, dtype=np.float32), device=device)
    k = min(k, p.shape[0])
    scores_out, idx_out = [], []
    for start in range(0, q.shape[0], chunk_size):
        s, i = (q[start : start + chunk_size] @ p.T).topk(k, dim=1)
        scores_out.append(s.cpu())
        idx_out.append(i.cpu())
    if not scores_out:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return torch.cat(scores_out).numpy(), torch.cat(idx_out).numpy()


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of queries whose target ranks within the top k."""
    return float(np.mean(np.asarray(ranks) <= k)) if len(ranks) else float("nan")


def mean_reciprocal_rank(ranks: np.ndarray) -> float:
    """Mean of 1/rank over queries."""
    return float(np.mean(1.0 / np.asarray(ranks, dtype=np.float64))) if len(ranks) else float("nan")


def ndcg_at_k(ranks: np.ndarray, k: int = 10) -> float:
    """NDCG@k with one relevant item per query: 1/log2(rank + 1) when rank <= k, else 0."""
    r = np.asarray(ranks, dtype=np.float64)
    if not len(r):
        return float("nan")
    gains = np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)
    return float(gains.mean())


def rank_metrics(ranks: np.ndarray, pool_size: int, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Recall@K for the Ks that fit the pool, MRR and NDCG@10, keyed `recall@10`, `mrr`, ..."""
    out = {f"recall@{k}": recall_at_k(ranks, k) for k in ks_that_fit(pool_size, ks)}
    out["mrr"] = mean_reciprocal_rank(ranks)
    out["ndcg@10"] = ndcg_at_k(ranks, 10)
    out["queries"] = float(len(ranks))
    out["pool"] = float(pool_size)
    return out
