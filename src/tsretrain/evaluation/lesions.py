"""Lesion-level detection: a label's connected components, matched between reference and prediction.

A reference lesion (a connected component of the reference, 26-connected) is found when any predicted voxel of
the label lies in it; a predicted component touching no reference voxel is a false-positive component, reported
with its volume. A case with one tumour found and a second primary missed counts one of two lesions found, where a
per-case detection rate would say the case was detected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)  # 26-connected, as a contour drawn on adjacent slices is one object


@dataclass(frozen=True)
class Lesions:
    """A label's lesions in one case: reference components, those found, and predicted components outside."""

    reference: int
    found: int
    false_positive_ml: tuple[float, ...]  # volume of each predicted component touching no reference voxel

    @property
    def missed(self) -> int:
        return self.reference - self.found

    def to_json(self) -> dict[str, Any]:
        return {
            "lesions": self.reference,
            "lesions_found": self.found,
            "lesions_missed": self.missed,
            "false_positive_components": len(self.false_positive_ml),
            "false_positive_ml": [round(v, 4) for v in self.false_positive_ml],
        }


def lesions(reference: NDArray[np.bool_], prediction: NDArray[np.bool_], voxel_ml: float) -> Lesions:
    """Lesions of one label's reference and predicted masks (same grid)."""
    ref_components, n_ref = ndimage.label(reference, structure=CONNECTIVITY)
    found = len(np.unique(ref_components[prediction & reference])) if n_ref else 0
    pred_components, n_pred = ndimage.label(prediction, structure=CONNECTIVITY)
    touching = set(np.unique(pred_components[prediction & reference]).tolist())
    sizes = np.bincount(pred_components.reshape(-1), minlength=n_pred + 1)
    outside = tuple(float(sizes[c] * voxel_ml) for c in range(1, n_pred + 1) if c not in touching)
    return Lesions(int(n_ref), int(found), outside)
