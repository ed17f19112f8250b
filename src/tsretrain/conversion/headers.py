"""Read DICOM headers (never pixels) and classify each file of an input tree."""

from __future__ import annotations

import io
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from tsretrain.conversion.geometry import SliceHeader
from tsretrain.conversion.rawvalues import header_text, header_value
from tsretrain.reasons import Reason

if TYPE_CHECKING:
    from tsretrain.storage.store import Store

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
ENHANCED_CT_STORAGE = ("1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2")  # Enhanced, Legacy Converted
UNCOMPRESSED_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


class RecordKind(StrEnum):
    """What a file of the tree is to the scan (``FileRecord.kind``, the same words in its index and inventory)."""

    CT = "ct"  # a usable CT image
    RTSTRUCT = "rtstruct"
    IGNORED = "ignored"  # counted: other modalities, not DICOM, localizers, DICOMDIRs
    UNUSABLE = "unusable"  # DICOM that excludes its patient's case (``problem``)
    UNREADABLE = "unreadable"  # a file or folder that could not be read: excludes the patient it belongs to
    SKIPPED = "skipped"  # not a regular file (dangling link, FIFO, socket, device, link loop): a warning


@dataclass
class RtstructInfo:
    """What the scan needs of an RTSTRUCT: references and ROI names (contours stay on disk)."""

    referenced_series_uids: list[str]
    referenced_frame_of_reference_uids: list[str]
    roi_names: dict[int, str]
    roi_contour_types: dict[int, list[str]]
    date_time: str
    series_images: dict[str, list[str]] = field(default_factory=dict)  # series UID -> its ContourImageSequence
    contour_images: list[str] = field(default_factory=list)  # named by the contours (read without series_images)
    duplicate_roi_numbers: list[str] = field(default_factory=list)  # "N: name, name" per reused ROINumber


@dataclass(slots=True)
class FileRecord:
    """One file of the tree, as far as its header (or the file system) tells.

    ``kind``: ``ct`` and ``rtstruct`` are used; ``ignored`` files are counted (other modalities, not DICOM);
    ``unusable`` DICOM files make their patient's case excluded with ``problem``; ``unreadable`` files and
    folders (permissions, I/O error, vanished) exclude the patient they belong to; ``skipped`` entries
    (dangling links, FIFOs, sockets, devices, symlink loops) are listed as warnings.
    """

    path: str  # relative to the scanned root
    kind: RecordKind
    why_ignored: str = ""
    problem: str = ""  # a Reason value, for unusable files
    modality: str = ""
    patient_id: str = ""
    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    frame_of_reference_uid: str = ""
    series_number: str = ""
    series_description: str = ""
    manufacturer: str = ""
    transfer_syntax: str = ""
    truncated: bool = False
    slice: SliceHeader | None = None
    rtstruct: RtstructInfo | None = None
    size: int = 0
    mtime_ns: int = 0


def _looks_like_dicom(head: bytes) -> bool:
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    # Files without the 128-byte preamble (e.g. pydicom's rtstruct.dcm) start with group 0x0008 or 0x0002.
    return len(head) >= 4 and head[:2] in (b"\x08\x00", b"\x02\x00") and head[3:4] == b"\x00"


def _rtstruct_info(ds: Dataset) -> RtstructInfo:
    series: list[str] = []
    frames: list[str] = []
    series_images: dict[str, list[str]] = {}
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        if frame_uid := header_value(frame, "FrameOfReferenceUID", None):
            frames.append(str(frame_uid))
        for study in frame.get("RTReferencedStudySequence", []):
            for ref in study.get("RTReferencedSeriesSequence", []):
                if series_uid := header_value(ref, "SeriesInstanceUID", None):
                    series.append(str(series_uid))
                    series_images[str(series_uid)] = _ct_images(ref)
    names: dict[int, str] = {}
    duplicates: list[str] = []
    for roi in ds.get("StructureSetROISequence", []):
        number, name = int(header_value(roi, "ROINumber")), str(roi.get("ROIName", ""))
        if number in names:
            duplicates.append(f"ROINumber {number}: {names[number]!r} and {name!r}")
        names.setdefault(number, name)
        if frame_uid := header_value(roi, "ReferencedFrameOfReferenceUID", None):
            frames.append(str(frame_uid))
    types: dict[int, list[str]] = {}
    contour_images: list[str] = []
    per_contour = not any(series_images.values())  # the series' list names every image a contour can
    for roi_contour in ds.get("ROIContourSequence", []):
        number = int(header_value(roi_contour, "ReferencedROINumber"))
        contours = roi_contour.get("ContourSequence", None) or []
        types[number] = [str(header_value(c, "ContourGeometricType", "")) for c in contours]
        for contour in contours if per_contour else []:
            contour_images.extend(_ct_images(contour))
    date_time = header_text(ds, "StructureSetDate") + header_text(ds, "StructureSetTime")
    return RtstructInfo(
        referenced_series_uids=list(dict.fromkeys(series)),
        referenced_frame_of_reference_uids=list(dict.fromkeys(frames)),
        roi_names=names,
        roi_contour_types=types,
        date_time=date_time,
        series_images=series_images,
        contour_images=list(dict.fromkeys(contour_images)),
        duplicate_roi_numbers=duplicates,
    )


def _ct_images(item: Dataset) -> list[str]:
    """The CT SOP instance UIDs of an item's ContourImageSequence (images of other modalities are left out)."""
    return [
        str(uid)
        for ref in item.get("ContourImageSequence", None) or []
        if (uid := header_value(ref, "ReferencedSOPInstanceUID", None))
        and str(header_value(ref, "ReferencedSOPClassUID", CT_IMAGE_STORAGE)) == CT_IMAGE_STORAGE
    ]


def _slice_header(ds: Dataset, rel: str, sop_uid: str) -> SliceHeader | None:
    try:
        position = tuple(float(v) for v in header_value(ds, "ImagePositionPatient"))
        orientation = tuple(float(v) for v in header_value(ds, "ImageOrientationPatient"))
        spacing = tuple(float(v) for v in header_value(ds, "PixelSpacing"))
        rows, columns = int(header_value(ds, "Rows")), int(header_value(ds, "Columns"))
    except (AttributeError, TypeError, ValueError):
        return None
    if len(position) != 3 or len(orientation) != 6 or len(spacing) != 2 or rows <= 0 or columns <= 0:
        return None
    if not all(math.isfinite(v) for v in (*position, *orientation, *spacing)) or min(spacing) <= 0:
        return None
    if math.hypot(*orientation[:3]) < 0.5 or math.hypot(*orientation[3:]) < 0.5:
        return None
    number = header_value(ds, "InstanceNumber", None)
    return SliceHeader(
        path=rel,
        sop_instance_uid=sop_uid,
        position=position,
        orientation=orientation,
        pixel_spacing=spacing,
        rows=rows,
        columns=columns,
        instance_number=int(number) if number not in (None, "") else None,
    )


def _pixel_data_truncated(ds: Dataset, size: int) -> bool:
    """True when an uncompressed image file is shorter than its declared pixel data needs."""
    if header_value(ds.file_meta, "TransferSyntaxUID", "1.2.840.10008.1.2") not in UNCOMPRESSED_SYNTAXES:
        return False
    try:
        frames = header_value(ds, "NumberOfFrames", 1) or 1
        pixels = int(header_value(ds, "Rows")) * int(header_value(ds, "Columns")) * int(frames)
        bits = pixels * int(header_value(ds, "SamplesPerPixel", 1)) * int(header_value(ds, "BitsAllocated"))
    except (AttributeError, TypeError, ValueError):
        return False
    return size < math.ceil(bits / 8)


HEADER_READS = (8 * 1024, 64 * 1024)
"""How much of a remote object is fetched first, then next, while its header goes beyond what was read (a CT
slice's header is 2-4 KB; RTSTRUCTs and rich private headers are read whole)."""
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"


def read_record(root: Path, path: Path) -> FileRecord:
    """Classify one local file by its DICOM header alone; file-system failures become unreadable records.

    The file is opened non-blocking and checked to be a regular file before any read, so a FIFO or a
    device swapped in after the walk never blocks the scan.
    """
    rel = path.relative_to(root).as_posix()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return FileRecord(rel, RecordKind.UNREADABLE, "vanished during the scan")
    except OSError as exc:
        return FileRecord(rel, RecordKind.UNREADABLE, f"cannot open: {exc.strerror or exc}")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # before any read: a folder or FIFO swapped in after the walk
            return FileRecord(rel, RecordKind.SKIPPED, _special_kind(info.st_mode))
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return classify(rel, info.st_size, info.st_mtime_ns, handle)
    except OSError as exc:  # I/O error while reading (bad sector, network share gone)
        return FileRecord(rel, RecordKind.UNREADABLE, f"read error: {exc.strerror or exc}")
    finally:
        os.close(fd)


def read_remote_record(store: Store, key: str, size: int, mtime_ns: int) -> FileRecord:
    """Classify a stored object from its first bytes: header-sized ranged reads, the whole object only when its
    header needs it (RTSTRUCT)."""
    head = b""
    for length in HEADER_READS:
        if length >= size:
            break
        head = store.read_range(key, 0, length)
        if PIXEL_DATA_TAG in head:
            return classify(key, size, mtime_ns, io.BytesIO(head))
    return classify(key, size, mtime_ns, io.BytesIO(store.get_bytes(key) or b""))


def classify(rel: str, size: int, mtime_ns: int, handle: BinaryIO) -> FileRecord:
    """Classify one file from a readable handle on its bytes (headers only)."""
    record = FileRecord(path=rel, kind=RecordKind.IGNORED, size=size, mtime_ns=mtime_ns)
    if not _looks_like_dicom(handle.read(132)):
        record.why_ignored = "not_dicom"
        return record
    handle.seek(0)
    try:
        ds = pydicom.dcmread(handle, stop_before_pixels=True, force=True)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, NotImplementedError) as exc:
        record.why_ignored = f"corrupt: {exc}"
        return record
    try:
        sop_class = header_text(ds, "SOPClassUID") or header_text(ds.file_meta, "MediaStorageSOPClassUID")
        record.modality = header_text(ds, "Modality")
        record.patient_id = header_text(ds, "PatientID")
        record.study_uid = header_text(ds, "StudyInstanceUID")
        record.series_uid = header_text(ds, "SeriesInstanceUID")
        record.sop_uid = header_text(ds, "SOPInstanceUID")
        record.frame_of_reference_uid = header_text(ds, "FrameOfReferenceUID")
        record.series_number = header_text(ds, "SeriesNumber")
        record.series_description = header_text(ds, "SeriesDescription")
        record.manufacturer = header_text(ds, "Manufacturer")
        record.transfer_syntax = header_text(ds.file_meta, "TransferSyntaxUID")
        is_rtstruct = record.modality == "RTSTRUCT" or sop_class == RTSTRUCT_STORAGE
        is_ct = record.modality == "CT" or sop_class in (CT_IMAGE_STORAGE, *ENHANCED_CT_STORAGE)
        if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
            record.why_ignored = "dicomdir"
        elif record.modality not in ("CT", "") and not is_rtstruct:
            record.why_ignored = f"modality {record.modality}"
        elif not (is_ct or is_rtstruct):
            record.why_ignored = f"neither Modality nor SOP class say CT or RTSTRUCT ({sop_class or 'no SOP class'})"
        elif not (record.patient_id and record.sop_uid and record.series_uid):
            missing = [k for k in ("PatientID", "SeriesInstanceUID", "SOPInstanceUID") if not header_text(ds, k)]
            _unusable(record, Reason.MISSING_UIDS, f"{record.modality or 'DICOM'} file without {', '.join(missing)}")
        elif is_rtstruct:
            record.kind = RecordKind.RTSTRUCT
            record.rtstruct = _rtstruct_info(ds)
        elif sop_class in ENHANCED_CT_STORAGE:
            _unusable(record, Reason.UNSUPPORTED_CT, f"Enhanced CT ({sop_class})")
        elif record.modality == "CT" and sop_class in ("", CT_IMAGE_STORAGE):
            image_type = [str(v).upper() for v in header_value(ds, "ImageType", [])]
            header = _slice_header(ds, rel, record.sop_uid)
            if "LOCALIZER" in image_type:
                record.why_ignored = "localizer"
            elif header is None:
                _unusable(
                    record,
                    Reason.INVALID_GEOMETRY,
                    "CT image whose PixelSpacing, ImagePositionPatient, ImageOrientationPatient or size is "
                    "missing, zero or not finite",
                )
            else:
                record.kind = RecordKind.CT
                record.slice = header
                record.truncated = _pixel_data_truncated(ds, size)
        else:
            record.why_ignored = f"not a CT image or RTSTRUCT (SOP class {sop_class})"
    except (AttributeError, TypeError, ValueError, KeyError, NotImplementedError) as exc:  # NotImplemented: unknown VR
        record.kind = RecordKind.IGNORED
        record.rtstruct = None
        record.why_ignored = f"corrupt: {exc}"
    return record


def _unusable(record: FileRecord, problem: Reason, why: str) -> None:
    record.kind = RecordKind.UNUSABLE
    record.problem = problem.value
    record.why_ignored = why


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISDIR(mode):
        return "folder"
    return "not a regular file"


UNLISTABLE_FOLDER = "folder cannot be listed"


@dataclass
class Tree:
    """The regular files below a root, and every entry that was not one (as skipped/unreadable records)."""

    files: list[Path]
    oddities: list[FileRecord]


def walk(root: Path) -> Iterator[Path | FileRecord]:
    """Every regular file below root (a path) and every other entry (a skipped/unreadable record), in a stable
    order, never opening anything but folders; only the folders still to visit are held.

    Hidden folders are skipped. Symbolic links to folders are followed once: a folder reached again (a
    loop, or a second link to it) is reported, as are dangling links, FIFOs, sockets, devices, folders that
    cannot be listed and entries that vanish during the walk.
    """
    start = root.stat()
    visited = {(start.st_dev, start.st_ino)}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                listing = sorted(entries, key=lambda e: e.name)
        except OSError as exc:
            yield _oddity(root, folder, RecordKind.UNREADABLE, f"{UNLISTABLE_FOLDER}: {exc.strerror}")
            continue
        subfolders: list[Path] = []
        for entry in listing:
            path = Path(entry.path)
            if entry.is_file(follow_symlinks=False):  # a plain file: known from the listing, no stat needed
                yield path
                continue
            try:
                info = entry.stat(follow_symlinks=True)
            except FileNotFoundError:
                if entry.is_symlink():
                    yield _oddity(root, path, RecordKind.SKIPPED, "dangling symbolic link")
                else:
                    yield _oddity(root, path, RecordKind.UNREADABLE, "vanished during the scan")
                continue
            except OSError as exc:  # ELOOP (a link to itself), EACCES on the link's target
                yield _oddity(root, path, RecordKind.SKIPPED, f"cannot follow: {exc.strerror}")
                continue
            if stat.S_ISDIR(info.st_mode):
                if entry.name.startswith("."):
                    continue
                if (info.st_dev, info.st_ino) in visited:
                    yield _oddity(root, path, RecordKind.SKIPPED, "symbolic link loop (folder already scanned)")
                    continue
                visited.add((info.st_dev, info.st_ino))
                subfolders.append(path)
            elif stat.S_ISREG(info.st_mode):
                yield path
            else:
                yield _oddity(root, path, RecordKind.SKIPPED, _special_kind(info.st_mode))
        stack.extend(reversed(subfolders))


def walk_tree(root: Path) -> Tree:
    """:func:`walk`, its files and its other entries apart."""
    tree = Tree([], [])
    for found in walk(root):
        if isinstance(found, Path):
            tree.files.append(found)
        else:
            tree.oddities.append(found)
    return tree


def _oddity(root: Path, path: Path, kind: RecordKind, why: str) -> FileRecord:
    return FileRecord(path.relative_to(root).as_posix(), kind, why)


def iter_files(root: Path) -> list[Path]:
    """All regular files below root, in a stable order (see :func:`walk_tree`)."""
    return walk_tree(root).files
