import numpy as np
import pytest

from core.metrics import (
    candidate_pool,
    exact_target_ranks,
    exact_top_k,
    greedy_unique_pairs,
    ks_that_fit,
    mean_reciprocal_rank,
    ndcg_at_k,
    rank_metrics,
    recall_at_k,
)


def test_greedy_pairs_use_each_note_once() -> None:
    q = ["a", "a", "b", "c", "d", "e"]
    t = ["b", "c", "a", "d", "c", "e"]
    # a-b kept; a-c skips (a used); b-a skips; c-d kept; d-c skips; e-e is a self pair.
    assert greedy_unique_pairs(q, t) == (["a", "c"], ["b", "d"])


def test_pool_excludes_queries_and_is_sorted() -> None:
    assert candidate_pool(["d", "a", "b", "c", "a"], ["a", "c"]) == ["b", "d"]


def test_ranks_by_hand() -> None:
    queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    pool = np.array([[0.9, 0.1], [0.1, 0.9], [0.5, 0.5], [1.0, 0.0]])
    # q0 scores: .9 .1 .5 1.0 -> target row 2 (.5): two higher -> rank 3
    # q1 scores: .1 .9 .5 0.0 -> target row 1 (.9): none higher -> rank 1
    ranks = exact_target_ranks(queries, pool, [2, 1], chunk_size=1)
    assert ranks.tolist() == [3, 1]
    # a target tied with two other pool notes ranks at the middle of the tie group
    tied = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert exact_target_ranks(queries[:1], tied, [1]).tolist() == [2.0]
    scores, idx = exact_top_k(queries, pool, k=2)
    assert idx.tolist() == [[3, 0], [1, 2]]
    assert scores[0].tolist() == pytest.approx([1.0, 0.9])


def test_metric_values_by_hand() -> None:
    ranks = np.array([1, 3, 12, 150])
    assert recall_at_k(ranks, 10) == 0.5
    assert recall_at_k(ranks, 100) == 0.75
    assert mean_reciprocal_rank(ranks) == pytest.approx((1 + 1 / 3 + 1 / 12 + 1 / 150) / 4)
    assert ndcg_at_k(ranks, 10) == pytest.approx((1.0 + 1 / np.log2(4)) / 4)
    assert ks_that_fit(500) == [10, 100]
    m = rank_metrics(ranks, pool_size=1000)
    assert set(m) == {"recall@10", "recall@100", "mrr", "ndcg@10", "queries", "pool"}
