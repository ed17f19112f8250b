"""HD95 and NSD on asymmetric shapes, where the two directions (and the two surfaces) differ."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import ndimage
from scipy.spatial import cKDTree

from tsretrain.evaluation.metrics import case_metrics

SPACING = (2.0, 1.0, 1.5)  # anisotropic: a swapped or ignored spacing changes every distance


def cubes(*corners: tuple[int, int, int], size: int = 8) -> NDArray[np.uint8]:
    """Label 1 on cubes of ``size`` voxels a side at the given corners, in a 48^3 grid."""
    mask = np.zeros((48, 48, 48), np.uint8)
    for z, y, x in corners:
        mask[z : z + size, y : y + size, x : x + size] = 1
    return mask


def brute_force_hd95(ref: NDArray[np.uint8], pred: NDArray[np.uint8]) -> float:
    """The larger directed 95th percentile between 6-connected boundary voxels, by nearest-neighbour search."""

    def boundary_mm(mask: NDArray[np.uint8]) -> NDArray[np.float64]:
        solid = mask.astype(bool)
        edge = solid & ~ndimage.binary_erosion(solid, ndimage.generate_binary_structure(3, 1), border_value=0)
        return np.argwhere(edge) * np.asarray(SPACING)

    a, b = boundary_mm(ref), boundary_mm(pred)
    a_to_b, b_to_a = cKDTree(b).query(a)[0], cKDTree(a).query(b)[0]
    return max(float(np.percentile(a_to_b, 95)), float(np.percentile(b_to_a, 95)))


def hd95_and_nsd(ref: NDArray[np.uint8], pred: NDArray[np.uint8], tau: float = 1.0) -> tuple[float, float]:
    (m,) = case_metrics(ref, pred, SPACING, [1], tolerance_mm=tau)
    assert m.status == "both"
    return m.hd95, m.nsd


def test_hd95_is_the_larger_of_the_two_directions_whichever_mask_is_the_reference() -> None:
    """Prediction = reference plus a second, distant cube: every reference boundary voxel lies on the
    prediction's boundary (distance 0) but half the prediction's boundary lies 20+ voxels away."""
    ref = cubes((4, 4, 4))
    pred = cubes((4, 4, 4), (4, 30, 30))
    expected = brute_force_hd95(ref, pred)
    assert expected > 20.0  # far from the value of the near direction, 0
    assert hd95_and_nsd(ref, pred)[0] == pytest.approx(expected)
    assert hd95_and_nsd(pred, ref)[0] == pytest.approx(expected)


def test_hd95_is_a_95th_percentile_not_the_maximum() -> None:
    """One stray voxel far away (under 1 % of the prediction's boundary) leaves HD95 at 0 but not Dice."""
    ref = cubes((4, 4, 4))
    pred = ref.copy()
    pred[40, 40, 40] = 1
    (m,) = case_metrics(ref, pred, SPACING, [1])
    assert m.hd95 == 0.0 and m.dice < 1.0
    assert brute_force_hd95(ref, pred) == 0.0


def test_hd95_with_a_partial_overlap_matches_a_brute_force_search() -> None:
    ref = cubes((10, 10, 10), size=12)
    pred = cubes((13, 8, 12), (30, 30, 30), size=9)
    expected = brute_force_hd95(ref, pred)
    assert hd95_and_nsd(ref, pred)[0] == pytest.approx(expected)
    assert hd95_and_nsd(pred, ref)[0] == pytest.approx(expected)


def test_nsd_counts_both_surfaces() -> None:
    """Prediction = reference plus an equal distant cube: all of the reference surface is within the tolerance,
    half of the prediction surface is not, so NSD = (S + S) / (S + 2 S) = 2/3 in either argument order
    (the reference surface alone would give 1, the prediction surface alone 1/2)."""
    ref = cubes((4, 4, 4))
    pred = cubes((4, 4, 4), (30, 4, 30))
    assert hd95_and_nsd(ref, pred)[1] == pytest.approx(2 / 3)
    assert hd95_and_nsd(pred, ref)[1] == pytest.approx(2 / 3)


def test_nsd_tolerance_is_in_millimetres_along_each_axis() -> None:
    """A one-voxel shift along z is 2 mm, along x 1.5 mm: a tolerance of 1.8 mm takes the x shift only."""
    ref = cubes((10, 10, 10), size=10)
    along_z, along_x = np.roll(ref, 1, axis=0), np.roll(ref, 1, axis=2)
    assert hd95_and_nsd(ref, along_x, tau=1.8)[1] == pytest.approx(1.0)
    assert hd95_and_nsd(ref, along_z, tau=1.8)[1] < 1.0
    assert hd95_and_nsd(ref, along_z, tau=2.1)[1] == pytest.approx(1.0)


def test_a_missed_label_has_no_distance_and_says_so_as_null_not_nan() -> None:
    """HD95 and NSD are undefined without a prediction: the row carries null (an empty CSV cell, valid JSON)."""
    ref = np.zeros((6, 8, 8), dtype=np.uint8)
    ref[2:4, 2:5, 2:5] = 1
    (m,) = case_metrics(ref, np.zeros_like(ref), SPACING, [1])
    row = m.to_json()
    assert m.status == "missed" and m.dice == 0.0 and math.isnan(m.hd95)
    assert row["hd95"] is None and row["dice"] == 0.0
    json.dumps(row, allow_nan=False)  # summary.json and per-case rows refuse NaN


# Every field of every status of ``case_metrics``, the tolerance per label and its default, the voxel-count NSD
# by hand, and Dice alone without surface metrics.


SPACING = (2.0, 1.0, 1.5)


def maps() -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Label 1 in both (shifted), 2 only in the reference, 3 only in the prediction; 4 nowhere; 5 only in the
    reference beyond the prediction's highest label."""
    ref = np.zeros((20, 24, 24), np.uint8)
    pred = np.zeros_like(ref)
    ref[2:8, 2:10, 2:10] = 1
    pred[3:9, 2:10, 4:12] = 1
    ref[12:15, 12:16, 12:16] = 2
    pred[12:14, 18:22, 2:6] = 3
    ref[16:18, 2:4, 18:20] = 5
    return ref, pred


def fields(metrics: Any) -> dict[str, Any]:
    return dict(metrics.to_json())


def test_every_status_with_every_field() -> None:
    ref, pred = maps()
    both_tp = 5 * 8 * 6  # slices 3-7, rows 2-9, columns 4-9
    got = [fields(m) for m in case_metrics(ref, pred, SPACING, [4, 2, 3, 5, 1], surface=False)]
    assert got == [
        {"label": 4, "status": "absent", "dice": None, "hd95": None, "nsd": None, "ref_voxels": 0, "pred_voxels": 0,
         "tp": 0, "nsd_voxels": None},
        {"label": 2, "status": "missed", "dice": 0.0, "hd95": None, "nsd": 0.0, "ref_voxels": 48, "pred_voxels": 0,
         "tp": 0, "nsd_voxels": None},
        {"label": 3, "status": "false_pos", "dice": 0.0, "hd95": None, "nsd": 0.0, "ref_voxels": 0, "pred_voxels": 32,
         "tp": 0, "nsd_voxels": None},
        {"label": 5, "status": "missed", "dice": 0.0, "hd95": None, "nsd": 0.0, "ref_voxels": 8, "pred_voxels": 0,
         "tp": 0, "nsd_voxels": None},
        {"label": 1, "status": "both", "dice": 2 * both_tp / (384 + 384), "hd95": None, "nsd": None,
         "ref_voxels": 384, "pred_voxels": 384, "tp": both_tp, "nsd_voxels": None},
    ]  # fmt: skip
    with_voxels = {m.label: m for m in case_metrics(ref, pred, SPACING, [2, 3, 1], nsd_voxels=True)}
    assert with_voxels[2].nsd_voxels == 0.0 and with_voxels[3].nsd_voxels == 0.0  # nothing of one mask is near
    assert with_voxels[1].dice == got[-1]["dice"] and with_voxels[1].tp == both_tp
    assert not math.isnan(with_voxels[1].hd95) and 0 < with_voxels[1].nsd < 1


def boundary_mm(mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    edge = mask & ~ndimage.binary_erosion(mask, ndimage.generate_binary_structure(3, 1), border_value=0)
    return np.argwhere(edge) * np.asarray(SPACING)


def test_voxel_count_nsd_by_hand_with_distances_exactly_at_the_tolerance() -> None:
    ref, pred = maps()
    a, b = boundary_mm(ref == 1), boundary_mm(pred == 1)
    a_to_b, b_to_a = cKDTree(b).query(a)[0], cKDTree(a).query(b)[0]
    for tau in (1.0, 2.0, 3.0):  # distances of exactly 1, 2 and 3 mm occur: they count as within
        assert np.isclose(a_to_b, tau).any() or np.isclose(b_to_a, tau).any()
        (m,) = case_metrics(ref, pred, SPACING, [1], tolerance_mm=tau, nsd_voxels=True)
        expected = ((a_to_b <= tau + 1e-9).sum() + (b_to_a <= tau + 1e-9).sum()) / (len(a) + len(b))
        assert m.nsd_voxels == expected


def test_the_tolerance_defaults_to_2_mm_for_every_label_not_given() -> None:
    ref, pred = maps()
    (default,) = case_metrics(ref, pred, SPACING, [1])
    (two,) = case_metrics(ref, pred, SPACING, [1], tolerance_mm=2.0)
    (three,) = case_metrics(ref, pred, SPACING, [1], tolerance_mm=3.0)
    (others,) = case_metrics(ref, pred, SPACING, [1], tolerance_mm={2: 7.0})
    (own,) = case_metrics(ref, pred, SPACING, [1], tolerance_mm={1: 3.0})
    assert default.nsd == two.nsd == others.nsd != three.nsd == own.nsd


def test_missing_distances_are_float_nans_and_dice_alone_goes_on_to_the_next_label() -> None:
    ref, pred = maps()
    dice_only = case_metrics(ref, pred, SPACING, [1, 4, 2], surface=False)
    assert [m.label for m in dice_only] == [1, 4, 2]
    for m in dice_only[:2]:  # both: no surface metrics asked for; absent: none to compute
        assert all(isinstance(v, float) and math.isnan(v) for v in (m.hd95, m.nsd, m.nsd_voxels)), m
    assert math.isnan(dice_only[1].dice)
