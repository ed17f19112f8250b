"""Assembly of the nnU-Net raw dataset, with label maps from conversion or from the pseudo-label merge."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from support import write_volume

from tsretrain import __version__
from tsretrain.conversion.convert import ConvertConfig, convert
from tsretrain.dataset.assemble import AssembleConfig, assemble
from tsretrain.dataset.split import SplitConfig, run_split
from tsretrain.labels.dictionary import load_dictionary
from tsretrain.layout import NNUNET_FOLDERS
from tsretrain.model import Model
from tsretrain.run_files import CASE_MANIFEST
from tsretrain.synth.cohort import SynthConfig, generate
from tsretrain.training.preprocess import PreprocessConfig, preprocess


def test_labels_from_the_pseudolabel_merge(tmp_path: Path) -> None:
    generate(
        SynthConfig(
            out=tmp_path / "cohort", cases=6, rows=48, columns=48, slices=12, pixel_spacing=4.0, edge_cases=False
        )
    )
    convert(ConvertConfig(input=tmp_path / "cohort" / "dicom", out=tmp_path / "converted", workers=1))
    run_split(SplitConfig(converted=tmp_path / "converted", out=tmp_path / "split", cv_folds=2))
    merged = tmp_path / "pseudolabels"
    for case_dir in (tmp_path / "converted" / "cases").iterdir():
        if not (case_dir / f"{case_dir.name}.nii.gz").is_file():
            continue
        image = sitk.ReadImage(str(case_dir / f"{case_dir.name}.nii.gz"))
        array = sitk.GetArrayFromImage(image)
        array[0, 0, 0] = 5  # a mark only the merged maps carry
        marked = sitk.GetImageFromArray(array)
        marked.CopyInformation(image)
        (merged / case_dir.name).mkdir(parents=True)
        sitk.WriteImage(marked, str(merged / case_dir.name / f"{case_dir.name}.nii.gz"))
    result = assemble(
        AssembleConfig(
            converted=tmp_path / "converted", split=tmp_path / "split", out=tmp_path / "raw", labels_from=merged
        )
    )
    folder = Path(result.outputs["dataset"])
    labels = sorted((folder / "labelsTr").glob("*.nii.gz")) + sorted((folder / "labelsTs").glob("*.nii.gz"))
    assert labels and all(sitk.GetArrayFromImage(sitk.ReadImage(str(p)))[0, 0, 0] == 5 for p in labels)
    split = json.loads((tmp_path / "split" / "split.json").read_text())
    assert {p.name.removesuffix(".nii.gz") for p in (folder / "labelsTs").iterdir()} == set(split["test"])
    images = sorted((folder / "imagesTr").glob("*.nii.gz"))
    source = tmp_path / "converted" / "cases" / images[0].name.removesuffix("_0000.nii.gz") / images[0].name
    assert np.array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(images[0]))), sitk.GetArrayFromImage(sitk.ReadImage(str(source)))
    )
    shutil.rmtree(folder)


# Assembly of the nnU-Net raw dataset on hand-made converted cases: where each case goes, what dataset.json
# says, links or copies, refusals, and nnU-Net's integrity check with the folder written aside.


MODEL = Model(dataset="Dataset042_Assembly", dictionary="radcure-oar21")
SPLIT: dict[str, Any] = {"seed": 11, "folds": [["p3", "p1"], ["p2"]], "test": ["p5", "p4"]}


def converted_case(converted: Path, case: str, label: int, **manifest: object) -> None:
    folder = converted / "cases" / case
    ct = np.full((4, 8, 8), -1000, np.int16)
    ct[1:3, 2:6, 2:6] = 40
    labels = np.zeros((4, 8, 8), np.uint8)
    labels[1:3, 3:5, 3:5] = label
    write_volume(folder / f"{case}_0000.nii.gz", ct)
    write_volume(folder / f"{case}.nii.gz", labels)
    record = {"status": "ok", "dictionary": load_dictionary(MODEL.dictionary).to_json(), **manifest}
    (folder / CASE_MANIFEST.basename).write_text(json.dumps(record))


@pytest.fixture
def config(tmp_path: Path) -> AssembleConfig:
    for n in range(1, 6):
        converted_case(tmp_path / "converted", f"p{n}", label=n)
    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "split.json").write_text(json.dumps(SPLIT))
    return AssembleConfig(
        converted=tmp_path / "converted", split=tmp_path / "split", out=tmp_path / "raw", model=MODEL, verify=False
    )


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_training_cases_go_to_tr_and_test_cases_only_to_ts(config: AssembleConfig) -> None:
    result = assemble(config)
    dataset = config.out / MODEL.dataset
    assert (result.stage, result.outputs) == ("assemble", {"dataset": str(dataset)})
    assert result.counts == {"training": 3, "test": 2}
    assert names(dataset) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr", "labelsTs"]
    assert names(dataset / "imagesTr") == ["p1_0000.nii.gz", "p2_0000.nii.gz", "p3_0000.nii.gz"]
    assert names(dataset / "labelsTr") == ["p1.nii.gz", "p2.nii.gz", "p3.nii.gz"]
    assert names(dataset / "imagesTs") == ["p4_0000.nii.gz", "p5_0000.nii.gz"]
    assert names(dataset / "labelsTs") == ["p4.nii.gz", "p5.nii.gz"]
    for case in ("p1", "p2", "p3", "p4", "p5"):  # each file is its own case's (the label value is the case's)
        part = "Ts" if case in SPLIT["test"] else "Tr"
        placed = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / f"labels{part}" / f"{case}.nii.gz")))
        assert placed.max() == int(case[1:])
        image = dataset / f"images{part}" / f"{case}_0000.nii.gz"
        assert image.read_bytes() == (config.converted / "cases" / case / image.name).read_bytes()


def test_dataset_json_describes_the_dictionary_the_split_and_the_version(config: AssembleConfig) -> None:
    assemble(config)
    described = json.loads((config.out / MODEL.dataset / "dataset.json").read_text())
    dictionary = load_dictionary(MODEL.dictionary)
    assert described == {
        "name": MODEL.dataset,
        "description": f"tsretrain {__version__}, dictionary {dictionary.name} {dictionary.version}",
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{label.name: label.id for label in dictionary.labels}},
        "numTraining": 3,
        "file_ending": ".nii.gz",
        "tsretrain": {
            "version": __version__,
            "dictionary": {"name": dictionary.name, "version": dictionary.version, "sha256": dictionary.sha256},
            "split_seed": 11,
            "test_cases": ["p5", "p4"],
            "integrity_checked": False,
        },
    }
    assert described["labels"]["GTVp"] == 1


def test_files_are_hard_links_or_copies_where_links_fail(
    config: AssembleConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    assemble(config)
    source = config.converted / "cases" / "p1" / "p1_0000.nii.gz"
    linked = config.out / MODEL.dataset / "imagesTr" / "p1_0000.nii.gz"
    assert linked.stat().st_ino == source.stat().st_ino

    def no_links(source: object, target: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    assemble(config)
    copied = config.out / MODEL.dataset / "imagesTr" / "p1_0000.nii.gz"
    assert copied.stat().st_ino != source.stat().st_ino
    assert copied.read_bytes() == source.read_bytes()
    assert copied.stat().st_mtime_ns == source.stat().st_mtime_ns  # copied with its metadata


def test_labels_come_from_the_merged_maps_when_given(config: AssembleConfig, tmp_path: Path) -> None:
    for n in range(1, 6):
        write_volume(tmp_path / "merged" / f"p{n}" / f"p{n}.nii.gz", np.full((4, 8, 8), 7, np.uint8))
    assemble(AssembleConfig(**{**config.__dict__, "labels_from": tmp_path / "merged"}))
    dataset = config.out / MODEL.dataset
    for label in [*(dataset / "labelsTr").iterdir(), *(dataset / "labelsTs").iterdir()]:
        assert sitk.GetArrayFromImage(sitk.ReadImage(str(label))).min() == 7
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / "imagesTr" / "p1_0000.nii.gz")))
    assert image.min() == -1000  # images still the converted CT


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"status": "excluded"}, "case p4 in the split is not converted (status excluded)"),
        (
            {"dictionary": {"name": "radcure-oar21", "version": "0.9", "sha256": "0" * 64}},
            "case p4 was converted with another dictionary than radcure-oar21; re-run convert",
        ),
    ],
)
def test_a_case_not_converted_or_converted_with_another_dictionary_is_refused(
    config: AssembleConfig, manifest: dict[str, object], message: str
) -> None:
    assemble(config)
    before = {p: p.read_bytes() for p in (config.out / MODEL.dataset).rglob("*") if p.is_file()}
    converted_case(config.converted, "p4", label=4, **manifest)
    with pytest.raises(ValueError) as refused:
        assemble(config)
    assert str(refused.value) == message
    after = {p: p.read_bytes() for p in (config.out / MODEL.dataset).rglob("*") if p.is_file()}
    assert after == before  # the earlier dataset untouched
    assert names(config.out) == [MODEL.dataset]  # nothing left aside


def test_nnunets_integrity_check_refuses_a_label_off_its_image_and_keeps_the_earlier_dataset(
    config: AssembleConfig, capfd: pytest.CaptureFixture[str]
) -> None:
    checked = AssembleConfig(**{**config.__dict__, "verify": True})  # workers 0: one per usable CPU
    assemble(checked)
    assert json.loads((config.out / MODEL.dataset / "dataset.json").read_text())["tsretrain"]["integrity_checked"]
    before = names(config.out / MODEL.dataset / "labelsTr")
    write_volume(config.converted / "cases" / "p2" / "p2.nii.gz", np.zeros((4, 8, 8), np.uint8), (1.0, 1.0, 3.0))
    capfd.readouterr()
    with pytest.raises(RuntimeError, match="Some images have errors"):
        assemble(checked)
    said = capfd.readouterr().out
    assert "Spacing mismatch" in said and "labelsTr/p2.nii.gz" in said
    assert names(config.out) == [MODEL.dataset]
    assert names(config.out / MODEL.dataset / "labelsTr") == before
    assert (config.out / MODEL.dataset / "labelsTr" / "p2.nii.gz").stat().st_ino != (
        config.converted / "cases" / "p2" / "p2.nii.gz"
    ).stat().st_ino  # the dataset still holds the earlier, consistent label map
    assemble(config)  # without the check the same files are assembled


def test_preprocess_checks_a_dataset_assembled_without_the_check(
    config: AssembleConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """nnU-Net's integrity check runs once: in assemble, as dataset.json records, or else in preprocess."""
    for name in (*NNUNET_FOLDERS.values(), "nnUNet_def_n_proc", "nnUNet_n_proc_DA", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(name, raising=False)  # preprocess sets them for nnU-Net: undone after the test
    write_volume(config.converted / "cases" / "p2" / "p2.nii.gz", np.zeros((4, 8, 8), np.uint8), (1.0, 1.0, 3.0))
    work = tmp_path / "work"
    assemble(AssembleConfig(**{**config.__dict__, "out": work / NNUNET_FOLDERS["raw"]}))
    capfd.readouterr()
    with pytest.raises(RuntimeError, match="Some images have errors"):
        preprocess(PreprocessConfig(work=work, split=config.split, model=MODEL))
    assert "Spacing mismatch" in capfd.readouterr().out
