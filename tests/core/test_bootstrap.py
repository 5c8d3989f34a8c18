"""Bootstrap intervals over queries: coverage on simulated data with a known value."""

from __future__ import annotations

import numpy as np
import pytest

from core.bootstrap import Bootstrap, Interval, intervals, paired_intervals, resampled_means


def test_interval_covers_a_known_recall_about_95_percent_of_the_time() -> None:
    """300 simulated test splits of 300 queries whose targets are hit with probability
    0.3: the 95% interval should hold 0.3 in about 95% of them."""
    rng = np.random.default_rng(0)
    boot = Bootstrap(resamples=500, seed=1)
    covered = 0
    for _ in range(300):
        hits = (rng.random(300) < 0.3).astype(float)
        iv = intervals({"recall@10": hits}, boot)["recall@10"]
        assert iv.low <= iv.estimate <= iv.high
        covered += iv.low <= 0.3 <= iv.high
    assert 0.91 <= covered / 300 <= 0.98


def test_paired_interval_covers_a_known_difference_and_is_narrower() -> None:
    """Two methods on the same queries: a query's difficulty u is shared; method A hits
    when u < 0.5, method B when u < 0.42, so A - B = 0.08 exactly in expectation. Most
    of the variance is shared, so the paired interval is much narrower than either
    method's own, and it excludes 0 where separate intervals overlap."""
    rng = np.random.default_rng(2)
    boot = Bootstrap(resamples=500, seed=3)
    covered, excludes, overlap = 0, 0, 0
    for _ in range(200):
        u = rng.random(400)
        a = {"recall@10": (u < 0.5).astype(float)}
        b = {"recall@10": (u < 0.42).astype(float)}
        diff = paired_intervals(a, b, boot)["recall@10"]
        ia, ib = intervals(a, boot)["recall@10"], intervals(b, boot)["recall@10"]
        assert diff.estimate == pytest.approx(ia.estimate - ib.estimate)
        assert diff.high - diff.low < 0.75 * (ia.high - ia.low)
        covered += diff.low <= 0.08 <= diff.high
        excludes += diff.excludes_zero
        overlap += ia.low <= ib.high
    assert 0.9 <= covered / 200 <= 0.99
    assert excludes / 200 > 0.95  # the paired test sees the difference ...
    assert overlap / 200 > 0.5  # ... that comparing the two separate intervals often misses


def test_deterministic_same_queries_for_every_metric_and_bounded_memory() -> None:
    values = np.random.default_rng(0).random((3, 50))
    boot = Bootstrap(resamples=64, seed=7)
    a, b = resampled_means(values, boot), resampled_means(values, boot)
    assert np.array_equal(a, b)
    # Each row is resampled with the same queries: a row that is 2x another has 2x means.
    doubled = resampled_means(np.stack([values[0], 2 * values[0]]), boot)
    np.testing.assert_allclose(doubled[1], 2 * doubled[0])
    assert not np.array_equal(a, resampled_means(values, Bootstrap(resamples=64, seed=8)))


def test_interval_helpers_and_errors() -> None:
    assert Interval(0.1, 0.02, 0.2).excludes_zero and Interval(-0.1, -0.2, -0.01).excludes_zero
    assert not Interval(0.05, -0.01, 0.1).excludes_zero
    assert Interval(0.1, 0.0, 0.2).to_dict() == {"estimate": 0.1, "low": 0.0, "high": 0.2}
    with pytest.raises(ValueError, match="same"):
        paired_intervals({"mrr": np.ones(3)}, {"mrr": np.ones(4)})
    with pytest.raises(ValueError, match="confidence"):
        Bootstrap(confidence=1.5)
    empty = intervals({"mrr": np.zeros(0)})["mrr"]
    assert np.isnan(empty.low) and np.isnan(empty.high)
