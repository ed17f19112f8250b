"""Planar contours of a label mask that give the mask back exactly.

Each contour runs along pixel edges (the boundary between a voxel of the structure and one outside it), so that
no pixel centre lies on a contour: the even-odd (XOR) rule at pixel centres, which tsretrain's reader, plastimatch
(``--xor-contours``) and planning systems apply to the contours of one ROI on one slice, gives back the mask
voxel for voxel, holes and islands included. Tracing pixel centres instead (rt-utils, OpenCV's ``findContours``)
puts the boundary voxels on the contour, where a reader's rounding decides whether they are in or out.

Contours turn towards the structure where two of its pixels touch only at a corner and are cut where they
would pass a corner twice, so that no contour crosses or touches itself; collinear vertices are dropped.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

# the four edges of a pixel with the structure on their right (image axes: x = column, y = row, y down)
# as (start corner, end corner) offsets from the pixel's top-left corner, per side whose neighbour is outside
_SIDES = (
    ((-1, 0), (0, 0), (1, 0)),  # top: neighbour at row - 1; from (i, j) to (i + 1, j)
    ((0, 1), (1, 0), (1, 1)),  # right: neighbour at column + 1; from (i + 1, j) to (i + 1, j + 1)
    ((1, 0), (1, 1), (0, 1)),  # bottom: neighbour at row + 1; from (i + 1, j + 1) to (i, j + 1)
    ((0, -1), (0, 1), (0, 0)),  # left: neighbour at column - 1; from (i, j + 1) to (i, j)
)


def _edges(mask: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Every boundary edge as (x0, y0, x1, y1) corner coordinates (corner (x, y) is pixel (y, x)'s top left)."""
    padded = np.pad(mask, 1)
    inside = padded[1:-1, 1:-1]
    parts = []
    for (dj, di), (sx, sy), (ex, ey) in _SIDES:
        neighbour = padded[1 + dj : padded.shape[0] - 1 + dj, 1 + di : padded.shape[1] - 1 + di]
        rows, columns = np.nonzero(inside & ~neighbour)
        parts.append(np.stack([columns + sx, rows + sy, columns + ex, rows + ey], axis=1))
    return np.concatenate(parts).astype(np.int64)


def _turn_order(dx: int, dy: int, ox: int, oy: int) -> int:
    """Sort key of an outgoing direction after an incoming one: right turn first, then straight, then left."""
    cross = dx * oy - dy * ox  # > 0: a right turn with y pointing down
    return 0 if cross > 0 else (1 if cross == 0 else 2)


def mask_contours(mask: NDArray[np.bool_]) -> list[NDArray[np.float64]]:
    """Closed contours of a 2-D mask in continuous (column, row) pixel coordinates (pixel centres at integers).

    Outer boundaries and hole boundaries alike; their XOR rasterized at pixel centres is ``mask``.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    edges = _edges(mask)
    width = mask.shape[1] + 1
    starts = edges[:, 1] * width + edges[:, 0]
    outgoing: dict[int, list[int]] = {}
    for n, start in enumerate(starts.tolist()):
        outgoing.setdefault(start, []).append(n)
    used = np.zeros(len(edges), dtype=bool)
    contours: list[NDArray[np.float64]] = []
    for first in range(len(edges)):
        if used[first]:
            continue
        corners: list[tuple[int, int]] = []
        edge = first
        while edge != first or not corners:
            used[edge] = True
            x0, y0, x1, y1 = (int(v) for v in edges[edge])
            corners.append((x0, y0))
            # the loop closes where the turn rule leads back to its first edge
            choices = [n for n in outgoing[y1 * width + x1] if n == first or not used[n]]
            dx, dy = x1 - x0, y1 - y0
            edge = min(choices, key=lambda n: _turn_order(dx, dy, *(edges[n, 2:] - edges[n, :2]).tolist()))
        contours.extend(_without_collinear(np.asarray(loop, dtype=np.float64) - 0.5) for loop in _simple_loops(corners))
    return contours


def _simple_loops(corners: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """A closed walk cut into loops that visit each corner once (a structure pinched at a corner, or a hole
    touching its outline at one, passes a corner twice); the edges, and so their XOR, stay the same."""
    loops = []
    path: list[tuple[int, int]] = []
    position: dict[tuple[int, int], int] = {}
    for corner in corners:
        if corner in position:
            start = position[corner]
            loops.append(path[start:])
            for gone in path[start + 1 :]:
                del position[gone]
            del path[start + 1 :]
        else:
            position[corner] = len(path)
            path.append(corner)
    loops.append(path)
    return loops


def _without_collinear(points: NDArray[np.float64]) -> NDArray[np.float64]:
    """The polygon's corners only (vertices where it turns)."""
    before = points - np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0) - points
    turns = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0] != 0
    return np.asarray(points[turns], dtype=np.float64)
