"""The GTVp trainers, built the way nnU-Net builds them, train with a loss that weights GTVp; the focal term."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tsretrain.training.nnunet_trainers.tsretrain_trainers import (
    FocalCrossEntropy,
    nnUNetTrainerTsr,
    nnUNetTrainerTsrGTVpFocal,
    nnUNetTrainerTsrGTVpWeighted,
)

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


def _loss(trainer_class: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
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
