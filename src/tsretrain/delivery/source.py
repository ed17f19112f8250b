"""What a derived DICOM object (RTSTRUCT, SEG) takes from the CT series it was predicted on, and who made it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from tsretrain.conversion.geometry import VolumeGeometry

# the CT's attributes a derived object repeats (PS3.3: Patient, Clinical Trial Subject, General Study, Patient
# Study modules); absent ones stay absent, or empty where the derived object's module makes them type 2
PATIENT_AND_STUDY = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "PatientSize",
    "OtherPatientIDsSequence",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
    "ClinicalTrialSponsorName",
    "ClinicalTrialProtocolID",
    "ClinicalTrialProtocolName",
    "ClinicalTrialSiteID",
    "ClinicalTrialSiteName",
    "ClinicalTrialSubjectID",
)
TYPE_2 = (
    *("PatientName", "PatientID", "PatientBirthDate", "PatientSex"),
    *("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"),
)


@contextlib.contextmanager
def validated_writing() -> Iterator[None]:
    """pydicom refuses any value its VR does not allow (length, characters) while a derived object is built."""
    previous = pydicom.config.settings.writing_validation_mode
    pydicom.config.settings.writing_validation_mode = pydicom.config.RAISE
    try:
        yield
    finally:
        pydicom.config.settings.writing_validation_mode = previous


@dataclass(frozen=True)
class Algorithm:
    """The model that made the contours, as derived objects name it."""

    name: str  # the model id
    version: str
    family: str = "nnU-Net v2 (tsretrain)"


@dataclass(frozen=True)
class SourceSeries:
    """A CT series: its images' headers in volume order (``labels[k]`` is ``headers[k]``) and its geometry."""

    headers: tuple[Dataset, ...]
    geometry: VolumeGeometry

    @classmethod
    def read(cls, root: Path, files: list[str], geometry: VolumeGeometry) -> SourceSeries:
        """The headers of ``files`` (relative to ``root``, in volume order), without their pixels."""
        return cls(tuple(pydicom.dcmread(root / rel, stop_before_pixels=True) for rel in files), geometry)

    @property
    def first(self) -> Dataset:
        return self.headers[0]

    def copy_patient_and_study(self, target: Dataset) -> None:
        """The patient and study the CT belongs to, as its derived object must repeat them."""
        for keyword in PATIENT_AND_STUDY:
            if keyword in self.first:
                target[keyword] = self.first[keyword]
            elif keyword in TYPE_2:
                setattr(target, keyword, "")

    def patient_points(self, slice_index: int, points: NDArray[np.float64]) -> NDArray[np.float64]:
        """LPS coordinates (mm) of continuous (column, row) pixel positions on one slice."""
        index = np.column_stack([points, np.full(len(points), float(slice_index))])
        affine = self.geometry.index_to_patient_affine()
        return np.asarray(index @ affine[:3, :3].T + affine[:3, 3], dtype=np.float64)
