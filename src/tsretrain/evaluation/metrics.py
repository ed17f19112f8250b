"""Per-case, per-label segmentation metrics, every label worked on inside its own bounding box.

The bounding boxes of all labels come from one pass over each label map (``scipy.ndimage.find_objects``);
every count, surface and distance transform of a label is then computed inside the union of its two boxes.

- **Dice** = 2 |R ∩ P| / (|R| + |P|) in voxels; equals nnU-Net's ``compute_metrics`` value for value.
- **HD95** (MONAI / MetricsReloaded convention): the larger of the two directed 95th percentiles (linear
  interpolation) of the distances (mm) from each boundary voxel of one mask to the nearest boundary voxel of
  the other; boundary voxels are mask voxels with a 6-neighbour outside the mask or the image.
- **NSD** at tolerance tau (mm): the surface Dice of Nikolov et al. (DeepMind's ``surface-distance``,
  MONAI's ``compute_surface_dice(use_subvoxels=True)``), area-weighted with the surface on voxel faces
  (:mod:`tsretrain.evaluation.surface`).
- **NSD by voxel count** (only on request, never reported as NSD): the share of both masks' boundary voxels
  within tau of the other boundary. It over-weights the faces across thick slices and is not comparable with
  published NSD values.

Absent labels (the policy, reported per value in ``status``, never hidden in a mean):

============ =========== ============ ===== ====== =====
status       reference   prediction   Dice  HD95   NSD
============ =========== ============ ===== ====== =====
``both``     present     present      value value  value
``missed``   present     empty        0     NaN    0
``false_pos`` empty      present      0     NaN    0
``absent``   empty       empty        NaN   NaN    NaN
============ =========== ============ ===== ====== =====
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from tsretrain.evaluation.surface import surface_dice

BOTH, MISSED, FALSE_POSITIVE, ABSENT = "both", "missed", "false_pos", "absent"
HD95_CONVENTION = (
    "HD95: the larger of the two directed 95th percentiles of the distances (mm) between the boundary voxels "
    "of reference and prediction (MONAI / MetricsReloaded convention)"
)
NSD_CONVENTION = (
    "NSD: surface Dice at the tolerance, surface area-weighted with the surface on voxel faces "
    "(Nikolov et al. 2021, DeepMind surface-distance; MONAI compute_surface_dice with use_subvoxels=True)"
)
NSD_VOXELS_CONVENTION = (
    "NSD by voxel count: share of boundary voxels within the tolerance; over-weights faces across thick slices, "
    "not comparable with published NSD"
)

Box = tuple[slice, ...]


@dataclass(frozen=True)
class LabelMetrics:
    """Metrics of one label in one case (``nsd_voxels`` is NaN unless asked for)."""

    label: int
    status: str
    dice: float
    hd95: float
    nsd: float
    ref_voxels: int
    pred_voxels: int
    tp: int
    nsd_voxels: float = math.nan

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.__dict__.items()}


def _boundary(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Mask voxels with a 6-neighbour outside the mask (outside the array counts as outside)."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for shift in (0, 2):
            index = [slice(1, -1)] * 3
            index[axis] = slice(shift, shift + mask.shape[axis])
            inner &= padded[tuple(index)]
    return np.asarray(mask & ~inner)


def boundary_distances(
    ref: NDArray[np.bool_], pred: NDArray[np.bool_], spacing: tuple[float, float, float]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Distances (mm) from each reference boundary voxel to the prediction boundary, and back."""
    ref_boundary, pred_boundary = _boundary(ref), _boundary(pred)
    to_pred: Any = ndimage.distance_transform_edt(~pred_boundary, sampling=spacing)
    to_ref: Any = ndimage.distance_transform_edt(~ref_boundary, sampling=spacing)
    return np.asarray(to_pred[ref_boundary], np.float64), np.asarray(to_ref[pred_boundary], np.float64)


def _union(a: Box | None, b: Box | None) -> Box:
    if a is None or b is None:
        box = a or b
        assert box is not None
        return box
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))


def _boxes(labels: NDArray[np.integer[Any]]) -> list[Box | None]:
    """Bounding box of every label value 1..max (None where absent), in one pass over the map."""
    return list(ndimage.find_objects(labels))


def case_metrics(
    reference: NDArray[np.integer[Any]],
    prediction: NDArray[np.integer[Any]],
    spacing: tuple[float, float, float],
    labels: list[int],
    tolerance_mm: dict[int, float] | float = 2.0,
    surface: bool = True,
    nsd_voxels: bool = False,
) -> list[LabelMetrics]:
    """Metrics of every label; ``spacing`` is per array axis (z, y, x) in mm; ``surface=False``: Dice only;
    ``nsd_voxels``: the voxel-count NSD variant as well."""
    if reference.shape != prediction.shape:
        raise ValueError(f"reference {reference.shape} and prediction {prediction.shape} differ in shape")
    ref_boxes, pred_boxes = _boxes(reference), _boxes(prediction)
    results = []
    for label in labels:
        ref_box = ref_boxes[label - 1] if label <= len(ref_boxes) else None
        pred_box = pred_boxes[label - 1] if label <= len(pred_boxes) else None
        if ref_box is None and pred_box is None:
            results.append(LabelMetrics(label, ABSENT, math.nan, math.nan, math.nan, 0, 0, 0))
            continue
        box = _union(ref_box, pred_box)
        ref, pred = reference[box] == label, prediction[box] == label
        ref_n, pred_n = int(np.count_nonzero(ref)), int(np.count_nonzero(pred))
        if not (ref_n and pred_n):
            status, by_count = (MISSED if ref_n else FALSE_POSITIVE), (0.0 if nsd_voxels else math.nan)
            results.append(LabelMetrics(label, status, 0.0, math.nan, 0.0, ref_n, pred_n, 0, by_count))
            continue
        tp = int(np.count_nonzero(ref & pred))
        dice = 2 * tp / (ref_n + pred_n)
        if not surface:
            results.append(LabelMetrics(label, BOTH, dice, math.nan, math.nan, ref_n, pred_n, tp))
            continue
        tau = tolerance_mm.get(label, 2.0) if isinstance(tolerance_mm, dict) else tolerance_mm
        d_ref, d_pred = boundary_distances(ref, pred, spacing)
        hd95 = max(float(np.percentile(d_ref, 95)), float(np.percentile(d_pred, 95)))
        nsd = surface_dice(ref, pred, spacing, tau)
        by_count = (
            float(((d_ref <= tau).sum() + (d_pred <= tau).sum()) / (len(d_ref) + len(d_pred)))
            if nsd_voxels
            else math.nan
        )
        results.append(LabelMetrics(label, BOTH, dice, hd95, nsd, ref_n, pred_n, tp, by_count))
    return results
