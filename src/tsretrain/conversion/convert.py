"""The ``convert`` stage: per case, CT to int16 HU NIfTI and RTSTRUCT to one uint8 label map on its grid.

Output folder::

    cases/<case>/<case>_0000.nii.gz   CT (HU, exact DICOM geometry)
    cases/<case>/<case>.nii.gz        label map (organ dictionary ids)
    cases/<case>/manifest.json        raw names, mapping, volumes, overlaps, warnings, status, reason
    cases.csv                         listing of every case, converted or excluded
    convert.json                      the organ dictionary the folder was converted with
    scan/                             the inventory this run used (unless --inventory was given)

Cases run in worker processes; a case that fails never stops the others. A finished case is skipped on
re-run while its inputs, dictionary and tsretrain version are unchanged (``--force`` redoes it). Ctrl-C
stops the workers at once, writes the listing of the cases finished so far and exits with code 130; the
next run goes on from there.
"""

from __future__ import annotations

import json
import shutil
import time
import traceback
from collections import Counter
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsretrain import __version__
from tsretrain.conversion.ct import read_hu_volume
from tsretrain.conversion.geometry import VolumeGeometry
from tsretrain.conversion.listing import write_listing
from tsretrain.conversion.nifti import write_nifti
from tsretrain.conversion.plan import CasePlan, load_inventory
from tsretrain.conversion.pool import ignore_interrupts, worker_pool
from tsretrain.conversion.rtstruct import burn_label_map, read_structure_set
from tsretrain.conversion.scan import (
    RtstructChoice,
    ScanConfig,
    check_input_folder,
    load_user_dictionary,
    prepare_output_folder,
    scan,
)
from tsretrain.errors import Interrupted, UserError
from tsretrain.labels.dictionary import TUMOUR_LABEL, OrganDictionary, load_dictionary
from tsretrain.reasons import CaseError, Reason, advice
from tsretrain.resources import cpu_quota
from tsretrain.run_files import (
    CASE_LISTING,
    CASE_MANIFEST,
    INVENTORY,
    CaseStatus,
    all_manifests,
    image_name,
    label_name,
    listing_rows,
)
from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_text, remove_stale_temporaries, staged_dir
from tsretrain.storage.store import in_parallel, open_store
from tsretrain.ui import log, progress

MARKER = "convert.json"


@dataclass(frozen=True, kw_only=True)
class ConvertConfig:
    """Configuration of the ``convert`` stage."""

    input: Path
    out: Path
    dictionary: str = "radcure-oar21"
    workers: int = 0
    force: bool = False
    inventory: Path | None = None
    cases: tuple[str, ...] = ()
    rtstruct_choice: RtstructChoice = "fail"
    source: str | None = None


def base_manifest(plan: CasePlan, dictionary: OrganDictionary) -> dict[str, Any]:
    return {
        "format": "tsretrain-case/1",
        "tsretrain_version": __version__,
        "case_id": plan.case_id,
        "patient_id": plan.patient_id,
        "status": plan.status,
        "reason": plan.reason,
        "detail": plan.detail,
        "fingerprint": plan.fingerprint(dictionary.sha256, __version__),
        "dictionary": dictionary.to_json(),
        "input": {
            "ct_series_uid": plan.ct_series_uid,
            "rtstruct_sop_uid": plan.rtstruct_sop_uid,
            "frame_of_reference_uid": plan.frame_of_reference_uid,
            "ct_files": len(plan.ct_files),
            "rtstruct_file": plan.rtstruct_file,
        },
        "geometry": plan.geometry,
        "roi_names": plan.roi_names,
        "mapping": plan.label_of_roi,
        "unmapped_rois": plan.unmapped_rois,
        "ignored_rois": plan.ignored_rois,
        "missing_labels": plan.missing_labels,
        "warnings": list(plan.warnings),
    }


def convert_case(plan: CasePlan, input_root: Path, case_dir: Path, dictionary: OrganDictionary) -> dict[str, Any]:
    """Convert one planned case into ``case_dir`` (written as a whole, atomically); returns its manifest."""
    started = time.perf_counter()
    manifest = base_manifest(plan, dictionary)
    with staged_dir(case_dir) as tmp:
        if plan.status == CaseStatus.OK:
            try:
                _convert_ok_case(plan, input_root, tmp, dictionary, manifest)
            except CaseError as exc:
                manifest.update(status=CaseStatus.EXCLUDED, reason=exc.reason.value, detail=exc.detail)
            except MemoryError:
                manifest.update(status=CaseStatus.FAILED, reason=Reason.WORKER_CRASHED.value, detail="out of memory")
            except Exception:  # any other bug must not take the run down; it is reported with its traceback
                manifest.update(
                    status=CaseStatus.FAILED, reason=Reason.INTERNAL_ERROR.value, detail=traceback.format_exc()
                )
            if manifest["status"] != CaseStatus.OK:
                for leftover in tmp.glob("*.nii.gz"):
                    leftover.unlink()
                manifest.pop("outputs", None)
        manifest["seconds"] = round(time.perf_counter() - started, 3)
        manifest["advice"] = advice(manifest["reason"])
        atomic_write_text(tmp / CASE_MANIFEST.basename, json.dumps(manifest, indent=1))
    return manifest


def _convert_ok_case(
    plan: CasePlan, input_root: Path, out: Path, dictionary: OrganDictionary, manifest: dict[str, Any]
) -> None:
    geometry = VolumeGeometry.from_json(plan.geometry or {})
    structure_set = read_structure_set(input_root / plan.rtstruct_file)
    label_ids = {label.name: label.id for label in dictionary.labels}
    slice_of_sop = {uid: k for k, uid in enumerate(plan.ct_sop_uids)}
    labels, burn = burn_label_map(
        structure_set, geometry, plan.label_of_roi, label_ids, dictionary.precedence, slice_of_sop
    )
    manifest["warnings"].extend(burn.warnings)
    manifest["rois"] = burn.rois
    manifest["overlaps"] = burn.overlaps
    counts = burn.voxels
    per_label: dict[str, Any] = {}
    for label in dictionary.labels:
        sources = sorted(r for r, name in plan.label_of_roi.items() if name == label.name)
        voxels = int(counts[label.id])
        per_label[label.name] = {
            "id": label.id,
            "present": voxels > 0,
            "sources": sources,
            "voxels": voxels,
            "volume_ml": round(voxels * geometry.voxel_volume_ml, 4),
        }
    manifest["labels"] = per_label
    manifest["missing_labels"] = [name for name, info in per_label.items() if not info["present"]]
    for name in dictionary.required:
        if not per_label[name]["present"]:
            reason = Reason.NO_GTVP if name == TUMOUR_LABEL else Reason.MISSING_REQUIRED_LABEL
            raise CaseError(
                reason,
                f"required label {name} is empty after rasterization (sources {per_label[name]['sources']})",
            )
    write_nifti(labels, geometry, out / label_name(plan.case_id))
    del labels
    volume = read_hu_volume(input_root, plan.ct_files, plan.ct_sop_uids, geometry)
    manifest["ct"] = {"hu_min": int(volume.min()), "hu_max": int(volume.max()), "dtype": "int16"}
    write_nifti(volume, geometry, out / image_name(plan.case_id))
    manifest["outputs"] = {"image": image_name(plan.case_id), "label": label_name(plan.case_id)}


def _worker(args: tuple[dict[str, Any], str, str, str]) -> dict[str, Any]:
    plan_json, input_root, case_dir, dictionary_name = args
    plan = CasePlan.from_json(plan_json)
    return convert_case(plan, Path(input_root), Path(case_dir), load_dictionary(dictionary_name))


def _finished(case_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    """The manifest of a case already converted from the same inputs, if any."""
    path = case_dir / CASE_MANIFEST.basename
    if not path.is_file():
        return None
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if manifest.get("fingerprint") != fingerprint or manifest.get("status") == CaseStatus.FAILED:
        return None
    if manifest.get("status") == CaseStatus.OK and not all(
        (case_dir / f).is_file() for f in manifest["outputs"].values()
    ):
        return None
    return manifest


def _crash_manifest(plan: CasePlan, dictionary: OrganDictionary, case_dir: Path) -> dict[str, Any]:
    manifest = base_manifest(plan, dictionary)
    manifest.update(
        status=CaseStatus.FAILED,
        reason=Reason.WORKER_CRASHED.value,
        detail="the worker process died while converting this case (out of memory?)",
        advice=advice(Reason.WORKER_CRASHED.value),
    )
    with staged_dir(case_dir) as tmp:
        atomic_write_text(tmp / CASE_MANIFEST.basename, json.dumps(manifest, indent=1))
    return manifest


def run_cases(
    plans: list[CasePlan],
    input_root: Path,
    cases_dir: Path,
    dictionary: OrganDictionary,
    dictionary_name: str,
    workers: int,
) -> list[dict[str, Any]]:
    """Convert plans in worker processes; a crashed worker's case is retried alone, then reported."""
    manifests: list[dict[str, Any]] = []
    pending = list(plans)
    isolate = False
    with progress("convert: cases", total=len(plans)) as advance:
        while pending:
            batch = pending if not isolate else pending[:1]
            pending = pending[len(batch) :]
            crashed: list[CasePlan] = []
            with worker_pool(1 if isolate else workers) as pool:
                futures: list[tuple[CasePlan, Future[dict[str, Any]]]] = [
                    (
                        p,
                        pool.submit(
                            _worker,
                            (p.to_json(), str(input_root), str(cases_dir / p.case_id), dictionary_name),
                        ),
                    )
                    for p in batch
                ]
                for plan, future in futures:
                    try:
                        manifests.append(future.result())
                        advance(1)
                    except BrokenProcessPool:
                        crashed.append(plan)
                        continue
                    if manifests[-1]["reason"] == Reason.INTERNAL_ERROR.value:
                        log.error("%s: internal error, please report it\n%s", plan.case_id, manifests[-1]["detail"])
            if crashed and isolate:
                manifests.append(_crash_manifest(crashed[0], dictionary, cases_dir / crashed[0].case_id))
                advance(1)
            elif crashed:
                log.warning("a worker died; retrying %d case(s) one at a time", len(crashed))
                isolate = True
                pending = crashed + pending
    return manifests


def stage_inputs(source: str, plans: list[CasePlan], local: Path, every_series: bool = False) -> None:
    """Fetch the CT and RTSTRUCT files of the planned cases from the store (a fan-out batch needs only its own);
    ``every_series``: every DICOM file of their patients."""
    store = open_store(source)
    wanted = [
        (rel, size) for plan in plans for rel, size, _ in plan.file_stats + (plan.other_files if every_series else [])
    ]

    def stage(item: tuple[str, int]) -> None:
        rel, size = item
        target = local / rel
        if not (target.is_file() and target.stat().st_size == size):
            store.get_file(rel, target, size)

    with progress("staging input files", total=len(wanted)) as advance:
        for _ in in_parallel(stage, wanted):  # concurrent GETs, one per object
            advance(1)


def check_dictionary(out: Path, dictionary: OrganDictionary, force: bool) -> None:
    """Refuse to mix two dictionaries in one output folder; with ``force`` the other one's cases are removed."""
    cases_dir = out / "cases"
    marker = out / MARKER
    if marker.is_file():
        previous = json.loads(marker.read_text())["dictionary"]
    else:  # a folder written before the marker existed: its manifests tell
        previous = next((m["dictionary"] for m in all_manifests(out)), None)
    if previous is not None and previous["sha256"] != dictionary.sha256:
        if not force:
            raise UserError(
                f"{out} holds cases converted with dictionary {previous['name']} {previous['version']}, "
                f"not {dictionary.name} {dictionary.version}",
                "use another --out, or add --force to convert every case again with the new dictionary",
            )
        removed = 0
        for manifest in all_manifests(out):
            if manifest["dictionary"]["sha256"] != dictionary.sha256:
                shutil.rmtree(cases_dir / manifest["case_id"])
                removed += 1
        log.warning("--force: removed %d case(s) converted with dictionary %s", removed, previous["name"])
    atomic_write_text(marker, json.dumps({"dictionary": dictionary.to_json()}, indent=1))


def convert(config: ConvertConfig) -> StageResult:
    """Run the convert stage over every planned case (or the selected batch).

    Ctrl-C: running cases are abandoned, the listing of the finished ones is written and :class:`Interrupted`
    is raised (exit code 130); a re-run skips what finished.
    """
    if config.source is None:
        check_input_folder(str(config.input))
    dictionary = load_user_dictionary(config.dictionary)
    prepare_output_folder(config.out)
    check_dictionary(config.out, dictionary, config.force)
    try:
        return _convert(config, dictionary)
    except KeyboardInterrupt:
        ignore_interrupts()
        cases_dir = config.out / "cases"
        remove_stale_temporaries(cases_dir)
        rows = write_case_listing(config.out) if cases_dir.is_dir() else []
        raise Interrupted(
            f"{len(rows)} case(s) finished, listed in {CASE_LISTING.at(config.out)}",
            "run the same command again to convert the rest (finished cases are skipped)",
        ) from None


def _convert(config: ConvertConfig, dictionary: OrganDictionary) -> StageResult:
    inventory_path = config.inventory
    if inventory_path is None:
        scan(
            ScanConfig(
                input=config.input,
                out=config.out / "scan",
                dictionary=config.dictionary,
                workers=config.workers,
                rtstruct_choice=config.rtstruct_choice,
            )
        )
        inventory_path = INVENTORY.at(config.out / "scan")
    elif not inventory_path.is_file():
        raise UserError(
            f"inventory {inventory_path} does not exist", "run tsretrain scan first, or leave out --inventory"
        )
    header, plans = load_inventory(inventory_path)
    if header["dictionary"]["sha256"] != dictionary.sha256:
        raise UserError(
            f"{inventory_path} was scanned with dictionary {header['dictionary']['name']}, not {config.dictionary}",
            f"re-run the scan with --dictionary {config.dictionary}",
        )
    if config.cases:
        unknown = set(config.cases) - {p.case_id for p in plans}
        if unknown:
            raise UserError(
                f"case ids not in the inventory: {sorted(unknown)[:5]}", f"see the case_id column of {inventory_path}"
            )
        plans = [p for p in plans if p.case_id in config.cases]
    cases_dir = config.out / "cases"
    cases_dir.mkdir(parents=True, exist_ok=True)
    stale = remove_stale_temporaries(cases_dir)
    if stale:
        log.info("removed %d partial output(s) left by an interrupted run", stale)

    manifests: list[dict[str, Any]] = []
    todo: list[CasePlan] = []
    reused = 0
    for plan in plans:
        fingerprint = plan.fingerprint(dictionary.sha256, __version__)
        done = None if config.force else _finished(cases_dir / plan.case_id, fingerprint)
        if done is not None:
            manifests.append(done)
            reused += 1
        elif plan.status != CaseStatus.OK:
            manifests.append(convert_case(plan, config.input, cases_dir / plan.case_id, dictionary))
        else:
            todo.append(plan)
    if todo and config.source:
        stage_inputs(config.source, todo, config.input)
    if todo:
        manifests += run_cases(
            todo,
            config.input,
            cases_dir,
            dictionary,
            config.dictionary,
            min(config.workers or cpu_quota(), len(todo)),
        )
    write_case_listing(config.out)
    counts = Counter(m["status"] for m in manifests)
    for m in manifests:
        if m["status"] != CaseStatus.OK:
            log.info("%s %s: %s", m["case_id"], m["status"], m["reason"])

    return StageResult(
        stage="convert",
        outputs={"cases": str(cases_dir), "listing": str(CASE_LISTING.at(config.out))},
        counts={
            "cases": len(manifests),
            "converted_now": len(todo),
            "reused": reused,
            **{k: counts[k] for k in sorted(counts)},
        },
    )


def write_case_listing(out: Path) -> list[dict[str, Any]]:
    """Rewrite ``cases.csv`` from every case manifest under ``out/cases``."""
    rows = listing_rows(out)
    write_listing(CASE_LISTING.at(out), rows)
    return rows
