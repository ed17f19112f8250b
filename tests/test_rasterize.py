"""The rasterizer: pixel-centre inclusion, XOR holes and islands, exact clipping."""

from __future__ import annotations

import numpy as np
import pytest

from tsretrain.conversion.rasterize import polygon_area, rasterize_box, rasterize_xor, xor_area
from tsretrain.synth.shapes import Ellipse


def square(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


def test_pixel_centre_inclusion_of_a_square() -> None:
    # Covers centres 2,3,4 in x (2 <= x < 4.5 with half-open rows/columns) and 1,2 in y.
    mask = rasterize_xor([square(1.6, 0.6, 4.5, 2.9)], rows=6, columns=8)
    expected = np.zeros((6, 8), dtype=bool)
    expected[1:3, 2:5] = True
    np.testing.assert_array_equal(mask, expected)


def test_hole_is_cut_by_xor() -> None:
    outer, inner = square(0.5, 0.5, 8.5, 8.5), square(2.5, 2.5, 5.5, 5.5)
    mask = rasterize_xor([outer, inner], rows=10, columns=10)
    assert mask[1:9, 1:9].sum() == 64 - 9
    assert not mask[3:6, 3:6].any()


def test_islands_add_up() -> None:
    mask = rasterize_xor([square(0.5, 0.5, 2.5, 2.5), square(5.5, 5.5, 7.5, 7.5)], rows=10, columns=10)
    assert mask.sum() == 8


def test_out_of_field_parts_are_clipped_not_dropped() -> None:
    mask = rasterize_xor([square(-10.0, -3.0, 2.5, 2.5)], rows=5, columns=5)
    expected = np.zeros((5, 5), dtype=bool)
    expected[0:3, 0:3] = True
    np.testing.assert_array_equal(mask, expected)
    assert not rasterize_xor([square(10.0, 10.0, 12.0, 12.0)], 5, 5).any()


def test_degenerate_contours_are_ignored() -> None:
    assert not rasterize_xor([np.array([[1.0, 1.0], [2.0, 2.0]])], 4, 4).any()


@pytest.mark.parametrize("radius", [5.0, 7.5, 10.0, 20.0])
def test_disc_matches_analytic_pixel_centres(radius: float) -> None:
    ellipse = Ellipse(31.3, 30.7, radius, radius * 0.8, yaw=0.4)
    rows = columns = 64
    jj, ii = np.mgrid[0:rows, 0:columns].astype(float)
    truth = ellipse.contains(ii, jj)
    mask = rasterize_xor([ellipse.polygon(vertex_spacing=0.5)], rows, columns)
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice >= 0.99
    assert abs(mask.sum() - ellipse.area) / ellipse.area <= 0.03


def test_xor_area_subtracts_holes() -> None:
    outer, inner = square(0, 0, 10, 10), square(2, 2, 4, 4)
    assert polygon_area(outer) == pytest.approx(100.0)
    assert xor_area([outer, inner]) == pytest.approx(96.0)
    assert xor_area([outer, square(20, 20, 22, 22)]) == pytest.approx(104.0)


def brute_force_xor(polygons: list[np.ndarray], rows: int, columns: int) -> np.ndarray:
    """Even-odd rule at every pixel centre, edge by edge (half-open rows, crossing at or left of the centre)."""
    parity = np.zeros((rows, columns), dtype=bool)
    jj, ii = np.mgrid[0:rows, 0:columns]
    for polygon in polygons:
        for (x0, y0), (x1, y1) in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
            lo, hi = min(y0, y1), max(y0, y1)
            rows_hit = (jj >= lo) & (jj < hi)
            if not rows_hit.any():
                continue
            t = (jj - y0) / (y1 - y0) if y1 != y0 else np.zeros_like(jj, dtype=float)
            x = x0 + t * (x1 - x0)
            parity ^= rows_hit & (np.ceil(x) <= ii)
    return parity


@pytest.mark.parametrize("seed", range(12))
def test_bounding_box_rasterizer_equals_the_whole_image_rule(seed: int) -> None:
    """Random polygons (some on integer vertices, some leaving the image), several per slice, XOR."""
    rng = np.random.default_rng(seed)
    rows, columns = 23, 31
    polygons = []
    for _ in range(int(rng.integers(1, 4))):
        n = int(rng.integers(3, 12))
        centre = rng.uniform(-5, 35, size=2)
        points = centre + rng.uniform(-9, 9, size=(n, 2))
        if seed % 2:
            points = np.round(points * 2) / 2  # vertices on pixel centres and half-pixel lines
        polygons.append(points)
    r0, c0, box = rasterize_box(polygons, rows, columns)
    whole = np.zeros((rows, columns), dtype=bool)
    whole[r0 : r0 + box.shape[0], c0 : c0 + box.shape[1]] = box
    np.testing.assert_array_equal(whole, brute_force_xor(polygons, rows, columns))
    np.testing.assert_array_equal(rasterize_xor(polygons, rows, columns), whole)
