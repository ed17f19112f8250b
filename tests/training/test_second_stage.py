"""The tumour-focused second stage: lesion-level detection, the paired comparison, and the stage itself on a real
nnU-Net dataset (started from the first stage's fold with its head, trained with the focal trainer, predicted
and compared with the first stage)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support import write_volume

from tsretrain.errors import UserError
from tsretrain.evaluation.compare import CompareConfig, compare
from tsretrain.evaluation.lesions import lesions
from tsretrain.evaluation.report.blocks import Figure
from tsretrain.evaluation.report.second_stage import second_stage_blocks
from tsretrain.evaluation.statistics import paired
from tsretrain.model import Model
from tsretrain.training.nnunet_env import NnunetFolders
from tsretrain.training.predict import PredictConfig, predict
from tsretrain.training.second_stage import (
    SecondPredictConfig,
    SecondStageConfig,
    focused_trainer,
    second_predict,
    second_stage,
)
from tsretrain.training.train import TrainConfig, train

FIRST = Model(configuration="3d_tiny", trainer="nnUNetTrainerTsrTiny", plans="nnUNetPlans", folds=(0,))
GTVP = 1  # radcure-oar21's GTVp label


def test_a_lesion_is_found_by_any_overlap_and_outside_components_are_false_positives() -> None:
    reference = np.zeros((6, 20, 20), bool)
    reference[1:3, 2:5, 2:5] = True  # lesion 1
    reference[3, 5, 5] = True  # touches lesion 1 at a corner only: the same lesion (26-connected)
    reference[1:4, 12:16, 12:16] = True  # lesion 2, missed
    prediction = np.zeros_like(reference)
    prediction[2, 4, 4] = True  # one voxel inside lesion 1: found
    prediction[5, 18:20, 0:2] = True  # 4 voxels far from both: a false-positive component
    found = lesions(reference, prediction, voxel_ml=0.5)
    assert (found.reference, found.found, found.missed) == (2, 1, 1)
    assert found.false_positive_ml == (2.0,)
    assert lesions(reference, np.zeros_like(reference), 1.0).found == 0
    assert lesions(np.zeros_like(reference), prediction, 1.0).false_positive_ml == (1.0, 4.0)


def test_paired_differences_use_the_cases_where_both_stages_have_the_metric() -> None:
    rows = [
        {"lesions": 1, "first_dice": 0.5, "second_dice": 0.7, "first_hd95": 10.0, "second_hd95": 4.0},
        {"lesions": 1, "first_dice": 0.6, "second_dice": 0.6, "first_hd95": None, "second_hd95": 3.0},
        {"lesions": 2, "first_dice": 0.8, "second_dice": 0.7, "first_hd95": 2.0, "second_hd95": 3.0},
        {"lesions": 0, "first_dice": 0.0, "second_dice": 0.0, "first_hd95": None, "second_hd95": None},  # no tumour
    ]
    dice = paired(rows, "dice")
    assert dice["n_pairs"] == 3 and dice["difference_mean"] == pytest.approx(0.1 / 3, abs=1e-6)
    assert dice["first_mean"] == pytest.approx(1.9 / 3, abs=1e-6)
    assert dice["second_mean"] == pytest.approx(2.0 / 3, abs=1e-6)
    low, high = dice["difference_ci95"]
    assert -0.1 <= low <= dice["difference_mean"] <= high <= 0.2
    assert (dice["second_better"], dice["first_better"]) == (1, 1)
    hd95 = paired(rows, "hd95")  # the missed tumour has no HD95: not a pair; lower is better
    assert hd95["n_pairs"] == 2 and hd95["difference_mean"] == pytest.approx(-2.5)
    assert (hd95["second_better"], hd95["first_better"]) == (1, 1)
    assert paired(rows[3:], "dice")["difference_mean"] is None


def _maps(folder: Path, masks: dict[str, np.ndarray]) -> Path:
    for case, mask in masks.items():
        write_volume(folder / f"{case}.nii.gz", mask.astype(np.uint8) * GTVP, spacing=(1.0, 1.0, 2.0))
    return folder


def test_compare_counts_lesions_per_stage_and_the_report_shows_them(tmp_path: Path) -> None:
    two = np.zeros((8, 24, 24), bool)
    two[2:5, 3:8, 3:8] = True
    two[2:5, 15:20, 15:20] = True  # a second primary
    one = np.zeros_like(two)
    one[2:5, 3:8, 3:8] = True
    speck = one.copy()
    speck[7, 22, 22] = True  # a false-positive speck far away
    reference = _maps(tmp_path / "ref", {"A": two, "B": one})
    first = _maps(tmp_path / "first", {"A": one, "B": speck})  # misses A's second lesion
    second = _maps(tmp_path / "second", {"A": two, "B": one})
    out = tmp_path / "comparison"
    compare(CompareConfig(reference=reference, first=first, second=second, out=out))
    document = json.loads((out / "comparison.json").read_text())
    assert document["lesions"] == 3 and document["lesions_found"] == {"first": 2, "second": 3}
    assert document["false_positive_components"] == {"first": 1, "second": 0}
    by_metric = {p["metric"]: p for p in document["paired"]}
    assert by_metric["dice"]["second_mean"] == 1.0 and by_metric["dice"]["difference_mean"] > 0
    assert by_metric["lesions_found"]["difference_mean"] == 0.5
    figures = tmp_path / "figures"
    figures.mkdir()
    blocks = second_stage_blocks(out, figures)
    text = repr([b for b in blocks if not isinstance(b, Figure)])
    assert "1 of 2" in text and "2 of 2" in text and "rough guide" in text  # lesions per case; n < 20 caution
    assert (figures / "second_stage_paired.png").stat().st_size > 1000

    (first / "B.nii.gz").unlink()
    with pytest.raises(UserError, match=r"first stage has no prediction for 1 test case.*: B"):
        compare(CompareConfig(reference=reference, first=first, second=second, out=out))
    with pytest.raises(UserError, match=r"comparison\.json is missing") as caught:
        second_stage_blocks(tmp_path / "nowhere", figures)
    assert "run the compare-stages stage first" in caught.value.advice


def test_every_tsretrain_trainer_has_its_tumour_focused_variants() -> None:
    assert focused_trainer("nnUNetTrainerTsrTiny", "focal") == "nnUNetTrainerTsrTinyGTVpFocal"
    assert focused_trainer("nnUNetTrainerTsr", "weighted") == "nnUNetTrainerTsrGTVpWeighted"
    with pytest.raises(UserError, match="nnUNetTrainer has no tumour-focused variant"):
        focused_trainer("nnUNetTrainer", "focal")
    with pytest.raises(UserError, match="unknown loss 'dice'"):
        focused_trainer("nnUNetTrainerTsr", "dice")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    weights: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=False)["network_weights"]
    return weights


def test_the_second_stage_starts_from_its_folds_first_stage_head_included(
    work: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = {"work": work, "fold": 0, "iterations": 2, "device": "cpu"}
    with pytest.raises(UserError, match="first stage's fold 0 is not trained"):
        second_stage(SecondStageConfig(**settings, model=FIRST, epochs=1))
    train(TrainConfig(**settings, model=FIRST, epochs=1, validate=False))
    monkeypatch.setenv("TSRETRAIN_LR", "1e-9")  # the weights stay where they started
    result = second_stage(SecondStageConfig(**settings, model=FIRST, epochs=1, warmup_epochs=0))
    assert result.counts["initialised_from_fold"] == 0
    results = NnunetFolders(work).results / FIRST.dataset
    first = _weights(results / "nnUNetTrainerTsrTiny__nnUNetPlans__3d_tiny" / "fold_0" / "checkpoint_final.pth")
    checkpoint = results / "nnUNetTrainerTsrTinyGTVpFocal__nnUNetPlans__3d_tiny" / "fold_0" / "checkpoint_final.pth"
    assert torch.load(checkpoint, map_location="cpu", weights_only=False)["trainer_name"] == (
        "nnUNetTrainerTsrTinyGTVpFocal"
    )
    second = _weights(checkpoint)
    heads = [k for k in first if ".seg_layers." in k]
    assert heads and len(first) > 20
    for key, value in first.items():  # every layer, the segmentation head too
        if value.is_floating_point():
            torch.testing.assert_close(second[key], value, atol=1e-6, rtol=0)

    second_predict(SecondPredictConfig(work=work, out=tmp_path / "second-stage", model=FIRST, device="cpu"))
    predict(PredictConfig(work=work, out=tmp_path / "predictions", model=FIRST, device="cpu"))
    tests = sorted((NnunetFolders(work).raw / FIRST.dataset / "imagesTs").glob("*_0000.nii.gz"))
    assert tests and len(list((tmp_path / "second-stage" / "test").glob("*.nii.gz"))) == len(tests)
    compare(
        CompareConfig(
            reference=NnunetFolders(work).raw / FIRST.dataset / "labelsTs",
            first=tmp_path / "predictions" / "test",
            second=tmp_path / "second-stage" / "test",
            out=tmp_path / "comparison",
        )
    )
    document = json.loads((tmp_path / "comparison" / "comparison.json").read_text())
    assert document["n_cases"] == len(tests)
    dice = document["paired"][0]  # the same weights (learning rate 1e-9): the same tumour, case by case
    assert dice["n_pairs"] == document["n_cases_with_tumour"] and abs(dice["difference_mean"] or 0) < 1e-3
