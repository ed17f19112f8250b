"""The ``infer`` stage: a model package on new DICOM, contours out as RTSTRUCT, DICOM-SEG and NIfTI.

Discovery is the scan's (headers, not folder names: any layout, messy trees). Every CT series of every patient
is predicted; a patient or series that cannot be is listed with its reason and advice, and the rest go on.
Outputs, per patient and series: ``OUT/CASE/SERIES/rtstruct.dcm``, ``seg.dcm``, ``labels.nii.gz``; per patient
``OUT/CASE/contours.json`` (its rows of the listing); gathered from those, the listing ``OUT/cases.csv`` (one row
per CT series, or per patient without one) and ``OUT/inference.json``. Each file is written atomically; a re-run
redoes every series. On a cluster each batch's pod stages its patients' files (the scan's inventory slice) and
publishes its cases' folders; a last step gathers the listing (``tsretrain infer-listing``).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from tsretrain.conversion.convert import stage_inputs
from tsretrain.conversion.ct import read_hu_volume
from tsretrain.conversion.geometry import VolumeGeometry, build_geometry
from tsretrain.conversion.headers import FileRecord, RecordKind
from tsretrain.conversion.nifti import write_nifti
from tsretrain.conversion.plan import CasePlan, load_inventory
from tsretrain.conversion.scan import case_id_for, check_input_folder, read_records
from tsretrain.delivery.package import Package
from tsretrain.delivery.rtstruct_writer import write_rtstruct
from tsretrain.delivery.seg_writer import write_seg
from tsretrain.delivery.source import SourceSeries, Written
from tsretrain.errors import UserError
from tsretrain.reasons import CaseError, Reason, advice
from tsretrain.resources import Device, cpu_quota
from tsretrain.run_files import CONTOURS, INFERENCE_LISTING, INFERENCE_RECORD, CaseStatus, read_split, write_csv
from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_text, staged_dir
from tsretrain.training.nnunet_env import torch_device
from tsretrain.training.postprocessing_steps import apply_to_folder
from tsretrain.training.precision import Precision
from tsretrain.training.predict import load_predictor, predict_images
from tsretrain.ui import log, progress

FORMATS = ("rtstruct", "seg", "nifti")
LISTING_COLUMNS = [
    *("case_id", "patient_id", "series", "series_uid", "series_description", "status", "reason", "detail"),
    *("advice", "structures", "empty_structures", "files", "seconds"),
]


@dataclass(frozen=True, kw_only=True)
class InferConfig:
    """Configuration of the ``infer`` stage."""

    input: Path
    model: Path | str
    out: Path
    formats: tuple[str, ...] = FORMATS
    device: Device = "auto"
    precision: Precision = "auto"
    folds: tuple[int, ...] = ()
    step_size: float = 0.5
    cases: tuple[str, ...] = ()
    split: Path | None = None
    limit: int = 0
    workers: int = 0
    postprocess: bool = True
    inventory: Path | None = None
    source: str = ""


@dataclass
class SeriesJob:
    """One CT series to predict (or the reason it cannot be)."""

    case_id: str
    patient_id: str
    series: str  # its folder below the case: series-<n>
    series_uid: str = ""
    description: str = ""
    files: list[str] = field(default_factory=list)  # in volume order
    sop_uids: list[str] = field(default_factory=list)
    geometry: VolumeGeometry | None = None
    status: CaseStatus = CaseStatus.OK
    reason: str = ""
    detail: str = ""
    written: dict[str, str] = field(default_factory=dict)
    structures: tuple[str, ...] = ()
    empty: tuple[str, ...] = ()
    seconds: float = 0.0

    def fail(self, reason: Reason, detail: str, status: CaseStatus = CaseStatus.EXCLUDED) -> None:
        self.status, self.reason, self.detail = status, reason.value, detail

    def row(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "patient_id": self.patient_id,
            "series": self.series,
            "series_uid": self.series_uid,
            "series_description": self.description,
            "status": self.status,
            "reason": self.reason,
            "detail": self.detail,
            "advice": advice(self.reason) if self.reason else "",
            "structures": " | ".join(self.structures),
            "empty_structures": " | ".join(self.empty),
            "files": " | ".join(f"{k}={v}" for k, v in self.written.items()),
            "seconds": round(self.seconds, 2),
        }


def _series_of_patient(case_id: str, patient_id: str, records: list[FileRecord]) -> list[SeriesJob]:
    """A patient's CT series, each checked to form one regular volume; a patient without one is one row."""
    cts: dict[str, list[FileRecord]] = defaultdict(list)
    unusable: dict[str, list[FileRecord]] = defaultdict(list)
    for record in records:
        if record.kind == RecordKind.CT:
            cts[record.series_uid].append(record)
        elif record.kind == RecordKind.UNUSABLE:
            unusable[record.series_uid].append(record)
    jobs = []
    order = sorted(cts, key=lambda uid: (_number(cts[uid][0].series_number), uid))
    for n, uid in enumerate(order, start=1):
        chosen = cts[uid]
        job = SeriesJob(case_id, patient_id, f"series-{n}", uid, chosen[0].series_description)
        try:
            geometry, ordered = build_geometry([r.slice for r in chosen if r.slice is not None])
            job.geometry, job.files, job.sop_uids = (
                geometry,
                [s.path for s in ordered],
                [s.sop_instance_uid for s in ordered],
            )
        except CaseError as exc:
            job.fail(exc.reason, exc.detail)
        if any(r.truncated for r in chosen):
            job.fail(Reason.UNREADABLE_DICOM, f"{sum(r.truncated for r in chosen)} CT file(s) truncated")
        jobs.append(job)
    for uid, recs in unusable.items():
        job = SeriesJob(case_id, patient_id, "", uid, recs[0].series_description)
        job.fail(Reason(recs[0].problem or Reason.UNSUPPORTED_CT.value), f"{len(recs)} file(s): {recs[0].why_ignored}")
        jobs.append(job)
    if not jobs:
        job = SeriesJob(case_id, patient_id, "")
        unreadable = [r.path for r in records if r.kind == RecordKind.UNREADABLE]
        if unreadable:
            job.fail(Reason.UNREADABLE_DICOM, f"{len(unreadable)} unreadable file(s), e.g. {unreadable[0]}")
        else:
            job.fail(Reason.NO_CT, "no CT images among the patient's files")
        jobs.append(job)
    return jobs


def _number(series_number: str) -> float:
    try:
        return float(series_number)
    except ValueError:
        return float("inf")


def discover(config: InferConfig, plans: list[CasePlan] | None = None) -> list[SeriesJob]:
    """Every patient of the input (by PatientID), as CT series to predict or rows with their reason; with the
    scan's plans, only their patients, under the case ids the scan gave them."""
    records = read_records(config.input, config.workers or cpu_quota())
    by_patient: dict[str, list[FileRecord]] = defaultdict(list)
    for record in records:
        if record.kind not in (RecordKind.IGNORED, RecordKind.SKIPPED):
            by_patient[record.patient_id].append(record)
    wanted = set(config.cases)
    if config.split is not None:
        wanted |= set(read_split(config.split)["test"])
    scanned = {plan.patient_id: plan.case_id for plan in plans or []}
    taken: set[str] = set(scanned.values())
    jobs: list[SeriesJob] = []
    patients = 0
    for patient_id in sorted(by_patient):
        if plans is not None and patient_id not in scanned:
            continue
        case_id = scanned.get(patient_id) or case_id_for(patient_id or "no-patient-id", taken)
        if (wanted and case_id not in wanted) or (config.limit and patients >= config.limit):
            continue
        patients += 1
        if not patient_id:
            job = SeriesJob(case_id, "", "")
            job.fail(Reason.MISSING_UIDS, f"{len(by_patient[patient_id])} file(s) without PatientID")
            jobs.append(job)
            continue
        jobs.extend(_series_of_patient(case_id, patient_id, by_patient[patient_id]))
    return jobs


def _planned(config: InferConfig) -> list[CasePlan] | None:
    """The scan's plans of the batch (staged from the store first with ``source``); None without an inventory."""
    if config.inventory is None:
        return None
    if not config.inventory.is_file():
        raise UserError(f"inventory {config.inventory} does not exist", "run tsretrain scan first, or leave it out")
    plans = load_inventory(config.inventory)[1]
    if config.cases:
        plans = [plan for plan in plans if plan.case_id in set(config.cases)]
    if config.source:
        config.input.mkdir(parents=True, exist_ok=True)
        stage_inputs(config.source, plans, config.input, every_series=True)
    return plans


def _write(job: SeriesJob, labels: np.ndarray, source: SourceSeries, package: Package, config: InferConfig) -> None:
    folder = config.out / job.case_id / job.series
    with staged_dir(folder) as tmp:
        written: list[Written] = []
        if "rtstruct" in config.formats:
            written.append(write_rtstruct(labels, source, package.dictionary, package.algorithm, tmp / "rtstruct.dcm"))
        if "seg" in config.formats and labels.any():  # a SEG holds at least one segment
            written.append(write_seg(labels, source, package.dictionary, package.algorithm, tmp / "seg.dcm"))
        if "nifti" in config.formats:
            write_nifti(labels, source.geometry, tmp / "labels.nii.gz")
    job.written = {
        path.name.split(".")[0]: f"{job.case_id}/{job.series}/{path.name}" for path in sorted(folder.iterdir())
    }
    job.structures = written[0].structures if written else ()
    job.empty = written[0].empty if written else ()


def infer(config: InferConfig) -> StageResult:
    unknown = sorted(set(config.formats) - set(FORMATS))
    if unknown or not config.formats:
        raise UserError(f"--format {','.join(config.formats)}: choose from {', '.join(FORMATS)}")
    device = torch_device(config.device, config.precision)
    plans = _planned(config)
    check_input_folder(str(config.input))
    config.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".infer-", dir=config.out) as scratch_name:
        scratch = Path(scratch_name)
        package = Package.open(config.model, scratch)
        problems = package.dictionary.structure_id_problems()
        if problems:
            raise UserError(f"{config.model}: its dictionary cannot name structures: {'; '.join(problems)}")
        folds = config.folds or tuple(int(f) for f in package.card["folds"])
        jobs = discover(config, plans)
        if not jobs:
            chosen = " among the chosen patients" if config.cases or config.split or plans is not None else ""
            raise UserError(f"no DICOM patient in {config.input}{chosen}", "give the folder of the new patients' DICOM")
        images, predictions = scratch / "images", scratch / "predictions"
        images.mkdir()
        for job in jobs:
            if job.status == CaseStatus.OK:
                _stage_image(job, config.input, images)
        usable = [job for job in jobs if job.status == CaseStatus.OK]
        log.info("infer: %d CT series of %d patient(s) to predict", len(usable), len({j.case_id for j in jobs}))
        predictor = load_predictor(package.model_folder, folds, device, config.step_size) if usable else None
        predict_images(
            predictor,
            device,
            [images / f"{_key(job)}_0000.nii.gz" for job in usable],
            [predictions / _key(job) for job in usable],
        )
        steps = package.postprocessing() if config.postprocess and usable else None
        if steps is not None:
            kept = package.card["postprocessing"]["keep_largest_component"]
            log.info("infer: the package's post-processing: keep the largest component of %s", kept)
            apply_to_folder(predictions, scratch / "postprocessed", steps, package.model_folder, config.workers)
            predictions = scratch / "postprocessed"
        with progress("infer: writing contours", total=len(usable)) as advance:
            for job in usable:
                started = time.perf_counter()
                try:
                    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(predictions / f"{_key(job)}.nii.gz")))
                    assert job.geometry is not None
                    source = SourceSeries.read(config.input, job.files, job.geometry)
                    _write(job, labels.astype(np.uint8), source, package, config)
                except CaseError as exc:
                    job.fail(exc.reason, exc.detail)
                except Exception as exc:  # one series must not take the others down; its row says what happened
                    log.exception("infer: %s %s failed", job.case_id, job.series)
                    job.fail(Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", status=CaseStatus.FAILED)
                job.seconds += time.perf_counter() - started
                advance(1)
    model = {
        "model": package.card["id"],
        "model_version": package.card["version"],
        "synthetic_data": package.card.get("synthetic_data", False),
        "folds": list(folds),
        "formats": list(config.formats),
        "postprocessing": package.card.get("postprocessing") if config.postprocess else None,
    }
    for case_id in dict.fromkeys(job.case_id for job in jobs):
        record = {**model, "rows": [job.row() for job in jobs if job.case_id == case_id]}
        atomic_write_text(CONTOURS.at(config.out, case=case_id), json.dumps(record, indent=1))
    done = [job for job in jobs if job.status == CaseStatus.OK]
    write_listing(config.out)
    return StageResult(
        "infer",
        {"listing": str(INFERENCE_LISTING.at(config.out))},
        {"series_predicted": len(done), "not_predicted": len(jobs) - len(done)},
    )


def write_listing(out: Path) -> dict[str, Any]:
    """``cases.csv`` and ``inference.json`` from every case's record below ``out`` (all batches of a cluster run)."""
    records = [json.loads(path.read_text()) for path in CONTOURS.glob(out)]
    rows = [row for record in records for row in record["rows"]]
    write_csv(INFERENCE_LISTING.at(out), rows, LISTING_COLUMNS)
    summary = {
        **{key: value for key, value in (records[0] if records else {}).items() if key != "rows"},
        "series_predicted": sum(row["status"] == CaseStatus.OK for row in rows),
        "listed": len(rows),
        "not_predicted": {
            row["case_id"] + (f"/{row['series']}" if row["series"] else ""): row["reason"]
            for row in rows
            if row["status"] != CaseStatus.OK
        },
    }
    atomic_write_text(INFERENCE_RECORD.at(out), json.dumps(summary, indent=1))
    return summary


def _key(job: SeriesJob) -> str:
    return re.sub(r"[^A-Za-z0-9-]", "_", f"{job.case_id}__{job.series}")


def _stage_image(job: SeriesJob, root: Path, images: Path) -> None:
    """The series as nnU-Net's input image (int16 HU on the CT's exact geometry); a series that cannot be read
    gets its reason."""
    started = time.perf_counter()
    assert job.geometry is not None
    try:
        volume = read_hu_volume(root, job.files, job.sop_uids, job.geometry)
        write_nifti(volume, job.geometry, images / f"{_key(job)}_0000.nii.gz")
    except CaseError as exc:
        job.fail(exc.reason, exc.detail)
    job.seconds += time.perf_counter() - started
