"""Fine-tuning from a pretrained model as nnU-Net documents it: plans transferred, every layer but the head loaded,
a warm-up, a resumed fine-tune from its own checkpoint, a mismatch refused in one line.

The pretrained model is TotalSegmentator's 6 mm ``total`` model in its own layout (the STAND-IN weights): 117
classes starting a 21-label model of another cohort."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from test_nnunet import TINY
from test_train import _built

from tsretrain.delivery.package import DICTIONARY_FILE, MODEL_JSON
from tsretrain.errors import UserError
from tsretrain.labels.dictionary import dictionary_text
from tsretrain.model import Model
from tsretrain.training import train as train_module
from tsretrain.training.nnunet_trainers.tsretrain_trainers import WARMUP_START, WarmupPolyLR
from tsretrain.training.preprocess import TRANSFERRED, PreprocessConfig, preprocess
from tsretrain.training.pretrained import HEAD, first_mismatch, open_pretrained, transferred_plans
from tsretrain.training.train import TrainConfig, train

CROP_MODEL = (
    "Dataset298_TotalSegmentator_total_6mm_1559subj/nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres"
)
FINE = Model(configuration="3d_fullres", trainer="nnUNetTrainerTsrTiny", plans=TRANSFERRED, folds=(0,))


def _source(standins: Path) -> Path:
    return standins / "nnunet" / "results" / CROP_MODEL


def _weights(path: Path) -> dict[str, torch.Tensor]:
    weights: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=False)["network_weights"]
    return weights


@pytest.fixture
def transferred(work: Path, prepared: Path, standins: Path) -> Path:
    """The prepared dataset preprocessed with the pretrained model's plans."""
    preprocess(
        PreprocessConfig(work=work, split=prepared / "split", model=FINE, plans_from=str(_source(standins)), workers=1)
    )
    return work


def test_plans_move_from_the_pretrained_model(transferred: Path, standins: Path) -> None:
    source = json.loads((_source(standins) / "plans.json").read_text())
    target = transferred / "nnUNet_preprocessed" / "Dataset366_TotalSegmentator"
    plans = json.loads((target / f"{TRANSFERRED}.json").read_text())
    ours = json.loads((target / "nnUNetPlans.json").read_text())  # nnU-Net's planner on this dataset
    configuration, theirs = plans["configurations"]["3d_fullres"], source["configurations"]["3d_fullres"]
    for key in ("spacing", "patch_size", "architecture", "normalization_schemes"):
        assert configuration[key] == theirs[key], key
    assert configuration["spacing"] == [6.0, 6.0, 6.0] != ours["configurations"]["3d_fullres"]["spacing"]
    assert plans["foreground_intensity_properties_per_channel"] == source["foreground_intensity_properties_per_channel"]
    assert plans["dataset_name"] == "Dataset366_TotalSegmentator" and plans["plans_name"] == TRANSFERRED
    assert configuration["data_identifier"] == f"{TRANSFERRED}_3d_fullres"
    for key in ("original_median_spacing_after_transp", "original_median_shape_after_transp", "image_reader_writer"):
        assert plans[key] == ours[key], key  # the target's own fingerprint
    summary = json.loads((target / "planning_summary.json").read_text())
    assert summary["plans_identifier"] == TRANSFERRED
    assert list((target / f"{TRANSFERRED}_3d_fullres").glob("*.pkl"))  # preprocessed at the transferred spacing


def test_fine_tuning_loads_all_but_the_head_and_a_resume_continues_its_own(
    transferred: Path, standins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TSRETRAIN_LR", "1e-9")  # the weights stay where they started
    config = TrainConfig(
        work=transferred,
        fold=0,
        epochs=1,
        iterations=1,
        validate=False,
        init_from=str(_source(standins)),
        model=FINE,
        device="cpu",
    )
    train(config)
    pretrained = _weights(_source(standins) / "fold_0" / "checkpoint_final.pth")
    tuned = _weights(config.fold_folder() / "checkpoint_final.pth")
    body = [k for k in pretrained if HEAD not in k and pretrained[k].is_floating_point()]
    assert len(body) > 10
    for key in body:
        torch.testing.assert_close(tuned[key], pretrained[key], atol=1e-6, rtol=0)
    head = next(k for k in tuned if k.endswith("seg_layers.0.weight"))
    labels = json.loads((transferred / "nnUNet_raw" / "Dataset366_TotalSegmentator" / "dataset.json").read_text())
    assert tuned[head].shape[0] == len(labels["labels"]) == 22 and pretrained[head].shape[0] == 118  # 21 vs 117

    def never(*_: object) -> None:
        raise AssertionError("a resumed fine-tune reloaded the pretrained weights")

    monkeypatch.setattr(train_module, "open_pretrained", never)
    (config.fold_folder() / "checkpoint_final.pth").rename(config.fold_folder() / "checkpoint_latest.pth")
    result = train(TrainConfig(**{**config.__dict__, "epochs": 2}))
    assert result.counts["resumed_from_epoch"] == 1


def test_other_plans_are_refused_naming_the_first_layer(work: Path, standins: Path) -> None:
    config = TrainConfig(work=work, fold=0, epochs=1, iterations=1, validate=False, init_from=str(_source(standins)),
                         model=TINY, device="cpu")  # fmt: skip
    with pytest.raises(UserError, match=r"the networks differ: encoder\.stages\.0\..* there, .* here") as caught:
        train(config)
    assert "--plans-from" in caught.value.advice and "\n" not in str(caught.value)
    assert not (config.fold_folder() / "checkpoint_latest.pth").exists()


def test_a_drawn_model_folder_starts_the_network(work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights drawn here, saved as a model folder, are the network's after a step of learning rate 1e-9 (the heads
    excepted: nnU-Net never transfers them)."""
    built = _built(work, "nnUNetTrainerTsrTiny")
    built.initialize()
    generator = torch.Generator().manual_seed(5)
    by_storage: dict[int, torch.Tensor] = {}  # the decoder lists the encoder's tensors again, under its own keys
    drawn = {}
    for key, value in built.network.state_dict().items():
        drawn[key] = by_storage.setdefault(value.data_ptr(), torch.randn(value.shape, generator=generator) * 0.05)
    folder = tmp_path / "pretrained" / "Dataset001_Drawn" / "nnUNetTrainerTsrTiny__nnUNetPlans__3d_tiny"
    (folder / "fold_0").mkdir(parents=True)
    shutil.copyfile(
        work / "nnUNet_preprocessed" / "Dataset366_TotalSegmentator" / "nnUNetPlans.json", folder / "plans.json"
    )
    torch.save({"network_weights": drawn}, folder / "fold_0" / "checkpoint_final.pth")
    assert first_mismatch(built.network.state_dict(), drawn) is None

    monkeypatch.setenv("TSRETRAIN_LR", "1e-9")
    config = TrainConfig(work=work, fold=0, epochs=1, iterations=1, validate=False, init_from=str(folder.parent),
                         model=TINY, device="cpu", warmup_epochs=0)  # fmt: skip
    train(config)
    final = _weights(config.fold_folder() / "checkpoint_final.pth")
    transferred = [k for k in drawn if HEAD not in k and drawn[k].is_floating_point()]
    assert len(transferred) > 10
    for key in transferred:
        torch.testing.assert_close(final[key], drawn[key], atol=1e-6, rtol=0)


def test_plans_from_a_package_name_the_package_not_where_it_was_unpacked(tmp_path: Path) -> None:
    """A package (a store URI on a cluster) is unpacked into scratch, a pod's local disk: the transferred plans (and
    through them the model card) name the package as given."""
    model = "Dataset001_Pre/nnUNetTrainerTsrTiny__nnUNetPlans__3d_tiny"
    package = tmp_path / "store" / "export" / "Dataset001_Pre-3d_tiny-1.0.0.zip"
    package.parent.mkdir(parents=True)
    card = {"id": "Dataset001_Pre-3d_tiny", "version": "1.0.0", "trainer": "nnUNetTrainerTsrTiny"}
    card |= {"plans": "nnUNetPlans", "configuration": "3d_tiny"}
    plans = {
        "plans_name": "nnUNetPlans",
        "configurations": {"3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres"}},
    }
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr(f"Dataset001_Pre/{MODEL_JSON}", json.dumps(card))
        archive.writestr(f"Dataset001_Pre/{DICTIONARY_FILE}", dictionary_text("radcure-oar21"))
        archive.writestr(f"{model}/plans.json", json.dumps(plans))
        archive.writestr(f"{model}/fold_0/checkpoint_final.pth", b"")
    target: dict[str, Any] = {"dataset_name": "Dataset366_TotalSegmentator", "image_reader_writer": "SimpleITKIO"}
    target |= {"original_median_spacing_after_transp": [5, 3, 3], "original_median_shape_after_transp": [24, 64, 64]}
    for given in (f"file://{package}", str(package)):
        scratch = tmp_path / "scratch" / str(len(given))
        pretrained = open_pretrained(given, scratch)
        assert pretrained.folder.is_relative_to(scratch) and pretrained.source == given
        moved = transferred_plans(pretrained, target, TRANSFERRED)
        assert moved["tsretrain_transferred_from"] == given
        assert moved["configurations"]["3d_fullres"]["data_identifier"] == f"{TRANSFERRED}_3d_fullres"
    folder = open_pretrained(str(scratch / "model" / model), tmp_path / "unused")  # a model folder: itself
    assert folder.source == str(scratch / "model" / model)


def test_the_warm_up_rises_from_a_tenth_then_decays_as_nnunet() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = WarmupPolyLR(optimizer, 0.01, 10, 2, WARMUP_START)
    rates = []
    for epoch in range(10):
        schedule.step(epoch)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[0] == pytest.approx(0.001) and rates[1] == pytest.approx(0.0055)
    assert rates[2] == pytest.approx(0.01 * (1 - 2 / 10) ** 0.9)  # nnU-Net's polynomial from there on
    assert rates[3] < rates[2]
