"""The nnU-Net stage on a tiny synthetic dataset: assembly, planning, training, resume and prediction (CPU)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from tsretrain.errors import UserError
from tsretrain.model import Model
from tsretrain.storage.store import open_store
from tsretrain.training import discovery
from tsretrain.training import predict as predict_module
from tsretrain.training.nnunet_env import NnunetFolders
from tsretrain.training.precision import PRECISION_VARIABLE
from tsretrain.training.predict import PredictConfig, load_predictor, predict
from tsretrain.training.preprocess import PreprocessConfig, preprocess
from tsretrain.training.train import TrainConfig, train

NAME = "Dataset366_TotalSegmentator"
TINY = Model(configuration="3d_tiny", trainer="nnUNetTrainerTsrTiny", plans="nnUNetPlans", folds=(0, 1))


def test_test_cases_never_reach_training_or_planning(prepared: Path) -> None:
    split = json.loads((prepared / "split" / "split.json").read_text())
    raw = prepared / "work" / "nnUNet_raw" / NAME
    train_ids = {p.name.removesuffix("_0000.nii.gz") for p in (raw / "imagesTr").iterdir()}
    test_ids = {p.name.removesuffix("_0000.nii.gz") for p in (raw / "imagesTs").iterdir()}
    assert test_ids == set(split["test"]) and not train_ids & test_ids
    assert train_ids == {c for fold in split["folds"] for c in fold}
    dataset = json.loads((raw / "dataset.json").read_text())
    assert dataset["numTraining"] == len(train_ids) and dataset["labels"]["GTVp"] == 1
    assert dataset["channel_names"] == {"0": "CT"}
    pre = prepared / "work" / "nnUNet_preprocessed" / NAME
    fingerprint = json.loads((pre / "dataset_fingerprint.json").read_text())
    assert len(fingerprint["spacings"]) == len(train_ids)
    preprocessed_ids = {p.name.split(".")[0] for p in (pre / "nnUNetPlans_3d_fullres").iterdir()}
    assert not preprocessed_ids & test_ids
    splits = json.loads((pre / "splits_final.json").read_text())
    assert splits == json.loads((prepared / "split" / "splits_final.json").read_text())


def test_planning_summary_and_tiny_configuration(prepared: Path) -> None:
    pre = prepared / "work" / "nnUNet_preprocessed" / NAME
    summary = json.loads((pre / "planning_summary.json").read_text())
    assert summary["configurations"]["3d_fullres"]["spacing"] == pytest.approx([5.0, 2.4, 2.4], rel=1e-5)
    tiny = summary["configurations"]["3d_tiny"]
    assert tiny["features_per_stage"] == [8, 16, 32, 64] and tiny["patch_size"][1:] == [64, 64]


def test_plan_overrides_make_a_named_variant(
    prepared: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # augmentation in the training process, as nnU-Net's debugging advice has it: its planner, which sizes torch's
    # threads by this setting, must still run
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    result = preprocess(
        PreprocessConfig(
            work=prepared / "work", split=prepared / "split", batch_size=3, model=Model(plans="nnUNetPlansBs3")
        )
    )
    assert "verify_dataset_integrity" not in capfd.readouterr().out  # assemble checked the dataset
    pre = prepared / "work" / "nnUNet_preprocessed" / NAME
    assert json.loads((pre / "nnUNetPlansBs3.json").read_text())["configurations"]["3d_fullres"]["batch_size"] == 3
    assert json.loads((pre / "nnUNetPlans.json").read_text())["configurations"]["3d_fullres"]["batch_size"] == 2
    assert result.outputs["plans"].endswith("nnUNetPlansBs3.json")
    assert json.loads((pre / "planning_summary.json").read_text())["plans_identifier"] == "nnUNetPlansBs3"
    assert os.environ["nnUNet_n_proc_DA"] == "0"  # noqa: SIM112 (nnU-Net's name): the user's setting, kept
    with pytest.raises(UserError, match="--plans"):
        preprocess(PreprocessConfig(work=prepared / "work", split=prepared / "split", batch_size=3))


def test_trainers_are_found_by_tsretrain_and_by_nnunets_external_search() -> None:
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    assert discovery.find_trainer("nnUNetTrainerTsrTiny").__name__ == "nnUNetTrainerTsrTiny"
    path = discovery.ext_trainer_path()
    found = recursive_find_python_class(
        path, "nnUNetTrainerTsrGTVpFocal", None, base_folder=path, cleanup_imports_from_base_folder=True
    )
    assert found is not None and found.__name__ == "nnUNetTrainerTsrGTVpFocal"


def test_short_training_and_ensemble_prediction(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from nnunetv2.training.logging.nnunet_logger import LocalLogger

    monkeypatch.setenv("nnUNet_compile", "true")  # as the GPU image sets it: nothing is compiled on a CPU
    drawn: list[int] = []  # progress.png drawings, by epochs logged
    plot = LocalLogger.plot_progress_png
    monkeypatch.setattr(
        LocalLogger,
        "plot_progress_png",
        lambda self, folder: drawn.append(len(self.my_fantastic_logging["train_losses"])) or plot(self, folder),
    )
    for fold in (0, 1):  # fold 1 without its validation, which prediction then has none of
        train(TrainConfig(work=prepared / "work", fold=fold, epochs=2, model=TINY, device="cpu", validate=fold == 0))
    assert drawn == [2, 2]  # after the last epoch only (checkpoints every 5 epochs)
    fold0 = TrainConfig(work=prepared / "work", fold=0, model=TINY).fold_folder()
    checkpoint = torch.load(fold0 / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainerTsrTiny"
    assert checkpoint["inference_allowed_mirroring_axes"] is None  # mirroring off
    assert (fold0 / "progress.png").is_file()
    progress = json.loads((fold0 / "progress.json").read_text())
    assert len(progress["train_losses"]) == 2 and len(progress["epoch_seconds"]) == 2
    assert (fold0 / "validation" / "summary.json").is_file()
    again = train(TrainConfig(work=prepared / "work", fold=0, epochs=2, model=TINY, device="cpu"))
    assert again.counts["resumed_from_epoch"] == -1  # finished folds are not trained again

    ran = spy_predictors(monkeypatch)
    monkeypatch.setattr(predict_module, "cpu_quota", lambda: 1)  # a one-CPU pod: no nnU-Net worker processes
    result = predict(PredictConfig(work=prepared / "work", out=tmp_path, model=TINY, device="cpu"))
    split = json.loads((prepared / "split" / "split.json").read_text())
    assert ran == ["predict_from_files_sequential"]
    assert result.counts["test_cases"] == len(split["test"])
    for case in split["test"]:
        predicted = sitk.ReadImage(str(tmp_path / "test" / f"{case}.nii.gz"))
        image = sitk.ReadImage(str(prepared / "converted" / "cases" / case / f"{case}_0000.nii.gz"))
        assert predicted.GetSize() == image.GetSize()
        np.testing.assert_allclose(predicted.GetOrigin(), image.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(predicted.GetDirection(), image.GetDirection(), atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "validation").iterdir()) == ["fold_0"]
    assert result.counts["folds"] == 2 and result.counts["validated_folds"] == 1
    assert "Using torch.compile" not in capfd.readouterr().out  # neither the validation nor the prediction
    with pytest.raises(UserError, match="train them first"):
        predict(PredictConfig(work=prepared / "work", out=tmp_path, model=replace(TINY, folds=(2,)), device="cpu"))

    # the predictor's network in either CPU arithmetic: bfloat16 inside the forward, float32 logits out, within
    # bfloat16's precision of the float32 network's
    patch = torch.randn(1, 1, *checkpoint["init_args"]["plans"]["configurations"]["3d_tiny"]["patch_size"])
    logits, computed = {}, []
    for setting in ("fp32", "bf16"):
        monkeypatch.setenv(PRECISION_VARIABLE, setting)
        network = load_predictor(fold0.parent, (0,), torch.device("cpu"), 0.5).network
        network.encoder.stages[0].register_forward_hook(lambda module, args, output: computed.append(output.dtype))
        with torch.no_grad():
            logits[setting] = network(patch)
    assert computed == [torch.float32, torch.bfloat16] and logits["bf16"].dtype == torch.float32
    assert float((logits["bf16"] - logits["fp32"]).abs().max()) < 0.05 * float(logits["fp32"].abs().max())


def spy_predictors(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of nnU-Net's prediction loops that run from now on (in this process)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    ran: list[str] = []

    def recorded(method: Any) -> Any:
        @functools.wraps(method)  # nnU-Net reads its own signature
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            ran.append(method.__name__)
            return method(self, *args, **kwargs)

        return call

    for name in ("predict_from_files", "predict_from_files_sequential"):
        monkeypatch.setattr(nnUNetPredictor, name, recorded(getattr(nnUNetPredictor, name)))
    return ran


def _epoch_of(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["current_epoch"])


def test_a_killed_training_resumes_from_its_last_checkpoint(prepared: Path, tmp_path: Path) -> None:
    """Kill -9 after a checkpoint; the restart continues from it and finishes; the store has a mirror."""
    store = tmp_path / "store"
    command = [
        sys.executable,
        "-m",
        "tsretrain.cli",
        "train",
        "--work",
        str(prepared / "work"),
        "--fold",
        "2",
        "--configuration",
        "3d_tiny",
        "--trainer",
        "nnUNetTrainerTsrTiny",
        "--plans",
        "nnUNetPlans",
        "--device",
        "cpu",
        "--epochs",
        "6",
        "--save-every",
        "2",
        "--store",
        str(store),
        "--no-validate",  # the fold's validation after a resume: the cluster run's preempted fold
    ]
    env = {**os.environ, "TSRETRAIN_ITERATIONS": "2"}
    fold = TrainConfig(work=prepared / "work", fold=2, model=TINY).fold_folder()
    stored = store / NAME / fold.parent.name  # the store keeps nnUNet_results' layout
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = fold / "checkpoint_latest.pth"
    deadline = time.time() + 300
    while time.time() < deadline and not (latest.is_file() and _epoch_of(latest) >= 2):
        assert process.poll() is None, "training ended before it could be killed"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = _epoch_of(latest)
    assert 2 <= saved < 6 and not (fold / "checkpoint_final.pth").exists()
    assert _epoch_of(stored / "fold_2" / "checkpoint_latest.pth") == saved  # mirrored after the save

    for log in fold.glob("training_log_*.txt"):
        log.rename(log.with_suffix(".first"))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (second_log,) = fold.glob("training_log_*.txt")
    assert f"tsretrain: starting at epoch {saved} of 6" in second_log.read_text()
    assert _epoch_of(fold / "checkpoint_final.pth") == 6
    assert (stored / "fold_2" / "checkpoint_final.pth").is_file()
    assert (stored / "plans.json").is_file()
    published = open_store(str(store)).manifest("") or {}  # the fold's manifest sits at the results root
    assert f"{NAME}/{fold.parent.name}/fold_2/checkpoint_final.pth" in published


def test_trainer_settings_from_the_environment(prepared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nnunetv2.run.run_training import get_trainer_from_args

    monkeypatch.setenv("TSRETRAIN_LR", "0.05")
    monkeypatch.setenv("TSRETRAIN_ITERATIONS", "7")
    monkeypatch.delenv("TSRETRAIN_EPOCHS", raising=False)  # train() of earlier tests sets it in this process
    NnunetFolders(prepared / "work").activate()
    discovery.install()
    trainer = get_trainer_from_args("366", "3d_tiny", 0, "nnUNetTrainerTsrTiny", device=torch.device("cpu"))
    assert trainer.initial_lr == 0.05
    assert (trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch) == (7, 1)
    assert trainer.num_epochs == 3
    monkeypatch.delenv("TSRETRAIN_LR")
    trainer = get_trainer_from_args("366", "3d_tiny", 0, "nnUNetTrainerTsrTiny", device=torch.device("cpu"))
    assert trainer.initial_lr == 1e-2  # AdamW for a short schedule


@pytest.mark.slow
def test_the_demo_trainer_learns_the_synthetic_anatomy(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """125 steps of the demo's trainer and configuration: the pseudo-Dice rises and the mandible appears on the
    validation patches (with nnU-Net's SGD every structure stayed at 0 for 250 steps). The batches are augmented in
    the training process, from its seed: the same run every time (worker processes draw their own random numbers,
    and one run in several then learned too little to pass)."""
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    work = tmp_path / "work"
    for folder in ("nnUNet_raw", "nnUNet_preprocessed"):
        shutil.copytree(prepared / "work" / folder, work / folder)
    config = TrainConfig(work=work, fold=0, epochs=5, iterations=25, validate=False, model=TINY, device="cpu")
    train(config)
    progress = json.loads((config.fold_folder() / "progress.json").read_text())
    labels = json.loads((work / "nnUNet_raw" / NAME / "dataset.json").read_text())["labels"]
    mandible = [epoch[labels["Mandible_Bone"] - 1] for epoch in progress["pseudo_dice"]]
    assert max(mandible[-2:]) >= 0.25, mandible  # 0.4-0.8 in runs here; 0.000 with SGD
    assert progress["ema_fg_dice"][-1] > progress["ema_fg_dice"][0] + 0.005  # a mean over 21 structures, smoothed
