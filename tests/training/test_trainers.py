"""Losses of the GTVp-focused trainers and the CPU quota that sizes the data-augmentation workers."""

from __future__ import annotations

import functools
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from torch.nn import functional

from tsretrain.layout import NNUNET_FOLDERS
from tsretrain.resources import cpu_quota, memory_limit_bytes
from tsretrain.training import nnunet_env
from tsretrain.training.nnunet_trainers.tsretrain_trainers import (
    FocalCrossEntropy,
    WeightedCrossEntropy,
    class_weights,
    nnUNetTrainerTsr,
    nnUNetTrainerTsrGTVpFocal,
    nnUNetTrainerTsrGTVpWeighted,
    nnUNetTrainerTsrTiny,
)


def test_class_weights_up_weight_gtvp() -> None:
    weights = class_weights({"labels": {"background": 0, "GTVp": 1, "Brainstem": 2}}, torch.device("cpu"), 5.0)
    assert weights.tolist() == [1.0, 5.0, 1.0]


def test_focal_loss_with_gamma_zero_is_weighted_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, 4)
    target = torch.randint(0, 3, (2, 1, 4, 4, 4)).float()
    weight = torch.tensor([1.0, 5.0, 1.0])
    expected = functional.cross_entropy(logits, target[:, 0].long(), weight=weight)
    assert FocalCrossEntropy(weight, 0.0)(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)
    assert WeightedCrossEntropy(weight=weight)(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)


def test_cpu_quota_from_the_cgroup(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpu_quota(tmp_path) == min(2, cpu_quota(tmp_path / "none"))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(tmp_path) >= 1
    (tmp_path / "memory.max").write_text(str(2**30))
    assert memory_limit_bytes(tmp_path) == 2**30


@pytest.mark.parametrize(
    ("cpu_max", "device", "workers", "threads"),
    [
        ("400000 100000", "cuda", 3, 4),
        ("150000 100000", "cuda", 2, 2),
        ("50000 100000", "cuda", 1, 1),
        ("max 100000", "cuda", 15, 16),
        ("400000 100000", "cpu", 3, 4),
        ("100000 100000", "cpu", 0, 1),
    ],
)
def test_augmentation_workers_come_from_the_cpu_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_max: str, device: str, workers: int, threads: int
) -> None:
    """On a 16-CPU host, a container's ``cpu.max`` sets nnU-Net's worker counts (one CPU left to the training
    process above two; none beside a training on a single CPU); without a quota the host's CPUs count; a value
    set by the user is kept."""
    from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr(os, "cpu_count", lambda: 16)  # nnU-Net caps its worker count at it
    (tmp_path / "cpu.max").write_text(f"{cpu_max}\n")
    monkeypatch.setattr(nnunet_env, "cpu_quota", functools.partial(cpu_quota, tmp_path))
    for name in ("nnUNet_n_proc_DA", "nnUNet_def_n_proc", "OMP_WAIT_POLICY", *NNUNET_FOLDERS.values()):
        monkeypatch.setenv(name, "")  # restored (or removed) after the test, whatever activate() sets
        monkeypatch.delenv(name)
    nnunet_env.NnunetFolders(tmp_path / "work").activate()
    assert os.environ["nnUNet_def_n_proc"] == str(threads)  # noqa: SIM112 (nnU-Net's name)
    with nnunet_env.augmentation_processes(device) as count:
        assert count == str(get_allowed_n_proc_DA()) == str(workers)
    assert "nnUNet_n_proc_DA" not in os.environ  # for the training only: the planner of a later stage needs >= 1
    monkeypatch.setenv("nnUNet_n_proc_DA", "7")
    with nnunet_env.augmentation_processes(device) as count:
        assert count == str(get_allowed_n_proc_DA()) == "7"
    assert os.environ["nnUNet_n_proc_DA"] == "7"  # noqa: SIM112 (nnU-Net's name)


def test_processes_are_spawned_only_for_more_work_than_their_start() -> None:
    """A spawned worker imports torch and nnU-Net (about 3 CPU s) before it works: worth it for a RADCURE-sized
    evaluation, not for a demo's few phantoms."""
    assert nnunet_env.worth_spawning(2, 2 * nnunet_env.SPAWN_CPU_SECONDS + 1) == 2
    assert nnunet_env.worth_spawning(8, 8 * nnunet_env.SPAWN_CPU_SECONDS) == 1  # each only as long as its start
    assert nnunet_env.worth_spawning(2, 0.5) == 1
    assert nnunet_env.worth_spawning(1, 1000.0) == 1


def test_export_processes_fit_the_largest_cases_logits_in_the_memory_limit() -> None:
    """At RADCURE's size (512 x 512 x 181) in a 48 GiB pod with 12 CPUs: three export processes for 22 labels (about
    11.7 GB each, the float64 resampling), one for 91 (where a process per CPU, nnU-Net's default, needs 580 GB)."""
    radcure = 512 * 512 * 181
    assert nnunet_env.export_processes(22, radcure, 48 * 2**30, 12) == 3
    assert nnunet_env.export_processes(91, radcure, 48 * 2**30, 12) == 1  # never none: the largest case needs one
    assert nnunet_env.export_processes(3, 40 * 128 * 128, 16 * 2**30, 2) == 2  # small cases: one per CPU


def test_the_validation_export_pool_is_sized_before_the_fold_is_validated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nnunetv2.configuration
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module

    (tmp_path / "dataset_fingerprint.json").write_text('{"shapes_after_crop": [[181, 512, 512], [90, 512, 512]]}')
    labels = {"background": 0, **{f"organ{n}": n for n in range(1, 22)}}
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels}))
    assert nnunet_env.largest_case(tmp_path) == (22, 181 * 512 * 512)
    monkeypatch.setattr(nnunet_env, "memory_limit_bytes", lambda: 48 * 2**30)
    monkeypatch.setattr(nnunet_env, "cpu_quota", lambda: 12)
    for module in (nnunetv2.configuration, trainer_module):
        monkeypatch.setattr(module, "default_num_processes", 12)
    monkeypatch.setenv("nnUNet_def_n_proc", "12")
    assert nnunet_env.size_export_pool(tmp_path) == 3
    assert trainer_module.default_num_processes == nnunetv2.configuration.default_num_processes == 3
    assert os.environ[nnunet_env.DEFAULT_PROCESSES] == "3"
    monkeypatch.setenv("nnUNet_def_n_proc", "2")  # a user's smaller pool is kept
    assert nnunet_env.size_export_pool(tmp_path) == 2


# The GTVp trainers, built the way nnU-Net builds them, train with a loss that weights GTVp; the focal term.


# The least of nnU-Net plans that constructs a trainer and its loss: three stages, so two supervised outputs.
PLANS = {
    "dataset_name": "Dataset366_TotalSegmentator",
    "plans_name": "nnUNetPlans",
    "configurations": {
        "3d_fullres": {
            "batch_dice": True,
            "architecture": {
                "network_class_name": "PlainConvUNet",
                "arch_kwargs": {"strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]]},
                "_kw_requires_import": [],
            },
        }
    },
}
DATASET = {"labels": {"background": 0, "GTVp": 1, "Brainstem": 2}, "channel_names": {"0": "CT"}}


def _from_plans_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nnU-Net's folders for a trainer built from :data:`PLANS`: results in ``tmp_path``, no preprocessed dataset
    (whatever folders an earlier test of this process activated)."""
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)


def _loss(trainer_class: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    _from_plans_alone(tmp_path, monkeypatch)
    plans = {**PLANS, "continue_training": False}
    trainer = trainer_class(plans, "3d_fullres", 0, DATASET, device=torch.device("cpu"))
    return trainer._build_loss(), len(trainer._get_deep_supervision_scales())


def _missed(label: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and target (b, 1, z, y, x): GTVp (1) fills the left half, Brainstem (2) the right half of the
    middle slices; the prediction is confidently right everywhere except on ``label``, called background."""
    target = torch.zeros(2, 1, 4, 8, 8)
    target[:, 0, 1:3, :, :4] = 1
    target[:, 0, 1:3, :, 4:] = 2
    predicted = target[:, 0].long().clone()
    predicted[predicted == label] = 0
    logits = 6.0 * torch.nn.functional.one_hot(predicted, 3).permute(0, 4, 1, 2, 3).float()
    return logits, target


def _losses(trainer_class: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[float, float]:
    """The trainer's loss when GTVp is missed and when Brainstem (the same number of voxels) is missed."""
    loss, outputs = _loss(trainer_class, tmp_path, monkeypatch)
    values = []
    for label in (1, 2):
        logits, target = _missed(label)
        values.append(float(loss([logits] * outputs, [target] * outputs)))
    return values[0], values[1]


def test_the_stock_loss_treats_the_two_structures_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gtvp, brainstem = _losses(nnUNetTrainerTsr, tmp_path, monkeypatch)
    assert gtvp == pytest.approx(brainstem, rel=1e-5)


@pytest.mark.parametrize("trainer_class", [nnUNetTrainerTsrGTVpWeighted, nnUNetTrainerTsrGTVpFocal])
def test_the_gtvp_trainers_punish_a_missed_gtvp_more(
    trainer_class: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gtvp, brainstem = _losses(trainer_class, tmp_path, monkeypatch)
    assert gtvp > 1.5 * brainstem
    monkeypatch.setenv("TSRETRAIN_GTVP_WEIGHT", "1")
    gtvp, brainstem = _losses(trainer_class, tmp_path, monkeypatch)
    assert gtvp == pytest.approx(brainstem, rel=1e-5)


def test_focal_loss_value_by_hand() -> None:
    """sum_v w(t_v) (1 - p_t)^gamma (-log p_t) / sum_v w(t_v), computed voxel by voxel."""
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 2, 3, 2)
    target = torch.randint(0, 3, (1, 1, 2, 3, 2)).float()
    weight = [1.0, 5.0, 2.0]
    p = torch.softmax(logits, dim=1)[0].numpy()
    t = target[0, 0].long().numpy()
    for gamma in (0.0, 1.0, 2.5):
        num = den = 0.0
        for index in np.ndindex(t.shape):
            pt = float(p[(t[index], *index)])
            num += weight[t[index]] * (1 - pt) ** gamma * -math.log(pt)
            den += weight[t[index]]
        focal = FocalCrossEntropy(torch.tensor(weight), gamma)
        assert float(focal(logits, target)) == pytest.approx(num / den, rel=1e-5)
        assert float(focal(logits, target[:, 0])) == pytest.approx(num / den, rel=1e-5)  # targets without channel


SETTINGS = (
    "TSRETRAIN_SAVE_EVERY",
    "TSRETRAIN_LR",
    "TSRETRAIN_EPOCHS",
    "TSRETRAIN_ITERATIONS",
    "TSRETRAIN_GTVP_WEIGHT",
    "TSRETRAIN_WARMUP_EPOCHS",
)


def _built(trainer_class: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: str) -> Any:
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    _from_plans_alone(tmp_path, monkeypatch)
    return trainer_class({**PLANS, "continue_training": False}, "3d_fullres", 0, DATASET, device=torch.device("cpu"))


def test_trainer_settings_default_to_nnunets_and_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stock = _built(nnUNetTrainerTsr, tmp_path, monkeypatch)
    assert (stock.save_every, stock.initial_lr, stock.num_epochs) == (5, 1e-2, 1000)  # nnU-Net's lr and epochs
    assert (stock.fold, stock.device.type) == (0, "cpu") and stock.output_folder.endswith("fold_0")
    assert stock.num_iterations_per_epoch == 250
    set_ = _built(
        nnUNetTrainerTsr, tmp_path, monkeypatch, TSRETRAIN_SAVE_EVERY="3", TSRETRAIN_LR="0.02", TSRETRAIN_EPOCHS="7"
    )
    assert (set_.save_every, set_.initial_lr, set_.num_epochs) == (3, 0.02, 7)
    tiny = _built(nnUNetTrainerTsrTiny, tmp_path, monkeypatch)
    assert (tiny.save_every, tiny.initial_lr, tiny.num_epochs) == (1, nnUNetTrainerTsrTiny.TINY_LR, 3)
    assert (tiny.num_iterations_per_epoch, tiny.num_val_iterations_per_epoch) == (4, 1)
    tiny = _built(
        nnUNetTrainerTsrTiny,
        tmp_path,
        monkeypatch,
        TSRETRAIN_ITERATIONS="10",
        TSRETRAIN_EPOCHS="9",
        TSRETRAIN_SAVE_EVERY="2",
        TSRETRAIN_LR="0.004",
    )
    assert (tiny.num_iterations_per_epoch, tiny.num_val_iterations_per_epoch) == (10, 2)  # a fifth, at least one
    assert isinstance(tiny.num_val_iterations_per_epoch, int)  # nnU-Net counts iterations with range()
    assert (tiny.fold, tiny.device.type) == (0, "cpu") and tiny.output_folder.endswith("fold_0")
    assert (tiny.num_epochs, tiny.save_every, tiny.initial_lr) == (9, 2, 0.004)


def test_the_tiny_trainer_uses_nnunets_adamw_with_its_polynomial_schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = _built(nnUNetTrainerTsrTiny, tmp_path, monkeypatch, TSRETRAIN_EPOCHS="10")
    tiny.network = torch.nn.Linear(3, 2)
    optimizer, schedule = tiny.configure_optimizers()
    assert type(optimizer) is torch.optim.AdamW
    (group,) = optimizer.param_groups
    assert (group["lr"], group["weight_decay"], group["amsgrad"]) == (1e-2, tiny.weight_decay, True)
    assert group["params"] == list(tiny.network.parameters())
    assert type(schedule) is PolyLRScheduler
    schedule.step(5)  # halfway: nnU-Net's (1 - 5/10) ** 0.9
    assert group["lr"] == pytest.approx(1e-2 * 0.5**0.9)


def test_the_tiny_trainer_draws_progress_with_its_checkpoints_and_after_the_last_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nnunetv2.training.logging.nnunet_logger import LocalLogger

    drawings: list[str] = []
    monkeypatch.setattr(LocalLogger, "plot_progress_png", lambda _, folder: drawings.append(folder))

    def drawn_after(trainer: Any) -> list[int]:
        """The epochs after which the trainer's end of epoch draws the progress figure."""
        epochs = []
        for epoch in range(trainer.num_epochs):
            trainer.current_epoch, before = epoch, len(drawings)
            trainer.logger.plot_progress_png(trainer.output_folder)  # as nnU-Net's on_epoch_end calls it
            if len(drawings) > before:
                assert drawings[-1] == trainer.output_folder  # into the fold's folder
                epochs.append(epoch)
        return epochs

    settings = {"TSRETRAIN_EPOCHS": "8", "TSRETRAIN_SAVE_EVERY": "3"}
    # nnU-Net writes checkpoint_latest after epochs 2 and 5, checkpoint_final after 7
    assert drawn_after(_built(nnUNetTrainerTsrTiny, tmp_path, monkeypatch, **settings)) == [2, 5, 7]
    assert drawn_after(_built(nnUNetTrainerTsr, tmp_path, monkeypatch, **settings)) == list(range(8))  # as nnU-Net


def test_a_checkpoint_is_written_aside_shown_to_the_hook_and_then_renamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = _built(nnUNetTrainerTsr, tmp_path, monkeypatch)
    trainer.network = torch.nn.Linear(3, 2)
    trainer.optimizer, _ = trainer.configure_optimizers()
    (tmp_path / "fold_0").mkdir()
    final = tmp_path / "fold_0" / "checkpoint_latest.pth"
    seen: list[tuple[str, bool, bool]] = []

    def hook(written: str, name: str) -> None:
        seen.append((Path(written).name, Path(written).is_file(), Path(name).exists()))

    monkeypatch.setattr(nnUNetTrainerTsr, "checkpoint_hook", hook)
    trainer.save_checkpoint(str(final))
    assert seen == [(f"checkpoint_latest.pth.{os.getpid()}.tmp", True, False)]  # stored before it is final here
    assert final.is_file() and sorted(p.name for p in final.parent.iterdir()) == ["checkpoint_latest.pth"]
    saved = torch.load(final, map_location="cpu", weights_only=False)
    assert saved["trainer_name"] == "nnUNetTrainerTsr" and set(saved["network_weights"]) == {"weight", "bias"}

    before = final.read_bytes()

    def interrupted(checkpoint: Any, filename: str) -> None:
        Path(filename).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint(str(final))
    assert final.read_bytes() == before  # the last good checkpoint stays
    monkeypatch.setattr(nnUNetTrainerTsr, "checkpoint_hook", None)
    monkeypatch.setattr(torch, "save", lambda *_: None)  # nnU-Net wrote nothing (checkpointing disabled)
    trainer.save_checkpoint(str(final.parent / "other.pth"))
    assert sorted(p.name for p in final.parent.iterdir()) == ["checkpoint_latest.pth"]


def test_the_gtvp_weight_and_focal_gamma_default_to_5_and_2_and_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weighted = _built(nnUNetTrainerTsrGTVpWeighted, tmp_path, monkeypatch)._build_loss().loss.ce
    assert isinstance(weighted, WeightedCrossEntropy) and weighted.weight.tolist() == [1.0, 5.0, 1.0]
    focal = _built(nnUNetTrainerTsrGTVpFocal, tmp_path, monkeypatch)._build_loss().loss.ce
    assert isinstance(focal, FocalCrossEntropy) and (focal.weight.tolist(), focal.gamma) == ([1.0, 5.0, 1.0], 2.0)
    settings = {"TSRETRAIN_GTVP_WEIGHT": "3", "TSRETRAIN_FOCAL_GAMMA": "0.5"}
    focal = _built(nnUNetTrainerTsrGTVpFocal, tmp_path, monkeypatch, **settings)._build_loss().loss.ce
    assert (focal.weight.tolist(), focal.gamma) == ([1.0, 3.0, 1.0], 0.5)


@pytest.mark.parametrize("trainer_class", [nnUNetTrainerTsrGTVpWeighted, nnUNetTrainerTsrGTVpFocal])
def test_the_loss_is_replaced_without_deep_supervision_too(
    trainer_class: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = _built(trainer_class, tmp_path, monkeypatch)
    trainer.enable_deep_supervision = False
    loss = trainer._build_loss()
    assert isinstance(loss.ce, WeightedCrossEntropy | FocalCrossEntropy)
    logits, target = _missed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no implicit-dimension or other warnings in a training log
        missed_gtvp = float(loss(logits, target))
    logits, target = _missed(2)
    assert missed_gtvp > 1.5 * float(loss(logits, target))
