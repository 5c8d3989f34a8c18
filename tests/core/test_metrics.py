import numpy as np
import pytest

from core.metrics import (
    TiedRanks,
    all_pair_ranks,
    candidate_pool,
    exact_target_ranks,
    exact_top_k,
    greedy_unique_pairs,
    ks_that_fit,
    mean_reciprocal_rank,
    ndcg_at_k,
    pair_order,
    per_query_metrics,
    protocol_pairs,
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
    assert ranks.best.tolist() == [3, 1] and ranks.ties.tolist() == [0, 0]
    # a target tied with two other pool notes: best rank 1, two ties (expected rank 2)
    tied = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    r = exact_target_ranks(queries[:1], tied, [1])
    assert (r.best.tolist(), r.ties.tolist(), r.expected.tolist()) == ([1], [2], [2.0])
    scores, idx = exact_top_k(queries, pool, k=2)
    assert idx.tolist() == [[3, 0], [1, 2]]
    assert scores[0].tolist() == pytest.approx([1.0, 0.9])


def test_every_pair_ranks_its_target_among_the_other_notes_by_hand() -> None:
    """Four notes; the query itself never competes (it would always rank first)."""
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.5, 0.5], [0.0, 1.0]])
    # pair (0 -> 2): note 0 scores 1.0 .9 .5 0; without itself, only note 1 beats .5 -> rank 2
    # pair (0 -> 1): none of notes 2, 3 beats .9 -> rank 1
    # pair (3 -> 2): scores 0 .1 .5 1.0; without note 3 itself, nothing beats .5 -> rank 1
    ranks = all_pair_ranks(emb, [0, 0, 3], [2, 1, 2])
    assert ranks.best.tolist() == [2, 1, 1] and ranks.ties.tolist() == [0, 0, 0]
    # A target tied with one other note (not the query): best rank 1, one tie.
    tied = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    r = all_pair_ranks(tied, [0], [1])
    assert (r.best.tolist(), r.ties.tolist()) == ([1], [1])


def test_metric_values_by_hand() -> None:
    ranks = np.array([1, 3, 12, 150])
    assert recall_at_k(ranks, 10) == 0.5
    assert recall_at_k(ranks, 100) == 0.75
    assert mean_reciprocal_rank(ranks) == pytest.approx((1 + 1 / 3 + 1 / 12 + 1 / 150) / 4)
    assert ndcg_at_k(ranks, 10) == pytest.approx((1.0 + 1 / np.log2(4)) / 4)
    assert ks_that_fit(500) == [10, 100]
    m = rank_metrics(ranks, pool_size=1000)
    assert set(m) == {"recall@10", "recall@100", "mrr", "ndcg@10", "queries", "pool"}


def test_tie_aware_expected_recall_by_hand() -> None:
    """Three queries, K = 10:
    - q0: 8 notes score higher, its target is tied with 4 others -> ranks 9..13 equally
      likely; 2 of the 5 land in the top 10 -> P = (10 - 9 + 1) / (4 + 1) = 0.4.
    - q1: 2 higher, 1 tie -> ranks 3..4, both in the top 10 -> 1.
    - q2: 11 higher, 9 ties -> ranks 12..21, none in the top 10 -> 0 (the clamp).
    The mid-rank rule would give q0 rank 11 and count it as a miss (0 instead of 0.4)."""
    r = TiedRanks(np.array([9, 3, 12]), np.array([4, 1, 9]))
    per_query = per_query_metrics(r, pool_size=100, ks=(10,))
    assert per_query["recall@10"].tolist() == [0.4, 1.0, 0.0]
    assert recall_at_k(r, 10) == pytest.approx(1.4 / 3, abs=1e-15)
    # K = 12: q0 -> (12 - 9 + 1) / 5 = 0.8; q2 -> (12 - 12 + 1) / 10 = 0.1
    assert recall_at_k(r, 12) == pytest.approx((0.8 + 1.0 + 0.1) / 3, abs=1e-15)
    # MRR: mean of 1/rank over the equally likely ranks
    mrr_q0 = sum(1 / p for p in range(9, 14)) / 5
    mrr_q1 = (1 / 3 + 1 / 4) / 2
    mrr_q2 = sum(1 / p for p in range(12, 22)) / 10
    assert mean_reciprocal_rank(r) == pytest.approx((mrr_q0 + mrr_q1 + mrr_q2) / 3, rel=1e-12)
    # NDCG@10: q0's ranks 9 and 10 gain, 11..13 do not
    g = lambda p: 1 / np.log2(p + 1)  # noqa: E731
    want = ((g(9) + g(10)) / 5 + (g(3) + g(4)) / 2 + 0.0) / 3
    assert ndcg_at_k(r, 10) == pytest.approx(want, rel=1e-12)
    # Deterministic and exact: the same numbers as averaging every tie-breaking order.
    rng = np.random.default_rng(0)
    sampled = [np.mean((r.best + rng.integers(0, r.ties + 1)) <= 10) for _ in range(20_000)]
    assert np.mean(sampled) == pytest.approx(1.4 / 3, abs=0.01)


def test_untied_ranks_must_be_integers() -> None:
    with pytest.raises(ValueError, match="integers"):
        recall_at_k(np.array([2.5]), 10)


def test_one_stable_pair_order() -> None:
    """(query, rank, target), whatever the file order: ties in rank (or no rank column,
    read as rank 1 everywhere) are settled by the target id."""
    q = ["b", "a", "a", "a", "b"]
    t = ["x", "z", "y", "w", "c"]
    rank = [1, 1, 1, 2, 1]
    assert pair_order(q, rank, t) == [2, 1, 3, 4, 0]  # a-y, a-z (rank 1), a-w (rank 2), b-c, b-x
    for perm in ([4, 3, 2, 1, 0], [2, 0, 4, 1, 3]):
        qs, ts, rs = ([v[i] for i in perm] for v in (q, t, rank))
        assert protocol_pairs(qs, ts, rs) == (["a", "b"], ["y", "c"])
