"""Write a label map as an RT Structure Set that planning systems accept.

What the field's writers get wrong and this one does not: ``RTROIInterpretedType`` comes from the dictionary
(ORGAN, GTV, ...; rt-utils leaves it empty); structure ids are at most 16 characters and every decimal string
at most 16 bytes (Eclipse refuses longer ones); contours run along pixel edges, so the even-odd rule gives the
mask back exactly (``tsretrain.delivery.contours``); points are placed with the CT's own direction cosines, so
series with negated row or column cosines, feet-first or prone, come out unmirrored. The structure set is left
UNAPPROVED: automatic contours are reviewed before they are used.
"""

from __future__ import annotations

import datetime
import struct
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from tsretrain import __version__
from tsretrain.decimal_strings import encoded
from tsretrain.delivery.contours import mask_contours
from tsretrain.delivery.source import Algorithm, SourceSeries, Written, present_labels, save, validated_writing
from tsretrain.labels.dictionary import OrganDictionary

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
CONTOUR_SEQUENCE = Tag(0x3006, 0x0040)


def _now() -> tuple[str, str]:
    now = datetime.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def _header(source: SourceSeries, algorithm: Algorithm, series_number: int) -> Dataset:
    ds = Dataset()
    date, time = _now()
    source.copy_patient_and_study(ds)
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = algorithm.title
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.InstanceNumber = 1
    ds.OperatorsName = ""
    ds.Manufacturer = "tsretrain"
    ds.ManufacturerModelName = algorithm.name[:64]
    ds.SoftwareVersions = f"tsretrain {__version__}"
    ds.FrameOfReferenceUID = source.first.FrameOfReferenceUID  # the Frame of Reference module: the CT's
    ds.PositionReferenceIndicator = source.first.get("PositionReferenceIndicator", "")
    ds.StructureSetLabel = algorithm.name[:16]
    ds.StructureSetName = algorithm.title
    ds.StructureSetDescription = f"Automatic contours of {algorithm.family}; review before clinical use."
    ds.StructureSetDate, ds.StructureSetTime = date, time
    ds.ApprovalStatus = "UNAPPROVED"
    if "SpecificCharacterSet" in source.first:
        ds.SpecificCharacterSet = source.first.SpecificCharacterSet
    return ds


def _image_reference(image: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = image.SOPClassUID
    item.ReferencedSOPInstanceUID = image.SOPInstanceUID
    return item


def _referenced_frame(source: SourceSeries) -> Dataset:
    """The frame of reference, study, series and every image of the CT the contours lie on."""
    series = Dataset()
    series.SeriesInstanceUID = source.first.SeriesInstanceUID
    series.ContourImageSequence = Sequence([_image_reference(image) for image in source.headers])
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Study Component Management, as RT objects name a study
    study.ReferencedSOPInstanceUID = source.first.StudyInstanceUID
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = source.first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = Sequence([study])
    return frame


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """One data element in explicit VR little endian, its value padded to an even length."""
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    if vr == b"SQ":
        return struct.pack("<HH2sHI", group, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _item(content: bytes) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content


def _contour_sequence(mask: NDArray[np.bool_], source: SourceSeries) -> RawDataElement:
    """ContourSequence of one ROI, encoded here: pydicom's writer takes about a millisecond per contour item,
    which made a speckled prediction's structure set (tens of thousands of contours) a minute to write."""
    items: list[bytes] = []
    for k in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        image = source.headers[k]
        reference = _item(
            _element(0x0008, 0x1150, b"UI", str(image.SOPClassUID).encode())
            + _element(0x0008, 0x1155, b"UI", str(image.SOPInstanceUID).encode())
        )
        for polygon in mask_contours(mask[k]):
            points = source.patient_points(int(k), polygon)
            items.append(
                _item(
                    _element(0x3006, 0x0016, b"SQ", reference)
                    + _element(0x3006, 0x0042, b"CS", b"CLOSED_PLANAR")
                    + _element(0x3006, 0x0046, b"IS", str(len(points)).encode())
                    + _element(0x3006, 0x0048, b"IS", str(len(items) + 1).encode())
                    + _element(0x3006, 0x0050, b"DS", encoded(points.reshape(-1).tolist()))
                )
            )
    value = b"".join(items)
    return RawDataElement(CONTOUR_SEQUENCE, "SQ", len(value), value, 0, False, True)


def write_rtstruct(
    labels: NDArray[np.integer],
    source: SourceSeries,
    dictionary: OrganDictionary,
    algorithm: Algorithm,
    path: Path,
    series_number: int = 901,
) -> Written:
    """Write ``labels`` (the CT's [slice, row, column] grid, values = dictionary ids) as an RTSTRUCT at ``path``.

    One ROI per non-empty label, in id order; empty labels are left out and listed in the result.
    """
    with validated_writing():
        return _write(labels, source, dictionary, algorithm, path, series_number)


def _write(
    labels: NDArray[np.integer],
    source: SourceSeries,
    dictionary: OrganDictionary,
    algorithm: Algorithm,
    path: Path,
    series_number: int,
) -> Written:
    ds = _header(source, algorithm, series_number)
    frame = _referenced_frame(source)
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    rois: list[Dataset] = []
    contours: list[Dataset] = []
    observations: list[Dataset] = []
    kept, empty = present_labels(labels, dictionary)
    for number, label in enumerate(kept, start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = frame.FrameOfReferenceUID
        roi.ROIName = label.structure_id
        roi.ROIDescription = label.name[:64]
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        roi.ROIGenerationDescription = f"{algorithm.name} {algorithm.version} ({algorithm.family})"[:64]
        rois.append(roi)
        contour = Dataset()
        contour.ReferencedROINumber = number
        contour.ROIDisplayColor = list(label.colour)
        contour[CONTOUR_SEQUENCE] = _contour_sequence(labels == label.id, source)
        contours.append(_as_encoded(contour))
        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.ROIObservationLabel = label.structure_id
        observation.RTROIInterpretedType = label.type.value
        observation.ROIInterpreter = ""
        observations.append(observation)
    ds.StructureSetROISequence = Sequence(rois)
    ds.ROIContourSequence = Sequence(contours)
    ds.RTROIObservationsSequence = Sequence(observations)
    _as_encoded(ds)
    save(ds, path)
    return Written(path, tuple(label.structure_id for label in kept), empty)


def _as_encoded(ds: Dataset) -> Dataset:
    """Mark a dataset as already in the encoding it is written in, so that pydicom writes its raw contour
    sequences as they are instead of decoding them to look for ambiguous VRs (they have none)."""
    ds.set_original_encoding(False, True, ds._character_set)
    return ds
