"""The ``evaluate`` stage: metrics of a prediction folder against a reference folder, with statistics.

The reference folder defines the test cases: a case without a prediction is an error that names it (or, with
``missing_as_empty``, counted as missed with every label empty), and so is a prediction without a reference.
Each label of each case is tagged with where its reference came from (:mod:`tsretrain.evaluation.provenance`);
statistics are given per group: accuracy against manual contours apart from agreement with TotalSegmentator.

Outputs (``OUT/``): ``per_case.csv`` (one row per case and label), ``per_label.csv`` (one row per reference
group and label: every mean with its n, the missed and false-positive counts beside it), ``summary.json``
(the same per group, the metric conventions, the average Dice over all structures, the GTVp analysis, the
absent-label policy), ``review.json`` (the cases a report shows, :mod:`tsretrain.evaluation.review`). With
post-processed predictions (the ``postprocess`` stage's), the same files for them in ``OUT/postprocessed/``,
whose ``summary.json`` also pairs the tumour's Dice and HD95 per case with the raw predictions' (``against_raw``);
the raw predictions stay the model's result. Cases are evaluated in worker processes, one case in memory per
worker.
"""

from __future__ import annotations

import errno
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tsretrain.errors import UserError
from tsretrain.evaluation.label_maps import label_maps, read_label_map, same_grid
from tsretrain.evaluation.lesions import lesions
from tsretrain.evaluation.metrics import HD95_CONVENTION, NSD_CONVENTION, NSD_VOXELS_CONVENTION, case_metrics
from tsretrain.evaluation.provenance import TITLES, assign_groups, cohort_sources, read_sources
from tsretrain.evaluation.review import review_document
from tsretrain.evaluation.statistics import gtvp_analysis, label_summary, paired
from tsretrain.labels.dictionary import TUMOUR_LABEL, OrganDictionary, load_dictionary
from tsretrain.resources import cpu_quota
from tsretrain.run_files import (
    EVALUATION_SUMMARY,
    PER_CASE,
    POSTPROCESSED_SUMMARY,
    REVIEW,
    EvaluationSummary,
    write_csv,
)
from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_text
from tsretrain.ui import progress

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
    "reference",
    "status",
    "dice",
    "hd95",
    "nsd",
    "ref_voxels",
    "pred_voxels",
    "tp",
    "ref_volume_ml",
    "lesions",  # the tumour label only: reference components, those found, predicted components outside
    "lesions_found",
    "false_positive_components",
    "false_positive_ml",
]
DSC_AGG_CONVENTION = (
    "DSCagg (HECKTOR 2022): sum of 2|A∩B| over sum of |A|+|B| in mL, over all test cases, false positives included"
)


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
    surface: bool = True
    nsd_voxels: bool = False
    missing_as_empty: bool = False
    converted: Path | None = None
    pseudolabels: Path | None = None
    postprocessed: Path | None = None


@dataclass(frozen=True)
class CaseJob:
    """One case for a worker (``prediction`` None: no prediction, every label empty)."""

    case: str
    reference: Path
    prediction: Path | None
    labels: list[int]
    tolerances: dict[int, float]
    surface: bool
    nsd_voxels: bool
    tumour: int | None = None  # the label whose lesions are counted (connected components)


def evaluate_case(job: CaseJob) -> list[dict[str, Any]]:
    """All label metrics of one case (run in a worker)."""
    reference, ref_image = read_label_map(job.reference)
    if job.prediction is None:
        prediction = np.zeros_like(reference)
    else:
        prediction, pred_image = read_label_map(job.prediction)
        if not same_grid(ref_image, pred_image):
            raise ValueError(f"{job.case}: prediction and reference are not on the same grid")
    x, y, z = (float(s) for s in ref_image.GetSpacing())
    voxel_ml = x * y * z / 1000.0
    metrics = case_metrics(reference, prediction, (z, y, x), job.labels, job.tolerances, job.surface, job.nsd_voxels)
    rows = [
        {"case": job.case, **m.to_json(), "ref_volume_ml": round(m.ref_voxels * voxel_ml, 4), "voxel_ml": voxel_ml}
        for m in metrics
    ]
    for row in rows:
        if row["label"] == job.tumour:
            found = lesions(reference == job.tumour, prediction == job.tumour, voxel_ml).to_json()
            row |= {key: found[key] for key in ("lesions", "lesions_found", "false_positive_components")}
            row["false_positive_ml"] = round(sum(found["false_positive_ml"]), 4)
    return rows


def _cases(config: EvaluateConfig, prediction: Path) -> tuple[dict[str, Path], dict[str, Path | None]]:
    """The test cases (the reference folder's) and their predictions; a missing or extra one is an error."""
    references, predictions = label_maps(config.reference), label_maps(prediction)
    if not references:
        raise UserError(
            f"no reference label maps (*.nii.gz) in {config.reference}", "give the test set's labelsTs folder"
        )
    extra = sorted(set(predictions) - set(references))
    if extra:
        raise UserError(
            f"{len(extra)} prediction(s) without a reference in {config.reference}: {', '.join(extra)}",
            "evaluate a prediction folder of this test set only",
        )
    missing = sorted(set(references) - set(predictions))
    if missing and not config.missing_as_empty:
        raise UserError(
            f"no prediction for {len(missing)} of {len(references)} test case(s) in {prediction}: {', '.join(missing)}",
            "predict them, or count them as missed (every label empty) with --missing-as-empty",
        )
    return references, {c: predictions.get(c) for c in references}


def _label_rows(rows: list[dict[str, Any]], names: dict[int, str], metrics: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per reference group and label, groups in the report's order; labels without any reference last."""
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault((row["reference"], row["label"]), []).append(row)
    return [
        {"reference": group, "label": label, "name": name, **label_summary(grouped[(group, label)], metrics)}
        for group in (*TITLES, "")
        for label, name in sorted(names.items())
        if (group, label) in grouped
    ]


def _average(per_label: list[dict[str, Any]]) -> dict[str, Any]:
    means = [p["dice_mean"] for p in per_label if p["dice_mean"] is not None]
    return {"average_dice": round(float(np.mean(means)), 6) if means else None, "average_dice_n_labels": len(means)}


def evaluate(config: EvaluateConfig) -> StageResult:
    if config.postprocessed is not None and not config.postprocessed.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no post-processed predictions", str(config.postprocessed))
    dictionary = load_dictionary(config.dictionary)
    summary_json, rows = _evaluate(config, dictionary, config.prediction, config.out)
    atomic_write_text(EVALUATION_SUMMARY.at(config.out), json.dumps(summary_json, indent=1, allow_nan=False))
    atomic_write_text(REVIEW.at(config.out), json.dumps(review_document(rows), indent=1))
    counts = {
        "cases": summary_json["n_cases"],
        "labels": len(dictionary.labels),
        "missing_predictions": len(summary_json["missing_predictions"]),
        "gtvp_mean_dice_x1000": _permille(summary_json["gtvp"]),
    }
    outputs = {"summary": str(EVALUATION_SUMMARY.at(config.out)), "per_case": str(PER_CASE.at(config.out))}
    if config.postprocessed is not None:
        out = POSTPROCESSED_SUMMARY.folder(config.out)
        after, after_rows = _evaluate(config, dictionary, config.postprocessed, out)
        after["against_raw"] = against_raw(rows, after_rows)
        atomic_write_text(EVALUATION_SUMMARY.at(out), json.dumps(after, indent=1, allow_nan=False))
        outputs["postprocessed"] = str(EVALUATION_SUMMARY.at(out))
        counts["postprocessed_gtvp_mean_dice_x1000"] = _permille(after["gtvp"])
    return StageResult("evaluate", outputs, counts)


def _permille(gtvp: dict[str, Any] | None) -> int:
    return round(1000 * gtvp["mean"]) if gtvp and gtvp.get("mean") is not None else -1


def against_raw(raw: list[dict[str, Any]], postprocessed: list[dict[str, Any]]) -> dict[str, Any]:
    """The tumour's Dice and HD95 per test case, post-processed against raw, paired (second minus first)."""
    first = {r["case"]: r for r in raw if r["name"] == TUMOUR_LABEL}
    rows = [
        {"lesions": first[r["case"]]["lesions"]}
        | {
            f"{stage}_{metric}": row[metric]
            for stage, row in (("first", first[r["case"]]), ("second", r))
            for metric in ("dice", "hd95")
        }
        for r in postprocessed
        if r["name"] == TUMOUR_LABEL
    ]
    return {
        "label": TUMOUR_LABEL,
        "first": "raw",
        "second": "post-processed",
        "paired": [paired(rows, metric) for metric in ("dice", "hd95")],
    }


def _evaluate(
    config: EvaluateConfig, dictionary: OrganDictionary, prediction: Path, out: Path
) -> tuple[EvaluationSummary, list[dict[str, Any]]]:
    """One prediction folder's metrics: ``per_case.csv`` and ``per_label.csv`` written into ``out``; the summary
    and the per-case rows returned."""
    names = {label.id: label.name for label in dictionary.labels}
    tolerances = {label.id: config.tolerances.get(label.name, config.tolerance_mm) for label in dictionary.labels}
    references, predictions = _cases(config, prediction)
    cases = list(references)
    sources, records = read_sources(cases, list(names.values()), config.converted, config.pseudolabels)
    tumour = next((i for i, n in names.items() if n == TUMOUR_LABEL), None)
    jobs = [
        CaseJob(c, references[c], predictions[c], sorted(names), tolerances, config.surface, config.nsd_voxels, tumour)
        for c in cases
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
        row["nsd_voxel_count"] = row.pop("nsd_voxels")
    assign_groups(rows, sources)
    metrics = ("dice", "hd95", "nsd", "nsd_voxel_count") if config.nsd_voxels else ("dice", "hd95", "nsd")
    per_label = _label_rows(rows, names, metrics)
    pooled = [
        {"name": name, **label_summary([r for r in rows if r["label"] == label], ("dice",))}
        for label, name in sorted(names.items())
    ]
    voxel_ml = {r["case"]: r["voxel_ml"] for r in rows}
    gtvp = gtvp_analysis([r for r in rows if r["label"] == tumour], voxel_ml) if tumour else {}
    average = _average(pooled)
    conventions = {"hd95": HD95_CONVENTION, "nsd": NSD_CONVENTION, "dsc_agg": DSC_AGG_CONVENTION}
    if config.nsd_voxels:
        conventions["nsd_voxel_count"] = NSD_VOXELS_CONVENTION
    summary_json: EvaluationSummary = {
        "n_cases": len(cases),
        "cases": cases,
        "missing_predictions": [c for c, p in predictions.items() if p is None],
        "dictionary": dictionary.to_json(),
        "tolerance_mm": {names[k]: v for k, v in tolerances.items()},
        "conventions": conventions,
        "absent_label_policy": POLICY,
        "reference_records": records,
        "average_dice_all_structures": average["average_dice"],
        "average_dice_all_structures_n_labels": average["average_dice_n_labels"],
        "groups": {
            group: {"title": title, **_average(members), "labels": members}
            for group, title in TITLES.items()
            if (members := [p for p in per_label if p["reference"] == group])
        },
        "no_reference": [
            {"name": p["name"], "n_false_positive": p["n_false_positive"]} for p in per_label if not p["reference"]
        ],
        "gtvp": gtvp or None,
    }
    if config.pseudolabels is not None:  # where the merged maps' labels came from, over the whole cohort
        summary_json["label_sources"] = cohort_sources(config.pseudolabels, list(names.values()))
    out.mkdir(parents=True, exist_ok=True)
    columns = PER_CASE_COLUMNS + (["nsd_voxel_count"] if config.nsd_voxels else [])
    write_csv(PER_CASE.at(out), rows, columns)
    write_csv(out / "per_label.csv", per_label, list(per_label[0].keys()))
    return summary_json, rows
