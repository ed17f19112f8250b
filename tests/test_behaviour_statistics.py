"""The GTVp bootstrap intervals are percentile bootstrap intervals: checked against the bootstrap distribution
computed exactly (binomial probabilities), on data where that distribution is discrete."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import binom

from tsretrain.evaluation.statistics import gtvp_analysis

RESAMPLES = 2000  # what gtvp_analysis draws


def _analysis(dice: list[float]) -> dict[str, Any]:
    rows = [
        {"case": f"c{i}", "status": "both", "dice": d, "tp": 1, "ref_voxels": 100, "pred_voxels": 100}
        for i, d in enumerate(dice)
    ]
    return gtvp_analysis(rows, {f"c{i}": 0.001 for i in range(len(dice))})


def _margin(cdf_below: float, cdf_at: float, q: float) -> float:
    """How many Monte Carlo standard deviations the q-quantile of the resampled statistics lies inside the step
    of the exact distribution (between P(stat < v) and P(stat <= v)): the interval end is v unless the draws
    stray that far."""
    sd = np.sqrt(RESAMPLES * np.array([cdf_below * (1 - cdf_below), cdf_at * (1 - cdf_at)]))
    return float(min((q - cdf_below) * RESAMPLES / sd[0], (cdf_at - q) * RESAMPLES / sd[1]))


def test_mean_interval_is_the_percentile_bootstrap() -> None:
    """16 cases, half Dice 1, half Dice 0: a resample's mean is k/16 with k ~ Binomial(16, 1/2), so the 2.5 % and
    97.5 % percentiles of the resampled means are 4/16 and 12/16 (a 90 % interval would be 5/16 to 11/16)."""
    n = 16
    ends = []
    for q in (0.025, 0.975):
        k = int(binom.ppf(q, n, 0.5))
        assert _margin(binom.cdf(k - 1, n, 0.5), binom.cdf(k, n, 0.5), q) > 3
        ends.append(k / n)
    assert ends == [4 / 16, 12 / 16]
    result = _analysis([1.0, 0.0] * (n // 2))
    assert result["mean_ci95"] == ends
    assert result["median_ci95"] == [0.0, 1.0]


def test_median_interval_is_the_percentile_bootstrap() -> None:
    """13 distinct values x(1) < ... < x(13): a resample's median is at most x(j) when at least 7 of its 13 draws
    are, P = P(Binomial(13, j/13) >= 7); the interval ends are the order statistics where that passes 2.5 % and
    97.5 %. The mean's interval lies within the values' range, around their mean."""
    n, m = 13, 6
    values = sorted(np.random.default_rng(4).uniform(0.1, 0.9, n).round(6).tolist())

    def at_most(j: int) -> float:  # P(resampled median <= x(j)), x(0) standing for "below every value"
        return float(binom.sf(m, n, j / n))

    ends = []
    for q in (0.025, 0.975):
        j = next(j for j in range(1, n + 1) if at_most(j) >= q)
        assert _margin(at_most(j - 1), at_most(j), q) > 3
        ends.append(values[j - 1])
    assert ends == [values[3], values[9]]
    result = _analysis(values[::-1])
    assert result["median_ci95"] == ends
    low, high = result["mean_ci95"]
    assert values[0] < low < np.mean(values) < high < values[-1]
