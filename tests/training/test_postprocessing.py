"""The postprocess stage: nnU-Net's own determine_postprocessing on the folds' merged validation predictions and
apply_postprocessing_to_folder on the test predictions; the evaluation of the post-processed predictions and the
report's section on a whole small run."""

from __future__ import annotations

import contextlib
import csv
import json
import multiprocessing
import pickle
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from tsretrain.errors import UserError
from tsretrain.evaluation.report.blocks import fmt
from tsretrain.evaluation.report.postprocessing import DIGITS, postprocessing_blocks
from tsretrain.model import Model
from tsretrain.pipeline.registry import BY_NAME, run_stage
from tsretrain.run_files import DECISION
from tsretrain.training.postprocess import FOREGROUND, PostprocessConfig, postprocess

DATASET = "Dataset900_Speck"
MODEL = Model(dataset=DATASET, trainer="nnUNetTrainerTsrTiny", configuration="3d_tiny", folds=(0, 1))
LABELS = {"background": 0, "GTVp": 1, "Mandible": 2}
SHAPE = (12, 24, 24)  # z, y, x
SPACING, ORIGIN = (0.9, 1.1, 3.0), (-10.5, 20.25, 5.0)
DIRECTION = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # rotated about z: geometry nnU-Net must carry through
TUMOUR = np.s_[3:7, 5:11, 5:11]
MANDIBLE = np.s_[3:9, 14:20, 12:22]  # larger than the tumour: keeping the largest foreground component drops GTVp
SPECK = np.s_[10:12, 20:22, 1:3]  # far from the tumour


def label_map(speck: bool, shift: int = 0) -> np.ndarray:
    array = np.zeros(SHAPE, dtype=np.uint8)
    array[3:7, 5 + shift : 11 + shift, 5:11] = 1
    array[MANDIBLE] = 2
    if speck:
        array[SPECK] = 1
    return array


def write(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)


def read(path: Path) -> tuple[np.ndarray, sitk.Image]:
    """A label map (a copy, whatever becomes of its image) and its image."""
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def model_folder(work: Path) -> Path:
    return work / "nnUNet_results" / DATASET / MODEL.model_folder("nnUNetPlans")


@pytest.fixture
def trained(tmp_path: Path) -> tuple[Path, Path]:
    """An nnU-Net work root with a model of two folds whose validation predictions carry a GTVp speck far from the
    tumour, the references, and a test prediction with such a speck (work, predictions)."""
    work, predictions = tmp_path / "work", tmp_path / "predictions"
    preprocessed = work / "nnUNet_preprocessed" / DATASET
    preprocessed.mkdir(parents=True)
    (preprocessed / "planning_summary.json").write_text(json.dumps({"plans_identifier": "nnUNetPlans"}))
    model = model_folder(work)
    model.mkdir(parents=True)
    plans = {"dataset_name": DATASET, "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO"}
    (model / "plans.json").write_text(json.dumps(plans | {"configurations": {}}))
    (model / "dataset.json").write_text(json.dumps({"labels": LABELS, "file_ending": ".nii.gz", "channel_names": {}}))
    for case, fold in (("case_0", 0), ("case_1", 0), ("case_2", 1), ("case_3", 1)):
        write(label_map(speck=False), preprocessed / "gt_segmentations" / f"{case}.nii.gz")
        write(label_map(speck=case != "case_3"), model / f"fold_{fold}" / "validation" / f"{case}.nii.gz")
    write(label_map(speck=True, shift=1), predictions / "test" / "test_0.nii.gz")
    write(label_map(speck=False), predictions / "test" / "test_1.nii.gz")
    return work, predictions


@contextlib.contextmanager
def no_search(monkeypatch: pytest.MonkeyPatch, why: str) -> Iterator[None]:
    """nnU-Net's determine_postprocessing replaced by a failure saying ``why`` for the block."""
    from nnunetv2.postprocessing import remove_connected_components

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(why)

    with monkeypatch.context() as patched:
        patched.setattr(remove_connected_components, "determine_postprocessing", refuse)
        yield


def configured(work: Path, predictions: Path, out: Path) -> PostprocessConfig:
    return PostprocessConfig(work=work, predictions=predictions, out=out, model=MODEL, workers=1)


def test_a_small_validation_set_is_decided_in_this_process_whatever_the_cpus(
    trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers allowed, but four small cases per step tried: a spawned process would spend longer importing
    torch and nnU-Net than evaluating (the demo's post-processing took 81 s on 2 cores that way, 6 s in-process).
    The test predictions lie beside the JSON files nnU-Net's predict writes, as in a run."""
    work, predictions = trained  # this test's own
    for name in ("plans.json", "dataset.json", "predict_from_raw_data_args.json"):
        (predictions / "test" / name).write_text("{}")

    def spawn(*args: Any) -> Any:
        raise AssertionError("nnU-Net started a process pool for a few small cases")

    with monkeypatch.context() as patched:
        patched.setattr(multiprocessing, "get_context", spawn)
        config = replace(configured(work, predictions, tmp_path / "postprocessing"), workers=2)
        assert postprocess(config).counts["steps_kept"] == 1


def test_a_far_speck_makes_nnunet_keep_the_largest_component_of_its_label_only(
    trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work, predictions = trained
    out = tmp_path / "postprocessing"

    def spawn(*args: Any) -> Any:
        raise AssertionError("nnU-Net started a process pool for one worker")

    with monkeypatch.context() as patched:  # one worker: nnU-Net's pools in this process
        patched.setattr(multiprocessing, "get_context", spawn)
        result = postprocess(configured(work, predictions, out))
    assert result.counts == {"validation_cases": 4, "test_cases": 2, "steps_kept": 1}
    nnunet = json.loads((out / "validation" / "postprocessing.json").read_text())
    assert nnunet["postprocessing_kwargs"] == [{"labels_or_regions": 1}]  # nnU-Net's own choice: GTVp alone
    functions, kwargs = pickle.loads((out / "validation" / "postprocessing.pkl").read_bytes())
    assert [f.__name__ for f in functions] == ["remove_all_but_largest_component_from_segmentation"]
    assert kwargs == nnunet["postprocessing_kwargs"]
    decision = json.loads(DECISION.at(out).read_text())
    assert decision["keep_largest_component"] == [["GTVp"]] and decision["labels"] == ["GTVp"]
    assert decision["validation_cases"] == decision["training_cases"] == 4 and decision["folds"] == [0, 1]
    steps = {s["step"]: s for s in decision["steps"]}
    assert list(steps) == [FOREGROUND, "GTVp", "Mandible"]
    # the tumour and the mandible are two components: keeping the larger alone loses the tumour
    assert not steps[FOREGROUND]["kept"] and steps[FOREGROUND]["after"] < steps[FOREGROUND]["before"]
    tumour = 2 * 144 / (2 * 144 + 8)  # 144 tumour voxels and an 8-voxel speck in three of four cases
    assert steps["GTVp"]["kept"] and steps["GTVp"]["after"] == 1.0
    assert steps["GTVp"]["before"] == pytest.approx((3 * tumour + 1) / 4, abs=1e-6)
    assert not steps["Mandible"]["kept"] and steps["Mandible"]["before"] == steps["Mandible"]["after"] == 1.0
    assert decision["dice"]["GTVp"] == {"label": 1, "before": steps["GTVp"]["before"], "after": 1.0}
    assert decision["foreground_dice"]["after"] > decision["foreground_dice"]["before"]
    assert len(list((out / "trials").glob("*.json"))) == 4  # before, foreground, each label

    raw, raw_image = read(predictions / "test" / "test_0.nii.gz")
    done, done_image = read(out / "test" / "test_0.nii.gz")
    expected = np.array(raw)
    expected[SPECK] = 0
    assert np.array_equal(done, expected)  # the speck gone, the tumour and the mandible untouched
    assert done_image.GetSpacing() == pytest.approx(raw_image.GetSpacing())
    assert done_image.GetOrigin() == pytest.approx(raw_image.GetOrigin())
    assert done_image.GetDirection() == pytest.approx(raw_image.GetDirection())
    clean, _ = read(out / "test" / "test_1.nii.gz")
    assert np.array_equal(clean, label_map(speck=False))


def test_the_decision_is_kept_for_the_same_inputs_and_made_again_for_others(
    trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work, predictions = trained
    out = tmp_path / "postprocessing"
    config = configured(work, predictions, out)
    postprocess(config)
    first = json.loads(DECISION.at(out).read_text())

    with no_search(monkeypatch, "decided again for the same inputs"):
        assert postprocess(config).counts["steps_kept"] == 1
    write(label_map(speck=False), predictions / "test" / "test_0.nii.gz")  # a new test prediction
    postprocess(config)
    again = json.loads(DECISION.at(out).read_text())
    assert again["inputs"] != first["inputs"]
    done, _ = read(out / "test" / "test_0.nii.gz")
    assert np.array_equal(done, label_map(speck=False))


def test_without_a_search_nothing_is_tried_and_the_test_predictions_pass_unchanged(
    trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work, predictions = trained
    out = tmp_path / "postprocessing"
    searched = replace(configured(work, predictions, out), search="all")
    postprocess(searched)  # a search first: its files must not survive the run without one
    with no_search(monkeypatch, "searched with --search none"):
        result = postprocess(replace(searched, search="none"))
    assert result.counts == {"validation_cases": 4, "test_cases": 2, "steps_kept": 0}
    decision = json.loads(DECISION.at(out).read_text())
    assert not decision["searched"] and decision["steps"] == [] and decision["keep_largest_component"] == []
    assert not (out / "validation").exists() and not (out / "trials").exists()
    for case in ("test_0", "test_1"):
        raw, raw_image = read(predictions / "test" / f"{case}.nii.gz")
        done, done_image = read(out / "test" / f"{case}.nii.gz")
        assert np.array_equal(done, raw) and done_image.GetOrigin() == pytest.approx(raw_image.GetOrigin())
    blocks = postprocessing_blocks(out, tmp_path / "no-evaluation-needed")
    assert "Not searched" in str(blocks)
    with pytest.raises(UserError, match="unknown search"):
        postprocess(replace(searched, search="some"))


def test_refusals_name_what_to_run(trained: tuple[Path, Path], tmp_path: Path) -> None:
    work, predictions = trained
    duplicate = model_folder(work) / "fold_1" / "validation" / "case_0.nii.gz"
    write(label_map(speck=False), duplicate)
    with pytest.raises(UserError, match=re.escape("case_0.nii.gz is in the validation of two folds")):
        postprocess(configured(work, predictions, tmp_path / "a"))
    duplicate.unlink()
    with pytest.raises(UserError, match="fold 2 has no validation predictions") as error:
        postprocess(
            PostprocessConfig(
                work=work,
                predictions=predictions,
                out=tmp_path / "b",
                model=Model(dataset=DATASET, trainer=MODEL.trainer, configuration=MODEL.configuration, folds=(0, 2)),
            )
        )
    assert "validate" in error.value.advice
    with pytest.raises(UserError) as error:  # no test predictions: the stage that writes them
        run_stage(BY_NAME["postprocess"], configured(work, tmp_path / "predictions-absent", tmp_path / "c"))
    assert error.value.advice == "run predict first"


# The whole small run (tests/conftest.py, finished_run): the postprocess stage between predict and evaluate.


def test_the_runs_decision_is_nnunets(finished_run: Path) -> None:
    out = finished_run / "postprocessing"
    decision = json.loads(DECISION.at(out).read_text())
    nnunet = json.loads((out / "validation" / "postprocessing.json").read_text())
    dataset = json.loads((out / "validation" / "dataset.json").read_text())
    names = {value: name for name, value in dataset["labels"].items()}
    kept = [k["labels_or_regions"] for k in nnunet["postprocessing_kwargs"]]
    assert decision["keep_largest_component"] == [
        [names[label] for label in (group if isinstance(group, list) else [group])] for group in kept
    ]
    for when, folder in (("before", "input_folder"), ("after", "postprocessed")):
        dice = nnunet[folder]["foreground_mean"]["Dice"]
        assert decision["foreground_dice"][when] == pytest.approx(dice, abs=1e-6)
        for name, label in decision["dice"].items():
            assert decision["dice"][name][when] == pytest.approx(
                nnunet[folder]["mean"][str(label["label"])]["Dice"], abs=1e-6
            )
    for step in decision["steps"]:  # nnU-Net keeps a step only when it raised the Dice it compared
        assert not step["kept"] or step["after"] > step["before"], step
    results = finished_run / "nnunet" / "nnUNet_results"
    validated = sorted(p.name for p in results.glob("*/nnUNetTrainerTsrTiny__*/fold_0/validation/*.nii.gz"))
    assert sorted(p.name for p in (out / "validation").glob("*.nii.gz")) == validated
    assert decision["validation_cases"] == len(validated)
    report = (finished_run / "report" / "report.md").read_text()
    assert "### Post-processing (decided on the validation folds)" in report
    assert f"before, {fmt(decision['foreground_dice']['after'], DIGITS)} after" in report
    chosen = "nothing: no step raised the validation Dice" if not kept else "keep only the largest connected component"
    assert f"Chosen: {chosen}" in report
    for step in decision["steps"]:
        before, after = fmt(step["before"], DIGITS), fmt(step["after"], DIGITS)
        assert f"| {step['step']} | {step['measure']} | {before} | {after} |" in report


def _per_case(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with path.open() as handle:
        return {(row["case"], row["name"]): row for row in csv.DictReader(handle)}


def test_the_post_processed_test_set_is_evaluated_as_the_raw_one(finished_run: Path) -> None:
    decision = json.loads(DECISION.at(finished_run / "postprocessing").read_text())
    evaluation = finished_run / "evaluation"
    raw, after = _per_case(evaluation / "per_case.csv"), _per_case(evaluation / "postprocessed" / "per_case.csv")
    assert raw.keys() == after.keys()
    references = next((finished_run / "nnunet" / "nnUNet_raw").glob("*/labelsTs"))
    labels = {name: info["label"] for name, info in decision["dice"].items()}
    for reference in sorted(references.glob("*.nii.gz")):
        case = reference.name.removesuffix(".nii.gz")
        truth, _ = read(reference)
        before, _ = read(finished_run / "predictions" / "test" / reference.name)
        processed, _ = read(finished_run / "postprocessing" / "test" / reference.name)
        removed = processed != before
        assert not np.any(processed[removed])  # post-processing only ever sets voxels to background
        assert {int(v) for v in np.unique(before[removed])} <= {labels[n] for n in decision["labels"]}
        for (name,) in (g for g in decision["keep_largest_component"] if len(g) == 1):  # one component left
            assert ndimage.label(processed == labels[name], structure=np.ones((3, 3, 3)))[1] <= 1
        for name, label in labels.items():  # the metrics file's Dice, from the label maps themselves
            row = after[(case, name)]
            ref, pred = truth == label, processed == label
            if ref.any() or pred.any():
                dice = 2 * np.count_nonzero(ref & pred) / (np.count_nonzero(ref) + np.count_nonzero(pred))
                assert float(row["dice"]) == pytest.approx(dice, abs=1e-6), (case, name)
            if not decision["labels"]:
                assert row == raw[(case, name)]  # nothing kept: the same predictions, the same numbers
    summary = json.loads((evaluation / "postprocessed" / "summary.json").read_text())
    paired = {p["metric"]: p for p in summary["against_raw"]["paired"]}
    tumour = [key for key in after if key[1] == "GTVp" and int(after[key]["lesions"] or 0)]
    assert paired["dice"]["n_pairs"] == len(tumour)
    if tumour:
        assert paired["dice"]["first_mean"] == pytest.approx(np.mean([float(raw[k]["dice"]) for k in tumour]), abs=1e-6)
        assert paired["dice"]["second_mean"] == pytest.approx(
            np.mean([float(after[k]["dice"]) for k in tumour]), abs=1e-6
        )
    report = (finished_run / "report" / "report.md").read_text()
    shown = [(g, r) for g, entry in summary["groups"].items() for r in entry["labels"]]
    shown = [(g, r) for g, r in shown if r["name"] in {*decision["labels"], "GTVp"}]
    assert any(r["name"] == "GTVp" for _, r in shown)
    for group, r in shown:  # the post-processed Dice beside the raw one, per reference source
        row = rf"\| {r['name']} \| {group} \| {r['n_reference']} \| [^|]+ \| {re.escape(fmt(r['dice_mean']))} \|"
        assert re.search(row, report), r["name"]
    lesions = {name: s["gtvp"]["lesion_detection"] for name, s in (("raw", raw_summary(evaluation)), ("post", summary))}
    for name, found in lesions.items():  # keeping one component can lose a second primary: both counts shown
        assert f"{found['found']} of {found['lesions']} lesions found" in report, name


def raw_summary(evaluation: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((evaluation / "summary.json").read_text())
    return summary
