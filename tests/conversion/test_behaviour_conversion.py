"""Conversion behaviour on whole cases: the newest structure set chosen with ``--rtstruct-choice newest``, a new
version reconverting every case, a CT image the RTSTRUCT names missing from the input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from tsretrain.conversion.plan import load_inventory
from tsretrain.conversion.scan import ScanConfig, scan

PATIENT = "EDGE-08-two-rtstructs"  # RTSTRUCT (2020-01-01 13:00) and RTSTRUCT_v2 (2020-01-05 09:00)


def _chosen(root: Path, out: Path, choice: str) -> tuple[str, str]:
    scan(ScanConfig(input=root, out=out, workers=1, rtstruct_choice=choice))
    _, plans = load_inventory(out / "inventory.json")
    (plan,) = plans
    return plan.status, str(pydicom.dcmread(root / plan.rtstruct_file).StructureSetLabel) if plan.rtstruct_file else ""


@pytest.mark.parametrize("newer", ["RTSTRUCT_v2", "RTSTRUCT"])
def test_the_newest_structure_set_is_chosen_whatever_the_file_order(cohort: Path, tmp_path: Path, newer: str) -> None:
    root = tmp_path / "dicom"
    shutil.copytree(cohort / "dicom" / PATIENT, root / PATIENT)
    if newer == "RTSTRUCT":  # the first in file order becomes the newest: a day later, at an earlier hour
        (path,) = [p for p in root.rglob("*.dcm") if "RTSTRUCT-" in p.parent.name]
        ds = pydicom.dcmread(path)
        ds.StructureSetDate, ds.StructureSetTime = "20200106", "080000"
        ds.save_as(path)
    assert _chosen(root, tmp_path / "newest", "newest") == ("ok", newer)
    assert _chosen(root, tmp_path / "fail", "fail")[0] == "excluded"


def test_a_new_tsretrain_version_reconverts_every_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tsretrain.conversion import convert as convert_module
    from tsretrain.conversion.convert import ConvertConfig, convert
    from tsretrain.synth.cohort import SynthConfig, generate

    generate(SynthConfig(out=tmp_path / "cohort", cases=2, rows=40, columns=40, slices=10, pixel_spacing=5.0))
    config = ConvertConfig(input=tmp_path / "cohort" / "dicom", out=tmp_path / "converted", workers=1)
    first = convert(config)
    assert convert(config).counts["converted_now"] == 0
    monkeypatch.setattr(convert_module, "__version__", "99.0.0")
    assert convert(config).counts["converted_now"] == first.counts["cases"] == 2
    manifest = (tmp_path / "converted" / "cases").glob("*/manifest.json")
    assert all('"tsretrain_version": "99.0.0"' in p.read_text() for p in manifest)


def test_a_referenced_image_absent_from_the_input_excludes_the_case_without_contours_there(
    cohort: Path, tmp_path: Path
) -> None:
    """The scan's reference check alone: the CT lost its last slice, which the RTSTRUCT names (its series' image
    list) but draws nothing on (its contours there removed), so no contour lies beyond the series and the series
    shows no gap; only the missing reference tells."""
    root = tmp_path / "dicom"
    patient = next(p.name for p in sorted((cohort / "dicom").iterdir()) if p.name.startswith("RADCURE-"))
    shutil.copytree(cohort / "dicom" / patient, root / patient)
    ct = sorted(
        (float(ds.ImagePositionPatient[2]), str(ds.SOPInstanceUID), path)
        for path in root.rglob("*.dcm")
        if (ds := pydicom.dcmread(path, stop_before_pixels=True)).Modality == "CT"
    )
    last_z, last_uid, last = ct[-1]
    (path,) = [p for p in root.rglob("*.dcm") if pydicom.dcmread(p, stop_before_pixels=True).Modality == "RTSTRUCT"]
    rtstruct = pydicom.dcmread(path)
    for roi in rtstruct.ROIContourSequence:
        roi.ContourSequence = [c for c in roi.ContourSequence if abs(float(c.ContourData[2]) - last_z) > 0.5]
    rtstruct.save_as(path)
    assert last_uid in str(rtstruct.ReferencedFrameOfReferenceSequence)  # the series' image list names it
    last.unlink()
    scan(ScanConfig(input=root, out=tmp_path / "scan", workers=1))
    _, (plan,) = load_inventory(tmp_path / "scan" / "inventory.json")
    assert (plan.status, plan.reason) == ("excluded", "referenced_slices_missing")
    assert "references 1 CT image(s)" in plan.detail and "not in the input" in plan.detail
