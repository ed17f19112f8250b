"""Folder layouts of DICOM downloads: NBIA descriptive, classic UID folders, and one flat folder."""

from __future__ import annotations

import hashlib
import typing
from pathlib import Path, PurePosixPath
from typing import Literal

import pydicom
from pydicom.dataset import Dataset

Layout = Literal["nbia", "classic", "flat"]
LAYOUTS: tuple[Layout, ...] = typing.get_args(Layout)


def _digits(*parts: str) -> str:
    return str(int(hashlib.sha1("/".join(parts).encode()).hexdigest(), 16) % 100000).zfill(5)


def relative_path(ds: Dataset, layout: str, index: int) -> PurePosixPath:
    """Where a file goes in a layout; ``index`` is its 1-based number within its series."""
    pid = str(ds.PatientID)
    if layout == "nbia":
        date = str(ds.get("StudyDate", "20200101"))
        study = (
            f"{date[4:6]}-{date[6:8]}-{date[:4]}-NA-{ds.get('StudyDescription', 'NA')}-{_digits(ds.StudyInstanceUID)}"
        )
        series = (
            f"{int(ds.get('SeriesNumber', 1))}.000000-{ds.get('SeriesDescription', 'NA')}-"
            f"{_digits(ds.SeriesInstanceUID)}"
        )
        return PurePosixPath(pid, study.replace(" ", "_"), series.replace(" ", "_"), f"1-{index:03d}.dcm")
    if layout == "classic":
        return PurePosixPath(pid, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), f"{ds.SOPInstanceUID}.dcm")
    if layout == "flat":
        return PurePosixPath(hashlib.sha1(str(ds.SOPInstanceUID).encode()).hexdigest()[:20])
    raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")


def series_folders(patient_dir: Path) -> tuple[Path, Path]:
    """(CT series folder, RTSTRUCT file) of a patient written in a nested layout (nbia or classic)."""
    folders = sorted(series for study in patient_dir.iterdir() if study.is_dir() for series in study.iterdir())
    modality = {f: pydicom.dcmread(next(f.iterdir()), stop_before_pixels=True).Modality for f in folders}
    ct = next(f for f in folders if modality[f] == "CT")
    rtstruct = next(f for f in folders if modality[f] == "RTSTRUCT")
    return ct, next(rtstruct.iterdir())
