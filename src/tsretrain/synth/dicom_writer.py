"""Write a phantom as a DICOM CT series and an RTSTRUCT, the way a treatment-planning system would."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from tsretrain.conversion.headers import CT_IMAGE_STORAGE, RTSTRUCT_STORAGE
from tsretrain.decimal_strings import CONTOUR_DATA, contour_data, decimal_string
from tsretrain.synth import SYNTHETIC_MANUFACTURER
from tsretrain.synth.phantom import Phantom, ScanSpec

UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root for generated UIDs
STUDY_DATE = "20200101"
COLOURS = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255], [255, 128, 0]]


def seeded_uid(*parts: object) -> str:
    """A deterministic UID from the given parts (same inputs, same UID)."""
    return str(generate_uid(prefix=UID_ROOT, entropy_srcs=[str(p) for p in parts]))


@dataclass
class SeriesIds:
    """UIDs shared by the files of one patient."""

    patient_id: str
    study_uid: str
    frame_uid: str
    ct_series_uid: str
    ct_sop_uids: list[str] = field(default_factory=list)

    @classmethod
    def for_patient(cls, patient_id: str, seed: int, slices: int, tag: str = "ct") -> SeriesIds:
        return cls(
            patient_id=patient_id,
            study_uid=seeded_uid(seed, patient_id, "study"),
            frame_uid=seeded_uid(seed, patient_id, "frame"),
            ct_series_uid=seeded_uid(seed, patient_id, tag, "series"),
            ct_sop_uids=[seeded_uid(seed, patient_id, tag, "sop", k) for k in range(slices)],
        )


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(UID_ROOT + "1")
    return meta


def _patient_study(ds: Dataset, ids: SeriesIds) -> None:
    ds.PatientID = ids.patient_id
    ds.PatientName = ids.patient_id.replace("-", "^")
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = ids.study_uid
    ds.StudyDate = STUDY_DATE
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "RT PLANNING CT"
    ds.FrameOfReferenceUID = ids.frame_uid


def new_instance(sop_class: str, sop_uid: str, modality: str, ids: SeriesIds) -> Dataset:
    """A dataset with file meta, SOP identity and the patient/study module filled in."""
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_uid)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    if modality:
        ds.Modality = modality
    ds.Manufacturer = SYNTHETIC_MANUFACTURER
    _patient_study(ds, ids)
    return ds


@dataclass(frozen=True)
class PixelEncoding:
    """How CT numbers are stored: signed or unsigned 16-bit with a rescale intercept."""

    pixel_representation: int = 1
    intercept: float = -1024.0


def ct_slices(
    phantom: Phantom,
    spec: ScanSpec,
    ids: SeriesIds,
    encoding: PixelEncoding,
    rng: np.random.Generator,
    series_number: int = 2,
    description: str = "CT HEAD NECK",
) -> Iterable[Dataset]:
    """One dataset per slice, in slice order; stored values = HU - intercept."""
    rotation = spec.rotation()
    orientation = [decimal_string(v) for v in (*rotation[:, 0], *rotation[:, 1])]
    for k in range(spec.slices):
        hu = phantom.paint_slice(spec, k, rng)
        stored = np.rint(hu - encoding.intercept)
        if encoding.pixel_representation == 0:
            pixels = np.clip(stored, 0, 65535).astype(np.uint16)
        else:
            pixels = np.clip(stored, -32768, 32767).astype(np.int16)
        ds = new_instance(CT_IMAGE_STORAGE, ids.ct_sop_uids[k], "CT", ids)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesInstanceUID = ids.ct_series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [decimal_string(v) for v in spec.slice_position(k)]
        ds.ImageOrientationPatient = orientation
        ds.SliceThickness = decimal_string(spec.slice_thickness)
        ds.PixelSpacing = [decimal_string(spec.pixel_spacing[0]), decimal_string(spec.pixel_spacing[1])]
        ds.KVP = "120"
        ds.PatientPosition = "HFS"
        if spec.tilt_shift:
            ds.GantryDetectorTilt = decimal_string(float(np.degrees(np.arctan2(spec.tilt_shift, spec.slice_thickness))))
        ds.Rows, ds.Columns = spec.rows, spec.columns
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = encoding.pixel_representation
        ds.RescaleIntercept = decimal_string(encoding.intercept)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.PixelData = pixels.tobytes()
        yield ds


@dataclass(frozen=True)
class RtstructOptions:
    """Variations of an RTSTRUCT used to build edge cases."""

    contour_offset: float = 0.0  # mm added along the slice normal to every contour point
    contour_image_sequence: bool = True  # False: no ContourImageSequence at all (series or contour level)
    referenced_series_uid: str | None = None  # default: the CT series
    referenced_series: bool = True  # write RTReferencedSeriesSequence at all
    frame_uid: str | None = None  # default: the CT's frame of reference
    rename: tuple[tuple[str, str], ...] = ()  # (ROI name, new name)
    add_point_roi: bool = False
    extra_w: tuple[str, float] = ("", 0.0)  # (ROI name, w) for a contour above or below the scan
    plane_step: tuple[str, float] = ("", 0.0)  # (ROI name, mm): that ROI drawn on planes this far apart
    degenerate: str = ""  # ROI that also gets an empty, a 2-point, a NaN and a far-outside contour
    duplicate_roi_number: bool = False  # the second ROI reuses the first one's ROINumber
    label: str = "RTSTRUCT"
    date_time: tuple[str, str] = (STUDY_DATE, "130000")
    sop_tag: str = "rtstruct"
    seed: int = 0


def rtstruct(phantom: Phantom, spec: ScanSpec, ids: SeriesIds, options: RtstructOptions) -> Dataset:
    """The RTSTRUCT of a phantom: CLOSED_PLANAR contours on every slice plane each structure crosses."""
    ds = new_instance(RTSTRUCT_STORAGE, seeded_uid(options.seed, ids.patient_id, options.sop_tag), "RTSTRUCT", ids)
    del ds.FrameOfReferenceUID
    ds.SeriesInstanceUID = seeded_uid(options.seed, ids.patient_id, options.sop_tag, "series")
    ds.SeriesNumber = 1
    ds.SeriesDescription = options.label
    ds.InstanceNumber = 1
    ds.StructureSetLabel = options.label
    ds.StructureSetDate, ds.StructureSetTime = options.date_time
    frame_uid = options.frame_uid or ids.frame_uid

    frame = Dataset()
    frame.FrameOfReferenceUID = frame_uid
    if options.referenced_series:
        series = Dataset()
        series.SeriesInstanceUID = options.referenced_series_uid or ids.ct_series_uid
        if options.contour_image_sequence:
            series.ContourImageSequence = Sequence([_image_ref(uid) for uid in ids.ct_sop_uids])
        study = Dataset()
        study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
        study.ReferencedSOPInstanceUID = ids.study_uid
        study.RTReferencedSeriesSequence = Sequence([series])
        frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])

    renames = dict(options.rename)
    roi_seq, contour_seq, obs_seq = Sequence(), Sequence(), Sequence()
    rotation = spec.rotation()

    def add_roi(name: str, contours: Sequence, interpreted_type: str) -> None:
        number = len(roi_seq) + 1
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = frame_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        roi_seq.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        item.ROIDisplayColor = COLOURS[number % len(COLOURS)]
        item.ContourSequence = contours
        contour_seq.append(item)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = interpreted_type
        obs.ROIInterpreter = ""
        obs_seq.append(obs)

    for structure in phantom.structures:
        contours = Sequence()
        planes = [(float(w), k) for k, w in enumerate(spec.w_axis())]
        if options.plane_step[0] == structure.roi_name:
            w_axis = spec.w_axis()
            planes = [(float(w), -1) for w in np.arange(w_axis[0], w_axis[-1] + 1e-6, options.plane_step[1])]
        if options.extra_w[0] == structure.roi_name:
            planes.append((options.extra_w[1], -1))
        for w, k in planes:
            for ellipse in structure.section(w):
                uv = ellipse.polygon()
                shift = k * spec.tilt_shift if k >= 0 else 0.0
                points = spec.to_patient(uv[:, 0], uv[:, 1] + shift, w)
                points = points + options.contour_offset * rotation[:, 2]
                contour = Dataset()
                if options.contour_image_sequence and k >= 0:
                    contour.ContourImageSequence = Sequence([_image_ref(ids.ct_sop_uids[k])])
                contour.ContourGeometricType = "CLOSED_PLANAR"
                contour.NumberOfContourPoints = len(points)
                contour[CONTOUR_DATA] = contour_data(points.reshape(-1))
                contour.set_original_encoding(False, True, "iso8859")  # what it is written in: kept raw
                contours.append(contour)
        if options.degenerate == structure.roi_name:
            contours.extend(_degenerate_contours(spec, ids))
        add_roi(renames.get(structure.roi_name, structure.roi_name), contours, structure.interpreted_type)
    if options.add_point_roi:
        point = Dataset()
        point.ContourGeometricType = "POINT"
        point.NumberOfContourPoints = 1
        point.ContourData = [decimal_string(v) for v in spec.to_patient(0.0, 0.0, float(spec.w_axis()[0]))]
        add_roi("REF_PT", Sequence([point]), "MARKER")
    if options.duplicate_roi_number:
        roi_seq[1].ROINumber = roi_seq[0].ROINumber
    ds.StructureSetROISequence = roi_seq
    ds.ROIContourSequence = contour_seq
    ds.RTROIObservationsSequence = obs_seq
    return ds


def _degenerate_contours(spec: ScanSpec, ids: SeriesIds) -> list[Dataset]:
    """Contours real exports contain: empty (slice 1), 2 points (slice 2), NaN (slice 3), far outside (slice 4)."""
    w = spec.w_axis()
    far = spec.to_patient(np.array([5000.0, 5010.0, 5010.0]), np.array([5000.0, 5000.0, 5010.0]), float(w[4]))
    cases: list[tuple[int, list[str]]] = [
        (1, []),
        (
            2,
            [
                decimal_string(v)
                for v in spec.to_patient(np.array([0.0, 5.0]), np.array([0.0, 0.0]), float(w[2])).reshape(-1)
            ],
        ),
        (3, ["NaN"] * 9),
        (4, [decimal_string(v) for v in far.reshape(-1)]),
    ]
    contours = []
    for k, data in cases:
        contour = Dataset()
        contour.ContourImageSequence = Sequence([_image_ref(ids.ct_sop_uids[k])])
        contour.ContourGeometricType = "CLOSED_PLANAR"
        contour.NumberOfContourPoints = len(data) // 3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "NaN" is not a valid DS: that is the point
            contour.ContourData = data
        contours.append(contour)
    return contours


def _image_ref(sop_uid: str) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = CT_IMAGE_STORAGE
    ref.ReferencedSOPInstanceUID = sop_uid
    return ref


def save(ds: Dataset, path: str) -> None:
    """Write a dataset as a DICOM Part 10 file (with preamble and file meta)."""
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
