"""Losses of the GTVp-focused trainers and the CPU quota that sizes the data-augmentation workers."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pytest
import torch
from torch.nn import functional

from tsretrain.layout import NNUNET_FOLDERS
from tsretrain.resources import cpu_quota, memory_limit_bytes
from tsretrain.training import nnunet_env
from tsretrain.training.nnunet_trainers.tsretrain_trainers import FocalCrossEntropy, WeightedCrossEntropy, class_weights


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
