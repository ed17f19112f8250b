"""The ``scan`` stage: index a DICOM tree by its tags, group files into cases and pair RTSTRUCT with CT.

Nothing is inferred from folder or file names. Per patient: CT series are the non-localizer CT images
grouped by SeriesInstanceUID; an RTSTRUCT is paired with the CT series it references
(ReferencedFrameOfReferenceSequence > RTReferencedStudySequence > RTReferencedSeriesSequence), or, when it
names none that is present, with the only CT series of its FrameOfReferenceUID. Every header-level
problem (geometry, references, ROI names) is decided here, so conversion only reads pixels and contours.
"""

from __future__ import annotations

import filecmp
import json
import math
import re
import shutil
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tsretrain import __version__
from tsretrain.conversion.geometry import build_geometry
from tsretrain.conversion.headers import UNLISTABLE_FOLDER, FileRecord, read_record, read_remote_record, walk_tree
from tsretrain.conversion.listing import write_listing
from tsretrain.conversion.plan import OK, CasePlan
from tsretrain.conversion.pool import worker_pool
from tsretrain.errors import UserError
from tsretrain.labels.dictionary import DictionaryError, OrganDictionary, load_dictionary
from tsretrain.layout import batch_id
from tsretrain.reasons import CaseError, Reason, advice
from tsretrain.resources import cpu_quota, quantity_bytes
from tsretrain.sizing import POD_CLASSES, Work, case_work, step_budgets, write_budgets
from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_text
from tsretrain.storage.store import in_parallel, open_store
from tsretrain.ui import log, progress

RTSTRUCT_CHOICES = ("fail", "newest")
SameBytes = Callable[[str, str], bool]
"""Whether two files of the tree (relative paths) hold the same bytes."""


@dataclass(frozen=True, kw_only=True)
class ScanConfig:
    """Configuration of the ``scan`` stage."""

    input: Path | str  # a folder, or a store URI (s3://bucket/prefix): then only headers are fetched
    out: Path
    dictionary: str = "radcure-oar21"
    workers: int = 0  # 0: one per available CPU
    rtstruct_choice: str = "fail"
    batches_out: Path | None = None  # JSON list of batch ids (every case in a batch), for a workflow fan-out
    batch_size: int = 8
    max_batches: int = 512  # larger batches beyond this many (the workflow object's size is bounded)
    sizes_out: Path | None = None  # a folder receiving each cluster step's budget (disk-, memory-, deadline-<step>)
    scratch: str = "20Gi"  # the least disk of a batch step
    data_scratch: str = "200Gi"  # the least disk of a whole-dataset step
    predict_batch_size: int = 64  # test cases per prediction pod


def _read_chunk(args: tuple[str, list[str]]) -> list[FileRecord]:
    root, paths = args
    return [read_record(Path(root), Path(p)) for p in paths]


SHARED_FIELDS = (
    "patient_id",
    "study_uid",
    "series_uid",
    "frame_of_reference_uid",
    "modality",
    "series_number",
    "series_description",
    "manufacturer",
    "transfer_syntax",
    "why_ignored",
)
"""Record fields whose values every file of a series repeats."""


def _share_strings(records: list[FileRecord]) -> list[FileRecord]:
    """One string object per repeated value (a scan holds every record at once: ~0.5 KiB less per file)."""
    for record in records:
        for name in SHARED_FIELDS:
            setattr(record, name, sys.intern(getattr(record, name)))
    return records


def read_records(root: Path, workers: int) -> list[FileRecord]:
    """Headers of every file below root, read in parallel, in path order; file-system oddities included."""
    tree = walk_tree(root)
    n_files = len(tree.files)
    chunks = [[str(p) for p in tree.files[i : i + 64]] for i in range(0, n_files, 64)]
    records: list[FileRecord] = list(tree.oddities)
    del tree
    with progress("scan: reading headers", total=n_files) as advance:
        if workers <= 1 or len(chunks) <= 1:
            for chunk in chunks:
                records.extend(_share_strings(_read_chunk((str(root), chunk))))
                advance(len(chunk))
        else:
            with worker_pool(workers) as pool:
                for result in pool.map(_read_chunk, [(str(root), c) for c in chunks]):
                    records.extend(_share_strings(result))
                    advance(len(result))
    return records


def read_remote_records(uri: str) -> list[FileRecord]:
    """Headers of every object below a store URI, fetched by ranged reads in parallel threads (a bounded number
    of requests in flight)."""
    store = open_store(uri)
    objects = sorted(store.list_detailed("").items())
    records: list[FileRecord] = []
    with progress("scan: reading remote headers", total=len(objects)) as advance:
        for record in in_parallel(lambda item: read_remote_record(store, item[0], *item[1]), objects):
            records.extend(_share_strings([record]))
            advance(1)
    return records


def case_id_for(patient_id: str, taken: set[str]) -> str:
    """A file-name-safe, unique case id (nnU-Net identifiers become file names)."""
    base = re.sub(r"[^A-Za-z0-9-]+", "_", patient_id).strip("_") or "case"
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    taken.add(candidate)
    return candidate


def _series_summary(uid: str, records: list[FileRecord], why: str) -> dict[str, Any]:
    first = records[0]
    return {
        "series_uid": uid,
        "modality": first.modality,
        "description": first.series_description,
        "n_files": len(records),
        "why_not_used": why,
    }


def _pair(
    plan: CasePlan,
    ct_series: dict[str, list[FileRecord]],
    unusable: dict[str, list[FileRecord]],
    rtstructs: list[FileRecord],
    rtstruct_choice: str,
) -> tuple[str | None, FileRecord | None]:
    """Choose the CT series and RTSTRUCT of a patient; problems go into the plan.

    ``unusable`` holds the patient's CT files that cannot be used (Enhanced CT, invalid geometry) by series:
    when the only CT, or the one the RTSTRUCT references, is among them, their reason is the case's.
    """
    if not ct_series and unusable:
        for records in unusable.values():
            _unusable_problem(plan, records)
        return None, None
    if not rtstructs:
        if not ct_series:
            plan.add_problem(Reason.NO_CT, "no CT images (only other modalities)")
            return None, None
        plan.add_problem(Reason.NO_RTSTRUCT, f"no RTSTRUCT among the patient's files ({len(ct_series)} CT series)")
        uid = max(ct_series, key=lambda u: len(ct_series[u]))
        return uid, None
    pairs: list[tuple[FileRecord, str]] = []
    unresolved: list[str] = []
    for rs in rtstructs:
        assert rs.rtstruct is not None
        referenced = [u for u in rs.rtstruct.referenced_series_uids if u in ct_series]
        if referenced:
            pairs.append((rs, referenced[0]))
            continue
        broken = [u for u in rs.rtstruct.referenced_series_uids if u in unusable]
        if broken:
            _unusable_problem(plan, unusable[broken[0]])
            return None, None
        frames = (set(rs.rtstruct.referenced_frame_of_reference_uids) | {rs.frame_of_reference_uid}) - {""}
        same_frame = [u for u, recs in ct_series.items() if recs[0].frame_of_reference_uid in frames]
        if len(same_frame) == 1:
            if rs.rtstruct.referenced_series_uids:
                plan.warnings.append(
                    f"RTSTRUCT {rs.sop_uid} references absent series {rs.rtstruct.referenced_series_uids}; "
                    f"paired by frame of reference with {same_frame[0]}"
                )
            pairs.append((rs, same_frame[0]))
        elif len(same_frame) > 1:
            plan.add_problem(
                Reason.MULTIPLE_CT_SERIES,
                f"RTSTRUCT {rs.sop_uid} names no series; {len(same_frame)} CT series share its frame of reference",
            )
            return None, None
        else:
            unresolved.append(
                f"RTSTRUCT {rs.sop_uid} references series {rs.rtstruct.referenced_series_uids or '(none)'} "
                f"and frame {sorted(frames) or '(none)'}, none of which is among the CT series found"
            )
    if not pairs:
        plan.add_problem(Reason.RTSTRUCT_REFERENCES_MISSING_SERIES, "; ".join(unresolved))
        return None, None
    plan.warnings.extend(f"ignored: {u}" for u in unresolved)
    if len(pairs) > 1:
        if rtstruct_choice != "newest":
            plan.add_problem(
                Reason.MULTIPLE_RTSTRUCT,
                f"{len(pairs)} RTSTRUCTs reference the CT: {[p[0].path for p in pairs]}",
            )
            return None, None
        pairs.sort(key=lambda p: p[0].rtstruct.date_time if p[0].rtstruct else "")
        plan.warnings.append(f"{len(pairs)} RTSTRUCTs; using the newest, {pairs[-1][0].path}")
    rs, uid = pairs[-1]
    return uid, rs


def _unusable_problem(plan: CasePlan, records: list[FileRecord]) -> None:
    first = records[0]
    plan.add_problem(
        Reason(first.problem),
        f"{len(records)} file(s) of series {first.series_uid or '(no SeriesInstanceUID)'}: {first.why_ignored} "
        f"(e.g. {first.path})",
    )


def _describe(records: list[FileRecord], limit: int = 5) -> str:
    shown = "; ".join(f"{r.path}: {r.why_ignored}" for r in records[:limit])
    return shown + (f"; and {len(records) - limit} more" if len(records) > limit else "")


def _file_system_findings(plan: CasePlan, records: list[FileRecord]) -> None:
    """Unreadable files exclude the case; other oddities (links, FIFOs...) and missing UIDs are reported."""
    unreadable = [r for r in records if r.kind == "unreadable"]
    if unreadable:
        plan.add_problem(
            Reason.UNREADABLE_DICOM,
            f"{len(unreadable)} file(s) or folder(s) of the patient could not be read: {_describe(unreadable)}",
        )
    no_uids = [r for r in records if r.problem == Reason.MISSING_UIDS.value]
    if no_uids:
        plan.add_problem(Reason.MISSING_UIDS, f"{len(no_uids)} file(s): {_describe(no_uids)}")
    plan.warnings.extend(f"skipped {r.path}: {r.why_ignored}" for r in records if r.kind == "skipped")


def plan_patient(
    patient_id: str,
    records: list[FileRecord],
    dictionary: OrganDictionary,
    rtstruct_choice: str,
    taken: set[str],
    case_label: str = "",
) -> CasePlan:
    """Decide what to do with one patient's files (``case_label`` names a group of files without PatientID)."""
    plan = CasePlan(case_id=case_id_for(case_label or patient_id, taken), patient_id=patient_id)
    _file_system_findings(plan, records)
    ct_series: dict[str, list[FileRecord]] = defaultdict(list)
    unusable: dict[str, list[FileRecord]] = defaultdict(list)
    for record in records:
        if record.kind == "ct":
            ct_series[record.series_uid].append(record)
        elif record.kind == "unusable" and record.problem != Reason.MISSING_UIDS.value:
            unusable[record.series_uid].append(record)
    rtstructs = [r for r in records if r.kind == "rtstruct"]
    if plan.problems and not ct_series and not rtstructs and not unusable:
        return plan
    ct_uid, rs = _pair(plan, ct_series, unusable, rtstructs, rtstruct_choice)
    for uid, recs in unusable.items():
        if uid == ct_uid:
            _unusable_problem(plan, recs)
        elif uid in ct_series or ct_uid is not None:
            plan.warnings.append(f"series {uid} not used: {recs[0].why_ignored}")

    for uid, recs in ct_series.items():
        if uid != ct_uid:
            plan.other_series.append(_series_summary(uid, recs, "CT series not referenced by the RTSTRUCT"))
    for record in rtstructs:
        if record is not rs:
            plan.other_series.append(_series_summary(record.series_uid, [record], "RTSTRUCT not used"))

    if ct_uid is not None:
        chosen = ct_series[ct_uid]
        plan.ct_series_uid = ct_uid
        plan.frame_of_reference_uid = chosen[0].frame_of_reference_uid
        plan.manufacturer = chosen[0].manufacturer
        truncated = [r.path for r in chosen if r.truncated]
        if truncated:
            plan.add_problem(Reason.UNREADABLE_DICOM, f"{len(truncated)} CT file(s) truncated: {truncated[:3]}")
        try:
            geometry, ordered = build_geometry([r.slice for r in chosen if r.slice is not None])
            plan.geometry = geometry.to_json()
            plan.ct_files = [s.path for s in ordered]
            plan.ct_sop_uids = [s.sop_instance_uid for s in ordered]
        except CaseError as exc:
            plan.add_problem(exc.reason, exc.detail)
            plan.ct_files = sorted(r.path for r in chosen)
        plan.file_stats = [(r.path, r.size, r.mtime_ns) for r in chosen]
    used = {path for path, _, _ in plan.file_stats}
    if rs is not None:
        used.add(rs.path)
    plan.other_files = [
        (r.path, r.size, r.mtime_ns) for r in records if r.kind in ("ct", "rtstruct", "unusable") and r.path not in used
    ]
    named = rs.rtstruct.referenced_series_uids if rs is not None and rs.rtstruct is not None else []
    if rs is not None and ct_uid is not None and (ct_uid in named or not named):  # not when paired by frame
        _check_references(plan, rs, ct_uid, ct_series)
    if rs is not None and rs.rtstruct is not None:
        for duplicate in rs.rtstruct.duplicate_roi_numbers:
            plan.add_problem(Reason.AMBIGUOUS_ROI, f"the RTSTRUCT uses one ROINumber for two ROIs: {duplicate}")
        plan.rtstruct_file = rs.path
        plan.rtstruct_sop_uid = rs.sop_uid
        plan.file_stats.append((rs.path, rs.size, rs.mtime_ns))
        plan.roi_names = list(rs.rtstruct.roi_names.values())
        usable = [
            name
            for number, name in rs.rtstruct.roi_names.items()
            if any(
                t in ("CLOSED_PLANAR", "CLOSEDPLANAR_XOR", "CLOSED_PLANAR_XOR")
                for t in rs.rtstruct.roi_contour_types.get(number, [])
            )
        ]
        for name in sorted(set(plan.roi_names) - set(usable)):
            plan.warnings.append(f"ROI {name!r} has no closed planar contours (POINT/OPEN or empty); skipped")
        mapping = dictionary.map_rois(usable)
        plan.label_of_roi = mapping.label_of_roi
        plan.unmapped_rois = mapping.unmapped
        plan.ignored_rois = mapping.ignored
        plan.missing_labels = mapping.missing
        for reason, detail in mapping.problems:
            plan.add_problem(reason, detail)
    return plan


def _check_references(plan: CasePlan, rs: FileRecord, ct_uid: str, ct_series: dict[str, list[FileRecord]]) -> None:
    """Exclude a case whose RTSTRUCT names CT images (ContourImageSequence) that are not in the input."""
    assert rs.rtstruct is not None
    present = {r.sop_uid for r in ct_series[ct_uid]}
    anywhere = {r.sop_uid for recs in ct_series.values() for r in recs}
    absent = [u for u in rs.rtstruct.series_images.get(ct_uid, []) if u not in present]
    absent += [u for u in rs.rtstruct.contour_images if u not in anywhere and u not in absent]
    if absent:
        plan.add_problem(
            Reason.REFERENCED_SLICES_MISSING,
            f"the RTSTRUCT references {len(absent)} CT image(s) of series {ct_uid} that are not in the input "
            f"({len(present)} present; e.g. {absent[0]})",
        )


def listing_row(plan: CasePlan) -> dict[str, Any]:
    """The listing row of a scanned (not yet converted) case."""
    geometry = plan.geometry or {}
    shape = geometry.get("shape_zyx", ["", "", ""])
    spacing = geometry.get("spacing_xyz", ["", "", ""])
    return {
        "case_id": plan.case_id,
        "patient_id": plan.patient_id,
        "status": plan.status,
        "reason": plan.reason,
        "detail": plan.detail,
        "advice": advice(plan.reason),
        "ct_series_uid": plan.ct_series_uid,
        "rtstruct_sop_uid": plan.rtstruct_sop_uid,
        "frame_of_reference_uid": plan.frame_of_reference_uid,
        "n_slices": shape[0] or len(plan.ct_files) or "",
        "rows": shape[1],
        "columns": shape[2],
        "spacing_x": spacing[0],
        "spacing_y": spacing[1],
        "spacing_z": spacing[2],
        "roi_names": plan.roi_names,
        "unmapped_rois": plan.unmapped_rois,
        "missing_labels": plan.missing_labels,
        "n_warnings": len(plan.warnings),
        "warnings": plan.warnings,
    }


def _drop_copies(records: list[FileRecord], same_bytes: SameBytes) -> tuple[list[FileRecord], dict[str, list[str]]]:
    """Leave out exact copies of an instance within one patient; a warning per copy, by patient."""
    first: dict[tuple[str, str], FileRecord] = {}
    kept: list[FileRecord] = []
    notes: dict[str, list[str]] = defaultdict(list)
    for record in records:
        if record.kind in ("ct", "rtstruct"):
            key = (record.patient_id, record.sop_uid)
            original = first.setdefault(key, record)
            if original is not record and original.size == record.size and same_bytes(original.path, record.path):
                notes[record.patient_id].append(f"{record.path} is an exact copy of {original.path}; ignored")
                continue
        kept.append(record)
    return kept, notes


def _shared_uids(by_patient: dict[str, list[FileRecord]]) -> dict[str, set[str]]:
    """For each patient, the other PatientIDs under which one of its series or instance UIDs also occurs."""
    owner: dict[str, str] = {}
    others: dict[str, set[str]] = defaultdict(set)
    for pid, records in by_patient.items():
        for record in records:
            if record.kind not in ("ct", "rtstruct", "unusable"):
                continue
            for uid in (record.series_uid, record.sop_uid):
                holder = owner.setdefault(uid, pid) if uid else pid
                if holder != pid:
                    others[pid].add(holder)
                    others[holder].add(pid)
    return others


def _folder_owners(records: list[FileRecord]) -> dict[str, set[str]]:
    """The PatientIDs found below each folder (relative path, root excluded)."""
    owners: dict[str, set[str]] = defaultdict(set)
    for record in records:
        if not record.patient_id:
            continue
        folder = record.path.rpartition("/")[0]
        while folder and record.patient_id not in owners[folder]:
            owners[folder].add(record.patient_id)
            folder = folder.rpartition("/")[0]
    return owners


def _owner(path: str, owners: dict[str, set[str]]) -> str:
    """The patient a file without PatientID belongs to: the only patient of its nearest folder that has any."""
    folder = path.rpartition("/")[0]
    while folder:
        found = owners.get(folder)
        if found:
            return next(iter(found)) if len(found) == 1 else ""
        folder = folder.rpartition("/")[0]
    return ""


def build_inventory(
    root: Path | str,
    records: list[FileRecord],
    dictionary: OrganDictionary,
    rtstruct_choice: str,
    same_bytes: SameBytes,
) -> dict[str, Any]:
    """Group records into case plans and summarise the files that were not used.

    Files that carry no PatientID (unreadable ones, links, files without UIDs) go to the patient whose files
    share their nearest folder; when none does, they form an ``unidentified-<folder>`` row of their own
    (skipped entries such as FIFOs are then only listed in the inventory).
    """
    records, copies = _drop_copies(records, same_bytes)
    by_patient: dict[str, list[FileRecord]] = defaultdict(list)
    ignored: Counter[str] = Counter()
    examples: dict[str, list[str]] = defaultdict(list)
    orphans: list[FileRecord] = []
    for record in records:
        if record.kind == "ignored":
            key = record.why_ignored.split(":")[0].split(" (")[0]
            ignored[key] += 1
            if len(examples[key]) < 5:
                examples[key].append(f"{record.path}: {record.why_ignored}")
            if record.patient_id and record.why_ignored != "dicomdir":
                by_patient.setdefault(record.patient_id, [])
        elif record.patient_id:
            by_patient[record.patient_id].append(record)
        else:
            orphans.append(record)
    owners = _folder_owners(records)
    unidentified: dict[str, list[FileRecord]] = defaultdict(list)
    for record in orphans:
        pid = _owner(record.path, owners)
        if pid:
            by_patient[pid].append(record)
        elif record.kind != "skipped":
            top, inside, _ = record.path.partition("/")
            is_folder = record.why_ignored.startswith(UNLISTABLE_FOLDER)
            unidentified[top if inside or is_folder else "root"].append(record)
    shared = _shared_uids(by_patient)
    taken: set[str] = set()
    plans = []
    for pid in sorted(by_patient):
        plan = plan_patient(pid, by_patient[pid], dictionary, rtstruct_choice, taken)
        plan.warnings.extend(copies.get(pid, []))
        if pid in shared:
            plan.add_problem(
                Reason.SHARED_UIDS,
                f"series or instance UIDs of this patient also occur under PatientID(s) {sorted(shared[pid])}",
            )
        plans.append(plan)
    for folder, group in sorted(unidentified.items()):
        plans.append(plan_patient("", group, dictionary, rtstruct_choice, taken, f"unidentified-{folder}"))
    oddities = [r for r in records if r.kind in ("skipped", "unreadable")]
    return {
        "format": "tsretrain-inventory/1",
        "tsretrain_version": __version__,
        "input": str(root),
        "dictionary": dictionary.to_json(),
        "files": {"total": len(records), "used_kinds": dict(Counter(r.kind for r in records))},
        "ignored_files": {k: {"count": v, "examples": examples[k]} for k, v in sorted(ignored.items())},
        "file_system_problems": {
            "count": len(oddities),
            "entries": [f"{r.path}: {r.why_ignored}" for r in oddities],
        },
        "cases": [p.to_json() for p in plans],
    }


def found_instead(inventory: dict[str, Any]) -> str:
    """What a tree without patients holds: its file count and why its files were set aside."""
    total = inventory["files"]["total"]
    if not total:
        return "it holds no file"
    ignored = inventory["ignored_files"]
    why = "; ".join(f"{kind} {entry['count']} (e.g. {entry['examples'][0]})" for kind, entry in sorted(ignored.items()))
    return f"{total} file(s), none of them a patient's CT or RTSTRUCT" + (f": {why}" if why else "")


def check_input_folder(source: str) -> None:
    """Refuse an input that is not a folder, saying what to give instead."""
    path = Path(source)
    if path.is_dir():
        return
    if not path.exists():
        raise UserError(f"input {source} does not exist", "give the folder that holds the DICOM files")
    if path.suffix.lower() in (".zip", ".tar", ".gz", ".tgz", ".7z"):
        raise UserError(f"input {source} is an archive", "unpack it and give the unpacked folder")
    raise UserError(f"input {source} is a file, not a folder", f"give the folder that holds it: {path.parent}")


def prepare_output_folder(out: Path) -> None:
    """Create the output folder, or say why it cannot be."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder", "give a folder path with --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {out}: {exc.strerror}", "choose a writable --out") from exc


def write_step_budgets(
    config: ScanConfig, inventory: dict[str, Any], batches: list[list[dict[str, Any]]], classes: int
) -> None:
    """Each cluster step's disk, memory and deadline from the run's work, into ``config.sizes_out``."""
    from tsretrain.pipeline.registry import BY_NAME  # the registry holds this stage: imported when it runs

    assert config.sizes_out is not None
    cases = {case["case_id"]: case_work(case) for case in inventory["cases"]}
    ids = [tuple(case["case_id"] for case in batch) for batch in batches]
    work = Work(cases, ids, config.predict_batch_size, classes)
    pods = {name: POD_CLASSES[stage.resources] for name, stage in BY_NAME.items()}
    budgets = step_budgets(work, pods)
    written = write_budgets(config.sizes_out, budgets, minimum(config.scratch), minimum(config.data_scratch), pods)
    log.info("budget per step: %s", "; ".join(f"{step} {' '.join(v.values())}" for step, v in written.items()))


def load_user_dictionary(name: str) -> OrganDictionary:
    """The organ dictionary named by the user; a bad name or file is a user error."""
    try:
        return load_dictionary(name)
    except DictionaryError as exc:
        raise UserError(
            f"dictionary {name}: {exc}", "pass a shipped name (tsretrain dictionary list) or a valid YAML file"
        ) from exc


def minimum(size: str) -> int:
    """A least disk size (a Kubernetes quantity), or a usage error."""
    try:
        return int(quantity_bytes(size))
    except ValueError as exc:
        raise UserError(str(exc), "give the disk sizes as Kubernetes quantities (20Gi, 500G)") from exc


Case = TypeVar("Case")  # a case plan, or a case id


def fan_out_batch_size(cases: int, batch_size: int, max_batches: int) -> int:
    """Cases per batch of a fan-out: ``batch_size``, or more when that would make over ``max_batches`` batches (the
    workflow object holds a node per batch and step, and must stay under Argo's 1 MiB)."""
    return max(batch_size, math.ceil(cases / max(1, max_batches)))


def fan_out_batches(cases: list[Case], batch_size: int, max_batches: int) -> list[list[Case]]:
    """Every case (excluded ones too: they get their manifest and listing row), in the fan-out's batches."""
    size = fan_out_batch_size(len(cases), batch_size, max_batches)
    return [cases[start : start + size] for start in range(0, len(cases), size)]


def write_batches(out: Path, inventory: dict[str, Any], batches: list[list[dict[str, Any]]]) -> list[str]:
    """Each batch's own inventory (the header and its cases only) in ``out/batches/<batch id>.json``, so that a
    fan-out pod fetches its batch's slice, not the whole inventory; returns the batch ids (the fan-out's items)."""
    header = {key: value for key, value in inventory.items() if key != "cases"}
    shutil.rmtree(out / "batches", ignore_errors=True)  # an earlier scan's batches
    names = []
    for part in batches:
        names.append(batch_id(tuple(case["case_id"] for case in part)))
        atomic_write_text(out / "batches" / f"{names[-1]}.json", json.dumps({**header, "cases": part}, indent=1))
    return names


def scan(config: ScanConfig) -> StageResult:
    """Run the scan stage: write ``inventory.json`` and ``cases.csv`` under ``config.out``."""
    if config.rtstruct_choice not in RTSTRUCT_CHOICES:
        raise UserError(f"--rtstruct-choice {config.rtstruct_choice!r} is not known", f"use one of {RTSTRUCT_CHOICES}")
    source = str(config.input)
    remote = "://" in source
    if not remote:
        check_input_folder(source)
    dictionary = load_user_dictionary(config.dictionary)
    prepare_output_folder(config.out)
    if remote:
        store = open_store(source)
        records = read_remote_records(source)

        def same_bytes(a: str, b: str) -> bool:
            return store.get_bytes(a) == store.get_bytes(b)
    else:
        records = read_records(Path(source), config.workers or cpu_quota())

        def same_bytes(a: str, b: str) -> bool:
            return filecmp.cmp(Path(source) / a, Path(source) / b, shallow=False)

    inventory = build_inventory(source, records, dictionary, config.rtstruct_choice, same_bytes)
    del records  # the plans hold what is needed; the records are the scan's largest memory
    if not inventory["cases"]:
        raise UserError(
            f"no DICOM patient in {source}: {found_instead(inventory)}", "give the folder of the DICOM files"
        )
    atomic_write_text(config.out / "inventory.json", json.dumps(inventory, indent=1))
    plans = [CasePlan.from_json(c) for c in inventory["cases"]]
    write_listing(config.out / "cases.csv", (listing_row(p) for p in plans))
    batches = fan_out_batches(inventory["cases"], config.batch_size, config.max_batches)
    if config.batches_out is not None:
        atomic_write_text(config.batches_out, json.dumps(write_batches(config.out, inventory, batches)))
    if config.sizes_out is not None:
        write_step_budgets(config, inventory, batches, len(dictionary.nnunet_labels()))
    counts = Counter(p.status for p in plans)
    for plan in plans:
        if plan.status != OK:
            log.info("%s %s: %s (%s)", plan.case_id, plan.status, plan.reason, plan.detail)
    problems = inventory["file_system_problems"]["entries"]
    for entry in problems:
        log.warning("skipped %s", entry)
    return StageResult(
        stage="scan",
        outputs={"inventory": str(config.out / "inventory.json"), "cases": str(config.out / "cases.csv")},
        counts={
            "files": inventory["files"]["total"],
            "cases": len(plans),
            "file_system_problems": len(problems),
            **{k: counts[k] for k in sorted(counts)},
        },
    )
