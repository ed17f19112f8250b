"""What the scan makes of one file, from hand-made headers: every kind of record with its exact reason, the
RTSTRUCT's references, the slice header's checks, short pixel data, and the file-system cases of a local walk
and of a remote read (which reads the first 64 KiB, the rest only when the header needs it)."""

from __future__ import annotations

import errno
import io
import os
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless

from tsretrain.conversion import headers
from tsretrain.conversion.geometry import SliceHeader
from tsretrain.conversion.headers import (
    CT_IMAGE_STORAGE,
    HEADER_READS,
    RTSTRUCT_STORAGE,
    FileRecord,
    RtstructInfo,
    classify,
    iter_files,
    read_record,
    read_remote_record,
    walk_tree,
)
from tsretrain.storage.store import LocalStore

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
IDS: dict[str, Any] = {
    "PatientID": "HN-7",
    "StudyInstanceUID": "1.2.7",
    "SeriesInstanceUID": "1.2.7.1",
    "SOPInstanceUID": "1.2.7.1.5",
}
GEOMETRY: dict[str, Any] = {
    "ImagePositionPatient": [-120.0, -110.5, 35.0],
    "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
    "PixelSpacing": [0.75, 0.5],
    "Rows": 4,
    "Columns": 6,
    "InstanceNumber": 12,
}
PIXELS: dict[str, Any] = {"BitsAllocated": 16, "BitsStored": 16, "SamplesPerPixel": 1, "PixelRepresentation": 1}


def encoded(
    sop_class: str | None = CT_IMAGE_STORAGE,
    syntax: str = ExplicitVRLittleEndian,
    preamble: bool = True,
    pixel_bytes: int | None = None,
    **elements: Any,
) -> bytes:
    """A DICOM file's bytes: the elements given (None leaves one out), with pixel data of that many bytes."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    if sop_class is not None:
        ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
        ds.SOPClassUID = sop_class
    for keyword, value in elements.items():
        if value is not None:
            setattr(ds, keyword, value)
    if pixel_bytes is not None:
        ds.PixelData = b"\0" * pixel_bytes
        ds["PixelData"].VR = "OW"
    buffer = io.BytesIO()
    if preamble:
        ds.preamble = b"\0" * 128  # and "DICM", then the file meta (not checked: it may lack its SOP class)
    else:
        del ds.file_meta
    pydicom.dcmwrite(buffer, ds, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True)
    return buffer.getvalue()


def ct(**changes: Any) -> bytes:
    return encoded(**{"Modality": "CT", **IDS, **GEOMETRY, **PIXELS, "pixel_bytes": 48, **changes})


def record(data: bytes, name: str = "p/f.dcm", size: int | None = None) -> FileRecord:
    return classify(name, len(data) if size is None else size, 123, io.BytesIO(data))


def test_a_ct_slice_gives_its_identifiers_and_slice_header() -> None:
    got = record(ct(SeriesNumber="3", SeriesDescription=" Head  ", FrameOfReferenceUID="1.2.7.9"))
    assert got == FileRecord(
        path="p/f.dcm",
        kind="ct",
        modality="CT",
        patient_id="HN-7",
        study_uid="1.2.7",
        series_uid="1.2.7.1",
        sop_uid="1.2.7.1.5",
        frame_of_reference_uid="1.2.7.9",
        series_number="3",
        series_description="Head",
        transfer_syntax=ExplicitVRLittleEndian,
        slice=SliceHeader("p/f.dcm", "1.2.7.1.5", (-120.0, -110.5, 35.0), (1, 0, 0, 0, 1, 0), (0.75, 0.5), 4, 6, 12),
        size=len(ct(SeriesNumber="3", SeriesDescription=" Head  ", FrameOfReferenceUID="1.2.7.9")),
        mtime_ns=123,
    )
    assert record(ct(InstanceNumber=None)).slice.instance_number is None
    assert record(ct(InstanceNumber="")).slice.instance_number is None
    assert record(ct(sop_class=None)).kind == "ct"  # Modality alone says CT
    assert record(ct(preamble=False, syntax=ImplicitVRLittleEndian)).kind == "ct"  # no preamble, group 8 first


@pytest.mark.parametrize(
    ("data", "kind", "why", "problem"),
    [
        (b"\0" * 200, "ignored", "not_dicom", ""),
        (b"DICM", "ignored", "not_dicom", ""),
        (encoded(MR_IMAGE_STORAGE, Modality="MR", **IDS), "ignored", "modality MR", ""),
        (
            encoded(SECONDARY_CAPTURE, **IDS),
            "ignored",
            f"neither Modality nor SOP class say CT or RTSTRUCT ({SECONDARY_CAPTURE})",
            "",
        ),
        (encoded(None, **IDS), "ignored", "neither Modality nor SOP class say CT or RTSTRUCT (no SOP class)", ""),
        (encoded(None, DirectoryRecordSequence=Sequence()), "ignored", "dicomdir", ""),
        (encoded("1.2.840.10008.1.3.10"), "ignored", "dicomdir", ""),
        (
            ct(PatientID=None, SOPInstanceUID=None),
            "unusable",
            "CT file without PatientID, SOPInstanceUID",
            "missing_uids",
        ),
        (
            encoded(RTSTRUCT_STORAGE, **{**IDS, "SeriesInstanceUID": None}),
            "unusable",
            "DICOM file without SeriesInstanceUID",
            "missing_uids",
        ),
        (
            ct(sop_class="1.2.840.10008.5.1.4.1.1.2.1"),
            "unusable",
            "Enhanced CT (1.2.840.10008.5.1.4.1.1.2.1)",
            "unsupported_ct",
        ),
        (ct(ImageType=["ORIGINAL", "PRIMARY", "localizer"]), "ignored", "localizer", ""),
        (
            ct(sop_class=SECONDARY_CAPTURE),
            "ignored",
            f"not a CT image or RTSTRUCT (SOP class {SECONDARY_CAPTURE})",
            "",
        ),
    ],
    ids=[
        "zeros",
        "short",
        "mr",
        "secondary-capture",
        "no-sop-class",
        "dicomdir-record",
        "dicomdir-class",
        "ct-without-ids",
        "rtstruct-without-series",
        "enhanced",
        "localizer",
        "ct-of-other-class",
    ],
)
def test_files_that_are_not_used_say_why(data: bytes, kind: str, why: str, problem: str) -> None:
    got = record(data)
    assert (got.kind, got.why_ignored, got.problem, got.slice, got.rtstruct) == (kind, why, problem, None, None)


def element(group: int, number: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element with a 2-byte length."""
    return group.to_bytes(2, "little") + number.to_bytes(2, "little") + vr + len(value).to_bytes(2, "little") + value


@pytest.mark.parametrize(
    "data",
    [
        b"\0" * 128 + b"DICM" + element(2, 0x10, b"XX", b"1.2.840.10008.1.2.1\0"),  # in the file meta
        ct().replace(b"\x08\x00\x60\x00CS", b"\x08\x00\x60\x00XX"),  # the Modality's VR
    ],
    ids=["meta", "dataset"],
)
def test_an_unknown_value_representation_is_a_corrupt_file_not_a_crash(data: bytes) -> None:
    got = record(data)
    assert (
        got.kind == "ignored"
        and got.why_ignored.startswith("corrupt: ")
        and "Unknown Value Representation" in (got.why_ignored)
    )


def test_a_ct_with_grid_values_that_are_no_numbers_is_invalid_geometry() -> None:
    for data in (ct(Rows=None), ct().replace(b"0.75\\0.5", b"0.75\\0.x")):  # x: as a broken exporter wrote it
        got = record(data)
        assert (got.kind, got.problem) == ("unusable", "invalid_geometry")


@pytest.mark.parametrize(
    "change",
    [
        {"ImagePositionPatient": [1.0, 2.0]},
        {"ImageOrientationPatient": [1, 0, 0, 0, 1]},
        {"PixelSpacing": [0.5]},
        {"Rows": 0},
        {"Columns": 0},
        {"PixelSpacing": [0.5, 0.0]},
        {"PixelSpacing": [0.0, 0.5]},
        {"ImagePositionPatient": [1.0, "NaN", 3.0]},
        {"ImageOrientationPatient": [1, 0, 0, 0, "inf", 0]},
        {"PixelSpacing": ["inf", 0.5]},
        {"ImageOrientationPatient": [0.3, 0, 0, 0, 1, 0]},
        {"ImageOrientationPatient": [1, 0, 0, 0, 0.4, 0]},
        {"ImagePositionPatient": None},
        {"ImageOrientationPatient": None},
        {"PixelSpacing": None},
        {"Columns": None},
    ],
    ids=lambda change: ",".join(f"{k}={v}" for k, v in change.items()),
)
def test_a_ct_slice_without_a_usable_grid_is_invalid_geometry(change: dict[str, Any]) -> None:
    got = record(ct(**change))
    assert (got.kind, got.problem, got.slice) == ("unusable", "invalid_geometry", None)
    assert got.why_ignored == (
        "CT image whose PixelSpacing, ImagePositionPatient, ImageOrientationPatient or size is missing, zero or not "
        "finite"
    )


def test_orientation_vectors_only_need_a_length_of_a_half_and_one_pixel_is_an_image() -> None:
    assert record(ct(ImageOrientationPatient=[0.5, 0, 0, 0, 0.5, 0])).kind == "ct"
    assert record(ct(ImageOrientationPatient=[1, 0, 0, 0.9, 0.3, 0])).kind == "ct"
    assert record(ct(ImageOrientationPatient=[0.3, 0, 0, 1, 0, 0])).problem == "invalid_geometry"
    assert record(ct(ImageOrientationPatient=[1, 0, 0, 0.3, 0, 0])).problem == "invalid_geometry"
    assert record(ct(Rows=1, Columns=1)).kind == "ct"


@pytest.mark.parametrize(
    ("changes", "size", "truncated"),
    [
        ({}, 47, True),
        ({}, 48, False),
        ({"syntax": JPEG2000Lossless, "pixel_bytes": None}, 10, False),  # compressed: its size says nothing
        ({"syntax": ImplicitVRLittleEndian}, 47, True),
        ({"NumberOfFrames": 2}, 95, True),
        ({"NumberOfFrames": 2}, 96, False),
        ({"BitsAllocated": 8, "BitsStored": 8}, 23, True),
        ({"BitsAllocated": 8, "BitsStored": 8}, 24, False),
        ({"SamplesPerPixel": 3}, 143, True),
        ({"SamplesPerPixel": 3}, 144, False),
        ({"BitsAllocated": None}, 1, False),  # undeterminable: not called short
        ({"NumberOfFrames": 0}, 47, True),  # 0 frames written: one
        ({"NumberOfFrames": 0}, 48, False),
        ({"SamplesPerPixel": None}, 47, True),  # missing: one sample
        ({"SamplesPerPixel": None}, 48, False),
        ({"BitsAllocated": 1, "BitsStored": 1, "Columns": 5}, 2, True),  # 20 bits: 3 bytes
        ({"BitsAllocated": 1, "BitsStored": 1, "Columns": 5}, 3, False),
        ({"preamble": False, "syntax": ImplicitVRLittleEndian}, 47, True),  # no file meta: implicit VR
    ],
)
def test_pixel_data_shorter_than_rows_columns_frames_and_bits_need_is_truncated(
    changes: dict[str, Any], size: int, truncated: bool
) -> None:
    got = record(ct(**changes), size=size)  # a file of `size` bytes: shorter than its pixel data alone?
    assert got.kind == "ct" and got.truncated is truncated


def referenced_image(uid: str, sop_class: str | None = CT_IMAGE_STORAGE) -> Dataset:
    item = Dataset()
    item.ReferencedSOPInstanceUID = uid
    if sop_class is not None:
        item.ReferencedSOPClassUID = sop_class
    return item


def rtstruct(series_images: list[Dataset] | None, contour_images: list[Dataset], **changes: Any) -> bytes:
    series = Dataset()
    series.SeriesInstanceUID = "1.2.7.1"
    if series_images is not None:
        series.ContourImageSequence = Sequence(series_images)
    study = Dataset()
    study.RTReferencedSeriesSequence = Sequence([series, Dataset()])  # an item without a UID is left out
    frame = Dataset()
    frame.FrameOfReferenceUID = "1.2.7.9"
    frame.RTReferencedStudySequence = Sequence([study])
    rois, contours = Sequence(), Sequence()
    for number, name, frame_uid in (
        (4, "GTVp", "1.2.7.9"),
        (9, "Cord", "1.2.7.8"),
        (4, "Larynx", None),
        (5, None, None),
    ):
        roi = Dataset()
        roi.ROINumber = number
        if name is not None:
            roi.ROIName = name
        if frame_uid is not None:
            roi.ReferencedFrameOfReferenceUID = frame_uid
        rois.append(roi)
    for number, types in ((4, ["CLOSED_PLANAR", "POINT"]), (9, [])):
        item = Dataset()
        item.ReferencedROINumber = number
        item.ContourSequence = Sequence()
        for n, kind in enumerate(types):
            contour = Dataset()
            contour.ContourGeometricType = kind
            contour.ContourImageSequence = Sequence([contour_images[n % len(contour_images)]])
            item.ContourSequence.append(contour)
        contours.append(item)
    elements = {
        "Modality": "RTSTRUCT",
        **IDS,
        "StructureSetDate": "20260102",
        "StructureSetTime": "101500",
        "ReferencedFrameOfReferenceSequence": Sequence([frame, Dataset()]),
        "StructureSetROISequence": rois,
        "ROIContourSequence": contours,
        **changes,
    }
    return encoded(RTSTRUCT_STORAGE, **elements)


def test_an_rtstruct_gives_its_references_roi_names_and_contour_types() -> None:
    images = [
        referenced_image("1.2.7.1.5"),
        referenced_image("1.2.7.1.6", sop_class=None),
        referenced_image("9.9", "1.9"),
    ]
    got = record(rtstruct(images, [referenced_image("1.2.7.1.5")]))
    assert got.kind == "rtstruct"
    assert got.rtstruct == RtstructInfo(
        referenced_series_uids=["1.2.7.1"],
        referenced_frame_of_reference_uids=["1.2.7.9", "1.2.7.8"],
        roi_names={4: "GTVp", 9: "Cord", 5: ""},
        roi_contour_types={4: ["CLOSED_PLANAR", "POINT"], 9: []},
        date_time="20260102101500",
        series_images={"1.2.7.1": ["1.2.7.1.5", "1.2.7.1.6"]},  # the other modality's image left out
        contour_images=[],  # the series' list names them all
        duplicate_roi_numbers=["ROINumber 4: 'GTVp' and 'Larynx'"],
    )


def test_without_the_series_list_the_contours_name_their_images_once_each() -> None:
    contour_images = [referenced_image("1.2.7.1.8"), referenced_image("1.2.7.1.8"), referenced_image("7.7", "1.9")]
    no_list: list[list[Dataset] | None] = [None, []]
    for series_images in no_list:
        got = record(rtstruct(series_images, contour_images))
        assert got.rtstruct is not None
        assert got.rtstruct.series_images == {"1.2.7.1": []}
        assert got.rtstruct.contour_images == ["1.2.7.1.8"]


def test_an_rtstruct_without_any_reference_or_roi_is_still_an_rtstruct() -> None:
    got = record(encoded(RTSTRUCT_STORAGE, Modality="RTSTRUCT", **IDS))
    assert got.kind == "rtstruct"
    assert got.rtstruct == RtstructInfo([], [], {}, {}, "")
    frame = Dataset()  # a frame of reference item with a study but no UIDs anywhere
    frame.RTReferencedStudySequence = Sequence([Dataset()])
    got = record(encoded(RTSTRUCT_STORAGE, Modality="RTSTRUCT", ReferencedFrameOfReferenceSequence=[frame], **IDS))
    assert got.rtstruct == RtstructInfo([], [], {}, {}, "")
    assert record(rtstruct(None, [referenced_image("1")], Modality=None)).kind == "rtstruct"  # SOP class alone


def test_an_rtstruct_whose_roi_number_is_no_number_is_corrupt() -> None:
    roi = Dataset()
    roi.ROINumber = 77
    data = encoded(RTSTRUCT_STORAGE, Modality="RTSTRUCT", StructureSetROISequence=[roi], **IDS)
    got = record(data.replace(b"77", b"7x"))
    assert got.kind == "ignored" and got.why_ignored.startswith("corrupt: ") and got.rtstruct is None


def test_read_record_reads_the_file_and_says_what_the_file_system_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "f.dcm").write_bytes(ct())
    os.utime(tmp_path / "p" / "f.dcm", ns=(5, 777_000_000_123))
    got = read_record(tmp_path, tmp_path / "p" / "f.dcm")
    assert (got.path, got.kind, got.size, got.mtime_ns) == ("p/f.dcm", "ct", len(ct()), 777_000_000_123)
    assert read_record(tmp_path, tmp_path / "p" / "gone.dcm") == FileRecord(
        "p/gone.dcm", "unreadable", "vanished during the scan"
    )
    assert read_record(tmp_path, tmp_path / "p" / "f.dcm" / "x") == FileRecord(
        "p/f.dcm/x", "unreadable", "cannot open: Not a directory"
    )
    os.mkfifo(tmp_path / "p" / "pipe")  # e.g. swapped in after the walk: never blocks
    assert read_record(tmp_path, tmp_path / "p" / "pipe") == FileRecord("p/pipe", "skipped", "FIFO")
    assert read_record(tmp_path, tmp_path / "p") == FileRecord("p", "skipped", "folder")
    (tmp_path / "p" / "null").symlink_to("/dev/null")
    assert read_record(tmp_path, tmp_path / "p" / "null") == FileRecord("p/null", "skipped", "device")

    def failing(*_: Any) -> FileRecord:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(headers, "classify", failing)
    assert read_record(tmp_path, tmp_path / "p" / "f.dcm") == FileRecord(
        "p/f.dcm", "unreadable", "read error: Input/output error"
    )


def test_walk_tree_lists_regular_files_in_order_and_every_oddity(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for name in ("b/2.dcm", "b/10.dcm", "a/x/1.dcm", ".hidden/h.dcm", ".top.dcm", "z.dcm"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "o.dcm").write_bytes(b"x")
    (root / "c").symlink_to(tmp_path / "outside", target_is_directory=True)
    (root / "d").symlink_to(tmp_path / "outside", target_is_directory=True)  # the same folder again
    (root / "a" / "link.dcm").symlink_to(root / "z.dcm")
    (root / "a" / "dangling.dcm").symlink_to(tmp_path / "nothing")
    (root / "a" / "self").symlink_to(root / "a" / "self")
    (root / "a" / "up").symlink_to(root / "a", target_is_directory=True)
    (root / "a" / "null").symlink_to("/dev/null")
    os.mkfifo(root / "b" / "pipe")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "b" / "sock"))
    try:
        tree = walk_tree(root)
    finally:
        server.close()
    assert [p.relative_to(root).as_posix() for p in tree.files] == [
        ".top.dcm",  # hidden folders are skipped, hidden files are not
        "z.dcm",  # a folder's files, then its subfolders', depth first, by name
        "a/link.dcm",
        "a/x/1.dcm",
        "b/10.dcm",
        "b/2.dcm",
        "c/o.dcm",
    ]
    assert iter_files(root) == tree.files
    assert sorted(tree.oddities, key=lambda r: r.path) == [
        FileRecord("a/dangling.dcm", "skipped", "dangling symbolic link"),
        FileRecord("a/null", "skipped", "device"),
        FileRecord("a/self", "skipped", "cannot follow: Too many levels of symbolic links"),
        FileRecord("a/up", "skipped", "symbolic link loop (folder already scanned)"),
        FileRecord("b/pipe", "skipped", "FIFO"),
        FileRecord("b/sock", "skipped", "socket"),
        FileRecord("d", "skipped", "symbolic link loop (folder already scanned)"),
    ]


class CountingStore(LocalStore):
    """A local store that records the reads made of it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[tuple[str, ...]] = []

    def get_bytes(self, key: str) -> bytes | None:
        self.reads.append(("all", key))
        return super().get_bytes(key)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        self.reads.append(("range", key, str(start), str(length)))
        return super().read_range(key, start, length)


def test_a_remote_object_is_read_as_far_as_its_header_needs(tmp_path: Path) -> None:
    """A header-sized read first (8 KiB), a longer one (64 KiB) when the header goes on, the whole object only when
    it goes on beyond that or the object is no longer than what would be read."""
    store = CountingStore(tmp_path)
    first, second = HEADER_READS
    big_ct = ct(pixel_bytes=2 * second, Rows=256, Columns=256)
    long_names = [referenced_image(f"1.2.7.1.{n}") for n in range(2000)]  # a header beyond 64 KiB
    big_rtstruct = rtstruct(long_names, [referenced_image("1")])
    assert len(big_rtstruct) > second
    private = ct(pixel_bytes=2 * second, Rows=256, Columns=256)  # a CT whose header outgrows the first read
    private_ds = pydicom.dcmread(io.BytesIO(private))
    private_ds.add_new(0x00091010, "OB", bytes(3 * first))
    buffer = io.BytesIO()
    private_ds.save_as(buffer)
    private = buffer.getvalue()
    cases = (
        ("small.dcm", ct()),
        ("big.dcm", big_ct),
        ("rs.dcm", big_rtstruct),
        ("x.txt", b"hello"),
        ("p.dcm", private),
    )
    for key, data in cases:
        (tmp_path / key).write_bytes(data)
        store.reads.clear()
        got = read_remote_record(store, key, len(data), 9)
        local = read_record(tmp_path, tmp_path / key)
        assert got == replace(local, path=key, mtime_ns=9)  # the same record as the file's on a disk
        expected = {
            "small.dcm": [("all", key)],
            "x.txt": [("all", key)],
            "big.dcm": [("range", key, "0", str(first))],
            "p.dcm": [("range", key, "0", str(first)), ("range", key, "0", str(second))],
            "rs.dcm": [("range", key, "0", str(first)), ("range", key, "0", str(second)), ("all", key)],
        }[key]
        assert store.reads == expected, key
    assert read_remote_record(store, "rs.dcm", len(big_rtstruct), 9).rtstruct.series_images == {
        "1.2.7.1": [f"1.2.7.1.{n}" for n in range(2000)]
    }


def test_a_folder_that_vanishes_between_listing_and_looking_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a" / "gone").mkdir(parents=True)
    (tmp_path / "a" / "kept.dcm").write_bytes(b"x")
    listing = os.scandir

    def racing(path: Any) -> Any:
        if Path(path) != tmp_path / "a":
            return listing(path)
        entries = _Listing(listing(path))  # listed first, then the folder is removed by someone else
        (tmp_path / "a" / "gone").rmdir()
        return entries

    monkeypatch.setattr(headers.os, "scandir", racing)
    tree = walk_tree(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in tree.files] == ["a/kept.dcm"]
    assert tree.oddities == [FileRecord("a/gone", "unreadable", "vanished during the scan")]


class _Listing(list[Any]):
    """A listing already read, usable as ``os.scandir``'s context manager."""

    def __enter__(self) -> _Listing:
        return self

    def __exit__(self, *_: object) -> None:
        return None


class CountingReader(io.BytesIO):
    """A file whose reads are counted."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.read_bytes = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.read_bytes += len(chunk)
        return chunk


def test_headers_are_read_never_the_pixels() -> None:
    data = ct(Rows=512, Columns=512, pixel_bytes=512 * 512 * 2)
    handle = CountingReader(data)
    assert classify("big.dcm", len(data), 0, handle).kind == "ct"
    assert handle.read_bytes < 4096 < len(data)


def test_files_named_by_their_meta_header_or_modality_alone() -> None:
    no_class = encoded(None, Modality="RTSTRUCT", **IDS)
    assert record(no_class).kind == "rtstruct"
    ds = pydicom.dcmread(io.BytesIO(encoded(RTSTRUCT_STORAGE, **IDS)))
    del ds.SOPClassUID  # the SOP class in the file meta only
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds)
    assert record(buffer.getvalue()).kind == "rtstruct"
    assert record(ct()[132:]).kind == "ct"  # no preamble, the file meta (group 2) first
    # four bytes that start like a DICOM file without preamble: read as one, and found to be nothing usable
    assert record(b"\x08\x00\x05\x00").why_ignored == "neither Modality nor SOP class say CT or RTSTRUCT (no SOP class)"


def test_contours_without_a_type_or_an_image_uid_are_recorded_not_refused() -> None:
    contour = Dataset()  # no ContourGeometricType
    image = Dataset()
    image.ReferencedSOPClassUID = CT_IMAGE_STORAGE  # no ReferencedSOPInstanceUID
    contour.ContourImageSequence = Sequence([image, referenced_image("1.2.7.1.5")])
    item = Dataset()
    item.ReferencedROINumber = 3
    item.ContourSequence = Sequence([contour])
    got = record(encoded(RTSTRUCT_STORAGE, Modality="RTSTRUCT", ROIContourSequence=[item], **IDS))
    assert got.kind == "rtstruct" and got.rtstruct is not None
    assert got.rtstruct.roi_contour_types == {3: [""]}
    assert got.rtstruct.contour_images == ["1.2.7.1.5"]


def test_a_folder_that_cannot_be_listed_is_reported_and_the_walk_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a/1.dcm", "b/2.dcm", "c/3.dcm"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    listing = os.scandir

    def refusing(path: Any) -> Any:
        if Path(path) == tmp_path / "a":  # the first folder walked (root may read anything: refused here)
            raise PermissionError(errno.EACCES, "Permission denied")
        return listing(path)

    monkeypatch.setattr(headers.os, "scandir", refusing)
    tree = walk_tree(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in tree.files] == ["b/2.dcm", "c/3.dcm"]
    assert tree.oddities == [FileRecord("a", "unreadable", "folder cannot be listed: Permission denied")]
