"""The model leaves the run: the package installs with nnU-Net's own installer, names no patient, and
``tsretrain infer`` contours new DICOM with it as the run itself predicted."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from tsretrain.cli import app
from tsretrain.delivery.package import ExportConfig, Package, export
from tsretrain.errors import UserError
from tsretrain.labels.dictionary import load_dictionary
from tsretrain.model import Model
from tsretrain.pipeline.summary import summary_lines
from tsretrain.run_files import read_csv as read_listing

runner = CliRunner()
MODEL = Model(trainer="nnUNetTrainerTsrTiny", configuration="3d_tiny", folds=(0,))


def _package(run: Path) -> Path:
    return next((run / "export").glob("*.zip"))


def _identifiers(run: Path) -> set[str]:
    rows = read_listing(run / "converted" / "cases.csv")
    return {row["case_id"] for row in rows} | {row["patient_id"] for row in rows}


def _members(archive: zipfile.ZipFile) -> dict[str, bytes]:
    """Every file of the package, and every file inside its checkpoints (torch's own zip format)."""
    found = {}
    for name in archive.namelist():
        data = archive.read(name)
        found[name] = data
        if name.endswith(".pth"):
            with zipfile.ZipFile(io.BytesIO(data)) as inner:
                found.update({f"{name}:{n}": inner.read(n) for n in inner.namelist()})
    return found


def test_the_package_names_no_patient(finished_run: Path) -> None:
    identifiers = _identifiers(finished_run)
    assert len(identifiers) == 9
    with zipfile.ZipFile(_package(finished_run)) as archive:
        members = _members(archive)
    named = {(name, i) for name, data in members.items() for i in identifiers if i.encode() in data}
    assert named == set()
    names = list(members)
    assert not [n for n in names if "validation" in n or n.endswith((".txt", ".log")) or "split" in n.lower()]


def test_the_package_is_nnunets_export_layout_and_installs_with_its_installer(
    finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``nnUNetv2_install_pretrained_model_from_zip`` puts it in nnUNet_results; nnU-Net's predictor loads it and
    predicts a test case as the run did."""
    from nnunetv2.model_sharing import model_import

    results = tmp_path / "nnUNet_results"
    monkeypatch.setattr(model_import, "nnUNet_results", str(results))
    model_import.install_model_from_zip_file(str(_package(finished_run)))
    trained = results / "Dataset366_TotalSegmentator" / "nnUNetTrainerTsrTiny__nnUNetPlans__3d_tiny"
    assert {p.name for p in trained.iterdir()} >= {"plans.json", "dataset.json", "dataset_fingerprint.json", "fold_0"}
    assert (trained / "fold_0" / "checkpoint_final.pth").is_file() and (trained / "fold_0" / "progress.png").is_file()
    from tsretrain.training.nnunet_env import torch_device
    from tsretrain.training.predict import load_predictor, predict_images

    case = json.loads((finished_run / "split" / "split.json").read_text())["test"][0]
    image = finished_run / "nnunet" / "nnUNet_raw" / "Dataset366_TotalSegmentator" / "imagesTs" / f"{case}_0000.nii.gz"
    predictor = load_predictor(trained, (0,), torch_device("cpu"), step_size=0.25)
    predict_images(predictor, torch_device("cpu"), [image], [tmp_path / "out" / case])
    ours = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / f"{case}.nii.gz")))
    theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(finished_run / "predictions" / "test" / f"{case}.nii.gz")))
    assert (ours == theirs).all()


def test_the_model_card_says_what_the_model_is_and_how_it_measured(finished_run: Path) -> None:
    with zipfile.ZipFile(_package(finished_run)) as archive:
        card = json.loads(archive.read("Dataset366_TotalSegmentator/tsretrain/model.json"))
        text = archive.read("Dataset366_TotalSegmentator/tsretrain/MODEL_CARD.md").decode()
        dictionary = archive.read("Dataset366_TotalSegmentator/tsretrain/dictionary.yaml").decode()
    assert card["synthetic_data"] is True and "Synthetic data" in text
    assert card["trainer"] == "nnUNetTrainerTsrTiny" and card["configuration"] == "3d_tiny" and card["folds"] == [0]
    split = json.loads((finished_run / "split" / "split.json").read_text())
    assert card["training_data"]["test_cases"] == len(split["test"])
    assert card["training_data"]["training_cases"] == sum(len(f) for f in split["folds"])
    summary = json.loads((finished_run / "evaluation" / "summary.json").read_text())
    gtvp = next(label for label in summary["groups"]["manual"]["labels"] if label["name"] == "GTVp")
    row = next(r for r in card["test_metrics"] if r["label"] == "GTVp")
    assert row["n"] == gtvp["n_reference"] and row["dice_mean"] == gtvp["dice_mean"] and row["reference"] == "manual"
    assert set(card["versions"]) >= {"tsretrain", "nnunetv2", "torch"} and card["commit"]
    assert f"| GTVp | manual | {gtvp['n_reference']} |" in text
    assert "name: radcure-oar21" in dictionary
    assert (finished_run / "export" / "MODEL_CARD.md").read_text() == text


def test_the_package_carries_the_runs_post_processing_as_nnunets_export_does(finished_run: Path) -> None:
    decision = json.loads((finished_run / "postprocessing" / "decision.json").read_text())
    with zipfile.ZipFile(_package(finished_run)) as archive:
        card = json.loads(archive.read("Dataset366_TotalSegmentator/tsretrain/model.json"))
        text = archive.read("Dataset366_TotalSegmentator/tsretrain/MODEL_CARD.md").decode()
        folder = f"Dataset366_TotalSegmentator/{MODEL.model_folder('nnUNetPlans')}/crossval_results_folds_0"
        carried = {name: archive.read(f"{folder}/postprocessing.{name}") for name in ("json", "pkl")}
    decided = finished_run / "postprocessing" / "validation"
    assert carried == {name: (decided / f"postprocessing.{name}").read_bytes() for name in ("json", "pkl")}
    assert card["postprocessing"]["keep_largest_component"] == decision["keep_largest_component"]
    assert card["postprocessing"]["folder"] == "crossval_results_folds_0" and "folds [0]" in text
    assert "Post-processing (applied by `tsretrain infer`" in text


def test_a_packages_post_processing_is_read_from_its_json_and_only_nnunets_steps(tmp_path: Path) -> None:
    model = tmp_path / "Dataset001_X" / "T__P__C"
    (model / "crossval_results_folds_0").mkdir(parents=True)
    card = {"postprocessing": {"folder": "crossval_results_folds_0", "keep_largest_component": [["GTVp"]]}}
    package = Package(model, card, load_dictionary("radcure-oar21"))
    with pytest.raises(UserError, match=r"postprocessing\.json; it is missing"):
        package.postprocessing()
    document = {
        "postprocessing_fns": ["remove_all_but_largest_component_from_segmentation"],
        "postprocessing_kwargs": [{"labels_or_regions": 1}],
    }
    (model / "crossval_results_folds_0" / "postprocessing.json").write_text(json.dumps(document))
    steps = package.postprocessing()
    assert steps is not None
    (function,), kwargs = steps
    labels = np.zeros((4, 6, 6), dtype=np.uint8)
    labels[0:2, 0:2, 0:2], labels[3, 5, 5], labels[1, 4, 4] = 1, 1, 2  # a tumour, a far speck, another label
    kept = function(labels, **kwargs[0])
    assert kept[3, 5, 5] == 0 and kept[1, 4, 4] == 2 and (kept[0:2, 0:2, 0:2] == 1).all()
    document["postprocessing_fns"] = ["os.system"]
    (model / "crossval_results_folds_0" / "postprocessing.json").write_text(json.dumps(document))
    with pytest.raises(UserError, match="unknown post-processing step"):
        package.postprocessing()
    assert replace(package, card={}).postprocessing() is None


def test_a_run_missing_pieces_is_refused_with_the_list(finished_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns("evaluation", "export", "checkpoint_final.pth"))
    with pytest.raises(UserError) as refused:
        export(ExportConfig(work=run / "nnunet", run_dir=run, out=run / "export", model=MODEL))
    message = str(refused.value)
    assert "fold_0/checkpoint_final.pth (from train)" in message and "summary.json (from evaluate)" in message
    assert not (run / "export").exists()
    result = runner.invoke(
        app, ["export", "--work", str(run / "nnunet"), "--run-dir", str(run), "-o", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "missing" in result.output


def test_infer_contours_new_dicom_as_the_run_predicted_and_lists_what_it_cannot(
    finished_run: Path, tmp_path: Path
) -> None:
    """A messy input: a test patient, a CT with a slice missing, a patient with only an RTSTRUCT, a stray file."""
    split = json.loads((finished_run / "split" / "split.json").read_text())
    good, broken, ct_less = split["test"][0], split["folds"][0][0], split["folds"][1][0]
    cohort = finished_run / "cohort" / "dicom"
    messy = tmp_path / "messy"
    shutil.copytree(cohort / good, messy / "a" / "b")
    ct = sorted(
        p for p in (cohort / broken).rglob("*.dcm") if pydicom.dcmread(p, stop_before_pixels=True).Modality == "CT"
    )
    for path in ct[:5] + ct[6:]:
        (messy / "broken").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, messy / "broken" / path.name)
    rtstruct = next(
        p
        for p in (cohort / ct_less).rglob("*.dcm")
        if pydicom.dcmread(p, stop_before_pixels=True).Modality == "RTSTRUCT"
    )
    (messy / "other").mkdir()
    shutil.copy(rtstruct, messy / "other" / "rs.dcm")
    (messy / "notes.txt").write_text("not DICOM")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "infer",
            str(messy),
            "--model",
            str(_package(finished_run)),
            "-o",
            str(out),
            "--device",
            "cpu",
            "--step-size",
            "0.25",
            "-j",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = {row["case_id"]: row for row in read_listing(out / "cases.csv")}
    assert rows[good]["status"] == "ok"
    assert (
        rows[broken]["status"] == "excluded" and rows[broken]["reason"] == "missing_slices" and rows[broken]["advice"]
    )
    assert rows[ct_less]["reason"] == "no_ct"
    folder = out / good / "series-1"
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labels.nii.gz")))
    # the run's test prediction after the post-processing the run decided and the package carries
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(finished_run / "postprocessing" / "test" / f"{good}.nii.gz")))
    assert (labels == expected).all()
    rs = pydicom.dcmread(folder / "rtstruct.dcm")
    written = [roi.ROIName for roi in rs.StructureSetROISequence]
    assert written == rows[good]["structures"].split(" | ") and rs.PatientID == good
    assert "Dataset366_TotalSegmentator-3d_tiny" in rs.StructureSetROISequence[0].ROIGenerationDescription
    seg = pydicom.dcmread(folder / "seg.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == written
    present = {int(v) for v in np.unique(labels)} - {0}
    assert len(written) == len(present)
    record = json.loads((out / "inference.json").read_text())
    assert record["series_predicted"] == 1 and record["synthetic_data"] is True
    case_record = json.loads((out / good / "contours.json").read_text())
    decision = json.loads((finished_run / "postprocessing" / "decision.json").read_text())
    assert case_record["postprocessing"]["keep_largest_component"] == decision["keep_largest_component"]


def test_infer_refuses_what_is_not_a_package(tmp_path: Path, finished_run: Path) -> None:
    (tmp_path / "not.zip").write_text("no")
    for model, said in ((tmp_path / "absent.zip", "does not exist"), (tmp_path / "not.zip", "is not a zip")):
        result = runner.invoke(
            app, ["infer", str(finished_run / "cohort" / "dicom"), "--model", str(model), "-o", str(tmp_path / "o")]
        )
        assert result.exit_code == 2 and said in result.output
    result = runner.invoke(
        app,
        [
            "infer",
            str(finished_run / "cohort" / "dicom"),
            "--model",
            str(_package(finished_run)),
            "-o",
            str(tmp_path / "o"),
            "--format",
            "pdf",
        ],
    )
    assert result.exit_code == 2 and "choose from rtstruct, seg, nifti" in result.output


def test_the_run_ends_naming_the_package_and_a_patients_contours(finished_run: Path) -> None:
    lines = dict(summary_lines(finished_run))
    assert lines["model"] == str(_package(finished_run).resolve())
    row = next(r for r in read_listing(finished_run / "inference" / "cases.csv") if r["status"] == "ok")
    assert lines["contours"].startswith(f"{row['case_id']}: ") and "rtstruct.dcm" in lines["contours"]
    assert "seg.dcm" in lines["contours"]
    split = json.loads((finished_run / "split" / "split.json").read_text())
    assert row["case_id"] in split["test"]  # the run contours a held-out patient, never a training one


def test_infer_of_a_batch_stages_every_series_of_its_patients_from_the_store(
    finished_run: Path, tmp_path: Path
) -> None:
    """A cluster pod's way: the scan's inventory names the batch's patients, their files (every CT series, the
    unpaired one too) are staged from the store, and each case's record is gathered into one listing."""
    split = json.loads((finished_run / "split" / "split.json").read_text())
    first, second = split["test"][0], split["folds"][0][0]
    tree = tmp_path / "tree"
    shutil.copytree(finished_run / "cohort" / "dicom" / first, tree / first)
    shutil.copytree(finished_run / "cohort" / "dicom" / second, tree / second)
    series_uid = pydicom.uid.generate_uid()
    for path in sorted((tree / first).rglob("*.dcm")):  # a second CT series of the first patient, unreferenced
        ds = pydicom.dcmread(path)
        if ds.Modality == "CT":
            ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SeriesNumber = series_uid, pydicom.uid.generate_uid(), 7
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            (tree / first / "again").mkdir(exist_ok=True)
            ds.save_as(tree / first / "again" / path.name)
    assert runner.invoke(app, ["scan", str(tree), "-o", str(tmp_path / "scan"), "-j", "1"]).exit_code == 0
    out, package = tmp_path / "inference", _package(finished_run)
    for case in (first, second):  # two batches of one patient each, into one output folder
        staged = tmp_path / f"staged-{case}"
        args = ["infer", str(staged), "--model", str(package), "-o", str(out), "--device", "cpu", "-j", "1"]
        args += ["--inventory", str(tmp_path / "scan" / "inventory.json"), "--source", str(tree), "--cases", case]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert {p.name for p in staged.iterdir()} == {case}  # only the batch's patient was fetched
        (out / "cases.csv").unlink()  # a pod publishes its cases' folders only; the gather step lists them all
    assert runner.invoke(app, ["infer-listing", str(out)]).exit_code == 0
    rows = read_listing(out / "cases.csv")
    assert [(r["case_id"], r["series"], r["status"]) for r in rows] == [
        (first, "series-1", "ok"),
        (first, "series-2", "ok"),
        (second, "series-1", "ok"),
    ]
    assert json.loads((out / "inference.json").read_text())["series_predicted"] == 3
    again = pydicom.dcmread(out / first / "series-2" / "rtstruct.dcm")
    frame = again.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert frame.SeriesInstanceUID == series_uid


def test_a_package_opens_from_a_store_uri(finished_run: Path, tmp_path: Path) -> None:
    """A cluster pod's ``--model``: the package's URI in the store (file:// here, s3:// in test_cluster_run)."""
    from tsretrain.delivery.package import Package

    package = _package(finished_run)
    opened = Package.open(f"{package.parent.as_uri()}/{package.name}", tmp_path / "a")
    assert opened.card["id"] == "Dataset366_TotalSegmentator-3d_tiny" and (opened.model_folder / "plans.json").is_file()
    assert opened.dictionary.name == "radcure-oar21"
    with pytest.raises(UserError, match="no such object in the store"):
        Package.open(f"{package.parent.as_uri()}/other.zip", tmp_path / "b")
