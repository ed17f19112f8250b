"""Write volumes as NIfTI with the exact DICOM geometry (origin, spacing, direction)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray

from tsretrain.conversion.geometry import VolumeGeometry
from tsretrain.storage.atomic import staged_file

COMPRESSION_LEVEL = 1
"""zlib level for .nii.gz: level 1 is several times faster than the default and ~10 % larger."""


def to_image(array: NDArray[np.generic], geometry: VolumeGeometry) -> sitk.Image:
    """A SimpleITK image of a [slice, row, column] array placed on the geometry."""
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(geometry.origin)
    image.SetSpacing(geometry.spacing)
    image.SetDirection(geometry.direction)
    return image


def write_nifti(array: NDArray[np.generic], geometry: VolumeGeometry, path: Path) -> None:
    """Write atomically (temporary file + rename) as compressed NIfTI."""
    image = to_image(array, geometry)
    writer = sitk.ImageFileWriter()
    writer.SetUseCompression(True)
    writer.SetCompressionLevel(COMPRESSION_LEVEL)
    with staged_file(path) as tmp:
        writer.SetFileName(str(tmp))
        writer.Execute(image)
