"""Which contours go to which slice: one plane per slice, XOR only within a plane, ties decided once."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from support import contour, structure_set

from tsretrain.conversion.geometry import VolumeGeometry
from tsretrain.conversion.rtstruct import burn_label_map, roi_contours
from tsretrain.reasons import CaseError

GRID = VolumeGeometry((6, 20, 20), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))


def square(z: float, x0: float, x1: float) -> list[float]:
    return [v for x, y in ((x0, x0), (x1, x0), (x1, x1), (x0, x1)) for v in (x, y, z)]


def gtvp(contours: list[list[float]]) -> Dataset:
    """One ROI named GTVp with these closed planar contours (flat x, y, z lists), in this order."""
    return structure_set({"GTVp": [contour(data) for data in contours]})


def test_planes_midway_between_slices_go_to_the_lower_slice_and_never_share_one() -> None:
    roi = roi_contours(gtvp([square(1.5, 2, 8), square(2.5, 2, 8)]), GRID, {"GTVp"})["GTVp"]
    assert sorted(roi.by_slice) == [1, 2] and not roi.skipped.get("plane_dropped")


@pytest.mark.parametrize("reverse", [False, True])
def test_the_plane_nearest_the_slice_centre_wins_whatever_the_file_order(reverse: bool) -> None:
    contours = [square(1.67, 1, 15), square(2.0, 4, 8), square(2.33, 1, 15)]
    roi = roi_contours(gtvp(contours[::-1] if reverse else contours), GRID, {"GTVp"})["GTVp"]
    (polygons,) = roi.by_slice.values()
    assert list(roi.by_slice) == [2] and len(polygons) == 1 and polygons[0].max() == 8
    assert len(roi.skipped["plane_dropped"]) == 2 and all("slice 2" in w for w in roi.skipped["plane_dropped"])
    assert any("several planes map to one slice" in w for w in roi.warnings())


@pytest.mark.parametrize("reverse", [False, True])
def test_an_exact_tie_between_two_planes_keeps_the_lower_one(reverse: bool) -> None:
    contours = [square(1.75, 1, 15), square(2.25, 4, 8)]
    roi = roi_contours(gtvp(contours[::-1] if reverse else contours), GRID, {"GTVp"})["GTVp"]
    (polygons,) = roi.by_slice.values()
    assert polygons[0].max() == 15  # the plane at 1.75


def test_contours_of_one_plane_combine_with_xor_and_other_planes_never_cancel_them() -> None:
    ds = gtvp([square(3.0, 2, 12), square(3.0004, 5, 9), square(3.3, 2, 12)])
    labels, _ = burn_label_map(ds, GRID, {"GTVp": "GTVp"}, {"GTVp": 1}, ("GTVp",))
    assert labels[3].sum() == 10 * 10 - 4 * 4  # outer minus the hole; the plane at 3.3 is dropped, not XORed
    assert not labels[[0, 1, 2, 4, 5]].any()


def test_contours_on_the_slice_grid_beyond_the_series_mean_a_cut_series() -> None:
    with pytest.raises(CaseError) as caught:
        burn_label_map(gtvp([square(4.0, 2, 8), square(7.0, 2, 8)]), GRID, {"GTVp": "GTVp"}, {"GTVp": 1}, ("GTVp",))
    assert caught.value.reason.value == "referenced_slices_missing"
    roi = roi_contours(gtvp([square(4.0, 2, 8), square(6.4, 2, 8)]), GRID, {"GTVp"})["GTVp"]
    assert roi.skipped["outside_scan"] and list(roi.by_slice) == [4]  # off the grid: dropped with a warning


def test_label_voxel_counts_follow_overwrites() -> None:
    ds = structure_set({"GTVp": [contour(square(2.0, 2, 12))], "Parotid_L": [contour(square(2.0, 8, 16))]})
    labels, burn = burn_label_map(
        ds, GRID, {"GTVp": "GTVp", "Parotid_L": "Parotid_L"}, {"GTVp": 1, "Parotid_L": 2}, ("Parotid_L", "GTVp")
    )
    np.testing.assert_array_equal(burn.voxels, np.bincount(labels.reshape(-1), minlength=256))
    assert burn.overlaps == [{"first": "Parotid_L", "then": "GTVp", "voxels": 4 * 4}]
