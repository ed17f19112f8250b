"""Slice ordering and the series checks, on constructed headers and on pydicom's real CT files."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from support import write_ct_slice

from tsretrain.conversion.ct import read_hu_volume
from tsretrain.conversion.geometry import SliceHeader, VolumeGeometry, build_geometry
from tsretrain.conversion.headers import read_record
from tsretrain.conversion.nifti import to_image, write_nifti
from tsretrain.reasons import CaseError, Reason

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
DICOMDIR_TESTS = Path(str(get_testdata_file("DICOMDIR"))).parent


def headers(zs: list[float], orientation: tuple[float, ...] = AXIAL, shift: float = 0.0) -> list[SliceHeader]:
    return [
        SliceHeader(f"f{n}", f"1.{n}", (0.0, n * shift, z), orientation, (0.5, 0.7), 4, 6)  # type: ignore[arg-type]
        for n, z in enumerate(zs)
    ]


def test_slices_sorted_along_normal_whatever_the_file_order() -> None:
    geometry, ordered = build_geometry(headers([6.0, 0.0, 3.0, 9.0]))
    assert [s.position[2] for s in ordered] == [0.0, 3.0, 6.0, 9.0]
    assert geometry.spacing == (0.7, 0.5, 3.0)
    assert geometry.shape == (4, 4, 6)
    assert geometry.origin == (0.0, 0.0, 0.0)


def test_affine_maps_indices_to_patient_positions() -> None:
    orientation = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # sagittal: normal = row x col = (-1, 0, 0)
    slices = [
        SliceHeader(f"f{n}", f"1.{n}", (-2.0 * n, 5.0, 7.0), orientation, (0.5, 0.7), 4, 6)  # type: ignore[arg-type]
        for n in range(3)
    ]
    geometry, ordered = build_geometry(slices)
    affine = geometry.index_to_patient_affine()
    for k, s in enumerate(ordered):
        np.testing.assert_allclose(affine @ [0, 0, k, 1], [*s.position, 1.0])
    assert [s.position[0] for s in ordered] == [0.0, -2.0, -4.0]  # ascending along the normal (-1, 0, 0)
    np.testing.assert_allclose(affine @ [1, 0, 0, 1], [0.0, 5.7, 7.0, 1.0])
    np.testing.assert_allclose(geometry.patient_to_index(np.array([[-2.0, 5.7, 6.0]])), [[1.0, 2.0, 1.0]])


@pytest.mark.parametrize(
    ("zs", "reason"),
    [
        ([0.0, 3.0, 9.0, 12.0], Reason.MISSING_SLICES),
        ([0.0, 3.0, 6.8, 9.8], Reason.NONUNIFORM_SPACING),
        ([0.0, 3.0, 3.0, 6.0], Reason.DUPLICATE_SLICES),
    ],
)
def test_spacing_problems(zs: list[float], reason: Reason) -> None:
    with pytest.raises(CaseError) as caught:
        build_geometry(headers(zs))
    assert caught.value.reason == reason


def test_small_position_noise_is_tolerated() -> None:
    geometry, _ = build_geometry(headers([0.0, 2.5007, 4.9996, 7.5]))
    assert geometry.spacing[2] == pytest.approx(2.5)


def test_gantry_tilt_and_mixed_orientation() -> None:
    with pytest.raises(CaseError) as tilt:
        build_geometry(headers([0.0, 3.0, 6.0], shift=0.5))
    assert tilt.value.reason == Reason.GANTRY_TILT
    mixed = headers([0.0, 3.0, 6.0])
    mixed[1] = SliceHeader("x", "y", (0.0, 0.0, 3.0), (0.0, 1.0, 0.0, 0.0, 0.0, -1.0), (0.5, 0.7), 4, 6)
    with pytest.raises(CaseError) as orientation:
        build_geometry(mixed)
    assert orientation.value.reason == Reason.MIXED_ORIENTATION


def real_series(folder: str) -> list[SliceHeader]:
    root = DICOMDIR_TESTS
    records = [read_record(root, path) for path in sorted((root / folder).iterdir())]
    return [r.slice for r in records if r.slice is not None]


def test_pydicom_ct5n_descending_file_order() -> None:
    geometry, ordered = build_geometry(real_series("98892001/CT5N"))
    z = [s.position[2] for s in ordered]
    assert z == sorted(z) and len(z) == 5
    assert geometry.spacing[2] == pytest.approx(2.5)
    assert geometry.origin[2] == pytest.approx(-1.2375)


def test_pydicom_ct2_gap_is_missing_slices() -> None:
    with pytest.raises(CaseError) as caught:
        build_geometry(real_series("77654033/CT2"))
    assert caught.value.reason == Reason.MISSING_SLICES


def test_pydicom_ct2n_mixed_orientation() -> None:
    root = DICOMDIR_TESTS / "98892001" / "CT2N"
    slices = []
    for path in sorted(root.iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        slices.append(
            SliceHeader(
                path.name,
                str(ds.SOPInstanceUID),
                tuple(map(float, ds.ImagePositionPatient)),  # type: ignore[arg-type]
                tuple(map(float, ds.ImageOrientationPatient)),
                tuple(map(float, ds.PixelSpacing)),  # type: ignore[arg-type]
                int(ds.Rows),
                int(ds.Columns),
            )
        )
    with pytest.raises(CaseError) as caught:
        build_geometry(slices)
    assert caught.value.reason == Reason.MIXED_ORIENTATION
    # The scan itself never offers these as a volume: they are localizers.
    assert {read_record(root, p).why_ignored for p in root.iterdir()} == {"localizer"}


@pytest.mark.parametrize("dtype", [np.int16, np.uint8])
def test_nifti_written_here_is_byte_for_byte_what_simpleitk_writes(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(4)
    array = rng.integers(0, 120, size=(7, 5, 6)).astype(dtype)
    geometry = VolumeGeometry((7, 5, 6), (1.5, 2.25, -3.0), (0.7, 0.8, 2.0), (0, 1, 0, 0.6, 0, 0.8, 0.8, 0, -0.6))
    write_nifti(array, geometry, tmp_path / "ours.nii.gz")
    sitk.WriteImage(to_image(array, geometry), str(tmp_path / "sitk.nii"), useCompression=False)
    assert gzip.decompress((tmp_path / "ours.nii.gz").read_bytes()) == (tmp_path / "sitk.nii").read_bytes()


# Slice order along the normal for any patient position and file order, and HU with a non-unit slope.


FEET_FIRST_SUPINE = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # normal (0, 0, -1): slices ascend towards the feet
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # normal (-1, 0, 0): every slice shares one z


def _shuffled(positions: list[tuple[float, float, float]], orientation: tuple[float, ...]) -> list[SliceHeader]:
    slices = [
        SliceHeader(f"f{n}", f"1.{n}", p, orientation, (0.8, 0.6), 3, 5)  # type: ignore[arg-type]
        for n, p in enumerate(positions)
    ]
    random.Random(4).shuffle(slices)
    return slices


@pytest.mark.parametrize(
    ("orientation", "positions"),
    [
        (FEET_FIRST_SUPINE, [(10.0, -20.0, 30.0 - 2.5 * n) for n in range(7)]),
        (SAGITTAL, [(40.0 - 1.25 * n, 3.0, -7.0) for n in range(7)]),
    ],
    ids=["feet-first", "sagittal"],
)
def test_series_in_shuffled_file_order_is_one_volume_ordered_along_the_normal(
    orientation: tuple[float, ...], positions: list[tuple[float, float, float]]
) -> None:
    geometry, ordered = build_geometry(_shuffled(positions, orientation))
    assert [s.position for s in ordered] == positions  # ascending along the normal, not along z
    step = abs(positions[1][0] - positions[0][0]) + abs(positions[1][2] - positions[0][2])
    assert geometry.spacing == (0.6, 0.8, pytest.approx(step))
    affine = geometry.index_to_patient_affine()
    row_dir, col_dir = np.array(orientation[:3]), np.array(orientation[3:])
    for k, s in enumerate(ordered):  # column 2, row 1 of slice k
        np.testing.assert_allclose(affine @ [2, 1, k, 1], [*(s.position + 2 * 0.6 * row_dir + 0.8 * col_dir), 1.0])


def test_a_gap_in_a_shuffled_feet_first_series_is_still_found() -> None:
    positions = [(0.0, 0.0, -3.0 * n) for n in (0, 1, 2, 4, 5)]
    with pytest.raises(CaseError) as caught:
        build_geometry(_shuffled(positions, FEET_FIRST_SUPINE))
    assert caught.value.reason == Reason.MISSING_SLICES


@pytest.mark.parametrize(
    ("stored", "slope", "intercept"),
    [
        (np.array([[0, 1, 2], [400, 1001, 1501]], np.uint16), 2.0, -1024.0),
        (np.array([[-3, -1, 0], [1, 3, 5]], np.int16), 0.5, -1000.0),  # halves: rounded to even
        (np.array([[0, 10, 20], [30, 40, 65535]], np.uint16), 1.0, -1024.5),
        (np.array([[-32768, 0, 32767], [5, 6, 7]], np.int16), 3.0, 100.0),  # clipped to int16
    ],
)
def test_hu_uses_slope_and_intercept(tmp_path: Path, stored: np.ndarray, slope: float, intercept: float) -> None:
    files = ["s0.dcm", "s1.dcm"]
    uids = [generate_uid() for _ in files]
    for name, uid in zip(files, uids, strict=True):
        write_ct_slice(tmp_path / name, uid, stored, RescaleSlope=f"{slope:g}", RescaleIntercept=f"{intercept:g}")
    geometry = VolumeGeometry((2, *stored.shape), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    volume = read_hu_volume(tmp_path, files, uids, geometry)
    expected = np.clip(np.rint(stored.astype(np.float64) * slope + intercept), -32768, 32767)
    assert volume.dtype == np.int16
    np.testing.assert_array_equal(volume, [expected, expected])


def _axial(n: int, **changes: object) -> SliceHeader:
    fields: dict[str, object] = {
        "path": f"f{n}",
        "sop_instance_uid": f"1.{n}",
        "position": (0.0, 0.0, 2.0 * n),
        "orientation": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        "pixel_spacing": (0.8, 0.6),
        "rows": 3,
        "columns": 5,
    }
    return SliceHeader(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("slices", "reason"),
    [
        ([], Reason.NO_CT),
        ([_axial(0), _axial(1, rows=4), _axial(2)], Reason.INCONSISTENT_GEOMETRY),
        ([_axial(0), _axial(1), _axial(2, pixel_spacing=(0.8, 0.61))], Reason.INCONSISTENT_GEOMETRY),
        ([_axial(0), _axial(1, orientation=(1.0, 0.0, 0.0, 0.0, 0.9998, 0.02)), _axial(2)], Reason.MIXED_ORIENTATION),
        (
            [
                _axial(0, orientation=(1.0, 0.0, 0.0, 0.3, 1.0, 0.0)),
                _axial(1, orientation=(1.0, 0.0, 0.0, 0.3, 1.0, 0.0)),
            ],
            Reason.INCONSISTENT_GEOMETRY,
        ),  # row and column directions not orthogonal
    ],
    ids=["no-slices", "rows", "pixel-spacing", "orientation", "not-orthogonal"],
)
def test_inconsistent_series_are_refused_with_their_reason(slices: list[SliceHeader], reason: Reason) -> None:
    with pytest.raises(CaseError) as caught:
        build_geometry(slices)
    assert caught.value.reason == reason


def test_direction_cosines_that_are_not_unit_vectors_are_normalised() -> None:
    """Some scanners write 0.99999-style cosines; here an exaggerated scale of 2."""
    slices = [_axial(n, orientation=(2.0, 0.0, 0.0, 0.0, 2.0, 0.0)) for n in range(3)]
    geometry, _ = build_geometry(slices)
    np.testing.assert_allclose(geometry.direction_matrix, np.eye(3))
    assert geometry.spacing == (0.6, 0.8, 2.0)
