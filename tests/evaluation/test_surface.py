"""NSD and HD95 against DeepMind's reference algorithm and MONAI, on anisotropic, oblique, border-touching, thin
and multi-component cases; the area table against DeepMind's; known answers where counting voxels fails."""

from __future__ import annotations

import numpy as np
import pytest
import surface_distance_reference as deepmind
import torch
from monai.metrics import compute_hausdorff_distance, compute_surface_dice
from scipy import ndimage

from tsretrain.evaluation.metrics import case_metrics
from tsretrain.evaluation.surface import surfel_areas

Spacing = tuple[float, float, float]
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")  # inside MONAI


def ellipsoid(
    shape: tuple[int, int, int], centre: tuple[float, ...], radii_mm: tuple[float, ...], spacing: Spacing
) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    return sum(((grid[a] - centre[a]) * spacing[a] / radii_mm[a]) ** 2 for a in range(3)) <= 1  # type: ignore[no-any-return]


def anisotropic() -> tuple[np.ndarray, np.ndarray, Spacing]:
    spacing = (2.5, 0.9, 0.8)
    ref = ellipsoid((20, 48, 52), (10, 24, 26), (14, 15, 12), spacing)
    return ref, ndimage.binary_dilation(ref), spacing


def oblique() -> tuple[np.ndarray, np.ndarray, Spacing]:
    spacing = (2.0, 0.7, 0.7)
    z, y, x = np.indices((24, 60, 60)).astype(float)
    along = (z * spacing[0] * np.cos(0.6) + y * spacing[1] * np.sin(0.6)) - 20.0  # a slab tilted 34 degrees
    ref = (np.abs(along) <= 3.0) & (np.abs(x - 30) * spacing[2] <= 15)
    pred = (np.abs(along - 1.3) <= 3.5) & (np.abs(x - 31) * spacing[2] <= 14)
    return ref, pred, spacing


def border_touching() -> tuple[np.ndarray, np.ndarray, Spacing]:
    spacing = (2.0, 1.0, 1.0)
    ref = ellipsoid((16, 40, 40), (0, 20, 38), (10, 12, 12), spacing)  # cut by the first slice and the last column
    pred = ellipsoid((16, 40, 40), (1, 21, 37), (10, 11, 12), spacing)
    return ref, pred, spacing


def thin() -> tuple[np.ndarray, np.ndarray, Spacing]:
    spacing = (2.5, 0.9, 0.8)
    ref = np.zeros((8, 40, 40), bool)
    ref[3, 5:35, 8:30] = True  # a one-slice plate
    return ref, np.roll(ref, 1, axis=0), spacing


def multi_component() -> tuple[np.ndarray, np.ndarray, Spacing]:
    spacing = (1.5, 0.8, 0.8)
    shape = (24, 50, 50)
    ref = ellipsoid(shape, (8, 12, 12), (6, 6, 5), spacing) | ellipsoid(shape, (15, 35, 36), (8, 7, 7), spacing)
    pred = ellipsoid(shape, (9, 12, 13), (6, 5, 5), spacing) | ellipsoid(shape, (15, 36, 35), (7, 7, 8), spacing)
    pred[20:22, 2:5, 40:44] = True  # a spurious island
    return ref, pred, spacing


CASES = {f.__name__: f for f in (anisotropic, oblique, border_touching, thin, multi_component)}


def monai_nsd(ref: np.ndarray, pred: np.ndarray, spacing: Spacing, tolerance: float) -> float:
    one_hot = [torch.from_numpy(np.stack([~m, m])[None].astype(np.float32)) for m in (pred, ref)]
    value = compute_surface_dice(*one_hot, [tolerance], spacing=list(spacing), use_subvoxels=True)
    return float(value[0, 0])


def monai_hd95(ref: np.ndarray, pred: np.ndarray, spacing: Spacing) -> float:
    one_hot = [torch.from_numpy(np.stack([~m, m])[None].astype(np.float32)) for m in (pred, ref)]
    return float(compute_hausdorff_distance(*one_hot, percentile=95, spacing=list(spacing))[0, 0])


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("tolerance", [1.0, 2.0])
def test_nsd_equals_deepminds_reference_and_monai(name: str, tolerance: float) -> None:
    ref, pred, spacing = CASES[name]()
    (ours,) = case_metrics(ref.astype(np.uint8), pred.astype(np.uint8), spacing, [1], tolerance)
    reference = deepmind.compute_surface_dice_at_tolerance(
        deepmind.compute_surface_distances(ref, pred, spacing), tolerance
    )
    assert 0.02 < reference < 0.99  # a case that can tell definitions apart
    assert ours.nsd == pytest.approx(reference, abs=1e-9)
    assert ours.nsd == pytest.approx(monai_nsd(ref, pred, spacing, tolerance), abs=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_hd95_equals_monai(name: str) -> None:
    ref, pred, spacing = CASES[name]()
    (ours,) = case_metrics(ref.astype(np.uint8), pred.astype(np.uint8), spacing, [1])
    assert ours.hd95 == pytest.approx(monai_hd95(ref, pred, spacing), abs=1e-4)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.9, 0.8), (0.5, 3.0, 1.7)])
def test_surfel_areas_equal_deepminds_table(spacing: Spacing) -> None:
    np.testing.assert_allclose(
        surfel_areas(spacing), deepmind.create_table_neighbour_code_to_surface_area(spacing), rtol=1e-12
    )


def test_thin_plate_shifted_by_one_slice_is_half_covered_and_voxel_count_says_zero() -> None:
    ref, pred, spacing = thin()  # the faces between the two slices coincide; the outer faces are 2.5 mm apart
    (m,) = case_metrics(ref.astype(np.uint8), pred.astype(np.uint8), spacing, [1], 1.0, nsd_voxels=True)
    assert m.nsd == pytest.approx(0.5, abs=0.03)
    assert m.nsd_voxels == 0.0


def test_voxel_count_variant_only_on_request() -> None:
    ref, pred, spacing = anisotropic()
    (plain,) = case_metrics(ref.astype(np.uint8), pred.astype(np.uint8), spacing, [1], 1.0)
    (both,) = case_metrics(ref.astype(np.uint8), pred.astype(np.uint8), spacing, [1], 1.0, nsd_voxels=True)
    assert np.isnan(plain.nsd_voxels) and plain.nsd == both.nsd
    assert both.nsd_voxels < both.nsd - 0.1  # counting voxels over-weights the faces across 2.5 mm slices
