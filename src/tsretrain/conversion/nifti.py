"""Write volumes as NIfTI with the exact DICOM geometry (origin, spacing, direction)."""

from __future__ import annotations

import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray

from tsretrain.conversion.geometry import VolumeGeometry
from tsretrain.storage.atomic import staged_file

COMPRESSION_LEVEL = 1
"""zlib level for .nii.gz: level 1 is several times faster than the default and ~10 % larger."""
CHUNK = 1 << 22
DIM_OFFSET, VOX_OFFSET = 40, 108  # NIfTI-1 header: dim[8] (int16), vox_offset (float32)


def to_image(array: NDArray[np.generic], geometry: VolumeGeometry) -> sitk.Image:
    """A SimpleITK image of a [slice, row, column] array placed on the geometry."""
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(geometry.origin)
    image.SetSpacing(geometry.spacing)
    image.SetDirection(geometry.direction)
    return image


def nifti_header(dtype: np.dtype[np.generic], shape: tuple[int, int, int], geometry: VolumeGeometry) -> bytes:
    """The bytes before the voxels of the NIfTI file SimpleITK writes for such an image.

    SimpleITK writes the header of a one-voxel image on the same geometry; only the three sizes differ from
    the full image's header, and they are set here (shape is [slice, row, column]).
    """
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "header.nii"
        sitk.WriteImage(to_image(np.zeros((1, 1, 1), dtype=dtype), geometry), str(path), useCompression=False)
        header = bytearray(path.read_bytes())
    if struct.unpack_from("<i", header, 0)[0] != 348:
        raise RuntimeError("SimpleITK wrote a NIfTI header that is not little-endian NIfTI-1")
    struct.pack_into("<3h", header, DIM_OFFSET + 2, shape[2], shape[1], shape[0])
    return bytes(header[: int(struct.unpack_from("<f", header, VOX_OFFSET)[0])])


def write_nifti(array: NDArray[np.generic], geometry: VolumeGeometry, path: Path) -> None:
    """Write atomically (temporary file + rename) as gzip-compressed NIfTI.

    The header is SimpleITK's own (so is the geometry); the voxels follow in NIfTI order (column fastest, as
    the array's C order), gzip-compressed here at ``COMPRESSION_LEVEL``: SimpleITK's writer ignores the level.
    """
    volume = np.ascontiguousarray(array)
    header = nifti_header(volume.dtype, (volume.shape[0], volume.shape[1], volume.shape[2]), geometry)
    voxels = volume.reshape(-1).data.cast("B")
    packer = zlib.compressobj(COMPRESSION_LEVEL, zlib.DEFLATED, 31)  # 31: gzip container
    with staged_file(path) as tmp, tmp.open("wb") as handle:
        handle.write(packer.compress(header))
        for start in range(0, len(voxels), CHUNK):
            handle.write(packer.compress(voxels[start : start + CHUNK]))
        handle.write(packer.flush())
