"""Header values decoded from raw elements equal pydicom's, with the same warnings and errors; classify() agrees."""

from __future__ import annotations

import io
import math
import struct
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom import config
from pydicom.data import get_testdata_file
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from tsretrain.conversion import rawvalues
from tsretrain.conversion.headers import classify, iter_files
from tsretrain.conversion.rawvalues import header_text, header_value

PYDICOM_FILES = sorted(p for p in Path(str(get_testdata_file("CT_small.dcm"))).parent.rglob("*") if p.is_file())


def outcome(get: Callable[..., Any], *args: Any) -> tuple[Any, list[str]]:
    """What a read gives, normalised for comparison: value (or exception type and text), and its warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = normalised(get(*args))
        except Exception as exc:
            value = ("raised", type(exc).__name__, str(exc))
    return value, [str(w.message) for w in caught]


def normalised(value: Any) -> Any:
    """The value as plain types: a list for pydicom's MultiValue, each item tagged with its base type."""
    if isinstance(value, Sequence):
        return ("Sequence", len(value))  # its items are compared one by one
    if isinstance(value, list | MultiValue):
        return [normalised(v) for v in value]
    for kind in (str, int, float):
        if isinstance(value, kind):
            return (kind.__name__, "nan" if kind is float and math.isnan(value) else value)
    return (type(value).__name__, value)


def pydicom_text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return str(value).strip() if value is not None else ""


def assert_same_as_pydicom(read: Callable[[], Dataset]) -> int:
    """Every element of ``read()``, through every sequence item, read by header_value and header_text and by
    pydicom, each from a dataset of its own that nothing else has touched; returns the number compared."""
    datasets = [read() for _ in range(4)]
    compared = _compare(*datasets)
    if hasattr(datasets[0], "file_meta"):
        compared += _compare(*(ds.file_meta for ds in datasets))
    return compared


def _compare(fast: Dataset, fast_text: Dataset, reference: Dataset, reference_text: Dataset) -> int:
    compared = 0
    for tag in list(reference.keys()):
        keyword = keyword_for_tag(tag)
        if not keyword or tag_for_keyword(keyword) != tag or keyword == "ContourData":
            continue  # private, unknown, repeating-group elements; contour points are many DS values, slow to compare
        expected = outcome(getattr, reference, keyword)
        assert outcome(header_value, fast, keyword) == expected, keyword
        compared += 1
        if isinstance(reference.get_item(tag), DataElement) and reference[keyword].VR == "SQ":
            sequences = (fast, fast_text, reference, reference_text)
            for items in zip(*(ds[keyword].value for ds in sequences), strict=True):
                compared += _compare(*items)
            continue
        assert outcome(header_text, fast_text, keyword) == outcome(pydicom_text, reference_text, keyword), keyword
    absent = "NumberOfFrames"
    if absent not in reference:
        assert outcome(header_value, fast, absent) == outcome(getattr, reference, absent)
        assert outcome(header_value, fast, absent, None) == outcome(reference.get, absent, None)
        assert outcome(header_text, fast_text, absent) == outcome(pydicom_text, reference_text, absent)
    return compared


def read_dataset_from(data: bytes, implicit: bool, little: bool) -> Dataset:
    return read_dataset(io.BytesIO(data), implicit, little)


def header(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)


def all_files(cohort: Path) -> list[Path]:
    """Every file of the synthetic cohort (edge cases, junk and all) and of pydicom's bundled test files."""
    return [*iter_files(cohort / "dicom"), *PYDICOM_FILES]


def varied_files(cohort: Path) -> list[Path]:
    """Every folder's first three files (the slices of a series differ only in their position) and
    every one of pydicom's (implicit VR, big endian, deflated, JPEG, multi-frame, truncated, RT, SR...)."""
    files: dict[Path, list[Path]] = {}
    for path in iter_files(cohort / "dicom"):
        files.setdefault(path.parent, []).append(path)
    return [*(p for folder in files.values() for p in folder[:3]), *PYDICOM_FILES]


def test_every_element_of_the_cohort_and_pydicom_test_files_reads_as_pydicom_reads_it(cohort: Path) -> None:
    compared = 0
    for path in varied_files(cohort):
        data = path.read_bytes()
        try:
            header(data)
        except Exception:  # not DICOM, or corrupt before any element: nothing to compare
            continue
        compared += assert_same_as_pydicom(partial(header, data))
    assert compared > 50_000


def test_classify_gives_the_same_records_without_the_raw_decoding(
    cohort: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = all_files(cohort)
    blobs = [(p.as_posix(), p.read_bytes()) for p in files]
    fast = [classify(name, len(data), 0, io.BytesIO(data)) for name, data in blobs]
    # Every value left to pydicom: what classify() gave before the raw decoding existed
    monkeypatch.setattr(
        rawvalues, "_decode", lambda ds, keyword: rawvalues._Not.DECODED if keyword in ds else rawvalues._Not.PRESENT
    )
    slow = [classify(name, len(data), 0, io.BytesIO(data)) for name, data in blobs]
    assert fast == slow
    kinds = {record.kind for record in fast}
    assert {"ct", "rtstruct", "unusable", "ignored"} <= kinds


def encode(tag: int, vr: str, value: bytes, implicit: bool, little: bool) -> bytes:
    """One element as a file encodes it: implicit VR, or explicit VR with a 2- or 4-byte length."""
    order = "<" if little else ">"
    head = struct.pack(f"{order}HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack(f"{order}I", len(value)) + value
    if vr in ("OB", "UN", "SQ", "UT"):
        return head + vr.encode() + b"\0\0" + struct.pack(f"{order}I", len(value)) + value
    return head + vr.encode() + struct.pack(f"{order}H", len(value)) + value


ODD_VALUES_OF = {  # (tag, VR written): values, in the VRs decoded here and a few left to pydicom
    (0x00080018, "UI"): (  # SOPInstanceUID
        *(b"1.2.3\0", b"1.2.3 ", b"1.2.03\0", b"01.2", b"1.2.3\\4.5\0", b"a.b\0", b" 1.2"),
        *(b"1." * 40, b"\0\0", b"1.\xe9", b""),
    ),
    (0x00080060, "CS"): (  # Modality
        *(b"CT", b"ct", b"CT\\MR ", b" C T", b"  ", b"\\ ", b"RTSTRUCT", b"TOOLONGFORACSVALUE", b"C\xe9", b"MAX", b""),
    ),
    (0x00280030, "DS"): (  # PixelSpacing
        *(b"0.5\\0.5 ", b"1e3\\-2.5E-1", b" 1 \\ 2 ", b"nan\\1", b"inf ", b"1,5\\2", b"\\1", b"12345678901234567"),
        *(b"1.\\.5", b"+1\\-0", b"1e400\\2", b"abc\0", b"1.5\0\0", b"  "),
    ),
    (0x00200013, "IS"): (  # InstanceNumber
        *(b"7 ", b"+7", b"007", b"-2147483648 ", b"2147483648", b"99999999999", b"1.0", b"1.5", b" ", b"1\\2"),
    ),
    (0x00200011, "IS"): (b"x ", b"0012", b"-0"),  # SeriesNumber
    (0x00280010, "US"): (b"\x00\x02", b"\x01", b"\x01\x00\x02\x00", b""),  # Rows
    (0x00280010, "UN"): (b"\x00\x02",),  # a known tag written as UN
    (0x00280010, "OB"): (b"\x00\x02",),  # ... or with a wrong VR
    (0x00080018, "LO"): (b"1.2.3 ",),
    (0x00100020, "LO"): (b"Ab\xe9 ",),  # PatientID: text of the character set
    (0x30060008, "DA"): (b"20200101",),  # StructureSetDate
}
ODD_VALUES = [(tag, vr, value) for (tag, vr), values in ODD_VALUES_OF.items() for value in values]


@pytest.mark.parametrize("mode", [config.WARN, config.RAISE], ids=["warn", "raise"])
@pytest.mark.parametrize(
    "implicit,little", [(True, True), (False, True), (False, False)], ids=["ivrle", "evrle", "evrbe"]
)
def test_odd_values_read_as_pydicom_reads_them(
    mode: int, implicit: bool, little: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config.settings, "reading_validation_mode", mode)
    compared = 0
    for tag, vr, value in ODD_VALUES:
        if implicit and vr in ("UN", "OB", "LO") and tag != 0x00100020:
            continue  # a wrong VR needs explicit VR to be written
        data = encode(tag, vr, value, implicit, little)
        compared += assert_same_as_pydicom(partial(read_dataset_from, data, implicit, little))
    assert compared >= len(ODD_VALUES) - 4


CONFORMING = [  # (tag, VR, bytes as a file has them, the value decoded here)
    (0x00080018, "UI", b"1.2.840.10008.5.1.4.1.1.2\0", "1.2.840.10008.5.1.4.1.1.2"),  # padded with a null
    (0x00080018, "UI", b"1." + b"2" * 62, "1." + "2" * 62),  # 64 characters, the longest allowed
    (0x00080060, "CS", b"RTSTRUCT", "RTSTRUCT"),
    (0x00080060, "CS", b"ABCDEFGHIJKLMNOP", "ABCDEFGHIJKLMNOP"),  # 16, the longest allowed
    (0x00280030, "DS", b"0.5\\0.75", [0.5, 0.75]),
    (0x00280030, "DS", b" 1234567890.1234\\2 ", [1234567890.1234, 2.0]),  # 16 with its spaces
    (0x00200013, "IS", b"-12 ", -12),
    (0x00200013, "IS", b"+12345678901", 12345678901),  # 12 characters (beyond int32: left to pydicom below)
    (0x00280010, "US", b"\x00\x02", 512),
]


@pytest.mark.parametrize("little", [True, False], ids=["little-endian", "big-endian"])
@pytest.mark.parametrize(("tag", "vr", "raw", "value"), CONFORMING, ids=[f"{c[1]}-{c[2]!r}" for c in CONFORMING])
def test_conforming_values_are_decoded_here_and_pydicom_never_converts_them(
    tag: int, vr: str, raw: bytes, value: Any, little: bool
) -> None:
    """What the scan gains time by: the raw element stays raw, and the value is the one pydicom would give."""
    if vr == "US" and not little:
        raw = raw[::-1]
    ds = read_dataset_from(encode(tag, vr, raw, implicit=False, little=little), False, little)
    keyword = keyword_for_tag(tag)
    decoded = header_value(ds, keyword)
    fresh = read_dataset_from(encode(tag, vr, raw, implicit=False, little=little), False, little)
    assert normalised(decoded) == normalised(getattr(fresh, keyword))  # pydicom's value
    if vr == "IS" and not -(2**31) <= value < 2**31:
        assert isinstance(ds.get_item(tag), DataElement)  # out of IS range: pydicom's to judge
        return
    assert decoded == value and type(decoded) is type(value)
    assert not isinstance(ds.get_item(tag), DataElement)  # still the raw element: pydicom did no work
    if not isinstance(value, list):
        assert header_text(ds, keyword) == pydicom_text(fresh, keyword)
        assert not isinstance(ds.get_item(tag), DataElement)
