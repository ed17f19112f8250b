"""Every field of every status of ``case_metrics``, the tolerance per label and its default, the voxel-count NSD
by hand, and Dice alone without surface metrics."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.spatial import cKDTree

from tsretrain.evaluation.metrics import case_metrics

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
