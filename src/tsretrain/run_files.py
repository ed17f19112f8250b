"""The files one stage writes and another reads, each declared once: where it lives (a run location and a name
below it), the stage writing it, and the typed record its readers get.

A writer writes a file at ``FILE.at(folder)``; a reader calls its reader here and gets a typed record (a
``TypedDict`` of the JSON's keys that tsretrain reads, or the rows of a CSV); the registry's include patterns
(what a pod fetches) are ``FILE.pattern(...)``. The README's run layout (``tsretrain.layout``) lists the locations.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

from tsretrain.labels.dictionary import TUMOUR_LABEL
from tsretrain.layout import RunLayout, relative
from tsretrain.reasons import advice
from tsretrain.storage.atomic import staged_file


@dataclass(frozen=True)
class RunFile:
    """A file of a run location: ``name`` below it may hold ``{case}``, ``{dataset}``, ``{model}`` or ``{fold}``
    (a case id, the nnU-Net dataset, a model folder ``TRAINER__PLANS__CONFIGURATION``, a fold number)."""

    location: str
    name: str
    writer: str  # the stage writing it

    def at(self, folder: Path, **names: str) -> Path:
        """The file below ``folder`` (the location's folder), placeholders filled in."""
        return folder / self.name.format(**names)

    def in_run(self, run: Path, **names: str) -> Path:
        """The file in the run folder ``run``."""
        return self.at(RunLayout(run).at(self.location), **names)

    def pattern(self, **names: str) -> str:
        """The file's name as a pattern of the location (``fnmatch``, ``*`` within one folder): the placeholders
        given filled in (``case="{case}"`` keeps the pod's own placeholder), the others ``*``."""
        return re.sub(r"\{(\w+)\}", lambda m: names.get(m[1], "*"), self.name)

    def folder(self, folder: Path) -> Path:
        """The folder below ``folder`` holding all such files (a batch file's ``batches/``)."""
        return folder / self.name.rsplit("/", 1)[0] if "/" in self.name else folder

    @property
    def basename(self) -> str:
        """Its own name (in the folder its writer fills: a case's, a fold's)."""
        return self.name.rsplit("/", 1)[-1]

    def glob(self, folder: Path, **names: str) -> list[Path]:
        """Every such file below ``folder``, sorted."""
        return sorted(folder.glob(self.pattern(**names)))

    def describe(self) -> str:
        """Where it is in a run, for messages."""
        return f"{relative(self.location)}/{self.name}"


def image_name(case_id: str) -> str:
    """A case's CT as nnU-Net names it (its one channel), in the converted cases and nnU-Net's raw dataset."""
    return f"{case_id}_0000.nii.gz"


def label_name(case_id: str) -> str:
    """A case's label map as nnU-Net names it."""
    return f"{case_id}.nii.gz"


def second_stage_trainer(trainer: str, loss: str) -> str:
    """The tumour-focused second stage's trainer of a first-stage ``trainer`` with a loss (``Focal``, ``Weighted``;
    ``*`` any), as its classes are named (``nnUNetTrainerTsrTiny`` -> ``nnUNetTrainerTsrTinyGTVpFocal``): its model
    folders sit beside the first stage's below ``nnUNet_results``."""
    return f"{trainer}{TUMOUR_LABEL}{loss}"


INVENTORY = RunFile("scan", "inventory.json", "scan")
SCAN_LISTING = RunFile("scan", "cases.csv", "scan")
BATCH = RunFile("scan", "batches/{batch}.json", "scan")  # a fan-out batch's slice of the inventory
SPLIT_BATCH = RunFile("split", "batches/{batch}.json", "split")  # a batch of test cases for the prediction
CASE_FILES = RunFile("converted", "cases/{case}/*", "convert")  # every file of a converted case
CASE_MANIFEST = RunFile("converted", "cases/{case}/manifest.json", "convert")
CASE_IMAGE = RunFile("converted", f"cases/{{case}}/{image_name('{case}')}", "convert")
CASE_LABELS = RunFile("converted", f"cases/{{case}}/{label_name('{case}')}", "convert")
CASE_LISTING = RunFile("converted", "cases.csv", "convert")  # gathered from the manifests (the listing step)
MERGE_RECORD = RunFile("pseudolabels", "{case}/pseudolabel.json", "pseudolabel")
MERGED_LABELS = RunFile("pseudolabels", f"{{case}}/{label_name('{case}')}", "pseudolabel")
SPLIT = RunFile("split", "split.json", "split")
NNUNET_SPLITS = RunFile("split", "splits_final.json", "split")
PLANNING_SUMMARY = RunFile("preprocessed", "{dataset}/planning_summary.json", "preprocess")
PROGRESS = RunFile("results", "{dataset}/{model}/fold_{fold}/progress.json", "train")
PER_CASE = RunFile("evaluation", "per_case.csv", "evaluate")
EVALUATION_SUMMARY = RunFile("evaluation", "summary.json", "evaluate")
# the post-processed test predictions evaluated alike (its per_case.csv and per_label.csv beside it)
POSTPROCESSED_SUMMARY = RunFile("evaluation", "postprocessed/summary.json", "evaluate")
REVIEW = RunFile("evaluation", "review.json", "evaluate")
DECISION = RunFile("postprocessing", "decision.json", "postprocess")
COMPARISON = RunFile("comparison", "comparison.json", "compare-stages")
COMPARISON_PER_CASE = RunFile("comparison", "per_case.csv", "compare-stages")
CONTOURS = RunFile("inference", "{case}/contours.json", "infer")
INFERENCE_LISTING = RunFile("inference", "cases.csv", "infer")
INFERENCE_RECORD = RunFile("inference", "inference.json", "infer")


# The records: the keys tsretrain reads of each JSON file (a file may hold more).


class CaseStatus(StrEnum):
    """A case's status in the listings and manifests (the same words on disk)."""

    OK = "ok"
    EXCLUDED = "excluded"  # a reason of the input's (what to do: the listing's advice)
    FAILED = "failed"  # a reason of the converter's or the machine's (crash, memory)


class ScannedCase(TypedDict, total=False):
    """A case plan of the inventory, as the report reads it."""

    case_id: str
    manufacturer: str


class DictionaryUsed(TypedDict, total=False):
    """A dictionary as a record names it (``OrganDictionary.to_json``)."""

    name: str
    version: str
    sha256: str


class Inventory(TypedDict):
    """The scan's inventory: what it scanned with which dictionary, and every case's plan."""

    input: str
    dictionary: DictionaryUsed
    cases: list[ScannedCase]


class LabelFound(TypedDict, total=False):
    present: bool
    volume_ml: float


class CaseManifest(TypedDict, total=False):
    """A converted (or excluded) case: ``convert``'s record of it."""

    case_id: str
    patient_id: str
    status: str
    reason: str
    detail: str
    advice: str
    fingerprint: str
    dictionary: DictionaryUsed
    input: dict[str, Any]
    geometry: dict[str, Any]
    labels: dict[str, LabelFound]
    outputs: dict[str, str]
    roi_names: list[str]
    mapping: dict[str, str]
    unmapped_rois: list[str]
    ignored_rois: list[str]
    missing_labels: list[str]
    warnings: list[str]
    seconds: float


class Split(TypedDict):
    """The split: test case ids, each fold's validation cases, the seed; strata and more beside."""

    test: list[str]
    folds: list[list[str]]
    seed: int


class PlannedConfiguration(TypedDict):
    spacing: list[float]
    median_image_size_in_voxels: list[float]
    patch_size: list[int]
    batch_size: int
    network: str
    features_per_stage: list[int]


class PlanningSummary(TypedDict):
    planner: str
    plans_identifier: str
    n_training_cases: int
    original_median_spacing: list[float]
    original_median_shape: list[float]
    configurations: dict[str, PlannedConfiguration]


class Progress(TypedDict, total=False):
    """A fold's training curves (nnU-Net's logger) and its environment."""

    train_losses: list[float]
    val_losses: list[float]
    pseudo_dice: list[list[float]]
    ema_fg_dice: list[float]
    epoch_seconds: list[float]
    learning_rates: list[float]
    iterations_per_epoch: int
    device: str
    device_name: str
    environment: dict[str, str]


class EvaluationSummary(TypedDict):
    """``evaluate``'s summary: per reference group and label the statistics, the tumour's analysis."""

    n_cases: int
    cases: list[str]
    missing_predictions: list[str]
    dictionary: dict[str, Any]
    tolerance_mm: dict[str, float]
    conventions: dict[str, Any]
    absent_label_policy: dict[str, str]
    reference_records: str
    average_dice_all_structures: float | None
    average_dice_all_structures_n_labels: int
    groups: dict[str, dict[str, Any]]  # per reference group: its title, averages and labels' statistics
    no_reference: list[dict[str, Any]]
    gtvp: dict[str, Any] | None
    label_sources: NotRequired[dict[str, Any]]  # with pseudo-labels: per label, cases per source
    against_raw: NotRequired[dict[str, Any]]  # post-processed predictions: the tumour paired with the raw ones


class Decision(TypedDict):
    """``postprocess``' decision: nnU-Net's choice on the validation folds and the steps behind it."""

    inputs: str  # the key of what it was decided on (a rerun with the same inputs keeps it)
    searched: bool
    model: str  # the model folder it was decided for (TRAINER__PLANS__CONFIGURATION)
    folds: list[int]
    validation_cases: int
    training_cases: int
    test_cases: int
    keep_largest_component: list[list[str]]  # each step kept: the labels whose largest component alone is kept
    labels: list[str]
    steps: list[dict[str, Any]]
    nnunetv2: str | None
    foreground_dice: NotRequired[dict[str, float | None]]  # searched: the validation Dice before and after
    dice: NotRequired[dict[str, dict[str, Any]]]
    files: NotRequired[dict[str, str]]


class Comparison(TypedDict):
    """``compare-stages``' paired comparison of the two stages on the tumour (counts per stage: first, second)."""

    n_cases: int
    n_cases_with_tumour: int
    lesions: int
    lesions_found: dict[str, int]
    false_positive_components: dict[str, int]
    paired: list[dict[str, Any]]


def read_json(file: RunFile, folder: Path, **names: str) -> Any:
    """The JSON of ``file`` below ``folder`` (missing: ``FileNotFoundError``, which a stage turns into a usage
    error naming the stage that writes it)."""
    return json.loads(file.at(folder, **names).read_text())


def read_rows(file: RunFile, folder: Path, **names: str) -> list[dict[str, str]]:
    """The rows of a CSV file of the run (a listing, metrics) as dictionaries of strings."""
    return read_csv(file.at(folder, **names))


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file written by tsretrain as dictionaries of strings."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_csv(path: Path, rows: Iterable[dict[str, Any]], columns: list[str]) -> None:
    """Write rows atomically as CSV with these columns, a row at a time; list values are joined with ' | '."""
    with staged_file(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: " | ".join(map(str, v)) if isinstance(v, list) else v for k, v in row.items()})


def all_manifests(converted: Path) -> list[CaseManifest]:
    """Every case manifest below ``converted`` (all batches of a fan-out), in case id order."""
    return [cast(CaseManifest, json.loads(path.read_text())) for path in CASE_MANIFEST.glob(converted)]


def manifest_row(manifest: CaseManifest) -> dict[str, Any]:
    """The case listing's row of a converted (or excluded) case."""
    geometry = manifest.get("geometry") or {}
    shape = geometry.get("shape_zyx", ["", "", ""])
    spacing = geometry.get("spacing_xyz", ["", "", ""])
    gtvp = (manifest.get("labels") or {}).get(TUMOUR_LABEL, LabelFound())
    return {
        "case_id": manifest["case_id"],
        "patient_id": manifest["patient_id"],
        "status": manifest["status"],
        "reason": manifest["reason"],
        "detail": manifest["detail"],
        "advice": advice(manifest["reason"]),
        "ct_series_uid": manifest["input"]["ct_series_uid"],
        "rtstruct_sop_uid": manifest["input"]["rtstruct_sop_uid"],
        "frame_of_reference_uid": manifest["input"]["frame_of_reference_uid"],
        "n_slices": shape[0],
        "rows": shape[1],
        "columns": shape[2],
        "spacing_x": spacing[0],
        "spacing_y": spacing[1],
        "spacing_z": spacing[2],
        "roi_names": manifest["roi_names"],
        "unmapped_rois": manifest["unmapped_rois"],
        "missing_labels": manifest["missing_labels"],
        "gtvp_volume_ml": gtvp.get("volume_ml", ""),
        "n_warnings": len(manifest["warnings"]),
        "warnings": manifest["warnings"],
    }


def listing_rows(converted: Path) -> list[dict[str, Any]]:
    """The case listing's rows (``cases.csv``'s, native values) from every case manifest below ``converted``."""
    return [manifest_row(m) for m in all_manifests(converted)]


def read_inventory(scan: Path) -> Inventory:
    return cast(Inventory, read_json(INVENTORY, scan))


def read_manifest(converted: Path, case: str) -> CaseManifest:
    return cast(CaseManifest, read_json(CASE_MANIFEST, converted, case=case))


def read_split(split: Path) -> Split:
    return cast(Split, read_json(SPLIT, split))


def read_planning_summary(preprocessed: Path, dataset: str) -> PlanningSummary:
    return cast(PlanningSummary, read_json(PLANNING_SUMMARY, preprocessed, dataset=dataset))


def read_progress(path: Path) -> Progress:
    """A fold's progress record (found with ``PROGRESS.glob``)."""
    return cast(Progress, json.loads(path.read_text()))


def read_evaluation_summary(evaluation: Path) -> EvaluationSummary:
    return cast(EvaluationSummary, read_json(EVALUATION_SUMMARY, evaluation))


def read_decision(postprocessing: Path) -> Decision:
    return cast(Decision, read_json(DECISION, postprocessing))


def read_comparison(comparison: Path) -> Comparison:
    return cast(Comparison, read_json(COMPARISON, comparison))
