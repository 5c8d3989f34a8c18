"""Bootstrap intervals over queries: coverage on simulated data with a known value."""

from __future__ import annotations

import numpy as np
import pytest

from core.bootstrap import (
    Bootstrap,
    Interval,
    intervals,
    paired_intervals,
    pooled_intervals,
    pooled_paired_intervals,
    replicate_interval,
    resampled_means,
    student_t_quantile,
)


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


def test_pooled_interval_covers_a_known_difference_across_replicates() -> None:
    """Four replicates, each its own queries: method A hits when a query's difficulty
    u < 0.5, B when u < 0.46, so the difference is 0.04. Pooled over the four, the paired
    interval covers 0.04 about 95% of the time and is about half as wide as one
    replicate's."""
    rng = np.random.default_rng(4)
    boot = Bootstrap(resamples=400, seed=5)
    covered, ratio = 0, []
    for _ in range(150):
        a, b = [], []
        for n in (300, 350, 320, 380):  # replicates need not have the same number of queries
            u = rng.random(n)
            a.append({"recall@10": (u < 0.5).astype(float)})
            b.append({"recall@10": (u < 0.46).astype(float)})
        pooled = pooled_paired_intervals(a, b, boot)["recall@10"]
        single = paired_intervals(a[0], b[0], boot)["recall@10"]
        means = [g["recall@10"].mean() - h["recall@10"].mean() for g, h in zip(a, b, strict=True)]
        assert pooled.estimate == pytest.approx(np.mean(means))  # equal weight per replicate
        covered += pooled.low <= 0.04 <= pooled.high
        ratio.append((pooled.high - pooled.low) / (single.high - single.low))
    assert 0.9 <= covered / 150 <= 0.99
    assert 0.4 <= float(np.median(ratio)) <= 0.6


def test_pooled_interval_of_one_replicate_is_the_plain_interval_and_errors() -> None:
    values = {"mrr": np.random.default_rng(0).random(60), "recall@10": np.ones(60)}
    boot = Bootstrap(resamples=200, seed=9)
    one, plain = pooled_intervals([values], boot), intervals(values, boot)
    for k in values:
        assert one[k].to_dict() == pytest.approx(plain[k].to_dict())
    # A metric missing from one replicate is not pooled; an empty slice is left out.
    pooled = pooled_intervals([values, {"mrr": np.zeros(0)}], boot)
    assert list(pooled) == ["mrr"] and pooled["mrr"].estimate == pytest.approx(values["mrr"].mean())
    with pytest.raises(ValueError, match="replicates"):
        pooled_paired_intervals([values], [values, values])
    with pytest.raises(ValueError, match="replicate 0"):
        pooled_paired_intervals([{"mrr": np.ones(3)}], [{"mrr": np.ones(4)}])


def test_replicate_interval_holds_the_run_to_run_variance() -> None:
    """Each replicate's difference is 0.04 plus training-run luck N(0, 0.01) that no
    query resampling sees: the query-pooled interval misses 0.04 far more than 5% of the
    time, the Student-t interval over the five replicates' means covers it about 95%."""
    rng = np.random.default_rng(6)
    boot = Bootstrap(resamples=300, seed=7)
    pooled_cover, t_cover = 0, 0
    for _ in range(150):
        a, b = [], []
        for _ in range(5):
            u = rng.random(400)
            a.append({"recall@10": (u < 0.5 + rng.normal(0, 0.01)).astype(float)})
            b.append({"recall@10": (u < 0.46).astype(float)})
        pooled = pooled_paired_intervals(a, b, boot)["recall@10"]
        t = replicate_interval(
            [g["recall@10"].mean() - h["recall@10"].mean() for g, h in zip(a, b, strict=True)]
        )
        assert t.estimate == pytest.approx(pooled.estimate)
        pooled_cover += pooled.low <= 0.04 <= pooled.high
        t_cover += t.low <= 0.04 <= t.high
    assert pooled_cover / 150 < 0.85
    assert 0.89 <= t_cover / 150 <= 0.99


def test_student_t_quantiles_match_the_tables() -> None:
    # Two-sided 95%: 12.706 (1 df), 2.776 (4), 2.228 (10), 1.984 (100); and symmetry.
    for df, q in ((1, 12.706), (4, 2.776), (10, 2.228), (100, 1.984)):
        assert student_t_quantile(0.975, df) == pytest.approx(q, abs=2e-3)
    assert student_t_quantile(0.025, 4) == pytest.approx(-student_t_quantile(0.975, 4), abs=1e-6)
    iv = replicate_interval([0.1, 0.2, 0.3])  # mean 0.2, sd 0.1, t(2) = 4.303
    assert iv.estimate == pytest.approx(0.2) and iv.high - iv.estimate == pytest.approx(
        4.303 * 0.1 / 3**0.5, abs=1e-3
    )
    with pytest.raises(ValueError, match="at least 2"):
        replicate_interval([0.1])
