"""Write a label map as a DICOM Segmentation (highdicom): one binary segment per non-empty label.

Segments carry the dictionary's structure id as their label, its colour (CIELab), a coded category and type by
the label's RTROIInterpretedType, AUTOMATIC with the model named as the algorithm, and a tracking id (the
label's name). Frames without any segment are left out.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.sr.codedict import codes

from tsretrain import __version__
from tsretrain.delivery.source import Algorithm, SourceSeries, Written, present_labels, save, validated_writing
from tsretrain.labels.dictionary import Label, OrganDictionary, RoiType

# (segmented property category, type) per RTROIInterpretedType; the rest are anatomical structures
TUMOUR = (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm)
PROPERTIES = {
    RoiType.GTV: TUMOUR,
    RoiType.CTV: TUMOUR,
    RoiType.PTV: TUMOUR,
    RoiType.ORGAN: (codes.SCT.AnatomicalStructure, codes.SCT.Organ),
    RoiType.EXTERNAL: (codes.SCT.AnatomicalStructure, codes.SCT.EntireBody),
}
ANATOMY = (codes.SCT.AnatomicalStructure, codes.SCT.AnatomicalStructure)


def _description(number: int, label: Label, algorithm: hd.AlgorithmIdentificationSequence) -> hd.seg.SegmentDescription:
    category, kind = PROPERTIES.get(label.type, ANATOMY)
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label.structure_id,
        segmented_property_category=category,
        segmented_property_type=kind,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_uid=hd.UID(),
        tracking_id=label.name,
        display_color=hd.color.CIELabColor.from_rgb(*label.colour),
    )


def write_seg(
    labels: NDArray[np.integer],
    source: SourceSeries,
    dictionary: OrganDictionary,
    algorithm: Algorithm,
    path: Path,
    series_number: int = 902,
) -> Written:
    """Write ``labels`` (the CT's [slice, row, column] grid, values = dictionary ids) as a DICOM-SEG at ``path``."""
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name[:64], version=algorithm.version[:64], family=codes.cid7162.ArtificialIntelligence
    )
    kept, empty = present_labels(labels, dictionary)
    segments = np.zeros(labels.shape, dtype=np.uint16 if len(kept) > 255 else np.uint8)
    for number, label in enumerate(kept, start=1):
        segments[labels == label.id] = number
    with validated_writing():
        seg = hd.seg.Segmentation(
            source_images=list(source.headers),
            pixel_array=segments,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[_description(n, label, identification) for n, label in enumerate(kept, start=1)],
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="tsretrain",
            manufacturer_model_name=algorithm.name[:64],
            software_versions=f"tsretrain {__version__}",
            device_serial_number="0",
            series_description=algorithm.title,
            omit_empty_frames=True,
        )
        save(seg, path)
    return Written(path, tuple(label.structure_id for label in kept), empty)
