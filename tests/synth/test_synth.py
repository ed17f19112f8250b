"""The synthetic cohort generator: seeded, complete DICOM, truth that round-trips."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from support import tree_digest

from tsretrain.conversion.headers import iter_files
from tsretrain.synth.cohort import SynthConfig, generate
from tsretrain.synth.phantom import truth_mask
from tsretrain.synth.truth import load_truth


@pytest.mark.parametrize("layout", ["nbia", "classic", "flat"])
def test_same_seed_same_cohort(tmp_path: Path, layout: str) -> None:
    config = dict(cases=2, rows=48, columns=48, slices=12, pixel_spacing=4.0, layout=layout)
    generate(SynthConfig(out=tmp_path / "a", seed=3, **config))  # type: ignore[arg-type]
    generate(SynthConfig(out=tmp_path / "b", seed=3, **config))  # type: ignore[arg-type]
    generate(SynthConfig(out=tmp_path / "c", seed=4, **config))  # type: ignore[arg-type]
    assert tree_digest(tmp_path / "a" / "dicom") == tree_digest(tmp_path / "b" / "dicom")
    assert tree_digest(tmp_path / "a" / "dicom") != tree_digest(tmp_path / "c" / "dicom")


def test_ct_and_rtstruct_are_complete(cohort: Path) -> None:
    files = [p for p in iter_files(cohort / "dicom" / "RADCURE-0001")]
    datasets = [pydicom.dcmread(p) for p in files]
    cts = [d for d in datasets if d.Modality == "CT"]
    (rs,) = [d for d in datasets if d.Modality == "RTSTRUCT"]
    for ds in cts:
        for keyword in (
            "SOPInstanceUID",
            "SeriesInstanceUID",
            "StudyInstanceUID",
            "FrameOfReferenceUID",
            "ImagePositionPatient",
            "ImageOrientationPatient",
            "PixelSpacing",
            "SliceThickness",
            "RescaleIntercept",
            "RescaleSlope",
        ):
            assert keyword in ds, keyword
        assert ds.pixel_array.dtype.itemsize == 2
    names = {r.ROIName for r in rs.StructureSetROISequence}
    assert "GTVp" in names and len(names) >= 21
    series_ref = rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series_ref.SeriesInstanceUID == cts[0].SeriesInstanceUID
    # Holes and islands are encoded as several contours on one slice.
    per_roi = {r.ReferencedROINumber: r for r in rs.ROIContourSequence}
    numbers = {r.ROIName: r.ROINumber for r in rs.StructureSetROISequence}
    larynx_z = [c.ContourData[2] for c in per_roi[numbers["Larynx"]].ContourSequence]
    assert any(larynx_z.count(z) == 2 for z in larynx_z)


def test_truth_round_trips_and_has_small_tumours(cohort: Path) -> None:
    phantom, spec = load_truth(cohort / "truth" / "RADCURE-0001.json")
    gtvp = truth_mask(phantom, spec, "GTVp")
    assert 0 < gtvp.sum() * spec.pixel_spacing[0] * spec.pixel_spacing[1] * spec.slice_thickness < 3000.0  # < 3 mL
    larynx = truth_mask(phantom, spec, "Larynx")
    assert larynx.any()
