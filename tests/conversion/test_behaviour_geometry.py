"""Slice order along the normal for any patient position and file order, and HU with a non-unit slope."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid
from support import write_ct_slice

from tsretrain.conversion.ct import read_hu_volume
from tsretrain.conversion.geometry import SliceHeader, VolumeGeometry, build_geometry
from tsretrain.reasons import CaseError, Reason

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
