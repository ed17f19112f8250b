"""Summary statistics of per-case metrics: per label, and the GTVp analysis of the seed report and beyond."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tsretrain.dataset.split import volume_band
from tsretrain.evaluation.metrics import BOTH, FALSE_POSITIVE, MISSED

QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90)
LOW_DICE, HIGH_DICE = 0.01, 0.84


def _clean(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), 6)


def label_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean/median/std of Dice, HD95 and NSD over the cases whose reference has the label, and counts."""
    scored = [r for r in rows if r["status"] in (BOTH, MISSED)]
    out: dict[str, Any] = {
        "n_reference": len(scored),
        "n_missed": sum(r["status"] == MISSED for r in rows),
        "n_false_positive": sum(r["status"] == FALSE_POSITIVE for r in rows),
        "n_absent": sum(r["status"] == "absent" for r in rows),
    }
    for metric in ("dice", "hd95", "nsd"):
        values = np.array([r[metric] for r in scored if r[metric] is not None], dtype=float)
        out[f"{metric}_mean"] = _clean(values.mean()) if len(values) else None
        out[f"{metric}_median"] = _clean(float(np.median(values))) if len(values) else None
        out[f"{metric}_std"] = _clean(values.std(ddof=1)) if len(values) > 1 else None
        out[f"{metric}_n"] = len(values)
    return out


def bootstrap_ci(values: np.ndarray, statistic: Any, n: int = 2000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile bootstrap confidence interval of a statistic over cases."""
    rng = np.random.default_rng(seed)
    samples = rng.choice(values, size=(n, len(values)), replace=True)
    stats = np.apply_along_axis(statistic, 1, samples)
    tail = (1 - level) / 2
    return [float(np.quantile(stats, tail)), float(np.quantile(stats, 1 - tail))]


def gtvp_analysis(rows: list[dict[str, Any]], voxel_ml: dict[str, float]) -> dict[str, Any]:
    """The tumour: per-case distribution, DSCagg, detection rate, CIs, volume bands, worst and best cases."""
    scored = sorted((r for r in rows if r["status"] in (BOTH, MISSED)), key=lambda r: r["dice"])
    if not scored:
        return {"n_cases": 0}
    dice = np.array([r["dice"] for r in scored], dtype=float)
    tp = sum(r["tp"] for r in scored)
    total = sum(r["ref_voxels"] + r["pred_voxels"] for r in scored)
    bands: dict[str, list[float]] = {}
    for r in scored:
        volume = r["ref_voxels"] * voxel_ml[r["case"]]
        bands.setdefault(volume_band(volume), []).append(r["dice"])
    return {
        "n_cases": len(scored),
        "mean": _clean(dice.mean()),
        "median": _clean(float(np.median(dice))),
        "std": _clean(dice.std(ddof=1)) if len(dice) > 1 else None,
        "quantiles": {f"{int(q * 100)}%": _clean(float(np.quantile(dice, q))) for q in QUANTILES},
        "dsc_agg": _clean(2 * tp / total) if total else None,
        "detection_rate": _clean(float(np.mean([r["tp"] > 0 for r in scored]))),
        "mean_ci95": bootstrap_ci(dice, np.mean) if len(dice) > 1 else None,
        "median_ci95": bootstrap_ci(dice, np.median) if len(dice) > 1 else None,
        "by_volume_band": {
            band: {"n": len(v), "mean": _clean(float(np.mean(v))), "median": _clean(float(np.median(v)))}
            for band, v in sorted(bands.items())
        },
        "below_0.01": [{"case": r["case"], "dice": _clean(r["dice"])} for r in scored if r["dice"] < LOW_DICE],
        "above_0.84": [{"case": r["case"], "dice": _clean(r["dice"])} for r in scored[::-1] if r["dice"] > HIGH_DICE],
    }
