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
import typing
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from tsretrain import __version__
from tsretrain.conversion.geometry import build_geometry
from tsretrain.conversion.header_index import CASE_KINDS, Group, HeaderIndex
from tsretrain.conversion.headers import FileRecord, RecordKind, read_record, read_remote_record, walk, walk_tree
from tsretrain.conversion.inventory import InventoryWriter, inventory_writer
from tsretrain.conversion.listing import COLUMNS
from tsretrain.conversion.plan import CasePlan
from tsretrain.conversion.pool import worker_pool
from tsretrain.errors import UserError
from tsretrain.labels.dictionary import DictionaryError, OrganDictionary, load_dictionary
from tsretrain.reasons import CaseError, Reason, advice
from tsretrain.resources import cpu_quota, quantity_bytes
from tsretrain.run_files import INVENTORY, SCAN_LISTING, CaseStatus, write_csv
from tsretrain.sizing import POD_CLASSES, Work, step_budgets, write_budgets
from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_text
from tsretrain.storage.store import Store, in_order, in_parallel, open_store
from tsretrain.ui import log, progress

RtstructChoice = Literal["fail", "newest"]  # with several RTSTRUCTs: the case fails, or the newest is taken
RTSTRUCT_CHOICES: tuple[RtstructChoice, ...] = typing.get_args(RtstructChoice)
SameBytes = Callable[[str, str], bool]
"""Whether two files of the tree (relative paths) hold the same bytes."""


@dataclass(frozen=True, kw_only=True)
class ScanConfig:
    """Configuration of the ``scan`` stage."""

    input: Path | str
    out: Path
    dictionary: str = "radcure-oar21"
    workers: int = 0
    rtstruct_choice: RtstructChoice = "fail"
    batches_out: Path | None = None
    batch_size: int = 8
    max_batches: int = 512
    sizes_out: Path | None = None
    scratch: str = "20Gi"
    data_scratch: str = "200Gi"
    predict_batch_size: int = 64


INDEX_FILE = ".headers.sqlite"
"""The scan's header index, in its output folder while it runs (deleted after; never published: hidden)."""
CHUNK = 64  # files a worker reads per task, records written to the index at a time
Item = TypeVar("Item")


def _read_chunk(args: tuple[str, list[str]]) -> list[FileRecord]:
    root, paths = args
    return [read_record(Path(root), Path(root) / p) for p in paths]


def read_files(root: Path, paths: Iterable[str], total: int, workers: int) -> Iterator[list[FileRecord]]:
    """Headers of these files (relative paths below root), read in parallel, in their order, a chunk at a time;
    a bounded number of chunks in flight."""
    chunks = batched(paths, CHUNK)
    with progress("scan: reading headers", total=total) as advance:
        if workers <= 1:
            results: Iterator[list[FileRecord]] = map(_read_chunk, ((str(root), c) for c in chunks))
            for chunk in results:
                advance(len(chunk))
                yield chunk
            return
        with worker_pool(workers) as pool:
            for chunk in in_order(pool, _read_chunk, ((str(root), c) for c in chunks), 4 * workers):
                advance(len(chunk))
                yield chunk


def batched(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """Lists of ``size`` items (the last shorter)."""
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def read_records(root: Path, workers: int) -> list[FileRecord]:
    """Headers of every file below root in path order, file-system oddities first (a delivery's input, whose
    records are held: the scan indexes them on disk instead)."""
    tree = walk_tree(root)
    files = [path.relative_to(root).as_posix() for path in tree.files]
    return [*tree.oddities, *(record for chunk in read_files(root, files, len(files), workers) for record in chunk)]


def index_local(index: HeaderIndex, root: Path, workers: int) -> None:
    """Every file below root into the index: the walk's paths listed on disk first (its oddities recorded), then
    their headers read in parallel."""
    for found in walk(root):
        if isinstance(found, Path):
            index.add_pending(found.relative_to(root).as_posix())
        else:
            index.add([found])
    paths = (path for path, _, _ in index.pending())
    for chunk in read_files(root, paths, index.pending_count(), workers):
        index.add(chunk)


def index_remote(index: HeaderIndex, store: Store) -> None:
    """Every object below a store URI into the index: listed a page at a time, headers fetched by ranged reads in
    parallel threads (a bounded number of requests in flight)."""
    for key, size, mtime_ns in store.iter_detailed(""):
        index.add_pending(key, size, mtime_ns)
    with progress("scan: reading remote headers", total=index.pending_count()) as advance:
        records = in_parallel(lambda item: read_remote_record(store, *item), index.pending())
        for chunk in batched(records, CHUNK):
            index.add(chunk)
            advance(len(chunk))


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
    unreadable = [r for r in records if r.kind == RecordKind.UNREADABLE]
    if unreadable:
        plan.add_problem(
            Reason.UNREADABLE_DICOM,
            f"{len(unreadable)} file(s) or folder(s) of the patient could not be read: {_describe(unreadable)}",
        )
    no_uids = [r for r in records if r.problem == Reason.MISSING_UIDS.value]
    if no_uids:
        plan.add_problem(Reason.MISSING_UIDS, f"{len(no_uids)} file(s): {_describe(no_uids)}")
    plan.warnings.extend(f"skipped {r.path}: {r.why_ignored}" for r in records if r.kind == RecordKind.SKIPPED)


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
        if record.kind == RecordKind.CT:
            ct_series[record.series_uid].append(record)
        elif record.kind == RecordKind.UNUSABLE and record.problem != Reason.MISSING_UIDS.value:
            unusable[record.series_uid].append(record)
    rtstructs = [r for r in records if r.kind == RecordKind.RTSTRUCT]
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
    plan.other_files = [(r.path, r.size, r.mtime_ns) for r in records if r.kind in CASE_KINDS and r.path not in used]
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


def inventory_header(root: Path | str, index: HeaderIndex, dictionary: OrganDictionary) -> dict[str, Any]:
    """The inventory's summary of the tree (everything but its cases)."""
    problems = index.file_system_problems()
    kinds = index.kinds()
    return {
        "format": "tsretrain-inventory/1",
        "tsretrain_version": __version__,
        "input": str(root),
        "dictionary": dictionary.to_json(),
        "files": {"total": sum(kinds.values()), "used_kinds": kinds},
        "ignored_files": index.ignored(),
        "file_system_problems": {"count": len(problems), "entries": problems},
    }


def plan_cases(
    index: HeaderIndex,
    groups: list[Group],
    dictionary: OrganDictionary,
    rtstruct_choice: str,
    copies: dict[str, list[str]],
) -> Iterator[CasePlan]:
    """Every case's plan, a patient at a time, in PatientID order, then the unidentified folders.

    Files that carry no PatientID (unreadable ones, links, files without UIDs) go to the patient whose files
    share their nearest folder; when none does, they form an ``unidentified-<folder>`` case of their own
    (skipped entries such as FIFOs are then only listed in the inventory).
    """
    shared = index.shared_uids()
    taken: set[str] = set()
    for group in groups:
        plan = plan_patient(group.patient_id, index.records_of(group), dictionary, rtstruct_choice, taken, group.label)
        if not group.label:
            plan.warnings.extend(copies.get(group.patient_id, []))
            if group.patient_id in shared:
                plan.add_problem(
                    Reason.SHARED_UIDS,
                    "series or instance UIDs of this patient also occur under PatientID(s) "
                    f"{sorted(shared[group.patient_id])}",
                )
        yield plan


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


def write_step_budgets(config: ScanConfig, writer: InventoryWriter, classes: int) -> None:
    """Each cluster step's disk, memory and deadline from the run's work, into ``config.sizes_out``."""
    from tsretrain.pipeline.registry import BY_NAME  # the registry holds this stage: imported when it runs

    assert config.sizes_out is not None
    work = Work(writer.work, writer.batches, config.predict_batch_size, classes)
    pods = {name: POD_CLASSES[stage.resources] for name, stage in BY_NAME.items()}
    whole = {name for name, stage in BY_NAME.items() if stage.whole_dataset}
    budgets = step_budgets(work, pods)
    least, data = minimum(config.scratch), minimum(config.data_scratch)
    written = write_budgets(config.sizes_out, budgets, least, data, pods, whole)
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


def fan_out_batch_size(cases: int, batch_size: int, max_batches: int) -> int:
    """Cases per batch of a fan-out: ``batch_size``, or more when that would make over ``max_batches`` batches (the
    workflow object holds a node per batch and step, and must stay under Argo's 1 MiB)."""
    return max(batch_size, math.ceil(cases / max(1, max_batches)))


def _index_input(index: HeaderIndex, source: str, workers: int) -> SameBytes:
    """Every file (object) of the input into the index; how to compare two of its files byte for byte."""
    if "://" in source:
        store = open_store(source)
        index_remote(index, store)
        return lambda a, b: store.get_bytes(a) == store.get_bytes(b)
    index_local(index, Path(source), workers)
    return lambda a, b: filecmp.cmp(Path(source) / a, Path(source) / b, shallow=False)


def scan(config: ScanConfig) -> StageResult:
    """Run the scan stage: write ``inventory.json`` and ``cases.csv`` under ``config.out``.

    Header records go to an on-disk index as they are read and the cases are planned and written one patient
    at a time: memory holds one patient's records, one fan-out batch of plans and a line per case, whatever the
    number of files.
    """
    if config.rtstruct_choice not in RTSTRUCT_CHOICES:
        raise UserError(f"--rtstruct-choice {config.rtstruct_choice!r} is not known", f"use one of {RTSTRUCT_CHOICES}")
    source = str(config.input)
    if "://" not in source:
        check_input_folder(source)
    dictionary = load_user_dictionary(config.dictionary)
    prepare_output_folder(config.out)
    index = HeaderIndex(config.out / INDEX_FILE)
    try:
        copies = index.finish_reading(_index_input(index, source, config.workers or cpu_quota()))
        header = inventory_header(source, index, dictionary)
        groups = index.groups()
        if not groups:
            raise UserError(
                f"no DICOM patient in {source}: {found_instead(header)}", "give the folder of the DICOM files"
            )
        batch_size = fan_out_batch_size(len(groups), config.batch_size, config.max_batches)
        counts: Counter[str] = Counter()
        plans = plan_cases(index, groups, dictionary, config.rtstruct_choice, copies)
        with inventory_writer(config.out, header, slices=config.batches_out is not None) as writer:
            for batch in batched(plans, batch_size):
                writer.add(batch)
                for plan in batch:
                    index.keep_listing_row(plan.case_id, listing_row(plan))
                    counts[plan.status] += 1
                    if plan.status != CaseStatus.OK:
                        log.info("%s %s: %s (%s)", plan.case_id, plan.status, plan.reason, plan.detail)
        write_csv(SCAN_LISTING.at(config.out), index.listing_rows(), COLUMNS)  # in case id order, as write_listing
    finally:
        index.close()
    if config.batches_out is not None:
        atomic_write_text(config.batches_out, json.dumps(writer.batch_ids()))
    if config.sizes_out is not None:
        write_step_budgets(config, writer, len(dictionary.nnunet_labels()))
    problems = header["file_system_problems"]["entries"]
    for entry in problems:
        log.warning("skipped %s", entry)
    return StageResult(
        stage="scan",
        outputs={"inventory": str(INVENTORY.at(config.out)), "cases": str(SCAN_LISTING.at(config.out))},
        counts={
            "files": header["files"]["total"],
            "cases": len(groups),
            "file_system_problems": len(problems),
            **{k: counts[k] for k in sorted(counts)},
        },
    )
