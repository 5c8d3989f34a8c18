"""Bootstrap confidence intervals over queries.

A retrieval metric is a mean over queries (`core.metrics.per_query_metrics`), so its
uncertainty comes from which queries the test split happened to hold. The bootstrap
resamples the queries with replacement `resamples` times and reads the interval off the
percentiles of the resampled means (the percentile bootstrap).

- `intervals(values)`: a 95% interval for each metric's mean.
- `paired_intervals(a, b)`: the interval of mean(a) - mean(b) when a and b are two
  methods' values on the *same* queries; each resample draws one set of queries for
  both, which is the bootstrap of the per-query differences. It is much narrower than
  comparing two separate intervals, because most of the query-to-query variance is
  shared by the two methods.

Resampling is deterministic: the draws depend only on `Bootstrap.seed` and the number of
queries, so every method (and both sides of a difference) sees the same resamples.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

_BLOCK_ELEMENTS = 4_000_000  # resampled indices drawn at once (32 MB of int64)


@dataclass(frozen=True)
class Bootstrap:
    """How intervals are computed: number of resamples, confidence level, seed."""

    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.resamples < 1:
            raise ValueError(f"resamples must be >= 1, got {self.resamples}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")


@dataclass(frozen=True)
class Interval:
    """A point estimate (the mean over all queries) and its bootstrap interval."""

    estimate: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely above or entirely below zero."""
        return self.low > 0.0 or self.high < 0.0

    def to_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


def resampled_means(values: np.ndarray, boot: Bootstrap) -> np.ndarray:
    """(M, Q) per-query values of M metrics -> (M, resamples) means over resampled queries.

    Every row uses the same resampled queries. Drawn in blocks so memory stays bounded
    for any number of queries.
    """
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    n = values.shape[1]
    out = np.empty((values.shape[0], boot.resamples))
    if n == 0:
        out.fill(np.nan)
        return out
    rng = np.random.default_rng(boot.seed)
    block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, boot.resamples, block):
        stop = min(boot.resamples, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[:, start:stop] = values[:, idx].mean(axis=2)
    return out


def _interval(estimate: float, means: np.ndarray, confidence: float) -> Interval:
    if np.isnan(means).all():
        return Interval(estimate, float("nan"), float("nan"))
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return Interval(float(estimate), float(low), float(high))


def intervals(values: Mapping[str, np.ndarray], boot: Bootstrap | None = None) -> dict[str, Interval]:
    """Per metric, the mean over queries and its bootstrap interval.

    `values`: metric name -> (Q,) per-query values, every array over the same queries.
    """
    boot = boot or Bootstrap()
    names = list(values)
    if not names:
        return {}
    matrix = np.stack([np.asarray(values[k], dtype=np.float64) for k in names])
    means = resampled_means(matrix, boot)
    est = matrix.mean(axis=1) if matrix.shape[1] else np.full(len(names), np.nan)
    return {k: _interval(float(est[i]), means[i], boot.confidence) for i, k in enumerate(names)}


def paired_intervals(
    a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], boot: Bootstrap | None = None
) -> dict[str, Interval]:
    """Per metric both have, the interval of mean(a) - mean(b) over the same resampled queries.

    `a[k]` and `b[k]` must hold the two methods' values on the same queries, in the same order.
    """
    shared = [k for k in a if k in b]
    for k in shared:
        if len(a[k]) != len(b[k]):
            raise ValueError(
                f"metric {k!r}: {len(a[k])} and {len(b[k])} queries; a paired interval needs the same"
            )
    return intervals({k: np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64) for k in shared}, boot)
