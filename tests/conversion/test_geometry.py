"""Slice ordering and the series checks, on constructed headers and on pydicom's real CT files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

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
