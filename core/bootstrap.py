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

- `pooled_intervals(groups)` / `pooled_paired_intervals(a, b)`: the same over several
  independent replicates of an experiment (each its own data, split and training run):
  the estimate is the mean of the replicates' means, and each resample draws queries
  within every replicate separately (a stratified bootstrap). Like the intervals above
  it is conditional on the trained models (it resamples queries, not training runs),
  and with R replicates it is about 1/sqrt(R) as wide.
- `replicate_interval(means)`: the Student-t interval of the mean over replicates, from
  the spread of the replicates' own means. It holds what a query bootstrap cannot: how
  much another training run and split would move the result. With few replicates it is
  wide (t at R - 1 degrees of freedom).

Resampling is deterministic: the draws depend only on `Bootstrap.seed` and the number of
queries, so every method (and both sides of a difference) sees the same resamples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

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


def _group_seed(seed: int, group: int) -> int:
    """An independent, deterministic resampling seed for replicate `group`."""
    return int(np.random.SeedSequence([seed, group]).generate_state(1)[0])


def pooled_intervals(
    groups: Sequence[Mapping[str, np.ndarray]], boot: Bootstrap | None = None
) -> dict[str, Interval]:
    """Per metric every group has, the mean of the groups' means and its stratified
    bootstrap interval: each resample draws queries within each group separately.

    `groups`: one mapping per replicate, metric name -> (Q_g,) per-query values (Q_g may
    differ between groups). A group with no queries for a metric is left out of it. With
    one group this is `intervals`.
    """
    boot = boot or Bootstrap()
    names = [k for k in (groups[0] if groups else {}) if all(k in g for g in groups)]
    out: dict[str, Interval] = {}
    for k in names:
        rows = [np.asarray(g[k], dtype=np.float64) for g in groups]
        kept = [(i, v) for i, v in enumerate(rows) if len(v)]
        if not kept:
            out[k] = Interval(float("nan"), float("nan"), float("nan"))
            continue
        seeds = [boot.seed] if len(groups) == 1 else [_group_seed(boot.seed, i) for i, _ in kept]
        means = np.mean(
            [resampled_means(v, replace(boot, seed=s))[0] for (_, v), s in zip(kept, seeds, strict=True)],
            axis=0,
        )
        estimate = float(np.mean([v.mean() for _, v in kept]))
        out[k] = _interval(estimate, means, boot.confidence)
    return out


def pooled_paired_intervals(
    a: Sequence[Mapping[str, np.ndarray]],
    b: Sequence[Mapping[str, np.ndarray]],
    boot: Bootstrap | None = None,
) -> dict[str, Interval]:
    """`pooled_intervals` of the per-query differences a - b: `a[g]` and `b[g]` are two
    methods' values on replicate g's queries, in the same order."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} and {len(b)} replicates; a paired interval needs the same")
    diffs = []
    for g, (ga, gb) in enumerate(zip(a, b, strict=True)):
        shared = [k for k in ga if k in gb]
        for k in shared:
            if len(ga[k]) != len(gb[k]):
                raise ValueError(
                    f"replicate {g}, metric {k!r}: {len(ga[k])} and {len(gb[k])} queries; "
                    "a paired interval needs the same"
                )
        diffs.append({k: np.asarray(ga[k], np.float64) - np.asarray(gb[k], np.float64) for k in shared})
    return pooled_intervals(diffs, boot)


def student_t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (numerical, to ~1e-6)."""
    if not 0.0 < p < 1.0 or df < 1:
        raise ValueError(f"student_t_quantile needs 0 < p < 1 and df >= 1, got p={p}, df={df}")
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:  # Simpson's rule on the density from 0 to x, by symmetry
        n = 2000
        grid = np.linspace(0.0, abs(x), n + 1)
        dens = np.exp(log_norm - (df + 1) / 2 * np.log1p(grid**2 / df))
        area = (abs(x) / n / 3) * (dens[0] + dens[-1] + 4 * dens[1:-1:2].sum() + 2 * dens[2:-1:2].sum())
        return 0.5 + math.copysign(area, x)

    low, high = -1.0, 1.0
    while cdf(low) > p:
        low *= 2
    while cdf(high) < p:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


def replicate_interval(means: Sequence[float], confidence: float = 0.95) -> Interval:
    """The mean of R >= 2 replicate values and its Student-t interval (R - 1 degrees of
    freedom): mean +- t * sd / sqrt(R)."""
    values = np.asarray(means, dtype=np.float64)
    if len(values) < 2:
        raise ValueError(f"a replicate interval needs at least 2 replicates, got {len(values)}")
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    half = student_t_quantile(0.5 + confidence / 2, len(values) - 1) * sd / math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half)
