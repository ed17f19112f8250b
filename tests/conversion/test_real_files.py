"""pydicom's bundled real DICOM files: CT series from dicomdirtests and the POINT-ROI rtstruct.dcm."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from tsretrain.conversion.convert import ConvertConfig, convert
from tsretrain.conversion.geometry import VolumeGeometry
from tsretrain.conversion.headers import RTSTRUCT_STORAGE, read_record
from tsretrain.conversion.rtstruct import roi_contours
from tsretrain.conversion.scan import ScanConfig, scan
from tsretrain.run_files import read_csv as read_listing

DICOMDIR_TESTS = Path(str(get_testdata_file("DICOMDIR"))).parent
RTSTRUCT_DCM = Path(str(get_testdata_file("rtstruct.dcm")))


def rtstruct_for(series: list[Path], half_width: float) -> Dataset:
    """An RTSTRUCT with one square GTVp contour (centred on the image) on every slice of a real series."""
    cts = [pydicom.dcmread(p, stop_before_pixels=True) for p in series]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(RTSTRUCT_STORAGE)
    ds.file_meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = RTSTRUCT_STORAGE, uid, "RTSTRUCT"
    ds.PatientID, ds.StudyInstanceUID = cts[0].PatientID, cts[0].StudyInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = cts[0].SeriesInstanceUID
    study = Dataset()
    study.RTReferencedSeriesSequence = Sequence([ref_series])
    frame = Dataset()
    frame.FrameOfReferenceUID = cts[0].FrameOfReferenceUID
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    roi = Dataset()
    roi.ROINumber, roi.ROIName = 1, "GTVp"
    ds.StructureSetROISequence = Sequence([roi])
    contours = Sequence()
    for ct in cts:
        x0, y0, z = (float(v) for v in ct.ImagePositionPatient)
        row_spacing, col_spacing = (float(v) for v in ct.PixelSpacing)
        cx, cy = x0 + (ct.Columns - 1) / 2 * col_spacing, y0 + (ct.Rows - 1) / 2 * row_spacing
        contour = Dataset()
        contour.ContourGeometricType = "CLOSED_PLANAR"
        points = [
            (cx - half_width, cy - half_width),
            (cx + half_width, cy - half_width),
            (cx + half_width, cy + half_width),
            (cx - half_width, cy + half_width),
        ]
        contour.NumberOfContourPoints = 4
        contour.ContourData = [v for x, y in points for v in (x, y, z)]
        contours.append(contour)
    item = Dataset()
    item.ReferencedROINumber = 1
    item.ContourSequence = contours
    ds.ROIContourSequence = Sequence([item])
    return ds


def test_scan_of_pydicom_dicomdir_tree(tmp_path: Path) -> None:
    root = tmp_path / "in"
    shutil.copytree(DICOMDIR_TESTS, root)
    scan(ScanConfig(input=root, out=tmp_path / "scan", workers=1))
    rows = {r["patient_id"]: r for r in read_listing(tmp_path / "scan" / "cases.csv")}
    # Folder names are not patient ids: CT5N and MR1..3 belong to patient 98890234 by their tags.
    assert rows["98890234"]["reason"] == "no_rtstruct" and rows["98890234"]["n_slices"] == "5"  # CT2N: localizers
    assert rows["77654033"]["reason"] == "no_rtstruct" and "missing" in rows["77654033"]["detail"]  # CT2's gap
    assert rows["12345678"]["reason"] == "invalid_geometry"  # TINY_ALPHA: CT images without any geometry tags


def test_real_ct5n_with_contours_converts_exactly(tmp_path: Path) -> None:
    root = tmp_path / "in"
    shutil.copytree(DICOMDIR_TESTS / "98892001" / "CT5N", root / "ct")
    series = sorted((root / "ct").iterdir())
    pydicom.dcmwrite(root / "rs.dcm", rtstruct_for(series, half_width=2.0), enforce_file_format=True)
    result = convert(ConvertConfig(input=root, out=tmp_path / "out", workers=1))
    assert result.counts.get("ok") == 1, read_listing(tmp_path / "out" / "cases.csv")
    case = tmp_path / "out" / "cases" / "98890234"
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "98890234.nii.gz")))
    # 4 mm square at 0.488 mm pixels, centred between pixel centres: 8 x 8 centres on every slice.
    assert labels.shape == (5, 16, 16) and [int((s == 1).sum()) for s in labels] == [64] * 5
    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "98890234_0000.nii.gz")))
    by_z = sorted((pydicom.dcmread(p) for p in series), key=lambda d: float(d.ImagePositionPatient[2]))
    for k, ds in enumerate(by_z):
        stored = ds.pixel_array.astype(np.int32)
        np.testing.assert_array_equal(hu[k], stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept))


def test_real_ct2_with_a_gap_is_excluded_as_missing_slices(tmp_path: Path) -> None:
    root = tmp_path / "in"
    shutil.copytree(DICOMDIR_TESTS / "77654033" / "CT2", root / "ct")
    series = sorted((root / "ct").iterdir())
    pydicom.dcmwrite(root / "rs.dcm", rtstruct_for(series, half_width=2.0), enforce_file_format=True)
    convert(ConvertConfig(input=root, out=tmp_path / "out", workers=1))
    (row,) = read_listing(tmp_path / "out" / "cases.csv")
    assert (row["status"], row["reason"]) == ("excluded", "missing_slices")


def test_real_rtstruct_without_preamble_and_with_point_rois(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    shutil.copy(RTSTRUCT_DCM, root / "rtstruct.dcm")
    record = read_record(root, root / "rtstruct.dcm")
    assert record.kind == "rtstruct" and record.rtstruct is not None
    assert set(record.rtstruct.roi_names.values()) == {"patient", "Isocenter 1", "Isocenter 2"}
    scan(ScanConfig(input=root, out=tmp_path / "scan", workers=1))
    (row,) = read_listing(tmp_path / "scan" / "cases.csv")
    assert row["reason"] == "rtstruct_references_missing_series"
    # Its contours read onto a grid in its frame: POINT ROIs are skipped with a reason, closed ones kept.
    ds = pydicom.dcmread(RTSTRUCT_DCM, force=True)
    grid = VolumeGeometry((200, 64, 64), (-300.0, -300.0, -300.0), (10.0, 10.0, 3.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    rois = roi_contours(ds, grid, {"patient", "Isocenter 1"})
    assert rois["Isocenter 1"].skipped["not_closed"] == ["contour #1"]
    assert rois["patient"].by_slice and not rois["patient"].skipped.get("not_closed")
