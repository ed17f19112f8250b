"""The ``compare-stages`` stage: the first stage's and the tumour-focused second stage's predictions of the tumour
(the dictionary's GTVp), per test case and paired.

Per case: the reference volume, and for each stage Dice, HD95, NSD and the lesions found (connected components,
:mod:`tsretrain.evaluation.lesions`). Per metric: the pairs where both stages have a value (HD95 is undefined for
a missed tumour), each stage's mean, the mean paired difference (second minus first) and its 95 % percentile
bootstrap interval over cases. Outputs (``OUT/``): ``per_case.csv`` and ``comparison.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tsretrain.errors import UserError
from tsretrain.evaluation.label_maps import label_maps, read_label_map, same_grid
from tsretrain.evaluation.lesions import lesions
from tsretrain.evaluation.metrics import case_metrics
from tsretrain.evaluation.statistics import paired
from tsretrain.labels.dictionary import TUMOUR_LABEL, load_dictionary
from tsretrain.run_files import COMPARISON, COMPARISON_PER_CASE, write_csv
from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_text
from tsretrain.ui import progress

STAGES = ("first", "second")
METRICS = ("dice", "hd95", "nsd", "lesions_found")


@dataclass(frozen=True, kw_only=True)
class CompareConfig:
    """Configuration of the ``compare-stages`` stage."""

    reference: Path
    first: Path
    second: Path
    out: Path
    dictionary: str = "radcure-oar21"
    tolerance_mm: float = 2.0


def _predictions(folder: Path, cases: list[str], stage: str) -> dict[str, Path]:
    found = label_maps(folder)
    missing = [c for c in cases if c not in found]
    if missing:
        raise UserError(
            f"the {stage} stage has no prediction for {len(missing)} test case(s) in {folder}: {', '.join(missing)}",
            f"run the {stage} stage's prediction first",
        )
    return found


def case_row(case: str, reference: Path, first: Path, second: Path, label: int, tolerance: float) -> dict[str, Any]:
    """One test case: the tumour's reference volume, and each stage's metrics and lesions."""
    ref, image = read_label_map(reference)
    x, y, z = (float(s) for s in image.GetSpacing())
    voxel_ml = x * y * z / 1000.0
    row: dict[str, Any] = {"case": case, "ref_volume_ml": round(int(np.count_nonzero(ref == label)) * voxel_ml, 4)}
    for stage, path in zip(STAGES, (first, second), strict=True):
        pred, pred_image = read_label_map(path)
        if not same_grid(image, pred_image):
            raise UserError(f"{case}: the {stage} stage's prediction is not on the reference's grid ({path})")
        (metrics,) = case_metrics(ref, pred, (z, y, x), [label], tolerance)
        found = lesions(ref == label, pred == label, voxel_ml)
        row |= {
            f"{stage}_status": metrics.status,
            f"{stage}_dice": None if metrics.status == "absent" else round(metrics.dice, 6),
            f"{stage}_hd95": metrics.to_json()["hd95"],
            f"{stage}_nsd": metrics.to_json()["nsd"],
            f"{stage}_lesions_found": found.found,
            f"{stage}_false_positive_components": len(found.false_positive_ml),
            "lesions": found.reference,
        }
    return row


def compare(config: CompareConfig) -> StageResult:
    dictionary = load_dictionary(config.dictionary)
    label = next((item.id for item in dictionary.labels if item.name == TUMOUR_LABEL), None)
    if label is None:
        raise UserError(f"dictionary {dictionary.name} has no {TUMOUR_LABEL} label", "compare runs with a tumour label")
    references = label_maps(config.reference)
    if not references:
        raise UserError(f"no reference label maps (*.nii.gz) in {config.reference}", "give the test set's labelsTs")
    cases = list(references)
    first = _predictions(config.first, cases, "first")
    second = _predictions(config.second, cases, "second")
    rows = []
    with progress("compare-stages: cases", total=len(cases)) as advance:
        for case in cases:
            rows.append(case_row(case, references[case], first[case], second[case], label, config.tolerance_mm))
            advance(1)
    with_tumour = [r for r in rows if r["lesions"]]
    fp = {stage: sum(r[f"{stage}_false_positive_components"] for r in rows) for stage in STAGES}
    document = {
        "label": TUMOUR_LABEL,
        "n_cases": len(rows),
        "n_cases_with_tumour": len(with_tumour),
        "lesions": sum(r["lesions"] for r in rows),
        "lesions_found": {stage: sum(r[f"{stage}_lesions_found"] for r in rows) for stage in STAGES},
        "false_positive_components": fp,
        "tolerance_mm": config.tolerance_mm,
        "paired": [paired(rows, metric) for metric in METRICS],
        "first": str(config.first),
        "second": str(config.second),
    }
    config.out.mkdir(parents=True, exist_ok=True)
    write_csv(COMPARISON_PER_CASE.at(config.out), rows, list(rows[0]))
    atomic_write_text(COMPARISON.at(config.out), json.dumps(document, indent=1, allow_nan=False))
    difference = document["paired"][0]["difference_mean"]
    return StageResult(
        "compare-stages",
        {"comparison": str(COMPARISON.at(config.out)), "per_case": str(COMPARISON_PER_CASE.at(config.out))},
        {
            "cases": len(rows),
            "lesions": document["lesions"],
            "dice_difference_x1000": round(1000 * difference) if difference is not None else 0,
        },
    )
