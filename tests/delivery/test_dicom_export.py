"""Writing predictions as RTSTRUCT and DICOM-SEG: checked by the field's validator (dciodvfy), read back by
tsretrain's converter, plastimatch and highdicom, on series in every axial orientation."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage

from tsretrain.conversion.convert import ConvertConfig, convert
from tsretrain.conversion.geometry import VolumeGeometry
from tsretrain.conversion.plan import CasePlan, load_inventory
from tsretrain.conversion.rasterize import rasterize_xor
from tsretrain.conversion.rtstruct import burn_label_map
from tsretrain.conversion.scan import ScanConfig, scan
from tsretrain.decimal_strings import decimal_string
from tsretrain.delivery.contours import mask_contours
from tsretrain.delivery.rtstruct_writer import write_rtstruct
from tsretrain.delivery.seg_writer import write_seg
from tsretrain.delivery.source import Algorithm, SourceSeries
from tsretrain.labels.dictionary import DictionaryError, load_dictionary, parse_dictionary
from tsretrain.synth import dicom_writer as dw
from tsretrain.synth.cohort import SynthConfig, regular_build, write_build

ORIENTATIONS = {
    "head-first supine": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "negated row cosines (feet first)": (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "negated column cosines": (1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
    "prone": (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
}
ALGORITHM = Algorithm("Dataset366_Test", "1.2.3")
OAR21 = load_dictionary("radcure-oar21")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small patient per orientation, scanned and converted from its own (analytic) RTSTRUCT."""
    root = tmp_path_factory.mktemp("orientations")
    config = SynthConfig(out=root, rows=48, columns=52, slices=18, pixel_spacing=3.1, slice_thickness=4.0)
    rng = np.random.default_rng(5)
    for n, orientation in enumerate(ORIENTATIONS.values(), start=1):
        build = regular_build(config, f"ORIENT-{n}", n, rng)
        build.spec = replace(build.spec, orientation=orientation)
        build.ids = dw.SeriesIds.for_patient(build.phantom.patient_id, build.seed, build.spec.slices)
        write_build(root / "dicom", build)
    scan(ScanConfig(input=root / "dicom", out=root / "scan", workers=1))
    convert(
        ConvertConfig(
            input=root / "dicom", out=root / "converted", workers=1, inventory=root / "scan" / "inventory.json"
        )
    )
    return root


def _plans(cohort: Path) -> list[CasePlan]:
    return [plan for plan in load_inventory(cohort / "scan" / "inventory.json")[1] if plan.status == "ok"]


def _labels(cohort: Path, plan: CasePlan) -> np.ndarray:
    return sitk.GetArrayFromImage(
        sitk.ReadImage(str(cohort / "converted" / "cases" / plan.case_id / f"{plan.case_id}.nii.gz"))
    )


def _source(cohort: Path, plan: CasePlan) -> SourceSeries:
    return SourceSeries.read(cohort / "dicom", plan.ct_files, VolumeGeometry.from_json(plan.geometry or {}))


@pytest.fixture(scope="module")
def written(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[CasePlan, Path, Path]]:
    """Every patient's converted label map written back as an RTSTRUCT and a SEG."""
    out = tmp_path_factory.mktemp("written")
    result = {}
    for plan in _plans(cohort):
        labels = _labels(cohort, plan)
        source = _source(cohort, plan)
        rs = write_rtstruct(labels, source, OAR21, ALGORITHM, out / plan.case_id / "rtstruct.dcm")
        seg = write_seg(labels, source, OAR21, ALGORITHM, out / plan.case_id / "seg.dcm")
        assert rs.structures == seg.structures and rs.empty == seg.empty
        result[plan.case_id] = (plan, rs.path, seg.path)
    assert len(result) == len(ORIENTATIONS)
    return result


def test_contours_give_every_mask_back_exactly_and_never_touch_themselves() -> None:
    rng = np.random.default_rng(0)
    masks = [rng.random((23, 31)) < p for p in np.linspace(0.05, 0.95, 40)]
    masks += [ndimage.binary_opening(m) for m in masks]
    ring = np.zeros((40, 40), bool)
    yy, xx = np.mgrid[:40, :40]
    ring[(yy - 20) ** 2 + (xx - 20) ** 2 < 15**2] = True
    ring[(yy - 20) ** 2 + (xx - 20) ** 2 < 6**2] = False
    ring[20, 20] = True  # an island in the hole
    thin = np.zeros((12, 12), bool)
    thin[3, 1:11] = thin[4:9, 6] = True  # one voxel wide
    diagonal = np.eye(8, dtype=bool)  # pixels touching only at corners
    for mask in [*masks, ring, thin, diagonal, np.ones((5, 5), bool)]:
        contours = mask_contours(mask)
        assert (rasterize_xor(contours, *mask.shape) == mask).all()
        for contour in contours:
            assert len({tuple(p) for p in contour}) == len(contour) >= 4
    assert len(mask_contours(ring)) == 3 and len(mask_contours(diagonal)) == 8
    assert mask_contours(np.zeros((4, 4), bool)) == []


def test_validator_reports_no_error_or_warning(written: dict[str, tuple[CasePlan, Path, Path]]) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed: make install installs it as root")
    for _, rs, seg in written.values():
        for path in (rs, seg):
            report = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True, check=False)
            findings = [
                line for line in (report.stdout + report.stderr).splitlines() if line.startswith(("Error", "Warning"))
            ]
            assert findings == [], f"{path}: {findings}"


def test_rtstruct_converts_back_to_the_label_map_in_every_orientation(
    cohort: Path, written: dict[str, tuple[CasePlan, Path, Path]], tmp_path: Path
) -> None:
    """The CT plus the written RTSTRUCT, through ``tsretrain convert`` again: the same label map, voxel for voxel."""
    for case_id, (plan, rs, _) in written.items():
        folder = tmp_path / "input" / case_id
        for rel in plan.ct_files:
            (folder / "ct").mkdir(parents=True, exist_ok=True)
            shutil.copy(cohort / "dicom" / rel, folder / "ct" / Path(rel).name)
        shutil.copy(rs, folder / "rtstruct.dcm")
    convert(ConvertConfig(input=tmp_path / "input", out=tmp_path / "again", workers=1))
    for case_id, (plan, _, _) in written.items():
        again = sitk.GetArrayFromImage(
            sitk.ReadImage(str(next((tmp_path / "again" / "cases").glob(f"*/{case_id}.nii.gz"))))
        )
        original = _labels(cohort, plan)
        assert original.any() and (again == original).all(), case_id


def test_plastimatch_reads_the_same_masks_unmirrored(
    cohort: Path, written: dict[str, tuple[CasePlan, Path, Path]], tmp_path: Path
) -> None:
    if shutil.which("plastimatch") is None:
        pytest.skip("plastimatch (Debian package) is not installed: make install installs it as root")
    for case_id, (plan, rs, _) in written.items():
        ct = tmp_path / case_id / "ct"
        ct.mkdir(parents=True)
        for rel in plan.ct_files:
            shutil.copy(cohort / "dicom" / rel, ct / Path(rel).name)
        out = tmp_path / case_id / "masks"
        subprocess.run(
            [
                "plastimatch",
                "convert",
                "--input",
                str(rs),
                "--referenced-ct",
                str(ct),
                "--output-prefix",
                str(out),
                "--xor-contours",
            ],
            check=True,
            capture_output=True,
        )
        labels = _labels(cohort, plan)
        for name in pydicom.dcmread(rs).StructureSetROISequence:
            image = sitk.ReadImage(str(out / f"{name.ROIName}.mha"))
            mask = sitk.GetArrayFromImage(image) > 0
            # plastimatch resamples onto an LPS-aligned grid: compare in patient space, through its own geometry
            expected = (
                sitk.GetArrayFromImage(
                    sitk.Resample(
                        _label_image(cohort, plan) == OAR21.by_name(name.ROIName).id,
                        image,
                        sitk.Transform(),
                        sitk.sitkNearestNeighbor,
                    )
                )
                > 0
            )
            assert (mask == expected).all(), f"{case_id} {name.ROIName}: {(mask != expected).sum()} voxels differ"
        assert labels.any()


def _label_image(cohort: Path, plan: CasePlan) -> sitk.Image:
    return sitk.ReadImage(str(cohort / "converted" / "cases" / plan.case_id / f"{plan.case_id}.nii.gz"))


def _centroids(ds: pydicom.Dataset) -> dict[str, np.ndarray]:
    """Area-weighted centroid (patient mm) of each ROI's contours (solid structures)."""
    name = {roi.ROINumber: roi.ROIName for roi in ds.StructureSetROISequence}
    result = {}
    for roi in ds.ROIContourSequence:
        weighted, total = np.zeros(3), 0.0
        for contour in roi.ContourSequence:
            p = np.asarray(contour.ContourData, float).reshape(-1, 3)
            q = np.roll(p, -1, axis=0)
            area = np.linalg.norm(np.cross(p - p[0], q - p[0]).sum(axis=0)) / 2
            weighted += area * p.mean(axis=0) if len(p) > 20 else area * (p.min(axis=0) + p.max(axis=0)) / 2
            total += area
        if total > 0:
            result[name[roi.ReferencedROINumber]] = weighted / total
    return result


def test_structures_lie_where_the_original_contours_put_them(
    cohort: Path, written: dict[str, tuple[CasePlan, Path, Path]]
) -> None:
    """Against the patient's own (analytic) RTSTRUCT: each structure within a voxel of where it was, in every
    orientation (a mirrored axis would move a parotid across the midline)."""
    for plan, rs, _ in written.values():
        ours = _centroids(pydicom.dcmread(rs))
        original = _centroids(pydicom.dcmread(cohort / "dicom" / plan.rtstruct_file))
        for roi_name, label_name in plan.label_of_roi.items():
            if label_name in ours and label_name in ("Parotid_L", "Parotid_R", "Mandible_Bone", "SpinalCord"):
                assert np.linalg.norm(ours[label_name] - original[roi_name]) < 4.0, (plan.case_id, label_name)
        assert abs(ours["Parotid_L"][0] - ours["Parotid_R"][0]) > 40


def test_rtstruct_names_its_ct_and_its_structures_as_planning_systems_need(
    written: dict[str, tuple[CasePlan, Path, Path]], cohort: Path
) -> None:
    for plan, rs, _ in written.values():
        ds = pydicom.dcmread(rs)
        ct = pydicom.dcmread(cohort / "dicom" / plan.ct_files[0], stop_before_pixels=True)
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID"):
            assert ds[keyword].value == ct[keyword].value
        assert ds.SeriesInstanceUID != ct.SeriesInstanceUID and ds.SOPInstanceUID != ct.SOPInstanceUID
        frame = ds.ReferencedFrameOfReferenceSequence[0]
        assert frame.FrameOfReferenceUID == ct.FrameOfReferenceUID == ds.FrameOfReferenceUID
        study = frame.RTReferencedStudySequence[0]
        assert study.ReferencedSOPInstanceUID == ct.StudyInstanceUID
        series = study.RTReferencedSeriesSequence[0]
        assert series.SeriesInstanceUID == ct.SeriesInstanceUID
        assert [i.ReferencedSOPInstanceUID for i in series.ContourImageSequence] == plan.ct_sop_uids
        present = set(np.unique(_labels(cohort, plan)).tolist())
        expected = [label for label in OAR21.labels if label.id in present]
        assert [roi.ROIName for roi in ds.StructureSetROISequence] == [label.structure_id for label in expected]
        for roi in ds.StructureSetROISequence:
            assert len(roi.ROIName) <= 16 and roi.ROIGenerationAlgorithm == "AUTOMATIC"
            assert ALGORITHM.name in roi.ROIGenerationDescription and ALGORITHM.version in roi.ROIGenerationDescription
        types = {o.ReferencedROINumber: o.RTROIInterpretedType for o in ds.RTROIObservationsSequence}
        for roi in ds.StructureSetROISequence:
            assert types[roi.ROINumber] == OAR21.by_name(roi.ROIName).type.value
        assert types[1] == "GTV" and "ORGAN" in types.values()
        slices = set(plan.ct_sop_uids)
        raw = pydicom.dcmread(rs, defer_size=None)
        for roi in raw.ROIContourSequence:
            assert len(roi.ROIDisplayColor) == 3
            for contour in roi.ContourSequence:
                assert contour.ContourImageSequence[0].ReferencedSOPInstanceUID in slices
                values = contour["ContourData"].value
                assert all(len(str(v)) <= 16 for v in values)
                assert len(values) == 3 * contour.NumberOfContourPoints
                assert len(set(np.asarray(values, float).reshape(-1, 3) @ _normal(ds))) == 1  # on one plane


def _normal(ds: pydicom.Dataset) -> np.ndarray:
    points = np.asarray(ds.ROIContourSequence[0].ContourSequence[0].ContourData, float).reshape(-1, 3)
    normal = np.cross(points[1] - points[0], points[2] - points[1])
    return np.round(normal / np.linalg.norm(normal), 6)


def test_seg_reads_back_as_the_same_masks(cohort: Path, written: dict[str, tuple[CasePlan, Path, Path]]) -> None:
    for plan, _, path in written.values():
        seg = hd.seg.segread(path)
        labels = _labels(cohort, plan)
        present = [label for label in OAR21.labels if (labels == label.id).any()]
        assert [seg.get_segment_description(n).SegmentLabel for n in seg.segment_numbers] == [
            label.structure_id for label in present
        ]
        masks = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=plan.ct_sop_uids,
            ignore_spatial_locations=True,
            assert_missing_frames_are_empty=True,
        )
        for n, label in enumerate(present, start=1):
            assert (masks[..., n - 1].astype(bool) == (labels == label.id)).all(), label.name
            description = seg.get_segment_description(n)
            assert description.SegmentAlgorithmType == "AUTOMATIC" and description.TrackingID == label.name
        assert seg.PatientID == pydicom.dcmread(cohort / "dicom" / plan.ct_files[0], stop_before_pixels=True).PatientID


def test_empty_labels_are_left_out_and_listed(cohort: Path, tmp_path: Path) -> None:
    plan = _plans(cohort)[0]
    labels = _labels(cohort, plan)
    only_gtvp = np.where(labels == 1, 1, 0).astype(np.uint8)
    written = write_rtstruct(only_gtvp, _source(cohort, plan), OAR21, ALGORITHM, tmp_path / "rs.dcm")
    assert written.structures == ("GTVp",) and len(written.empty) == 20 and "Parotid_L" in written.empty
    assert len(pydicom.dcmread(written.path).StructureSetROISequence) == 1


def test_ts90_structure_ids_fit_planning_systems_and_round_trip(cohort: Path, tmp_path: Path) -> None:
    """Every ts90 label as a structure: ids of at most 16 characters, unique, and read back by their ids."""
    ts90 = load_dictionary("radcure-ts90")
    assert ts90.structure_id_problems() == []
    plan = _plans(cohort)[0]
    source = _source(cohort, plan)
    labels = np.zeros(source.geometry.shape, np.uint8)
    for n, label in enumerate(ts90.labels):  # a 2 x 2 voxel patch per label, label by label through the volume
        labels[n % labels.shape[0], 2 * (n // labels.shape[0]) : 2 * (n // labels.shape[0]) + 2, 4:6] = label.id
    written = write_rtstruct(labels, source, ts90, ALGORITHM, tmp_path / "rs.dcm")
    assert len(written.structures) == 90 and max(map(len, written.structures)) <= 16
    ds = pydicom.dcmread(written.path)
    back, _ = burn_label_map(
        ds,
        source.geometry,
        {label.structure_id: label.name for label in ts90.labels},
        {label.name: label.id for label in ts90.labels},
        ts90.precedence,
        {uid: k for k, uid in enumerate(plan.ct_sop_uids)},
    )
    assert (back == labels).all()


def test_structure_ids_are_checked() -> None:
    text = "name: t\nversion: '1'\nlabels:\n  - {id: 1, name: %s, sources: [rtstruct: [a]]%s}\n"
    assert parse_dictionary(text % ("a_very_long_structure_name", "")).structure_id_problems() == [
        "a_very_long_structure_name is longer than 16 characters: give it a roi_name"
    ]
    assert parse_dictionary(text % ("a_very_long_structure_name", ", roi_name: Short")).structure_id_problems() == []
    with pytest.raises(DictionaryError, match="at most 16"):
        parse_dictionary(text % ("x", ", roi_name: seventeen_letters"))
    with pytest.raises(DictionaryError, match="not one of"):
        parse_dictionary(text % ("x", ", type: TUMOUR"))
    with pytest.raises(DictionaryError, match="three integers"):
        parse_dictionary(text % ("x", ", colour: [300, 0, 0]"))


def test_coordinates_fit_decimal_strings() -> None:
    assert decimal_string(-123.4567891) == "-123.456789" and decimal_string(-0.0000001) == "0"
    assert decimal_string(12.5) == "12.5"
    for value in (-99999999.99994, 1e16, -1.234567e-12, 123456789012.345678):
        text = decimal_string(value)
        assert len(text) <= 16 and abs(float(text) - value) <= 1e-6 * max(1.0, abs(value)), (value, text)
