"""Read the pixels of a CT series into one int16 Hounsfield-unit volume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from tsretrain.conversion.geometry import VolumeGeometry
from tsretrain.conversion.headers import UNCOMPRESSED_SYNTAXES
from tsretrain.reasons import CaseError, Reason

HU_MIN, HU_MAX = -32768, 32767


LITTLE_ENDIAN_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def _plain_pixels(ds: Dataset, syntax: str, shape: tuple[int, int]) -> NDArray[np.generic] | None:
    """The stored values of an uncompressed little-endian 16-bit image, straight from its bytes.

    ``None`` for anything else (other syntaxes, BitsStored below BitsAllocated, colour, several frames):
    pydicom's ``pixel_array`` decodes those.
    """
    if (
        syntax not in LITTLE_ENDIAN_SYNTAXES
        or ds.get("BitsAllocated") != 16
        or ds.get("BitsStored") != 16
        or ds.get("SamplesPerPixel", 1) != 1
        or int(ds.get("NumberOfFrames", 1) or 1) != 1
        or ds.get("PixelRepresentation") not in (0, 1)
        or (ds.Rows, ds.Columns) != shape
    ):
        return None
    data = ds.PixelData
    if len(data) < 2 * shape[0] * shape[1]:
        return None  # short: let pydicom say what is wrong
    dtype = "<i2" if ds.PixelRepresentation == 1 else "<u2"
    return np.frombuffer(data, dtype=dtype, count=shape[0] * shape[1]).reshape(shape)


def read_hu_volume(root: Path, files: list[str], sop_uids: list[str], geometry: VolumeGeometry) -> NDArray[np.int16]:
    """HU = stored value x RescaleSlope + RescaleIntercept, slice by slice, in volume order."""
    volume = np.empty(geometry.shape, dtype=np.int16)
    for k, (rel, uid) in enumerate(zip(files, sop_uids, strict=True)):
        try:
            ds = pydicom.dcmread(root / rel, force=True)
        except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
            raise CaseError(Reason.UNREADABLE_DICOM, f"{rel}: {exc}") from exc
        if str(ds.get("SOPInstanceUID", "")) != uid:
            raise CaseError(Reason.UNREADABLE_DICOM, f"{rel} changed since the scan; re-run the scan")
        syntax = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
        try:
            stored = _plain_pixels(ds, syntax, geometry.shape[1:])
            if stored is None:
                stored = ds.pixel_array
        except Exception as exc:  # pydicom raises many types for undecodable or short pixel data
            reason = Reason.UNREADABLE_DICOM if syntax in UNCOMPRESSED_SYNTAXES else Reason.UNDECODABLE_PIXELS
            raise CaseError(reason, f"{rel} (transfer syntax {syntax}): {exc}") from exc
        if stored.shape != geometry.shape[1:]:
            raise CaseError(Reason.INCONSISTENT_GEOMETRY, f"{rel}: pixel array {stored.shape} != {geometry.shape[1:]}")
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        if slope == 1.0 and intercept.is_integer():
            hu = stored.astype(np.int32) + int(intercept)
        else:
            hu = np.rint(stored.astype(np.float64) * slope + intercept)
        volume[k] = np.clip(hu, HU_MIN, HU_MAX)
    return volume
