"""A fold resumes on a fresh node from the store's checkpoint; a killed trainer leaves no worker behind; no
trainer mirrors in training, so prediction with ``--tta`` mirrors only models of nnU-Net's mirroring trainers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from processes import alive, children, wait_until
from test_nnunet import TINY, spy_predictors

from tsretrain.errors import UserError
from tsretrain.storage.store import LocalStore
from tsretrain.training import predict as predict_module
from tsretrain.training import train as train_module
from tsretrain.training.nnunet_trainers.tsretrain_trainers import TRAINERS
from tsretrain.training.precision import PRECISION_VARIABLE
from tsretrain.training.predict import PredictConfig, predict
from tsretrain.training.train import TrainConfig, ValidateConfig, train, validate


def mirrored_fold(work: Path, store: Path, fold: int, epochs: int) -> TrainConfig:
    """A tiny CPU training of one fold, checkpointed every epoch and mirrored to ``store``, not validated (a
    cluster's train pod)."""
    return TrainConfig(
        work=work,
        fold=fold,
        epochs=epochs,
        iterations=1,
        save_every=1,
        validate=False,
        store=str(store),
        model=TINY,
        device="cpu",
    )


@pytest.mark.slow
def test_a_fold_resumes_on_an_empty_node_from_the_stores_checkpoint(work: Path, tmp_path: Path) -> None:
    """A first node trains and mirrors its checkpoints, then is lost before the fold ends (its local folder
    gone, the store without the final checkpoint); a second node starts from the stored latest checkpoint."""
    store = tmp_path / "store"
    config = mirrored_fold(work, store, fold=1, epochs=3)
    train(config)
    stored = store / config.fold_folder().relative_to(work / "nnUNet_results")  # the results' layout below it
    stored_latest = stored / "checkpoint_latest.pth"
    epoch = int(torch.load(stored_latest, map_location="cpu", weights_only=False)["current_epoch"])
    assert epoch == 2
    (stored / "checkpoint_final.pth").unlink()
    shutil.rmtree(work / "nnUNet_results")

    result = train(config)
    assert result.counts["resumed_from_epoch"] == epoch
    final = torch.load(config.fold_folder() / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == 3
    assert (stored / "checkpoint_final.pth").is_file()


@pytest.mark.slow
def test_validation_runs_as_a_step_of_its_own_on_a_fresh_node(work: Path, tmp_path: Path) -> None:
    """A fold trained without validation (a cluster's train pod), then validated from the store on an empty node:
    nnU-Net's validation of the fold's cases, published beside its checkpoints; an untrained fold is refused."""
    store = tmp_path / "store"
    config = mirrored_fold(work, store, fold=0, epochs=1)
    with pytest.raises(UserError, match="no checkpoint_final"):
        validate(ValidateConfig(work=work, fold=0, model=TINY, device="cpu", store=str(store)))
    train(config)
    assert not (config.fold_folder() / "validation").exists()
    shutil.rmtree(work / "nnUNet_results")  # another node
    result = validate(ValidateConfig(work=work, fold=0, model=TINY, device="cpu", store=str(store)))
    validation = config.fold_folder() / "validation"
    split = json.loads((work / "nnUNet_preprocessed" / TINY.dataset / "splits_final.json").read_text())
    assert result.counts["cases"] == len(split[0]["val"]) > 0
    assert (validation / "summary.json").is_file()
    stored = store / config.fold_folder().relative_to(work / "nnUNet_results") / "validation" / "summary.json"
    assert stored.read_bytes() == (validation / "summary.json").read_bytes()


def test_a_checkpoint_save_uploads_that_checkpoint_alone(
    work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each save mirrors the checkpoint just written and the small files, not every checkpoint of the fold (two
    246 MB checkpoints per save at RADCURE's size); the end of the fold mirrors everything once."""
    config = TrainConfig(work=work, fold=0, store=str(tmp_path / "store"), model=TINY, device="cpu")
    fold = config.fold_folder()
    fold.mkdir(parents=True)
    for name in ("checkpoint_best.pth", "checkpoint_latest.pth"):
        (fold / name).write_bytes(b"old")
    (fold / "progress.json").write_text("{}")
    (tmp_path / "new.tmp").write_bytes(b"new")
    uploaded: list[str] = []
    monkeypatch.setattr(LocalStore, "put_file", lambda self, local, key: uploaded.append(key))
    train_module._mirror(config, (tmp_path / "new.tmp", "checkpoint_latest.pth"))
    assert [key for key in uploaded if key.endswith(".pth")] == ["fold_0/checkpoint_latest.pth"]
    assert "fold_0/progress.json" in uploaded
    uploaded.clear()
    train_module._mirror(config)
    checkpoints = sorted(key for key in uploaded if key.endswith(".pth"))
    assert checkpoints == ["fold_0/checkpoint_best.pth", "fold_0/checkpoint_latest.pth"]


@pytest.mark.slow
@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_trainer_leaves_no_augmentation_worker(work: Path, kill: signal.Signals) -> None:
    command = [sys.executable, "-m", "tsretrain.cli", "train", "--work", str(work), "--fold", "0"]
    command += ["--configuration", "3d_tiny", "--trainer", "nnUNetTrainerTsrTiny", "--device", "cpu"]
    command += ["--epochs", "50", "--no-validate"]
    env = {**os.environ, "nnUNet_n_proc_DA": "2", "TSRETRAIN_ITERATIONS": "50"}
    trainer = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        # two training workers and one validation worker once the first epoch starts
        assert wait_until(lambda: len(children(trainer.pid)) >= 3 or trainer.poll() is not None, 300.0)
        assert trainer.poll() is None, "training ended before it could be killed"
        workers = children(trainer.pid)
        trainer.send_signal(kill)
        trainer.wait(timeout=60)
        assert wait_until(lambda: not any(alive(pid) for pid in workers), 15.0), [p for p in workers if alive(p)]
    finally:
        for pid in [trainer.pid, *workers]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        trainer.wait()


def _built(work: Path, trainer: str) -> Any:
    """A trainer built by nnU-Net from the prepared plans, the way ``nnUNetv2_train`` builds it."""
    from nnunetv2.run.run_training import get_trainer_from_args

    from tsretrain.training import discovery
    from tsretrain.training.nnunet_env import NnunetFolders

    NnunetFolders(work).activate()
    discovery.install()
    return get_trainer_from_args("366", "3d_tiny", 0, trainer, device=torch.device("cpu"))


def _transforms(transform: Any) -> Iterator[Any]:
    """A transform and every transform inside it (composed, or applied at random)."""
    yield transform
    for inner in getattr(transform, "transforms", ()):
        yield from _transforms(inner)
    if hasattr(transform, "transform"):
        yield from _transforms(transform.transform)


@pytest.mark.slow
@pytest.mark.parametrize("trainer", [*TRAINERS, "nnUNetTrainer"])
def test_no_trainer_mirrors_in_training(work: Path, trainer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The augmentation of nnU-Net's own data loaders has no mirroring, and the checkpoints allow none at inference;
    nnU-Net's stock trainer (the control) mirrors along all three axes."""
    from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform

    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # the loaders in this process, no workers
    built = _built(work, trainer)
    built.initialize()
    training, _ = built.get_dataloaders()
    mirrors = [t for t in _transforms(training.data_loader.transforms) if isinstance(t, MirrorTransform)]
    if trainer == "nnUNetTrainer":
        assert [m.allowed_axes for m in mirrors] == [(0, 1, 2)]
        assert built.inference_allowed_mirroring_axes == (0, 1, 2)
    else:
        assert mirrors == [] and built.inference_allowed_mirroring_axes is None


@pytest.mark.parametrize(("setting", "computed"), [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_a_cpu_training_step_runs_the_forward_in_the_chosen_arithmetic(
    work: Path, setting: str, computed: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's trainer as nnU-Net builds it, one step on an augmented batch: the network's layers compute in
    the process's CPU arithmetic; the loss is finite and the parameters (the checkpoint's) stay float32 and move."""
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # the loader in this process, no workers
    monkeypatch.setenv(PRECISION_VARIABLE, setting)
    trainer = _built(work, "nnUNetTrainerTsrTiny")
    trainer.initialize()
    dtypes: list[torch.dtype] = []
    trainer.network.encoder.stages[0].register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    training, _ = trainer.get_dataloaders()
    before = [p.detach().clone() for p in trainer.network.parameters()]
    loss = trainer.train_step(next(training))["loss"]
    assert np.isfinite(loss) and dtypes == [computed]
    after = list(trainer.network.parameters())
    assert all(p.dtype == torch.float32 for p in after)
    assert any(not torch.equal(old, new) for old, new in zip(before, after, strict=True))


def test_a_fold_validates_in_a_process_where_totalsegmentator_patched_nnunet(work: Path) -> None:
    """``tsretrain run`` pseudo-labels and trains in one process: TotalSegmentator's import replaces nnU-Net's export
    function, and the fold's validation (an export pool of spawned processes) still exports with nnU-Net's."""
    import nnunetv2.inference.export_prediction as export_module
    import totalsegmentator.nnunet  # noqa: F401 (its import patches nnU-Net, as the pseudo-label stage's does)

    patched = export_module.export_prediction_from_logits
    assert patched.__module__.startswith("totalsegmentator")
    config = TrainConfig(work=work, fold=0, epochs=1, iterations=1, model=TINY, device="cpu")
    train(config)
    assert (config.fold_folder() / "validation" / "summary.json").is_file()
    assert export_module.export_prediction_from_logits is patched  # TotalSegmentator's again after the validation


def test_a_validation_killed_midway_is_redone_on_a_rerun(work: Path) -> None:
    """A trained fold whose validation folder lacks nnU-Net's summary.json (the validation died midway) is
    validated again, not taken as finished."""
    config = TrainConfig(work=work, fold=0, epochs=1, iterations=1, model=TINY, device="cpu", validate=False)
    train(config)
    (config.fold_folder() / "validation").mkdir()
    again = train(replace(config, validate=True))
    assert again.counts["resumed_from_epoch"] != -1  # not skipped as finished
    assert (config.fold_folder() / "validation" / "summary.json").is_file()


@pytest.mark.slow
def test_tta_mirrors_only_the_models_of_mirroring_trainers(
    work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """nnU-Net mirrors a prediction along the axes its checkpoint allows. One trained fold, saved a second time as
    nnU-Net's stock trainer would have saved it (axes 0, 1, 2): with ``--tta`` that model takes 8 network passes
    per window; the tsretrain model takes one and predicts exactly what the stock model predicts without TTA."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    model = replace(TINY, folds=(0,))
    train(TrainConfig(work=work, fold=0, epochs=1, iterations=1, validate=False, model=model, device="cpu"))
    for extra in sorted((work / "nnUNet_raw" / model.dataset / "imagesTs").iterdir())[1:]:
        extra.unlink()  # one test case is enough to count network passes
    stock = replace(model, trainer="nnUNetTrainer")
    ours_folder = TrainConfig(work=work, fold=0, model=model).fold_folder().parent
    stock_folder = TrainConfig(work=work, fold=0, model=stock).fold_folder().parent
    shutil.copytree(ours_folder, stock_folder)
    checkpoint = torch.load(stock_folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    checkpoint["trainer_name"] = "nnUNetTrainer"
    checkpoint["inference_allowed_mirroring_axes"] = _built(
        work, "nnUNetTrainer"
    ).configure_rotation_dummyDA_mirroring_and_inital_patch_size()[3]
    torch.save(checkpoint, stock_folder / "fold_0" / "checkpoint_final.pth")

    passes: list[int] = []
    initialize = nnUNetPredictor.initialize_from_trained_model_folder

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        initialize(self, *args, **kwargs)
        self.network.register_forward_hook(lambda *_: passes.append(1))

    monkeypatch.setattr(nnUNetPredictor, "initialize_from_trained_model_folder", counting)

    def network_passes(of: Any, tta: bool, out: str) -> int:
        passes.clear()
        predict(PredictConfig(work=work, out=tmp_path / out, model=of, tta=tta, device="cpu"))
        return len(passes)

    ran = spy_predictors(monkeypatch)
    monkeypatch.setattr(predict_module, "cpu_quota", lambda: 1)  # all in this process
    plain = network_passes(stock, False, "stock")
    assert plain > 0
    assert network_passes(stock, True, "stock-tta") == 8 * plain
    assert "trained without mirroring" not in caplog.text
    assert network_passes(model, True, "ours-tta") == plain
    assert "nnUNetTrainerTsrTiny was trained without mirroring" in caplog.text
    predicted = sorted((tmp_path / "stock" / "test").glob("*.nii.gz"))
    assert predicted
    for path in predicted:
        ours = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ours-tta" / "test" / path.name)))
        np.testing.assert_array_equal(ours, sitk.GetArrayFromImage(sitk.ReadImage(str(path))))
    assert ran == ["predict_from_files_sequential"] * 3
    # with two CPUs (a GPU pod's path): nnU-Net's preprocessing and export processes, the same prediction
    monkeypatch.setattr(predict_module, "cpu_quota", lambda: 2)
    assert network_passes(stock, False, "stock-two-cpus") == plain
    assert ran[3:] == ["predict_from_files"]
    for path in predicted:
        two = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "stock-two-cpus" / "test" / path.name)))
        np.testing.assert_array_equal(two, sitk.GetArrayFromImage(sitk.ReadImage(str(path))))
