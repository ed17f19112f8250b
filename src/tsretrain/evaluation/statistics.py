"""Summary statistics of per-case metrics: per label, and the GTVp analysis of the seed report and beyond."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tsretrain.evaluation.metrics import ABSENT, BOTH, FALSE_POSITIVE, MISSED
from tsretrain.labels.volume_bands import VOLUME_BANDS, volume_band

QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90)
LOW_DICE, HIGH_DICE = 0.01, 0.84


def _clean(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), 6)


def label_summary(rows: list[dict[str, Any]], metrics: tuple[str, ...] = ("dice", "hd95", "nsd")) -> dict[str, Any]:
    """Per metric mean (with its n beside it), median and std over the cases whose reference has the label
    (HD95 leaves out missed cases, where it is undefined); the missed, false-positive and absent counts."""
    scored = [r for r in rows if r["status"] in (BOTH, MISSED)]
    out: dict[str, Any] = {
        "n_reference": len(scored),
        "n_missed": sum(r["status"] == MISSED for r in rows),
        "n_false_positive": sum(r["status"] == FALSE_POSITIVE for r in rows),
        "n_absent": sum(r["status"] == ABSENT for r in rows),
    }
    for metric in metrics:
        values = np.array([r[metric] for r in scored if r[metric] is not None], dtype=float)
        out[f"{metric}_mean"] = _clean(values.mean()) if len(values) else None
        out[f"{metric}_n"] = len(values)
        out[f"{metric}_median"] = _clean(float(np.median(values))) if len(values) else None
        out[f"{metric}_std"] = _clean(values.std(ddof=1)) if len(values) > 1 else None
    return out


def bootstrap_ci(values: np.ndarray, statistic: Any, n: int = 2000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile bootstrap confidence interval of a statistic over cases."""
    rng = np.random.default_rng(seed)
    samples = rng.choice(values, size=(n, len(values)), replace=True)
    stats = np.apply_along_axis(statistic, 1, samples)
    tail = (1 - level) / 2
    return [float(np.quantile(stats, tail)), float(np.quantile(stats, 1 - tail))]


def dsc_agg(rows: list[dict[str, Any]], voxel_ml: dict[str, float]) -> float | None:
    """HECKTOR 2022's aggregated Dice: sum over all cases (false positives included) of 2 |A ∩ B| over the
    sum of |A| + |B|, in physical volume, so that cases of different spacing weigh by their volume in mL."""
    overlap = sum(2 * r["tp"] * voxel_ml[r["case"]] for r in rows)
    total = sum((r["ref_voxels"] + r["pred_voxels"]) * voxel_ml[r["case"]] for r in rows)
    return _clean(overlap / total) if total else None


def median_iqr(values: list[float]) -> dict[str, Any]:
    """Median and interquartile range (25 % and 75 % quantiles) with the n they are over."""
    if not values:
        return {"n": 0, "median": None, "iqr": None}
    array = np.asarray(values, dtype=float)
    quartiles = [_clean(float(np.quantile(array, q))) for q in (0.25, 0.75)]
    return {"n": len(values), "median": _clean(float(np.median(array))), "iqr": quartiles}


def lesion_detection(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Lesion-level detection over all cases: reference lesions found and missed, false-positive components and
    their volumes (rows of the tumour label carrying the lesion counts)."""
    counted = [r for r in rows if r.get("lesions") is not None]
    if not counted:
        return None
    total, found = sum(r["lesions"] for r in counted), sum(r["lesions_found"] for r in counted)
    return {
        "lesions": total,
        "found": found,
        "missed": total - found,
        "rate": _clean(found / total) if total else None,
        "false_positive_components": sum(r["false_positive_components"] for r in counted),
        "false_positive_ml": _clean(sum(r["false_positive_ml"] for r in counted)),
        "cases_with_false_positive_components": sum(r["false_positive_components"] > 0 for r in counted),
    }


def gtvp_analysis(rows: list[dict[str, Any]], voxel_ml: dict[str, float]) -> dict[str, Any]:
    """The tumour: per-case distribution over the cases with a reference (n, missed and false positives beside
    the mean), DSCagg over all cases, detection rate per case and per lesion, CIs, HD95 and NSD medians with their
    interquartile ranges, volume bands in numeric order, worst and best cases."""
    scored = sorted((r for r in rows if r["status"] in (BOTH, MISSED)), key=lambda r: r["dice"])
    if not scored:
        return {"n_cases": 0}
    dice = np.array([r["dice"] for r in scored], dtype=float)
    bands: dict[str, list[float]] = {band: [] for band in VOLUME_BANDS}
    for r in scored:
        bands[volume_band(r["ref_voxels"] * voxel_ml[r["case"]])].append(r["dice"])
    return {
        "n_cases": len(scored),
        "n_missed": sum(r["status"] == MISSED for r in rows),
        "n_false_positive": sum(r["status"] == FALSE_POSITIVE for r in rows),
        "mean": _clean(dice.mean()),
        "median": _clean(float(np.median(dice))),
        "std": _clean(dice.std(ddof=1)) if len(dice) > 1 else None,
        "quantiles": {f"{int(q * 100)}%": _clean(float(np.quantile(dice, q))) for q in QUANTILES},
        "dsc_agg": dsc_agg(rows, voxel_ml),
        "dsc_agg_n": sum(r["status"] != ABSENT for r in rows),
        "detection_rate": _clean(float(np.mean([r["tp"] > 0 for r in scored]))),
        "lesion_detection": lesion_detection(rows),
        "hd95": median_iqr([r["hd95"] for r in scored if r.get("hd95") is not None]),
        "nsd": median_iqr([r["nsd"] for r in scored if r.get("nsd") is not None]),
        "mean_ci95": bootstrap_ci(dice, np.mean) if len(dice) > 1 else None,
        "median_ci95": bootstrap_ci(dice, np.median) if len(dice) > 1 else None,
        "by_volume_band": {
            band: {"n": len(v), "mean": _clean(float(np.mean(v))), "median": _clean(float(np.median(v)))}
            for band, v in bands.items()
            if v
        },
        "below_0.01": [{"case": r["case"], "dice": _clean(r["dice"])} for r in scored if r["dice"] < LOW_DICE],
        "above_0.84": [{"case": r["case"], "dice": _clean(r["dice"])} for r in scored[::-1] if r["dice"] > HIGH_DICE],
    }


DIRECTION = {"dice": "higher", "hd95": "lower", "nsd": "higher", "lesions_found": "higher"}  # which way is better


def paired(rows: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Both stages' means over the cases where both have the metric, the mean paired difference (second minus
    first) and its 95 % bootstrap interval."""
    pairs = [
        (r[f"first_{metric}"], r[f"second_{metric}"])
        for r in rows
        if r["lesions"] and r[f"first_{metric}"] is not None and r[f"second_{metric}"] is not None
    ]
    out: dict[str, Any] = {"metric": metric, "better": DIRECTION[metric], "n_pairs": len(pairs)}
    if not pairs:
        return out | {"first_mean": None, "second_mean": None, "difference_mean": None, "difference_ci95": None}
    first, second = (np.array(v, dtype=float) for v in zip(*pairs, strict=True))
    difference = second - first
    return out | {
        "first_mean": round(float(first.mean()), 6),
        "second_mean": round(float(second.mean()), 6),
        "difference_mean": round(float(difference.mean()), 6),
        "difference_median": round(float(np.median(difference)), 6),
        "difference_ci95": [round(v, 6) for v in bootstrap_ci(difference, np.mean)] if len(pairs) > 1 else None,
        "second_better": int(np.sum(difference > 0 if DIRECTION[metric] == "higher" else difference < 0)),
        "first_better": int(np.sum(difference < 0 if DIRECTION[metric] == "higher" else difference > 0)),
    }
