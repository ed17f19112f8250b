"""What a derived DICOM object (RTSTRUCT, SEG) takes from the CT series it was predicted on, and who made it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from tsretrain.conversion.geometry import VolumeGeometry
from tsretrain.labels.dictionary import Label, OrganDictionary
from tsretrain.storage.atomic import staged_file

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

    @property
    def title(self) -> str:
        """Model id and version, as a series or structure set is described (an LO: at most 64 characters)."""
        return f"{self.name} {self.version}"[:64]


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
        return self.geometry.index_to_patient(np.column_stack([points, np.full(len(points), float(slice_index))]))


@dataclass(frozen=True)
class Written:
    """What a derived object holds: the structures written and the dictionary labels left out as empty."""

    path: Path
    structures: tuple[str, ...]
    empty: tuple[str, ...]


def present_labels(labels: NDArray[np.integer], dictionary: OrganDictionary) -> tuple[list[Label], tuple[str, ...]]:
    """The dictionary's labels a label map holds, in id order, and the names of those it leaves empty."""
    present = set(np.unique(labels).tolist())
    kept = [label for label in dictionary.labels if label.id in present]
    return kept, tuple(label.name for label in dictionary.labels if label.id not in present)


def save(ds: Dataset, path: Path) -> None:
    """Write a dataset as a DICOM file (explicit VR little endian, with file meta), atomically."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    with staged_file(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
