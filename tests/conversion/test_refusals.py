"""Refused series and unreadable pixels say exactly what is wrong (the case listing shows these words), the
tolerances hold at their edges, and the fast pixel path gives what pydicom gives."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit
from support import write_ct_slice

from tsretrain.conversion.ct import read_hu_volume
from tsretrain.conversion.geometry import (
    ORIENTATION_TOL,
    PIXEL_SPACING_TOL,
    SliceHeader,
    VolumeGeometry,
    build_geometry,
)
from tsretrain.reasons import CaseError, Reason

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def axial(n: int, z: float | None = None, **changes: Any) -> SliceHeader:
    fields: dict[str, Any] = {
        "path": f"f{n}",
        "sop_instance_uid": f"1.{n}",
        "position": (5.0, -3.0, 3.0 * n if z is None else z),
        "orientation": AXIAL,
        "pixel_spacing": (0.8, 0.6),
        "rows": 3,
        "columns": 5,
    }
    return SliceHeader(**{**fields, **changes})


def refusal(slices: list[SliceHeader]) -> tuple[Reason, str]:
    with pytest.raises(CaseError) as caught:
        build_geometry(slices)
    return caught.value.reason, caught.value.detail


TILTED = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@pytest.mark.parametrize(
    ("slices", "reason", "detail"),
    [
        ([], Reason.NO_CT, "the CT series has no images"),
        (
            [
                axial(0),
                axial(1, orientation=(1.0, 0.0, 0.0, 0.0, 0.9998, 0.02)),
                axial(2, orientation=(0, 1, 0, 1, 0, 0)),
            ],
            Reason.MIXED_ORIENTATION,
            "3 different ImageOrientationPatient values among 3 slices",
        ),
        ([axial(0), axial(1, rows=4), axial(2)], Reason.INCONSISTENT_GEOMETRY, "slices differ in Rows/Columns"),
        ([axial(0), axial(1), axial(2, columns=6)], Reason.INCONSISTENT_GEOMETRY, "slices differ in Rows/Columns"),
        (
            [axial(0), axial(1, pixel_spacing=(0.8, 0.6002)), axial(2)],
            Reason.INCONSISTENT_GEOMETRY,
            "slices differ in PixelSpacing",
        ),
        (
            [axial(n, orientation=(1.0, 0.0, 0.0, 0.01, 1.0, 0.0)) for n in range(2)],
            Reason.INCONSISTENT_GEOMETRY,
            "row and column directions are not orthogonal",
        ),
        (
            [axial(0), axial(1), axial(2, z=3.0005, sop_instance_uid="1.9")],
            Reason.DUPLICATE_SLICES,
            "slices 1.1 and 1.9 share position 3.000 mm",
        ),
        (
            [axial(n, position=(5.0 + 0.5 * n, -3.0, 3.0 * n)) for n in range(3)],
            Reason.GANTRY_TILT,
            "slice origins drift 1.00 mm off the slice normal (gantry tilt or sheared series)",
        ),
        (
            [axial(0), axial(1), axial(3), axial(4), axial(7)],
            Reason.MISSING_SLICES,
            "3 slice(s) missing (gap of 9.000 mm after position 12.000 mm, spacing 3.000 mm)",
        ),
        (
            [axial(0, z=0.0), axial(1, z=3.0), axial(2, z=6.8), axial(3, z=9.8)],
            Reason.NONUNIFORM_SPACING,
            "slice spacing varies from 3.000 to 3.800 mm",
        ),
    ],
    ids=[
        "none",
        "orientation",
        "rows",
        "columns",
        "pixel-spacing",
        "not-orthogonal",
        "duplicate",
        "tilt",
        "missing",
        "nonuniform",
    ],
)
def test_a_refused_series_says_what_is_wrong(slices: list[SliceHeader], reason: Reason, detail: str) -> None:
    assert refusal(slices) == (reason, detail)


def test_tolerances_hold_at_their_edges() -> None:
    nudged = (1.0, 0.0, 0.0, 0.0, 1.0, ORIENTATION_TOL * 0.9)
    build_geometry([axial(0), axial(1, orientation=nudged), axial(2)])
    build_geometry([axial(0), axial(1, pixel_spacing=(0.8, 0.6 + PIXEL_SPACING_TOL * 0.9)), axial(2)])
    # one gap longer than the others by up to 1 % of the spacing is noise
    build_geometry([axial(n, z=3.0 * n + (0.0299 if n >= 2 else 0.0)) for n in range(4)])
    assert (
        refusal([axial(n, z=3.0 * n + (0.0301 if n >= 2 else 0.0)) for n in range(4)])[0] is Reason.NONUNIFORM_SPACING
    )
    # positions 0.01 mm (plus 1 % of the spacing) off the normal are noise, not a tilt
    build_geometry([axial(n, position=(5.0 + 0.039 * (n % 2), -3.0, 3.0 * n)) for n in range(3)])
    assert refusal([axial(n, position=(5.0 + 0.041 * (n % 2), -3.0, 3.0 * n)) for n in range(3)])[0] is (
        Reason.GANTRY_TILT
    )


def test_a_single_slice_is_a_volume_of_unit_thickness() -> None:
    geometry, ordered = build_geometry([axial(0, z=7.5)])
    assert geometry == VolumeGeometry((1, 3, 5), (5.0, -3.0, 7.5), (0.6, 0.8, 1.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert ordered == [axial(0, z=7.5)]


def test_geometry_round_trips_through_json_and_knows_its_voxel_volume() -> None:
    geometry, _ = build_geometry([axial(n) for n in range(4)])
    assert VolumeGeometry.from_json(geometry.to_json()) == geometry
    assert geometry.to_json() == {
        "shape_zyx": [4, 3, 5],
        "origin": [5.0, -3.0, 0.0],
        "spacing_xyz": [0.6, 0.8, 3.0],
        "direction": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
    }
    assert geometry.voxel_volume_ml == pytest.approx(0.6 * 0.8 * 3.0 / 1000)


GRID = VolumeGeometry((1, 2, 3), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
SIGNED = np.array([[-1000, -1, 0], [1, 255, 3000]], np.int16)


@pytest.mark.parametrize(
    ("pixels", "syntax", "elements"),
    [
        (SIGNED, ExplicitVRLittleEndian, {}),
        (SIGNED, ImplicitVRLittleEndian, {}),
        (SIGNED, ExplicitVRBigEndian, {}),
        (SIGNED.astype(np.uint16), ExplicitVRLittleEndian, {}),  # unsigned: 64536 for the bytes of -1000
        (SIGNED.astype(np.uint16) & 0x0FFF, ExplicitVRLittleEndian, {"BitsStored": 12, "HighBit": 11}),
        (np.array([[0, 7, 255], [1, 2, 3]], np.uint8), ExplicitVRLittleEndian, {}),
        (SIGNED, ExplicitVRLittleEndian, {"NumberOfFrames": 1}),
    ],
    ids=["le", "implicit", "big-endian", "unsigned", "12-bit", "8-bit", "one-frame"],
)
def test_hu_of_every_pixel_layout_is_what_pydicom_decodes(
    tmp_path: Path, pixels: np.ndarray, syntax: str, elements: dict[str, Any]
) -> None:
    write_ct_slice(tmp_path / "s.dcm", "1.5", pixels, syntax, **elements)
    expected = np.clip(pydicom.dcmread(tmp_path / "s.dcm").pixel_array.astype(np.int32) - 1024, -32768, 32767)
    volume = read_hu_volume(tmp_path, ["s.dcm"], ["1.5"], GRID)
    np.testing.assert_array_equal(volume[0], expected)
    assert volume.dtype == np.int16


def read_refusal(root: Path, geometry: VolumeGeometry = GRID) -> tuple[Reason, str]:
    with pytest.raises(CaseError) as caught:
        read_hu_volume(root, ["s.dcm"], ["1.5"], geometry)
    return caught.value.reason, caught.value.detail


def test_pixels_that_cannot_be_read_say_which_file_and_why(tmp_path: Path) -> None:
    (tmp_path / "s.dcm").mkdir()
    reason, detail = read_refusal(tmp_path)
    assert reason is Reason.UNREADABLE_DICOM and detail.startswith("s.dcm: ") and "Is a directory" in detail
    (tmp_path / "s.dcm").rmdir()

    write_ct_slice(tmp_path / "s.dcm", "1.6", SIGNED)
    assert read_refusal(tmp_path) == (Reason.UNREADABLE_DICOM, "s.dcm changed since the scan; re-run the scan")

    write_ct_slice(tmp_path / "s.dcm", "1.5", SIGNED)
    short = (tmp_path / "s.dcm").read_bytes()[:-4]  # the pixel data cut short (the element's length says 12)
    (tmp_path / "s.dcm").write_bytes(short)
    reason, detail = read_refusal(tmp_path)
    assert reason is Reason.UNREADABLE_DICOM and detail.startswith(
        f"s.dcm (transfer syntax {ExplicitVRLittleEndian}): "
    )

    write_ct_slice(tmp_path / "s.dcm", "1.5", SIGNED)
    reason, detail = read_refusal(tmp_path, VolumeGeometry((1, 3, 2), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), GRID.direction))
    assert (reason, detail) == (Reason.INCONSISTENT_GEOMETRY, "s.dcm: pixel array (2, 3) != (3, 2)")


def test_compressed_pixels_that_do_not_decode_are_undecodable(tmp_path: Path) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2")
    ds.file_meta.MediaStorageSOPInstanceUID = UID("1.5")
    ds.SOPInstanceUID = "1.5"
    ds.Rows, ds.Columns = 2, 3
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelRepresentation = 0
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8 not a JPEG stream"])
    ds["PixelData"].VR = "OB"
    ds.preamble = b"\0" * 128
    pydicom.dcmwrite(tmp_path / "s.dcm", ds)
    reason, detail = read_refusal(tmp_path)
    assert reason is Reason.UNDECODABLE_PIXELS and detail.startswith(f"s.dcm (transfer syntax {JPEGBaseline8Bit}): ")


def test_plain_16_bit_little_endian_pixels_are_read_without_pydicoms_decoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The common layout is read straight from the bytes (faster); every other one is pydicom's to decode."""
    decoded: list[str] = []
    pixel_array = Dataset.pixel_array

    def counting(ds: Dataset) -> np.ndarray:
        decoded.append(str(ds.SOPInstanceUID))
        return pixel_array.fget(ds)  # type: ignore[attr-defined, no-any-return]

    monkeypatch.setattr(Dataset, "pixel_array", property(counting))
    layouts: list[tuple[np.ndarray, str, dict[str, Any], bool]] = [
        (SIGNED, ExplicitVRLittleEndian, {}, False),
        (SIGNED, ImplicitVRLittleEndian, {}, False),
        (SIGNED.astype(np.uint16), ExplicitVRLittleEndian, {}, False),
        (SIGNED, ExplicitVRLittleEndian, {"NumberOfFrames": 1}, False),
        (SIGNED, ExplicitVRLittleEndian, {"NumberOfFrames": 0}, False),  # written as 0: one frame
        (SIGNED, ExplicitVRLittleEndian, {"SamplesPerPixel": None}, False),  # missing: one sample
        (SIGNED, ExplicitVRLittleEndian, {"padding": b"\0\0"}, False),  # pixel data padded beyond the image
        (SIGNED, ImplicitVRLittleEndian, {"preamble": False}, False),  # no preamble, no file meta
        (SIGNED, ExplicitVRBigEndian, {}, True),
        (np.array([[0, 7, 255], [1, 2, 3]], np.uint8), ExplicitVRLittleEndian, {}, True),
        # signed 12-bit values in 16-bit words with the top bits clear: 0x0FFB is -5, not 4091
        (
            np.array([[0x0FFB, 5, 0], [0x0800, 0x07FF, 1]], np.uint16),
            ExplicitVRLittleEndian,
            {"BitsStored": 12, "HighBit": 11, "PixelRepresentation": 1},
            True,
        ),
        (SIGNED, ExplicitVRLittleEndian, {"NumberOfFrames": 2}, True),
        (SIGNED, ExplicitVRLittleEndian, {"SamplesPerPixel": 3, "PlanarConfiguration": 0}, True),
        (SIGNED, ExplicitVRLittleEndian, {"PixelRepresentation": 2}, True),
        (SIGNED, ExplicitVRLittleEndian, {"Rows": 3, "Columns": 2}, True),
        (SIGNED[:, :2], ExplicitVRLittleEndian, {"Rows": 2, "Columns": 3}, True),  # too short for its size
    ]
    for n, (pixels, syntax, elements, by_pydicom) in enumerate(layouts):
        uid = f"1.{n}"
        write_ct_slice(tmp_path / f"{n}.dcm", uid, pixels, syntax, **elements)
        decoded.clear()
        if not by_pydicom:
            volume = read_hu_volume(tmp_path, [f"{n}.dcm"], [uid], GRID)
            np.testing.assert_array_equal(volume[0], np.clip(pixels.astype(np.int32) - 1024, -32768, 32767))
        else:
            with contextlib.suppress(CaseError):  # pydicom may refuse it; what matters here is who decoded it
                read_hu_volume(tmp_path, [f"{n}.dcm"], [uid], GRID)
        assert decoded == ([uid] if by_pydicom else []), (n, elements)
    twelve = read_hu_volume(tmp_path, ["10.dcm"], ["1.10"], GRID)[0]
    np.testing.assert_array_equal(twelve, np.array([[-5, 5, 0], [-2048, 2047, 1]]) - 1024)


def test_orientations_within_the_tolerance_count_as_one_in_the_refusal() -> None:
    near = (1.0, 0.0, 0.0, 0.0, 1.0, 0.00003)  # within 1e-4 of the first: the same value
    slices = [axial(0), axial(1, orientation=near), axial(2, orientation=(0, 1, 0, 1, 0, 0))]
    assert refusal(slices) == (Reason.MIXED_ORIENTATION, "2 different ImageOrientationPatient values among 3 slices")


def test_scaled_oblique_direction_cosines_give_unit_directions() -> None:
    row, column = (0.8, 0.6, 0.0), (-0.6, 0.8, 0.0)
    scaled = tuple(2.0 * v for v in (*row, *column))
    normal = np.cross(row, column)
    slices = [axial(n, orientation=scaled, position=tuple(2.5 * n * normal)) for n in range(3)]
    geometry, _ = build_geometry(slices)
    np.testing.assert_allclose(geometry.direction_matrix, np.stack([row, column, normal], axis=1), atol=1e-12)
    assert geometry.spacing[2] == pytest.approx(2.5)


def test_two_slice_series_are_judged_like_longer_ones() -> None:
    geometry, _ = build_geometry([axial(0, z=0.0), axial(1, z=2.5)])
    assert geometry.shape[0] == 2 and geometry.spacing[2] == pytest.approx(2.5)
    assert refusal([axial(0, z=4.0), axial(1, z=4.0)])[0] is Reason.DUPLICATE_SLICES
    tilted = [axial(0, z=0.0), axial(1, z=3.0, position=(6.0, -3.0, 3.0))]
    assert refusal(tilted)[0] is Reason.GANTRY_TILT
    geometry, _ = build_geometry([axial(n, z=1.0 * n) for n in range(3)])  # 1 mm slices are no duplicates
    assert geometry.spacing[2] == pytest.approx(1.0)


def test_a_single_slice_raises_no_numpy_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_geometry([axial(0)])


@pytest.mark.parametrize(
    ("slope", "intercept", "expected"),
    [
        (None, None, SIGNED),  # both missing: 1 and 0
        ("0", "0", SIGNED),  # a zero slope is no slope; a zero intercept is zero
        ("1", None, SIGNED),
        (None, "-1000", SIGNED - 1000),
    ],
)
def test_missing_or_zero_rescale_values(
    tmp_path: Path, slope: str | None, intercept: str | None, expected: Any
) -> None:
    write_ct_slice(tmp_path / "s.dcm", "1.5", SIGNED, RescaleSlope=slope, RescaleIntercept=intercept)
    np.testing.assert_array_equal(read_hu_volume(tmp_path, ["s.dcm"], ["1.5"], GRID)[0], expected)
