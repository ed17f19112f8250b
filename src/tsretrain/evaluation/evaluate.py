"""The ``evaluate`` stage: metrics of a prediction folder against a reference folder, with statistics.

Outputs (``OUT/``): ``per_case.csv`` (one row per case and label), ``per_label.csv``, ``summary.json``
(per-label statistics, the average Dice over all structures, the GTVp analysis, the absent-label policy).
Cases are evaluated in worker processes, one case in memory per worker.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from tsretrain.conversion.listing import write_csv
from tsretrain.evaluation.metrics import case_metrics
from tsretrain.evaluation.statistics import gtvp_analysis, label_summary
from tsretrain.labels.dictionary import load_dictionary
from tsretrain.resources import cpu_quota
from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_text
from tsretrain.ui import progress

GEOMETRY_TOL = 1e-3
POLICY = {
    "both": "reference and prediction non-empty: Dice, HD95 and NSD computed",
    "missed": "reference only: Dice 0, NSD 0, HD95 undefined (empty)",
    "false_pos": "prediction only: Dice 0, NSD 0, HD95 undefined; not in the label's mean, counted apart",
    "absent": "neither: no value; not in any mean",
}
PER_CASE_COLUMNS = [
    "case",
    "label",
    "name",
    "status",
    "dice",
    "hd95",
    "nsd",
    "ref_voxels",
    "pred_voxels",
    "tp",
    "ref_volume_ml",
]


@dataclass(frozen=True, kw_only=True)
class EvaluateConfig:
    """Configuration of the ``evaluate`` stage."""

    reference: Path
    prediction: Path
    out: Path
    dictionary: str = "radcure-oar21"
    tolerance_mm: float = 2.0
    tolerances: dict[str, float] = field(default_factory=dict)  # per label name
    workers: int = 0
    surface: bool = True  # HD95 and NSD; off: Dice only


def _read(path: Path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayViewFromImage(image).astype(np.uint8, copy=True), image


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=GEOMETRY_TOL)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=GEOMETRY_TOL)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=GEOMETRY_TOL)
    )


def evaluate_case(args: tuple[str, str, str, list[int], dict[int, float], bool]) -> list[dict[str, Any]]:
    """All label metrics of one case (run in a worker)."""
    case, reference_path, prediction_path, labels, tolerances, surface = args
    reference, ref_image = _read(Path(reference_path))
    prediction, pred_image = _read(Path(prediction_path))
    if not same_grid(ref_image, pred_image):
        raise ValueError(f"{case}: prediction and reference are not on the same grid")
    spacing = tuple(float(s) for s in reversed(ref_image.GetSpacing()))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    rows = []
    for m in case_metrics(reference, prediction, spacing, labels, tolerances, surface):  # type: ignore[arg-type]
        rows.append(
            {"case": case, **m.to_json(), "ref_volume_ml": round(m.ref_voxels * voxel_ml, 4), "voxel_ml": voxel_ml}
        )
    return rows


def evaluate(config: EvaluateConfig) -> StageResult:
    dictionary = load_dictionary(config.dictionary)
    names = {label.id: label.name for label in dictionary.labels}
    tolerances = {label.id: config.tolerances.get(label.name, config.tolerance_mm) for label in dictionary.labels}
    predictions = sorted(config.prediction.glob("*.nii.gz"))
    cases = [p.name.removesuffix(".nii.gz") for p in predictions]
    missing = [c for c in cases if not (config.reference / f"{c}.nii.gz").is_file()]
    if missing or not cases:
        raise FileNotFoundError(
            f"no reference for {missing[:5]} in {config.reference}"
            if missing
            else f"no predictions (*.nii.gz) in {config.prediction}"
        )
    jobs = [
        (c, str(config.reference / f"{c}.nii.gz"), str(p), sorted(names), tolerances, config.surface)
        for c, p in zip(cases, predictions, strict=True)
    ]
    rows: list[dict[str, Any]] = []
    workers = min(config.workers or cpu_quota(), len(jobs))
    with progress("evaluate: cases", total=len(jobs)) as advance:
        if workers <= 1:
            for job in jobs:
                rows += evaluate_case(job)
                advance(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for result in pool.map(evaluate_case, jobs):
                    rows += result
                    advance(1)
    for row in rows:
        row["name"] = names[row["label"]]
    per_label = []
    for label, name in sorted(names.items()):
        summary = label_summary([r for r in rows if r["label"] == label])
        per_label.append({"label": label, "name": name, **summary})
    means = [p["dice_mean"] for p in per_label if p["dice_mean"] is not None]
    voxel_ml = {r["case"]: r["voxel_ml"] for r in rows}
    gtvp_id = next((i for i, n in names.items() if n == "GTVp"), None)
    gtvp = gtvp_analysis([r for r in rows if r["label"] == gtvp_id], voxel_ml) if gtvp_id else {}
    summary_json: dict[str, Any] = {
        "n_cases": len(cases),
        "cases": cases,
        "dictionary": dictionary.to_json(),
        "tolerance_mm": {names[k]: v for k, v in tolerances.items()},
        "absent_label_policy": POLICY,
        "average_dice_all_structures": round(float(np.mean(means)), 6) if means else None,
        "labels": per_label,
        "gtvp": gtvp or None,
    }
    config.out.mkdir(parents=True, exist_ok=True)
    write_csv(config.out / "per_case.csv", rows, PER_CASE_COLUMNS)
    label_columns = list(per_label[0].keys())
    write_csv(config.out / "per_label.csv", per_label, label_columns)
    atomic_write_text(config.out / "summary.json", json.dumps(summary_json, indent=1, allow_nan=False))
    return StageResult(
        "evaluate",
        {"summary": str(config.out / "summary.json"), "per_case": str(config.out / "per_case.csv")},
        {
            "cases": len(cases),
            "labels": len(names),
            "gtvp_mean_dice_x1000": round(1000 * gtvp["mean"]) if gtvp.get("mean") is not None else -1,
        },
    )
