"""Read the pixels of a CT series into one int16 Hounsfield-unit volume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.errors import InvalidDicomError

from tsretrain.conversion.geometry import VolumeGeometry
from tsretrain.conversion.headers import UNCOMPRESSED_SYNTAXES
from tsretrain.reasons import CaseError, Reason

HU_MIN, HU_MAX = -32768, 32767


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
