"""The rasterizer: pixel-centre inclusion, XOR holes and islands, exact clipping."""

from __future__ import annotations

import warnings

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


def test_a_polygon_one_row_high_covers_that_row() -> None:
    mask = rasterize_xor([square(0.5, 1.5, 3.5, 2.5)], rows=5, columns=5)
    expected = np.zeros((5, 5), dtype=bool)
    expected[2, 1:4] = True
    np.testing.assert_array_equal(mask, expected)


def test_the_box_is_the_polygons_rows_and_columns_with_one_column_of_margin() -> None:
    polygon = square(1.6, 0.6, 4.5, 2.9)  # centres: rows 1-2, columns 2-4
    r0, c0, box = rasterize_box([polygon], rows=6, columns=8)
    assert (r0, c0, box.shape) == (1, 1, (2, 5))
    np.testing.assert_array_equal(box, rasterize_xor([polygon], 6, 8)[1:3, 1:6])
    r0, c0, box = rasterize_box([square(-6.0, 1.0, -2.0, 3.0)], rows=6, columns=8)  # left of the image
    assert (r0, c0, box.shape) == (1, 0, (2, 0))


@pytest.mark.parametrize(
    "polygons",
    [
        [],
        [np.array([[1.0, 1.0], [3.0, 3.0]])],  # two points
        [square(1.0, -5.0, 3.0, -1.0)],  # above the image
        [square(1.0, 7.0, 3.0, 9.0)],  # below it
        [square(1.0, 2.2, 3.0, 2.8)],  # between two rows of centres
        [np.array([[0.0, 1.5], [2.0, 1.5], [4.0, 1.5]]), np.array([[0.0, 3.5], [2.0, 3.5], [4.0, 3.5]])],  # flat
    ],
)
def test_nothing_to_draw_is_an_empty_box_at_the_origin(polygons: list[np.ndarray]) -> None:
    r0, c0, box = rasterize_box(polygons, rows=6, columns=6)
    assert (r0, c0, box.shape, box.dtype) == (0, 0, (0, 0), np.dtype(bool))


def regular(n: int, radius: float, centre: tuple[float, float], turn: float = 0.0) -> np.ndarray:
    angles = turn + 2 * np.pi * np.arange(n) / n
    return np.stack([centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)], axis=1)


def regular_area(n: int, radius: float) -> float:
    return 0.5 * n * radius**2 * float(np.sin(2 * np.pi / n))


def test_xor_area_of_nested_and_side_by_side_polygons_without_numpy_warnings() -> None:
    """An outer pentagon, a hexagon hole in it, a triangle island in the hole, and a heptagon to their right
    (its vertices' rays towards -x cross the pentagon twice); every polygon's first vertex is inside its
    containers. The areas add with the sign of the nesting depth."""
    pentagon = regular(5, 10.0, (0.0, 0.0))
    hole = regular(6, 6.0, (1.0, 0.5), turn=0.3)
    island = regular(3, 2.0, (1.5, 0.8), turn=0.1)
    beside = regular(7, 3.0, (25.0, 3.0))
    expected = regular_area(5, 10.0) - regular_area(6, 6.0) + regular_area(3, 2.0) + regular_area(7, 3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # horizontal edges divide by zero: silently, never a warning in the logs
        for order in ([pentagon, hole, island, beside], [beside, island, hole, pentagon]):
            assert xor_area(order) == pytest.approx(expected, rel=1e-12)
        two_holes = [square(0, 0, 10, 10), square(2, 2, 4, 4), square(5, 5, 7, 9)]
        assert xor_area(two_holes) == pytest.approx(100.0 - 4.0 - 8.0)


def test_xor_area_when_a_vertex_lies_at_the_height_of_another_polygons_vertex() -> None:
    diamond = np.array([[0.0, 5.0], [5.0, 0.0], [10.0, 5.0], [5.0, 10.0]])
    inner = np.array([[3.0, 5.0], [5.0, 3.0], [7.0, 5.0], [5.0, 7.0]])  # first vertex level with two of the diamond's
    assert xor_area([diamond, inner]) == pytest.approx(50.0 - 8.0)
    assert xor_area([inner, diamond]) == pytest.approx(50.0 - 8.0)


def test_xor_area_of_pixel_aligned_contours_side_by_side_without_numpy_warnings() -> None:
    """The second square's first vertex lies on the line of the first one's bottom edge (0 / 0 there)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert xor_area([square(0, 0, 2, 2), square(5, 0, 7, 2)]) == pytest.approx(8.0)
        assert xor_area([square(0, 0, 10, 10), square(5, 0, 7, 2)]) == pytest.approx(100.0 - 4.0)  # a notch


@pytest.mark.parametrize("seed", range(25))
def test_xor_area_of_random_nested_and_separate_polygons(seed: int) -> None:
    """An outer polygon, a hole inside its inscribed circle, an island inside the hole's, and a polygon
    beyond the outer one in a random direction; any vertex counts, any order."""
    rng = np.random.default_rng(seed)
    n, m, k, s = (int(v) for v in rng.integers(3, 9, size=4))
    radius = float(rng.uniform(5, 20))
    centre = (float(rng.uniform(-50, 50)), float(rng.uniform(-50, 50)))
    outer = regular(n, radius, centre, turn=float(rng.uniform(0, 6.3)))
    room = radius * np.cos(np.pi / n)  # the outer polygon's inscribed radius
    hole_radius = float(rng.uniform(0.2, 0.6)) * room
    offset = float(rng.uniform(0, room - hole_radius - 0.1))
    angle = float(rng.uniform(0, 6.3))
    hole_centre = (centre[0] + offset * np.cos(angle), centre[1] + offset * np.sin(angle))
    hole = regular(m, hole_radius, hole_centre, turn=float(rng.uniform(0, 6.3)))
    island = regular(k, 0.5 * hole_radius * np.cos(np.pi / m), hole_centre, turn=float(rng.uniform(0, 6.3)))
    away = float(rng.uniform(0, 6.3))
    distance = radius + 4.0 + float(rng.uniform(0, 10))
    beside = regular(s, 3.0, (centre[0] + distance * np.cos(away), centre[1] + distance * np.sin(away)))
    expected = (
        regular_area(n, radius)
        - regular_area(m, hole_radius)
        + regular_area(k, 0.5 * hole_radius * np.cos(np.pi / m))
        + regular_area(s, 3.0)
    )
    polygons = [outer, hole, island, beside]
    order = rng.permutation(4)
    assert xor_area([polygons[i] for i in order]) == pytest.approx(expected, rel=1e-9)
