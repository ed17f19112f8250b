"""Read DICOM headers (never pixels) and classify each file of an input tree."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from tsretrain.conversion.geometry import SliceHeader

if TYPE_CHECKING:
    from tsretrain.storage.store import Store

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
UNCOMPRESSED_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


@dataclass
class RtstructInfo:
    """What the scan needs of an RTSTRUCT: references and ROI names (contours stay on disk)."""

    referenced_series_uids: list[str]
    referenced_frame_of_reference_uids: list[str]
    roi_names: dict[int, str]
    roi_contour_types: dict[int, list[str]]
    date_time: str


@dataclass
class FileRecord:
    """One DICOM file, as far as its header tells."""

    path: str  # relative to the scanned root
    kind: str  # ct | rtstruct | ignored
    why_ignored: str = ""
    modality: str = ""
    patient_id: str = ""
    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    frame_of_reference_uid: str = ""
    series_number: str = ""
    series_description: str = ""
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


def _str(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return str(value).strip() if value is not None else ""


def _rtstruct_info(ds: Dataset) -> RtstructInfo:
    series: list[str] = []
    frames: list[str] = []
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        if frame.get("FrameOfReferenceUID"):
            frames.append(str(frame.FrameOfReferenceUID))
        for study in frame.get("RTReferencedStudySequence", []):
            for ref in study.get("RTReferencedSeriesSequence", []):
                if ref.get("SeriesInstanceUID"):
                    series.append(str(ref.SeriesInstanceUID))
    names = {int(roi.ROINumber): str(roi.get("ROIName", "")) for roi in ds.get("StructureSetROISequence", [])}
    for roi in ds.get("StructureSetROISequence", []):
        if roi.get("ReferencedFrameOfReferenceUID"):
            frames.append(str(roi.ReferencedFrameOfReferenceUID))
    types: dict[int, list[str]] = {}
    for roi_contour in ds.get("ROIContourSequence", []):
        number = int(roi_contour.ReferencedROINumber)
        types[number] = [str(c.get("ContourGeometricType", "")) for c in roi_contour.get("ContourSequence", [])]
    date_time = _str(ds, "StructureSetDate") + _str(ds, "StructureSetTime")
    return RtstructInfo(
        referenced_series_uids=list(dict.fromkeys(series)),
        referenced_frame_of_reference_uids=list(dict.fromkeys(frames)),
        roi_names=names,
        roi_contour_types=types,
        date_time=date_time,
    )


def _slice_header(ds: Dataset, rel: str) -> SliceHeader | None:
    try:
        position = tuple(float(v) for v in ds.ImagePositionPatient)
        orientation = tuple(float(v) for v in ds.ImageOrientationPatient)
        spacing = tuple(float(v) for v in ds.PixelSpacing)
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        return None
    if len(position) != 3 or len(orientation) != 6 or len(spacing) != 2:
        return None
    number = ds.get("InstanceNumber")
    return SliceHeader(
        path=rel,
        sop_instance_uid=_str(ds, "SOPInstanceUID"),
        position=position,
        orientation=orientation,
        pixel_spacing=spacing,
        rows=rows,
        columns=columns,
        instance_number=int(number) if number not in (None, "") else None,
    )


def _pixel_data_truncated(ds: Dataset, size: int) -> bool:
    """True when an uncompressed image file is shorter than its declared pixel data needs."""
    if ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2") not in UNCOMPRESSED_SYNTAXES:
        return False
    try:
        needed = int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1) or 1)
        needed *= int(ds.BitsAllocated) // 8 * int(ds.get("SamplesPerPixel", 1))
    except (AttributeError, TypeError, ValueError):
        return False
    return size < needed


HEADER_BYTES = 64 * 1024
"""How much of a remote object is fetched first; the rest only when the header goes beyond it."""
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"


def read_record(root: Path, path: Path) -> FileRecord:
    """Classify one local file by its DICOM header alone."""
    stat = path.stat()
    with path.open("rb") as handle:
        return classify(path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns, handle)


def read_remote_record(store: Store, key: str, size: int, mtime_ns: int) -> FileRecord:
    """Classify a stored object from its first bytes; the whole object only when its header needs it (RTSTRUCT)."""
    head = store.read_range(key, 0, HEADER_BYTES) if size > HEADER_BYTES else store.get_bytes(key) or b""
    if len(head) < size and PIXEL_DATA_TAG not in head:
        head = store.get_bytes(key) or b""
    return classify(key, size, mtime_ns, io.BytesIO(head))


def classify(rel: str, size: int, mtime_ns: int, handle: BinaryIO) -> FileRecord:
    """Classify one file from a readable handle on its bytes (headers only)."""
    record = FileRecord(path=rel, kind="ignored", size=size, mtime_ns=mtime_ns)
    try:
        if not _looks_like_dicom(handle.read(132)):
            record.why_ignored = "not_dicom"
            return record
        handle.seek(0)
        ds = pydicom.dcmread(handle, stop_before_pixels=True, force=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        record.why_ignored = f"unreadable: {exc}"
        return record
    try:
        sop_class = _str(ds, "SOPClassUID") or _str(ds.file_meta, "MediaStorageSOPClassUID")
        record.modality = _str(ds, "Modality")
        record.patient_id = _str(ds, "PatientID")
        record.study_uid = _str(ds, "StudyInstanceUID")
        record.series_uid = _str(ds, "SeriesInstanceUID")
        record.sop_uid = _str(ds, "SOPInstanceUID")
        record.frame_of_reference_uid = _str(ds, "FrameOfReferenceUID")
        record.series_number = _str(ds, "SeriesNumber")
        record.series_description = _str(ds, "SeriesDescription")
        record.transfer_syntax = _str(ds.file_meta, "TransferSyntaxUID")
        if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
            record.why_ignored = "dicomdir"
        elif not record.patient_id or not record.sop_uid:
            record.why_ignored = "no_patient_or_sop_uid"
        elif record.modality == "RTSTRUCT" or sop_class == RTSTRUCT_STORAGE:
            record.kind = "rtstruct"
            record.rtstruct = _rtstruct_info(ds)
        elif record.modality == "CT" and sop_class in ("", CT_IMAGE_STORAGE):
            image_type = [str(v).upper() for v in ds.get("ImageType", [])]
            header = _slice_header(ds, rel)
            if "LOCALIZER" in image_type:
                record.why_ignored = "localizer"
            elif header is None:
                record.why_ignored = "ct_without_geometry"
            else:
                record.kind = "ct"
                record.slice = header
                record.truncated = _pixel_data_truncated(ds, size)
        elif record.modality == "CT":
            record.why_ignored = f"unsupported_ct_sop_class {sop_class}"
        else:
            record.why_ignored = f"modality {record.modality or 'unknown'}"
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        record.kind = "ignored"
        record.why_ignored = f"unreadable: {exc}"
    return record


def iter_files(root: Path) -> list[Path]:
    """All regular files below root, in a stable order; hidden folders are skipped."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(folder) / name for name in sorted(files))
    return found
