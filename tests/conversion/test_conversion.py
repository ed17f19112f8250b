"""Scan + convert on the synthetic cohort: statuses, fidelity to the analytic truth, geometry, HU, resume."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from support import manifest, tree_digest

from tsretrain.conversion import convert as convert_module
from tsretrain.conversion.convert import ConvertConfig, convert
from tsretrain.conversion.headers import iter_files
from tsretrain.conversion.plan import load_inventory
from tsretrain.conversion.scan import ScanConfig, scan
from tsretrain.errors import UserError
from tsretrain.labels.dictionary import load_dictionary
from tsretrain.run_files import read_csv as read_listing
from tsretrain.synth.phantom import planimetric_volume_ml, truth_mask
from tsretrain.synth.truth import load_truth

DICTIONARY = load_dictionary("radcure-oar21")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def test_every_case_ends_with_its_expected_status_and_reason(converted: Path, expected: dict[str, Any]) -> None:
    rows = {r["patient_id"]: r for r in read_listing(converted / "cases.csv")}
    assert set(rows) == set(expected)
    wrong = {
        pid: (rows[pid]["status"], rows[pid]["reason"], rows[pid]["detail"][:200])
        for pid, e in expected.items()
        if (rows[pid]["status"], rows[pid]["reason"]) != (e["expected_status"], e["expected_reason"])
    }
    assert not wrong
    for row in rows.values():
        assert bool(row["advice"]) == (row["status"] != "ok")
        assert bool(row["detail"]) == (row["status"] != "ok")


def test_excluded_cases_have_a_manifest_and_no_images(converted: Path, expected: dict[str, Any]) -> None:
    for pid, e in expected.items():
        folder = converted / "cases" / pid
        m = manifest(converted, pid)
        assert m["status"] == e["expected_status"]
        assert bool(list(folder.glob("*.nii.gz"))) == (e["expected_status"] == "ok")


def _ok_truth_cases(expected: dict[str, Any]) -> list[str]:
    return [pid for pid, e in expected.items() if e["expected_status"] == "ok" and e["truth_usable"]]


def read_label(converted: Path, case_id: str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(converted / "cases" / case_id / f"{case_id}.nii.gz")))


def test_label_maps_match_the_analytic_truth(cohort: Path, converted: Path, expected: dict[str, Any]) -> None:
    """Dice >= 0.99 for every structure of equivalent radius >= 5 px; volume error <= 3 %."""
    checked = 0
    for pid in _ok_truth_cases(expected):
        phantom, spec = load_truth(cohort / "truth" / f"{pid}.json")
        labels = read_label(converted, pid)
        truth = np.zeros_like(labels)
        masks = {}
        for name in DICTIONARY.precedence:
            masks[name] = truth_mask(phantom, spec, name)
            truth[masks[name]] = DICTIONARY.by_name(name).id
        rois = manifest(converted, pid)["rois"]
        for name, mask in masks.items():
            if not mask.any() or _smallest_radius_px(phantom, name, min(spec.pixel_spacing)) < 5:
                continue
            value = DICTIONARY.by_name(name).id
            ours, ref = labels == value, truth == value
            dice = 2 * (ours & ref).sum() / (ours.sum() + ref.sum())
            assert dice >= 0.99, (pid, name, dice)
            checked += 1
            if mask[[0, -1]].any() or mask[:, [0, -1], :].any() or mask[:, :, [0, -1]].any():
                continue  # clipped by the field of view: the analytic volume is not what was scanned
            mask_ml = sum(r["volume_ml_mask"] for r in rois if r["label"] == name)
            exact_ml = planimetric_volume_ml(phantom, spec, name)
            assert abs(mask_ml - exact_ml) / exact_ml <= 0.03, (pid, name, mask_ml, exact_ml)
    assert checked > 50


def _smallest_radius_px(phantom: Any, organ: str, pixel: float) -> float:
    """Smallest in-plane semi-axis of any part (island or hole) of the organ, in pixels."""
    parts = [p for s in phantom.structures if s.organ == organ for p in s.parts]
    return min(min(p.radii[:2]) for p in parts) / pixel


def test_holes_are_preserved(cohort: Path, converted: Path) -> None:
    phantom, spec = load_truth(cohort / "truth" / "RADCURE-0001.json")
    larynx = phantom.structure("Larynx")
    outer, lumen = larynx.parts
    labels = read_label(converted, "RADCURE-0001")
    k = int(np.argmin(np.abs(spec.w_axis() - (outer.w_min + outer.w_max) / 2)))  # type: ignore[union-attr]
    i = int(np.argmin(np.abs(spec.u_axis() - lumen.center[0])))  # type: ignore[union-attr]
    j = int(np.argmin(np.abs(spec.v_axis() - lumen.center[1])))  # type: ignore[union-attr]
    larynx_id = DICTIONARY.by_name("Larynx").id
    assert labels[k, j, i] == 0  # air in the lumen, not larynx
    assert (labels[k] == larynx_id).any()
    roi = next(r for r in manifest(converted, "RADCURE-0001")["rois"] if r["label"] == "Larynx")
    assert roi["volume_ml_polygon"] < outer.volume / 1000  # the hole was subtracted


def dicom_affine(folder_files: list[Path]) -> tuple[np.ndarray, list[pydicom.Dataset]]:
    """LPS affine of a CT series computed here from the raw tags, independently of tsretrain."""
    slices = [pydicom.dcmread(p) for p in folder_files]
    iop = np.array(slices[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    slices.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, dtype=float), normal)))
    first = np.array(slices[0].ImagePositionPatient, dtype=float)
    last = np.array(slices[-1].ImagePositionPatient, dtype=float)
    row_spacing, col_spacing = (float(v) for v in slices[0].PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0] = iop[:3] * col_spacing
    affine[:3, 1] = iop[3:] * row_spacing
    affine[:3, 2] = (last - first) / (len(slices) - 1)
    affine[:3, 3] = first
    return affine, slices


@pytest.mark.parametrize(
    "case_id",
    [
        "RADCURE-0001",
        "RADCURE-0002",
        "RADCURE-0003",
        "EDGE-23-oblique",
        "EDGE-24-prone",
        "EDGE-25-non-square",
        "EDGE-01-reversed-order",
    ],
)
def test_nifti_geometry_and_hu_equal_the_dicom(cohort: Path, converted: Path, case_id: str) -> None:
    files = [p for p in iter_files(cohort / "dicom") if case_id in p.as_posix()]
    ct_files = [p for p in files if pydicom.dcmread(p, stop_before_pixels=True).Modality == "CT"]
    affine, slices = dicom_affine(ct_files)
    image_path = converted / "cases" / case_id / f"{case_id}_0000.nii.gz"
    for path in (image_path, image_path.with_name(f"{case_id}.nii.gz")):
        # nibabel reports RAS; SimpleITK reports LPS origin/spacing/direction.
        np.testing.assert_allclose(nib.load(path).affine, LPS_TO_RAS @ affine, atol=1e-4)
        image = sitk.ReadImage(str(path))
        sitk_affine = np.eye(4)
        sitk_affine[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
        sitk_affine[:3, 3] = image.GetOrigin()
        np.testing.assert_allclose(sitk_affine, affine, atol=1e-4)
    image = sitk.ReadImage(str(image_path))
    assert image.GetPixelID() == sitk.sitkInt16
    hu = sitk.GetArrayFromImage(image)
    for k in (0, len(slices) // 2, len(slices) - 1):
        ds = slices[k]
        expected_hu = ds.pixel_array.astype(np.int32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(hu[k], expected_hu)


def test_manifest_records_names_mapping_volumes_overlaps_and_warnings(converted: Path) -> None:
    m = manifest(converted, "EDGE-14-gtvp2")
    assert m["mapping"]["GTVp2"] == "GTVp" and m["mapping"]["GTVp"] == "GTVp"
    assert sorted(m["labels"]["GTVp"]["sources"]) == ["GTVp", "GTVp2"]
    assert "PTV70" in m["ignored_rois"]
    assert m["labels"]["GTVp"]["volume_ml"] > 0
    overlap = [o for o in m["overlaps"] if (o["first"], o["then"]) == ("Parotid_R", "GTVp")]
    assert overlap and overlap[0]["voxels"] > 0  # GTVp2 lies in the parotid and was written last
    for roi in m["rois"]:
        assert {"raw_name", "label", "voxels", "volume_ml_mask", "volume_ml_polygon"} <= set(roi)
    assert m["dictionary"]["name"] == "radcure-oar21"
    point = manifest(converted, "EDGE-11-point-roi")
    assert any("REF_PT" in w and "POINT" in w for w in point["warnings"])
    field = manifest(converted, "EDGE-12-out-of-field")
    assert any("GTVn_L2" in w and "clipped" in w for w in field["warnings"])
    assert any("Brainstem" in w and "beyond the first/last slice" in w for w in field["warnings"])
    assert field["labels"]["GTVn"]["present"]
    missing = manifest(converted, "RADCURE-0002")
    assert all(not missing["labels"][name]["present"] for name in missing["missing_labels"])


def test_rerun_skips_finished_cases_and_redoes_changed_ones(cohort: Path, tmp_path: Path) -> None:
    dicom = tmp_path / "dicom"  # the regular patients: a file of them is touched below
    for patient in ("RADCURE-0001", "RADCURE-0002", "RADCURE-0003"):
        shutil.copytree(cohort / "dicom" / patient, dicom / patient)
    out = tmp_path / "out"
    digest = tree_digest(dicom)
    config = ConvertConfig(input=dicom, out=out, workers=2)
    first = convert(config)
    assert first.counts["converted_now"] == first.counts["cases"] == 3
    assert tree_digest(dicom) == digest  # inputs are never modified
    again = convert(config)
    assert again.counts["converted_now"] == 0 and again.counts["reused"] == 3

    stale = out / "cases" / ".RADCURE-0001.abc.tmp"
    stale.mkdir()
    victim = next(p for p in iter_files(dicom / "RADCURE-0002"))
    stat = victim.stat()
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    changed = convert(config)
    assert changed.counts["converted_now"] == 1
    assert not stale.exists()
    forced = convert(ConvertConfig(input=dicom, out=out, workers=2, force=True))
    assert forced.counts["reused"] == 0


def test_batches_of_a_fan_out_share_one_listing(cohort: Path, tmp_path: Path) -> None:
    scan_out = tmp_path / "scan"
    convert(ConvertConfig(input=cohort / "dicom", out=tmp_path, cases=("RADCURE-0001",), workers=1))
    inventory = tmp_path / "scan" / "inventory.json"
    assert inventory.is_file() and scan_out.is_dir()
    convert(
        ConvertConfig(input=cohort / "dicom", out=tmp_path, cases=("RADCURE-0002",), workers=1, inventory=inventory)
    )
    assert {r["case_id"] for r in read_listing(tmp_path / "cases.csv")} == {"RADCURE-0001", "RADCURE-0002"}
    with pytest.raises(UserError, match="not in the inventory"):
        convert(ConvertConfig(input=cohort / "dicom", out=tmp_path, cases=("NOPE",), inventory=inventory))


def _explode(plan: Any, *args: Any, **kwargs: Any) -> None:
    if plan.case_id == "RADCURE-0002":
        raise RuntimeError("boom")
    _ORIGINAL(plan, *args, **kwargs)


def _die(plan: Any, *args: Any, **kwargs: Any) -> None:
    if plan.case_id == "RADCURE-0002":
        os._exit(3)
    _ORIGINAL(plan, *args, **kwargs)


_ORIGINAL = convert_module._convert_ok_case


@pytest.mark.parametrize(("hook", "reason"), [(_explode, "internal_error"), (_die, "worker_crashed")])
def test_one_failing_case_never_stops_the_others(
    cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hook: Any, reason: str
) -> None:
    monkeypatch.setattr(convert_module, "_convert_ok_case", hook)  # inherited by the forked workers
    cases = ("RADCURE-0001", "RADCURE-0002", "RADCURE-0003")
    convert(ConvertConfig(input=cohort / "dicom", out=tmp_path, cases=cases, workers=2))
    rows = {r["case_id"]: r for r in read_listing(tmp_path / "cases.csv")}
    assert rows["RADCURE-0002"]["status"] == "failed" and rows["RADCURE-0002"]["reason"] == reason
    assert rows["RADCURE-0001"]["status"] == rows["RADCURE-0003"]["status"] == "ok"
    assert not list((tmp_path / "cases" / "RADCURE-0002").glob("*.nii.gz"))
    # A failed case is retried on the next run.
    monkeypatch.setattr(convert_module, "_convert_ok_case", _ORIGINAL)
    result = convert(ConvertConfig(input=cohort / "dicom", out=tmp_path, cases=cases, workers=2))
    assert result.counts["converted_now"] == 1
    assert json.loads((tmp_path / "cases" / "RADCURE-0002" / "manifest.json").read_text())["status"] == "ok"


def test_degenerate_contours_are_skipped_with_their_roi_and_slice(converted: Path) -> None:
    m = manifest(converted, "EDGE-33-degenerate-contours")
    assert m["status"] == "ok" and m["labels"]["GTVp"]["present"]
    gtvp = [w for w in m["warnings"] if w.startswith("ROI 'GTVp'")]
    for words, where in (("empty", "slice 1"), ("fewer than 3", "slice 2"), ("NaN", "slice 3"), ("outside", "slice 4")):
        assert any(words in w and f"({where})" in w for w in gtvp), (words, gtvp)


def test_a_roi_drawn_every_millimetre_keeps_one_plane_per_slice(cohort: Path, converted: Path) -> None:
    """Planes 1 mm apart on a 3 mm CT: each slice takes the plane through its centre, nothing cancels."""
    case = "EDGE-34-dense-planes"
    m = manifest(converted, case)
    assert any("GTVp" in w and "nearest the slice centre" in w for w in m["warnings"])
    phantom, spec = load_truth(cohort / "truth" / f"{case}.json")
    truth = truth_mask(phantom, spec, "GTVp")
    ours = read_label(converted, case) == DICTIONARY.by_name("GTVp").id
    on_truth = truth.any(axis=(1, 2))
    dice = 2 * (ours[on_truth] & truth[on_truth]).sum() / (ours[on_truth].sum() + truth[on_truth].sum())
    assert dice >= 0.9
    extra = np.nonzero(ours.any(axis=(1, 2)) & ~on_truth)[0]  # end slices whose nearest plane cuts the tumour
    truth_slices = np.nonzero(on_truth)[0]
    assert set(extra) <= {truth_slices[0] - 1, truth_slices[-1] + 1}
    assert m["labels"]["GTVp"]["volume_ml"] >= 0.97 * planimetric_volume_ml(phantom, spec, "GTVp")


def test_unsupported_and_cut_series_say_what_to_do(converted: Path) -> None:
    rows = {r["case_id"]: r for r in read_listing(converted / "cases.csv")}
    assert (
        "Enhanced" in rows["EDGE-28-enhanced-ct"]["advice"] and "does not read" in rows["EDGE-28-enhanced-ct"]["advice"]
    )
    for case in ("EDGE-26-cut-series", "EDGE-27-cut-series-no-references"):
        assert "download the whole series again" in rows[case]["advice"]
    assert "PixelSpacing" in rows["EDGE-29-zero-pixel-spacing"]["advice"]


# Conversion behaviour on whole cases: the newest structure set chosen with ``--rtstruct-choice newest``, a new
# version reconverting every case, a CT image the RTSTRUCT names missing from the input.


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
