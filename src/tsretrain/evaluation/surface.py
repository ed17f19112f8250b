"""Surface Dice (normalised surface distance, NSD) as the field reports it: area-weighted, surface on voxel faces.

The definition of Nikolov et al. (2021), DeepMind's ``surface-distance``: the surface of a mask is made of
marching-cubes surface elements ("surfels") on the grid of voxel corners, each weighted by its area in mm2 for
the image spacing; a surfel counts as overlapping when its distance to the other surface is at most the
tolerance. NSD = (overlapping area of both surfaces) / (total area of both surfaces). With 2.5 mm slices this
is not the share of surface *voxels*: counting voxels over-weights the top and bottom faces.

The table of surfel normals per 2 x 2 x 2 corner configuration is DeepMind's (Apache-2.0, Copyright 2018
Google Inc.), stored here as the absolute normal components x 8: only the normals' lengths after scaling by the
spacing matter, so the signs drop out. Everything is computed in the bounding box of the two masks.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

_NORMALS_X8 = (
    ";111;111;220 220;111;202 202;111 111;400 222 111;111;111 111;202 202;400 222 111;220 220;400 222 111;"
    "400 222 111;400 400;111;022 022;111 111;040 222 111;111 111;004 222 111;111 111 111;111 222 222 111;111 111;"
    "022 022 111;202 202 111;111 333 022 202;111 220 220;333 022 111 220;400 111 222 111;400 111 222;111;111 111;"
    "022 022;040 111 222;111 111;111 202 202;022 022 111;333 022 111 202;111 111;111 111 111;004 222 111;"
    "222 222 111 111;111 220 220;400 222 111 111;022 333 111 220;400 222 111;220 220;040 222 111;040 111 222;"
    "040 040;220 220 111;333 202 111 220;111 040 222 111;040 222 111;111 220 220;040 222 111 111;333 220 111 202;"
    "040 222 111;220 220 220 220;220 220 111;111 220 220;220 220;111;111 111;111 111;111 220 220;022 022;"
    "004 222 111;022 022 111;333 022 111 220;111 111;111 111 111;111 202 202;400 222 111 111;040 222 111;"
    "222 222 111 111;202 333 022 111;400 222 111;202 202;004 222 111;111 202 202;202 333 220 111;004 222 111;"
    "004 004;111 111 222 004;111 222 004;202 202 111;004 222 111 111;202 202 202 202;111 202 202;202 333 220 111;"
    "004 222 111;111 202 202;202 202;111 111;111 111 111;111 022 022;040 111 222 111;022 022 111;004 222 111 111;"
    "022 022 022 022;022 022 111;111 111 111;111 111 111 111;004 222 111 111;111 111 111;040 222 111 111;"
    "111 111 111;022 022 111;111 111;400 222 111;222 111 222 111;333 022 111 202;040 222 111;333 220 022 111;"
    "111 222 004;111 022 022;022 022;400 222 111 111;111 111 111;202 202 111;111 111;220 220 111;111 111;111 111;"
    "111;111;111 111;111 111;220 220 111;111 111;202 202 111;111 111 111;400 222 111 111;022 022;111 022 022;"
    "111 222 004;333 220 022 111;040 222 111;333 022 111 202;222 111 222 111;400 222 111;111 111;022 022 111;"
    "111 111 111;040 222 111 111;111 111 111;004 222 111 111;111 111 111 111;111 111 111;022 022 111;"
    "022 022 022 022;004 222 111 111;022 022 111;040 111 222 111;111 022 022;111 111 111;111 111;202 202;"
    "111 202 202;004 222 111;202 333 220 111;111 202 202;202 202 202 202;004 222 111 111;202 202 111;111 222 004;"
    "111 111 222 004;004 004;004 222 111;202 333 220 111;111 202 202;004 222 111;202 202;400 222 111;"
    "202 333 022 111;222 222 111 111;040 222 111;400 222 111 111;111 202 202;111 111 111;111 111;333 022 111 220;"
    "022 022 111;004 222 111;022 022;111 220 220;111 111;111 111;111;220 220;111 220 220;220 220 111;"
    "220 220 220 220;040 222 111;333 220 111 202;040 222 111 111;111 220 220;040 222 111;111 040 222 111;"
    "333 202 111 220;220 220 111;040 040;040 111 222;040 222 111;220 220;400 222 111;022 333 111 220;"
    "400 222 111 111;111 220 220;222 222 111 111;004 222 111;111 111 111;111 111;333 022 111 202;022 022 111;"
    "111 202 202;111 111;040 111 222;022 022;111 111;111;400 111 222;400 111 222 111;333 022 111 220;111 220 220;"
    "111 333 022 202;202 202 111;022 022 111;111 111;111 222 222 111;111 111 111;004 222 111;111 111;040 222 111;"
    "111 111;022 022;111;400 400;400 222 111;400 222 111;220 220;400 222 111;202 202;111 111;111;400 222 111;"
    "111 111;202 202;111;220 220;111;111;"
)
"""Per corner code 0..255 (``;``-separated): the surfels' normals, three digits |n| x 8 each (blank-separated)."""

CORNER_WEIGHTS = ((128, 64, 32, 16), (8, 4, 2, 1))
"""Bit of each corner of a 2 x 2 x 2 cell: first index along axis 0, then axes 1 and 2 (DeepMind's order)."""


@cache
def surfel_areas(spacing: tuple[float, float, float]) -> NDArray[np.float64]:
    """Surface area (mm2) of the surfels of each corner code, for a voxel spacing per array axis (mm)."""
    scale = np.array([spacing[1] * spacing[2], spacing[0] * spacing[2], spacing[0] * spacing[1]]) / 8.0
    areas = np.zeros(256)
    for code, normals in enumerate(_NORMALS_X8.split(";")):
        for normal in normals.split():
            areas[code] += float(np.linalg.norm(np.array([int(c) for c in normal]) * scale))
    return areas


def corner_codes(mask: NDArray[np.bool_]) -> NDArray[np.uint8]:
    """The configuration code of every voxel corner: a grid one larger than ``mask`` along each axis, with
    everything outside ``mask`` taken as background (so a mask touching the border has a closed surface)."""
    padded = np.pad(mask, 1).astype(np.uint8)
    shape = tuple(n + 1 for n in mask.shape)
    codes = np.zeros(shape, np.uint8)
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                weight = CORNER_WEIGHTS[a][2 * b + c]
                codes += padded[a : a + shape[0], b : b + shape[1], c : c + shape[2]] * np.uint8(weight)
    return codes


def surface_dice(
    reference: NDArray[np.bool_], prediction: NDArray[np.bool_], spacing: tuple[float, float, float], tolerance: float
) -> float:
    """NSD of two non-empty masks (cropped to the bounding box of both) at ``tolerance`` (mm)."""
    areas = surfel_areas(spacing)
    ref_codes, pred_codes = corner_codes(reference), corner_codes(prediction)
    ref_border = (ref_codes != 0) & (ref_codes != 255)
    pred_border = (pred_codes != 0) & (pred_codes != 255)
    ref_area, pred_area = areas[ref_codes[ref_border]], areas[pred_codes[pred_border]]
    to_pred: Any = ndimage.distance_transform_edt(~pred_border, sampling=spacing)
    to_ref: Any = ndimage.distance_transform_edt(~ref_border, sampling=spacing)
    close = ref_area[to_pred[ref_border] <= tolerance].sum() + pred_area[to_ref[pred_border] <= tolerance].sum()
    return float(close / (ref_area.sum() + pred_area.sum()))
