"""Label maps on disk (``<case>.nii.gz``): found by case, read as uint8, compared by grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

GEOMETRY_TOL = 1e-3


def read_label_map(path: Path) -> tuple[np.ndarray, sitk.Image]:
    """The label map (a read-only view when it is stored as uint8: valid while the image is kept) and its image."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayViewFromImage(image)
    return (array if array.dtype == np.uint8 else array.astype(np.uint8)), image


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=GEOMETRY_TOL)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=GEOMETRY_TOL)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=GEOMETRY_TOL)
    )


def label_maps(folder: Path) -> dict[str, Path]:
    """The label maps of a folder by case id (``<case>.nii.gz``), in case order."""
    return {p.name.removesuffix(".nii.gz"): p for p in sorted(folder.glob("*.nii.gz"))}
