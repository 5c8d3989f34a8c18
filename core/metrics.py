"""The reference evaluation protocol (NoteLLM-2's: greedy unique pairs, Recall@K over a pool).

Shared by training validation (`train/`) and offline evaluation (`retriever/`):

1. Order a split's pairs one way, everywhere: by (query id, rank, target id)
   (`pair_order`), so ties in rank, or a pairs file without ranks, pick the same pairs in
   every tool. Then take pairs greedily so that no note is used twice, as a query or as
   a target (`protocol_pairs`). A note used as a query is never a target, so every
   target stays in the pool.
2. The candidate pool is every note of the split that is not one of the queries,
   including split notes that have no pair (the caller passes the split's notes).
3. Rank the pool by dot product of normalised embeddings (`exact_target_ranks`, chunked
   brute force). A target tied with other pool notes has no single rank: `TiedRanks`
   keeps its best possible rank r (1 + notes scoring strictly higher) and the number g
   of other notes tied with it; under random tie-breaking its rank is uniform over
   r .. r + g.
4. Every metric is its exact expectation under that random tie-breaking, so identical
   vectors neither help nor hurt: Recall@K counts a target with probability
   clamp((K - r + 1) / (g + 1), 0, 1); MRR and NDCG@10 average 1/rank and the gain over
   the g + 1 equally likely ranks. Recall@K for K in 10, 100, 1k, 10k, 100k that fit
   the pool, plus MRR and NDCG@10. `per_query_metrics` gives each query's value (the
   unit a bootstrap resamples); `rank_metrics` their means.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

DEFAULT_KS = (10, 100, 1_000, 10_000, 100_000)
NDCG_K = 10


@dataclass(frozen=True)
class TiedRanks:
    """Where each query's target lands among the pool when ties are broken at random.

    `best[i]`: 1 + pool notes scoring strictly higher than query i's target (its best
    possible rank); `ties[i]`: other pool notes scoring exactly the same. The target's
    rank is uniform over best .. best + ties.
    """

    best: np.ndarray
    ties: np.ndarray

    @classmethod
    def untied(cls, ranks: Sequence[int] | np.ndarray) -> TiedRanks:
        """Integer ranks with no ties (e.g. positions in a served top-k list)."""
        given = np.asarray(ranks)
        best = given.astype(np.int64)
        if not np.array_equal(best, given):
            raise ValueError("untied ranks must be integers; a tie needs TiedRanks(best, ties)")
        return cls(best, np.zeros_like(best))

    def __len__(self) -> int:
        return len(self.best)

    def subset(self, rows: np.ndarray | slice) -> TiedRanks:
        """The ranks of some queries (a boolean mask or indices)."""
        return TiedRanks(self.best[rows], self.ties[rows])

    @property
    def expected(self) -> np.ndarray:
        """The expected rank under random tie-breaking: best + ties / 2."""
        return self.best + self.ties / 2.0


def _as_tied(ranks: TiedRanks | Sequence[int] | np.ndarray) -> TiedRanks:
    return ranks if isinstance(ranks, TiedRanks) else TiedRanks.untied(ranks)


def pair_order(query_ids: Sequence[str], ranks: Sequence[Any], target_ids: Sequence[str]) -> list[int]:
    """Indices of the pairs in the protocol's one order: (query id, rank, target id).

    The order is total (a pair is unique by query and target), so it does not depend on
    the file's row order or on a sort's stability.
    """
    return sorted(range(len(query_ids)), key=lambda i: (query_ids[i], ranks[i], target_ids[i]))


def protocol_pairs(
    query_ids: Sequence[str], target_ids: Sequence[str], ranks: Sequence[Any]
) -> tuple[list[str], list[str]]:
    """The evaluation's queries and targets: `greedy_unique_pairs` over `pair_order`."""
    order = pair_order(query_ids, ranks, target_ids)
    return greedy_unique_pairs([query_ids[i] for i in order], [target_ids[i] for i in order])


def greedy_unique_pairs(query_ids: Sequence[str], target_ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """Keep pairs in the given order while neither note has been used before.

    Pass pairs in `pair_order` (or use `protocol_pairs`): the first usable pair of each
    query wins. Self pairs are skipped.
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
    exclude_index: Sequence[int] | np.ndarray | None = None,
) -> TiedRanks:
    """Each query's target among the pool, by dot product, with its ties (`TiedRanks`).

    query_emb: (Q, d); pool_emb: (P, d); target_index[i] is the row of query i's target
    in pool_emb. exclude_index[i], when given, is a row of pool_emb that query i does not
    compete with (the query itself, when the pool is every note: `all_pair_ranks`).
    Works in chunks of queries so memory stays at chunk_size x P.
    """
    q = torch.as_tensor(np.asarray(query_emb, dtype=np.float32), device=device)
    p = torch.as_tensor(np.asarray(pool_emb, dtype=np.float32), device=device)
    t = torch.as_tensor(np.asarray(target_index, dtype=np.int64), device=device)
    ex = (
        None
        if exclude_index is None
        else torch.as_tensor(np.asarray(exclude_index, dtype=np.int64), device=device)
    )
    best = torch.empty(q.shape[0], dtype=torch.int64, device=q.device)
    ties = torch.empty(q.shape[0], dtype=torch.int64, device=q.device)
    for start in range(0, q.shape[0], chunk_size):
        sl = slice(start, start + chunk_size)
        scores = q[sl] @ p.T  # (chunk, P)
        if ex is not None:
            scores.scatter_(1, ex[sl, None], float("-inf"))
        target_scores = scores.gather(1, t[sl, None])  # (chunk, 1)
        best[sl] = 1 + (scores > target_scores).sum(dim=1)
        ties[sl] = (scores == target_scores).sum(dim=1) - 1
    return TiedRanks(best.cpu().numpy(), ties.cpu().numpy())


def all_pair_ranks(
    emb: np.ndarray | torch.Tensor,
    query_rows: Sequence[int] | np.ndarray,
    target_rows: Sequence[int] | np.ndarray,
    device: str | torch.device | None = None,
) -> TiedRanks:
    """Every pair's target among every other note: `emb` (N, d) holds all the notes of a
    split, and pair i ranks row target_rows[i] against the N - 1 rows that are not
    query_rows[i]. Unlike the protocol's greedy pairs, every pair counts, so a query with
    several targets is scored on each (a denser, not an independent, sample: for choosing
    a setting on val, not for reporting)."""
    e = np.asarray(emb, dtype=np.float32) if not isinstance(emb, torch.Tensor) else emb
    return exact_target_ranks(
        e[np.asarray(query_rows)], e, target_rows, device=device, exclude_index=query_rows
    )


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


def hit_probability(ranks: TiedRanks | Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """Per query, the probability that its target lands in the top k under random
    tie-breaking: clamp((k - best + 1) / (ties + 1), 0, 1). Exact and deterministic."""
    r = _as_tied(ranks)
    return np.clip((k - r.best + 1) / (r.ties + 1.0), 0.0, 1.0)


def _expected_over_ties(r: TiedRanks, cumulative: np.ndarray) -> np.ndarray:
    """Mean of a per-rank value f over ranks best .. best + ties, given cumulative[n] =
    f(1) + ... + f(n) (cumulative[0] = 0)."""
    return (cumulative[r.best + r.ties] - cumulative[r.best - 1]) / (r.ties + 1.0)


def reciprocal_rank(ranks: TiedRanks | Sequence[int] | np.ndarray) -> np.ndarray:
    """Per query, the expected 1/rank under random tie-breaking."""
    r = _as_tied(ranks)
    top = int((r.best + r.ties).max()) if len(r) else 0
    harmonic = np.r_[0.0, np.cumsum(1.0 / np.arange(1, top + 1, dtype=np.float64))]
    return _expected_over_ties(r, harmonic)


def ndcg_gain(ranks: TiedRanks | Sequence[int] | np.ndarray, k: int = NDCG_K) -> np.ndarray:
    """Per query, the expected NDCG@k with one relevant item: 1/log2(rank + 1) within the
    top k, else 0, averaged over the tied ranks."""
    r = _as_tied(ranks)
    top = int((r.best + r.ties).max()) if len(r) else 0
    pos = np.arange(1, top + 1, dtype=np.float64)
    gains = np.where(pos <= k, 1.0 / np.log2(pos + 1.0), 0.0)
    return _expected_over_ties(r, np.r_[0.0, np.cumsum(gains)])


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")


def recall_at_k(ranks: TiedRanks | Sequence[int] | np.ndarray, k: int) -> float:
    """Expected share of queries whose target ranks within the top k (ties at random)."""
    return _mean(hit_probability(ranks, k))


def mean_reciprocal_rank(ranks: TiedRanks | Sequence[int] | np.ndarray) -> float:
    """Mean of the expected 1/rank over queries."""
    return _mean(reciprocal_rank(ranks))


def ndcg_at_k(ranks: TiedRanks | Sequence[int] | np.ndarray, k: int = NDCG_K) -> float:
    """Mean expected NDCG@k with one relevant item per query."""
    return _mean(ndcg_gain(ranks, k))


def per_query_metrics(
    ranks: TiedRanks | Sequence[int] | np.ndarray, pool_size: int, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, np.ndarray]:
    """Each query's value of every protocol metric (`recall@K` for the Ks that fit the
    pool, `mrr`, `ndcg@10`): the metrics are their means, and a bootstrap resamples them."""
    out = {f"recall@{k}": hit_probability(ranks, k) for k in ks_that_fit(pool_size, ks)}
    out["mrr"] = reciprocal_rank(ranks)
    out[f"ndcg@{NDCG_K}"] = ndcg_gain(ranks, NDCG_K)
    return out


def rank_metrics(
    ranks: TiedRanks | Sequence[int] | np.ndarray, pool_size: int, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Recall@K for the Ks that fit the pool, MRR and NDCG@10, keyed `recall@10`, `mrr`, ...
    (each the mean of `per_query_metrics`), plus the `queries` and `pool` counts."""
    out = {name: _mean(v) for name, v in per_query_metrics(ranks, pool_size, ks).items()}
    out["queries"] = float(len(_as_tied(ranks)))
    out["pool"] = float(pool_size)
    return out
