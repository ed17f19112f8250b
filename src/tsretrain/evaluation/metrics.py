"""Per-case, per-label segmentation metrics, all labels of a case in one pass.

- **Dice** from one confusion matrix of (reference, prediction) label pairs (``np.bincount``), not one mask per
  label; it equals nnU-Net's ``compute_metrics`` value for value.
- **HD95**: ``max(p95(d(ref surface -> pred surface)), p95(d(pred surface -> ref surface)))`` in mm.
- **NSD** at tolerance tau (mm): the share of both surfaces' voxels lying within tau of the other surface.
  Surfaces are the mask voxels with a 6-neighbour outside the mask; distances are Euclidean distance
  transforms with the image spacing, computed in the bounding box of the two masks (plus tau).

Absent labels (the policy, reported per value in ``status``, never hidden in a mean):

============ =========== ============ ===== ====== =====
status       reference   prediction   Dice  HD95   NSD
============ =========== ============ ===== ====== =====
``both``     present     present      value value  value
``missed``   present     empty        0     NaN    0
``false_pos`` empty      present      0     NaN    0
``absent``   empty       empty        NaN   NaN    NaN
============ =========== ============ ===== ====== =====

Per-label means use the cases whose reference has the label (``both`` + ``missed``); false positives are
counted separately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

BOTH, MISSED, FALSE_POSITIVE, ABSENT = "both", "missed", "false_pos", "absent"


@dataclass(frozen=True)
class LabelMetrics:
    """Metrics of one label in one case."""

    label: int
    status: str
    dice: float
    hd95: float
    nsd: float
    ref_voxels: int
    pred_voxels: int
    tp: int

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.__dict__.items()}


def confusion(
    reference: NDArray[np.integer[Any]], prediction: NDArray[np.integer[Any]], n_labels: int
) -> NDArray[np.int64]:
    """``matrix[r, p]`` = voxels with reference label r and predicted label p."""
    pairs = reference.astype(np.int64).reshape(-1) * n_labels + prediction.astype(np.int64).reshape(-1)
    return np.bincount(pairs, minlength=n_labels * n_labels).reshape(n_labels, n_labels)


def _surface(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    padded = np.pad(mask, 1)
    eroded = ndimage.binary_erosion(padded, structure=ndimage.generate_binary_structure(3, 1))
    return np.asarray((padded & ~eroded)[1:-1, 1:-1, 1:-1])


def surface_distances(
    ref: NDArray[np.bool_], pred: NDArray[np.bool_], spacing: tuple[float, float, float], margin_mm: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Distances (mm) from each reference surface voxel to the prediction surface, and back."""
    both = ref | pred
    coords = np.nonzero(both)
    margin = [math.ceil(margin_mm / s) + 1 for s in spacing]
    box = tuple(
        slice(max(0, int(c.min()) - m), min(n, int(c.max()) + m + 1))
        for c, m, n in zip(coords, margin, both.shape, strict=True)
    )
    ref_surface, pred_surface = _surface(ref[box]), _surface(pred[box])
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)
    return np.asarray(to_pred[ref_surface], dtype=np.float64), np.asarray(to_ref[pred_surface], dtype=np.float64)


def case_metrics(
    reference: NDArray[np.integer[Any]],
    prediction: NDArray[np.integer[Any]],
    spacing: tuple[float, float, float],
    labels: list[int],
    tolerance_mm: dict[int, float] | float = 2.0,
    surface: bool = True,
) -> list[LabelMetrics]:
    """Metrics of every label; ``spacing`` is per array axis (z, y, x) in mm; ``surface=False``: Dice only."""
    if reference.shape != prediction.shape:
        raise ValueError(f"reference {reference.shape} and prediction {prediction.shape} differ in shape")
    n = max(int(reference.max(initial=0)), int(prediction.max(initial=0)), *labels) + 1
    matrix = confusion(reference, prediction, n)
    results = []
    for label in labels:
        tp = int(matrix[label, label])
        ref_n, pred_n = int(matrix[label].sum()), int(matrix[:, label].sum())
        tau = tolerance_mm.get(label, 2.0) if isinstance(tolerance_mm, dict) else tolerance_mm
        if ref_n and pred_n and not surface:
            results.append(LabelMetrics(label, BOTH, 2 * tp / (ref_n + pred_n), math.nan, math.nan, ref_n, pred_n, tp))
        elif ref_n and pred_n:
            d_ref, d_pred = surface_distances(reference == label, prediction == label, spacing, tau)
            hd95 = max(float(np.percentile(d_ref, 95)), float(np.percentile(d_pred, 95)))
            nsd = float(((d_ref <= tau).sum() + (d_pred <= tau).sum()) / (len(d_ref) + len(d_pred)))
            results.append(LabelMetrics(label, BOTH, 2 * tp / (ref_n + pred_n), hd95, nsd, ref_n, pred_n, tp))
        elif ref_n:
            results.append(LabelMetrics(label, MISSED, 0.0, math.nan, 0.0, ref_n, 0, 0))
        elif pred_n:
            results.append(LabelMetrics(label, FALSE_POSITIVE, 0.0, math.nan, 0.0, 0, pred_n, 0))
        else:
            results.append(LabelMetrics(label, ABSENT, math.nan, math.nan, math.nan, 0, 0, 0))
    return results
