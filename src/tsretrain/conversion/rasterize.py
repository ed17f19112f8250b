"""Polygon rasterization with pixel-centre inclusion and even-odd (XOR) combination.

A pixel belongs to a set of planar contours when a ray from its centre towards -x crosses the contours'
edges an odd number of times. Contours drawn on the same slice therefore combine with XOR, which is
how DICOM ``CLOSED_PLANAR`` contours encode holes (an inner contour inside an outer one) and islands.

The implementation counts, for every pixel row, the edge crossings of the row's pixel-centre line and
toggles the first pixel centre at or right of each crossing; a running parity along the row yields the
mask. Parts of contours outside the image are clipped exactly: crossings left of the image toggle the
first column, crossings right of it toggle nothing. Only the polygons' bounding box is swept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray


def rasterize_xor(polygons: Sequence[NDArray[np.float64]], rows: int, columns: int) -> NDArray[np.bool_]:
    """Rasterize polygons given in continuous (column, row) pixel coordinates into a boolean mask.

    Each polygon is an (N, 2) array of vertices (closed implicitly). Pixel (j, i) has its centre at
    column i, row j. Polygons are combined with XOR.
    """
    mask = np.zeros((rows, columns), dtype=bool)
    row, column, box = rasterize_box(polygons, rows, columns)
    mask[row : row + box.shape[0], column : column + box.shape[1]] = box
    return mask


def rasterize_box(
    polygons: Sequence[NDArray[np.float64]], rows: int, columns: int
) -> tuple[int, int, NDArray[np.bool_]]:
    """The XOR mask of the polygons within their bounding box: (first row, first column, mask).

    Identical to the whole-image mask cut to the box; only the box's pixels are touched. The box has one
    column of margin on each side so that a crossing rounded across the extreme vertex lands in it.
    """
    usable = [p for p in polygons if len(p) >= 3]
    if not usable:
        return 0, 0, np.zeros((0, 0), dtype=bool)
    points = np.concatenate(usable)
    r0 = max(0, math.ceil(float(points[:, 1].min())))
    r1 = min(rows, math.ceil(float(points[:, 1].max())))
    c0 = min(max(0, math.ceil(float(points[:, 0].min())) - 1), columns)
    c1 = min(max(0, math.ceil(float(points[:, 0].max())) + 1), columns)
    height, width = r1 - r0, c1 - c0 + 1  # toggle positions c0..c1; c1 only ever switches off
    if height <= 0:
        return 0, 0, np.zeros((0, 0), dtype=bool)
    flat_index: list[NDArray[np.int64]] = []
    for polygon in usable:
        x0 = polygon[:, 0]
        y0 = polygon[:, 1]
        x1 = np.roll(x0, -1)
        y1 = np.roll(y0, -1)
        lo = np.minimum(y0, y1)
        hi = np.maximum(y0, y1)
        # Rows j with lo <= j < hi (half-open, so a vertex on a row line is counted once).
        first = np.maximum(np.ceil(lo), 0).astype(np.int64)
        last = np.minimum(np.ceil(hi), rows).astype(np.int64)  # exclusive
        counts = np.maximum(last - first, 0)
        if counts.sum() == 0:
            continue
        edge = np.repeat(np.arange(len(x0)), counts)
        offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        row = first[edge] + offsets
        t = (row - y0[edge]) / (y1[edge] - y0[edge])
        x = x0[edge] + t * (x1[edge] - x0[edge])
        column = np.clip(np.ceil(x), c0, c1).astype(np.int64)
        flat_index.append((row - r0) * width + (column - c0))
    if not flat_index:
        return 0, 0, np.zeros((0, 0), dtype=bool)
    toggles = (np.bincount(np.concatenate(flat_index), minlength=height * width) & 1).astype(np.uint8)
    parity = np.bitwise_xor.accumulate(toggles.reshape(height, width), axis=1)
    return r0, c0, parity[:, : width - 1].view(bool)


def polygon_area(polygon: NDArray[np.float64]) -> float:
    """Unsigned shoelace area of a polygon given as (N, 2) vertices."""
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _point_in_polygon(point: NDArray[np.float64], polygon: NDArray[np.float64]) -> bool:
    x, y = point
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 <= y) != (y1 <= y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return bool(np.count_nonzero(crosses & (xc < x)) % 2)


def xor_area(polygons: Sequence[NDArray[np.float64]]) -> float:
    """Area covered by the XOR of non-crossing polygons (nested ones cut holes, disjoint ones add).

    A polygon lying inside an odd number of the others is a hole; the sum of signed areas is exact
    for contours that do not intersect each other, which DICOM requires of one ROI on one slice.
    """
    usable = [p for p in polygons if len(p) >= 3]
    total = 0.0
    for n, polygon in enumerate(usable):
        depth = sum(_point_in_polygon(polygon[0], other) for m, other in enumerate(usable) if m != n)
        total += polygon_area(polygon) * (-1 if depth % 2 else 1)
    return abs(total)
