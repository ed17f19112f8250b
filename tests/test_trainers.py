"""Losses of the GTVp-focused trainers and the CPU quota that sizes the data-augmentation workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional

from tsretrain.resources import cpu_quota, memory_limit_bytes
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
