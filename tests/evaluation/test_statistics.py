"""The GTVp bootstrap intervals are percentile bootstrap intervals: checked against the bootstrap distribution
computed exactly (binomial probabilities), on data where that distribution is discrete. Every field of the
per-label summary and of the GTVp analysis, computed by hand."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
import pytest
from scipy.stats import binom

from tsretrain.evaluation.statistics import dsc_agg, gtvp_analysis, label_summary

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


def _row(case: str, status: str, dice: float | None, tp: int, ref: int, pred: int) -> dict[str, Any]:
    return {"case": case, "status": status, "dice": dice, "tp": tp, "ref_voxels": ref, "pred_voxels": pred}


@pytest.mark.filterwarnings("error")  # no mean, median or std of too few values is ever taken
def test_label_summary_by_hand() -> None:
    rows = [
        {"status": "both", "dice": 0.8, "hd95": 2.0, "nsd": 0.9},
        {"status": "both", "dice": 0.6, "hd95": 4.5, "nsd": 0.7},
        {"status": "missed", "dice": 0.0, "hd95": None, "nsd": 0.0},
        {"status": "false_pos", "dice": 0.0, "hd95": None, "nsd": 0.0},
        {"status": "absent", "dice": None, "hd95": None, "nsd": None},
    ]
    expected: dict[str, Any] = {"n_reference": 3, "n_missed": 1, "n_false_positive": 1, "n_absent": 1}
    for metric, values in (("dice", [0.8, 0.6, 0.0]), ("hd95", [2.0, 4.5]), ("nsd", [0.9, 0.7, 0.0])):
        expected[f"{metric}_mean"] = round(statistics.mean(values), 6)
        expected[f"{metric}_n"] = len(values)
        expected[f"{metric}_median"] = round(statistics.median(values), 6)
        expected[f"{metric}_std"] = round(statistics.stdev(values), 6)
    assert label_summary(rows) == expected
    assert expected["dice_mean"] == 0.466667  # rounded to 6 digits
    one = label_summary([rows[2]])
    assert (one["dice_n"], one["dice_mean"], one["dice_median"], one["dice_std"]) == (1, 0.0, 0.0, None)
    assert (one["hd95_n"], one["hd95_mean"], one["hd95_median"], one["hd95_std"]) == (0, None, None, None)


@pytest.mark.filterwarnings("error")
def test_gtvp_analysis_by_hand() -> None:
    """Every field: cases exactly at 0.01 and 0.84 are in neither list, the best case comes first, a one-voxel
    overlap counts as detected, the false positive counts in DSCagg only, the absent case nowhere."""
    rows = [
        _row("big", "both", 0.9, 4500, 5000, 5000),  # 5 mL
        _row("edge-high", "both", 0.84, 84, 100, 100),
        _row("edge-low", "both", 0.01, 1, 100, 100),
        _row("missed", "missed", 0.0, 0, 100, 0),
        _row("false-positive", "false_pos", 0.0, 0, 0, 50),
        _row("absent", "absent", None, 0, 0, 0),
        _row("best", "both", 0.95, 95, 100, 100),
    ]
    hd95 = {"big": 2.0, "edge-high": 3.0, "edge-low": 40.0, "best": 1.0}  # the missed case has none
    for row in rows:
        row |= {"hd95": hd95.get(row["case"]), "nsd": 0.5 if row["case"] in hd95 or row["case"] == "missed" else None}
        row |= {"lesions": 1 if row["status"] in ("both", "missed") else 0, "false_positive_ml": 0.0}
        row |= {"lesions_found": int(row["status"] == "both"), "false_positive_components": 0}
    rows[0] |= {"lesions": 2, "false_positive_components": 2, "false_positive_ml": 0.25}  # a second primary, missed
    rows[4] |= {"false_positive_components": 1, "false_positive_ml": 0.05}
    result = gtvp_analysis(rows, {r["case"]: 0.001 for r in rows})
    dice = [0.0, 0.01, 0.84, 0.9, 0.95]
    deciles, quartiles = (
        statistics.quantiles(dice, n=10, method="inclusive"),
        statistics.quantiles(dice, n=4, method="inclusive"),
    )
    low, high = result.pop("mean_ci95")
    assert low < 0.54 < high and len(result.pop("median_ci95")) == 2
    assert result == {
        "n_cases": 5,
        "n_missed": 1,
        "n_false_positive": 1,
        "mean": 0.54,
        "median": 0.84,
        "std": round(statistics.stdev(dice), 6),
        "quantiles": {
            "10%": round(deciles[0], 6),
            "25%": round(quartiles[0], 6),
            "50%": 0.84,
            "75%": round(quartiles[2], 6),
            "90%": round(deciles[8], 6),
        },
        "dsc_agg": round(2 * (4500 + 84 + 1 + 95) / (10000 + 200 + 200 + 100 + 50 + 200), 6),
        "dsc_agg_n": 6,
        "detection_rate": 0.8,  # per case; per lesion 4 of 6: the big case's second primary and the missed case
        "lesion_detection": {
            "lesions": 6,
            "found": 4,
            "missed": 2,
            "rate": round(4 / 6, 6),
            "false_positive_components": 3,
            "false_positive_ml": 0.3,
            "cases_with_false_positive_components": 2,
        },
        "hd95": {"n": 4, "median": 2.5, "iqr": [1.75, 12.25]},  # the four found cases, linear quartiles
        "nsd": {"n": 5, "median": 0.5, "iqr": [0.5, 0.5]},
        "by_volume_band": {
            "GTVp 0-3 mL": {"n": 4, "mean": 0.45, "median": 0.425},
            "GTVp 3-10 mL": {"n": 1, "mean": 0.9, "median": 0.9},
        },
        "below_0.01": [{"case": "missed", "dice": 0.0}],
        "above_0.84": [{"case": "best", "dice": 0.95}, {"case": "big", "dice": 0.9}],
    }


@pytest.mark.filterwarnings("error")
def test_gtvp_analysis_of_few_cases() -> None:
    """No spread or interval from one case, both from two; nothing but the count without a case; the same
    intervals on every run."""
    assert gtvp_analysis([_row("a", "false_pos", 0.0, 0, 0, 9)], {"a": 0.001}) == {"n_cases": 0}
    one = gtvp_analysis([_row("a", "both", 0.5, 50, 100, 100)], {"a": 0.001})
    assert (one["std"], one["mean_ci95"], one["median_ci95"]) == (None, None, None)
    two = [_row("a", "both", 0.5, 50, 100, 100), _row("b", "both", 0.7, 70, 100, 100)]
    first, again = gtvp_analysis(two, {"a": 0.001, "b": 0.001}), gtvp_analysis(two, {"a": 0.001, "b": 0.001})
    assert first["std"] == round(statistics.stdev([0.5, 0.7]), 6)
    assert first["mean_ci95"] == again["mean_ci95"] and first["median_ci95"] == again["median_ci95"]
    assert first["mean_ci95"] == first["median_ci95"] == [0.5, 0.7]
    spread = [_row(f"c{n}", "both", 0.05 + 0.07 * n, 1, 100, 100) for n in range(13)]
    volumes = {r["case"]: 0.001 for r in spread}
    assert gtvp_analysis(spread, volumes)["mean_ci95"] == gtvp_analysis(spread[::-1], volumes)["mean_ci95"]
    assert dsc_agg([], {}) is None
