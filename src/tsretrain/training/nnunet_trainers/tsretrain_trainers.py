"""nnU-Net trainers shipped by tsretrain.

All of them train with mirroring off (left/right organs must not be swapped), write a checkpoint every
``TSRETRAIN_SAVE_EVERY`` epochs (default 5) atomically, and take their epoch count from ``TSRETRAIN_EPOCHS``
and their initial learning rate from ``TSRETRAIN_LR`` when set. They are found by ``tsretrain train`` and
``tsretrain predict`` directly and by plain ``nnUNetv2_train`` through ``nnUNet_extTrainer``
(``tsretrain nnunet-env`` prints the setting).

- ``nnUNetTrainerTsr``: the default.
On a CPU with native bfloat16 the network's forward runs under bfloat16 autocast (``TSRETRAIN_CPU_PRECISION``,
:mod:`tsretrain.training.precision`); on CUDA nnU-Net's float16 autocast, as nnU-Net's own trainer.

- ``nnUNetTrainerTsrTiny``: a few iterations per epoch and AdamW, for the demo and CI on a CPU.
- ``nnUNetTrainerTsrGTVpWeighted``: cross-entropy with GTVp weighted ``TSRETRAIN_GTVP_WEIGHT`` (default 5).
- ``nnUNetTrainerTsrGTVpFocal``: Dice + focal loss (gamma ``TSRETRAIN_FOCAL_GAMMA``, default 2), GTVp up-weighted.
- ``nnUNetTrainerTsrTinyGTVpWeighted``, ``nnUNetTrainerTsrTinyGTVpFocal``: the tiny trainer with those losses.

The tumour-focused losses are mixins (``GTVpWeightedLoss``, ``GTVpFocalLoss``), so that every trainer has its
tumour-focused variants: ``<trainer>GTVpWeighted`` and ``<trainer>GTVpFocal`` (the second stage's naming).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring import (
    nnUNetTrainerNoMirroring,
)
from torch import nn
from torch.nn import functional

from tsretrain.labels.dictionary import TUMOUR_LABEL
from tsretrain.training import precision

CheckpointHook = Callable[[str, str], None]  # (written file, final name)
CUDA = torch.device("cuda")  # nnU-Net's default device


class WarmupPolyLR(PolyLRScheduler):  # type: ignore[misc]
    """nnU-Net's polynomial decay after a linear warm-up over ``warmup`` epochs from ``start`` times the initial
    rate: when fine-tuning, the new segmentation head's first large gradients do not throw the pretrained layers
    off."""

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, max_steps: int, warmup: int, start: float):
        self.warmup, self.start = warmup, start
        super().__init__(optimizer, initial_lr, max_steps)

    def step(self, current_step: int | None = None) -> None:
        step = self.ctr if current_step is None or current_step == -1 else current_step
        if step >= self.warmup:
            super().step(current_step)
            return
        if current_step is None or current_step == -1:
            self.ctr += 1
        for group in self.optimizer.param_groups:
            group["lr"] = self.initial_lr * (self.start + (1 - self.start) * step / self.warmup)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


WARMUP_START = 0.1  # the warm-up starts at a tenth of the initial learning rate


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


class nnUNetTrainerTsr(nnUNetTrainerNoMirroring):  # type: ignore[misc]
    """Mirroring off, atomic checkpoints every N epochs, an optional hook after each checkpoint."""

    checkpoint_hook: CheckpointHook | None = None

    def __init__(
        self,
        plans: dict[str, Any],
        configuration: str,
        fold: int,
        dataset_json: dict[str, Any],
        device: torch.device = CUDA,
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.save_every = _env_int("TSRETRAIN_SAVE_EVERY", 5)
        if "TSRETRAIN_LR" in os.environ:
            self.initial_lr = float(os.environ["TSRETRAIN_LR"])
        if "TSRETRAIN_EPOCHS" in os.environ:
            self.num_epochs: int = _env_int("TSRETRAIN_EPOCHS", 1000)

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written to a temporary file and renamed (a kill never leaves half a file).

        The hook (the store mirror) runs before the rename, so a stored copy is never older than the local one.
        """
        tmp = f"{filename}.{os.getpid()}.tmp"
        try:
            super().save_checkpoint(tmp)
            if os.path.isfile(tmp):
                if type(self).checkpoint_hook is not None:
                    type(self).checkpoint_hook(tmp, filename)  # type: ignore[misc]
                os.replace(tmp, filename)
        finally:
            if os.path.exists(tmp):  # a failed save (disk full, a failed upload) leaves no part behind
                os.remove(tmp)

    def schedule(self, optimizer: torch.optim.Optimizer) -> PolyLRScheduler:
        """The learning-rate schedule: nnU-Net's, after a warm-up of ``TSRETRAIN_WARMUP_EPOCHS`` epochs (``auto``:
        a tenth of the epochs, at least one; unset or 0: none)."""
        setting = os.environ.get("TSRETRAIN_WARMUP_EPOCHS", "0")
        warmup = max(1, self.num_epochs // 10) if setting == "auto" else int(setting)
        if warmup <= 0:
            return PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)
        return WarmupPolyLR(optimizer, self.initial_lr, self.num_epochs, warmup, WARMUP_START)

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, PolyLRScheduler]:
        optimizer, _ = super().configure_optimizers()
        return optimizer, self.schedule(optimizer)

    def initialize(self) -> None:
        """nnU-Net's, then on a CPU the network's forward in the process's precision (``TSRETRAIN_CPU_PRECISION``)."""
        super().initialize()
        precision.apply(self.network, self.device)

    def on_train_start(self) -> None:
        super().on_train_start()
        arithmetic = f", CPU arithmetic: {precision.describe()}" if self.device.type == "cpu" else ""
        self.print_to_log_file(f"tsretrain: starting at epoch {self.current_epoch} of {self.num_epochs}{arithmetic}")


class nnUNetTrainerTsrTiny(nnUNetTrainerTsr):
    """For CPU demos and tests: few iterations per epoch (``TSRETRAIN_ITERATIONS``, default 4; a fifth as many
    validation iterations), 3 epochs unless set, and nnU-Net's AdamW variant at 1e-2: with a schedule of a
    thousand steps instead of nnU-Net's 250 000, its SGD (momentum 0.99, 0.01 or 0.03) left the small network
    predicting the class frequencies everywhere after 200-275 steps; AdamW at 3e-3 learned the large organs but
    not the eyes, oesophagus, lips or tumour in 1000 steps, at 1e-2 all of them, at 2e-2 less well
    (docs/benchmarks.md). On a CPU the network runs channels-last (about a fifth less time per step).
    ``progress.png`` is drawn with each checkpoint and after the last epoch, not after every epoch."""

    TINY_LR = 1e-2

    # nnU-Net reads the constructor's parameter names (to store them in checkpoints): keep its exact signature.
    def __init__(
        self,
        plans: dict[str, Any],
        configuration: str,
        fold: int,
        dataset_json: dict[str, Any],
        device: torch.device = CUDA,
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_iterations_per_epoch = _env_int("TSRETRAIN_ITERATIONS", 4)
        self.num_val_iterations_per_epoch = max(1, self.num_iterations_per_epoch // 5)
        self.num_epochs = _env_int("TSRETRAIN_EPOCHS", 3)
        self.save_every = _env_int("TSRETRAIN_SAVE_EVERY", 1)
        self.initial_lr = float(os.environ.get("TSRETRAIN_LR", self.TINY_LR))
        # nnU-Net draws progress.png (3000 x 5400 pixels) after every epoch, on a CPU about as long as a tiny epoch:
        # here only with a checkpoint and after the last epoch
        draw = self.logger.plot_progress_png
        self.logger.plot_progress_png = lambda folder: draw(folder) if self._checkpointed_epoch() else None

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, PolyLRScheduler]:
        """nnU-Net's AdamW variant (``nnUNetTrainerAdam``) with its polynomial schedule."""
        optimizer = torch.optim.AdamW(
            self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay, amsgrad=True
        )
        return optimizer, self.schedule(optimizer)

    def initialize(self) -> None:
        super().initialize()
        if self.device.type == "cpu":
            network: nn.Module = self.network
            network.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # in place

    def _checkpointed_epoch(self) -> bool:
        """Whether the epoch ending now writes a checkpoint (every ``save_every`` epochs, and the last)."""
        epoch = int(self.current_epoch)
        return (epoch + 1) % self.save_every == 0 or epoch == self.num_epochs - 1


def class_weights(dataset_json: dict[str, Any], device: torch.device, gtvp_weight: float) -> torch.Tensor:
    """One weight per output class, ``gtvp_weight`` for GTVp, 1 elsewhere."""
    labels = dataset_json["labels"]
    weights = torch.ones(max(int(v) for v in labels.values()) + 1, device=device)
    if TUMOUR_LABEL in labels:
        weights[int(labels[TUMOUR_LABEL])] = gtvp_weight
    return weights


def _replace_ce(loss: nn.Module, ce: nn.Module) -> nn.Module:
    inner = loss.loss if isinstance(loss, DeepSupervisionWrapper) else loss
    inner.ce = ce
    return loss


class WeightedCrossEntropy(nn.CrossEntropyLoss):
    """Cross-entropy on nnU-Net's float targets of shape (b, x, y, z) or (b, 1, x, y, z)."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == input.ndim:
            target = target[:, 0]
        return super().forward(input, target.long())


class FocalCrossEntropy(nn.Module):
    """Focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_t)^gamma, with class weights."""

    def __init__(self, weight: torch.Tensor, gamma: float) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.weight: torch.Tensor
        self.gamma = gamma

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == input.ndim:
            target = target[:, 0]
        target = target.long()
        log_p = functional.log_softmax(input, dim=1)
        log_pt = log_p.gather(1, target.unsqueeze(1)).squeeze(1)
        ce = -log_pt * self.weight[target]
        return ((1 - log_pt.exp()) ** self.gamma * ce).sum() / self.weight[target].sum()


class GTVpWeightedLoss:
    """Class-weighted cross-entropy: GTVp counts ``TSRETRAIN_GTVP_WEIGHT`` times (default 5)."""

    def _build_loss(self) -> nn.Module:
        trainer: Any = self
        weight = class_weights(trainer.dataset_json, trainer.device, float(os.environ.get("TSRETRAIN_GTVP_WEIGHT", 5)))
        return _replace_ce(super()._build_loss(), WeightedCrossEntropy(weight=weight))  # type: ignore[misc]


class GTVpFocalLoss:
    """Dice + focal cross-entropy (gamma ``TSRETRAIN_FOCAL_GAMMA``, default 2) with GTVp up-weighted."""

    def _build_loss(self) -> nn.Module:
        trainer: Any = self
        weight = class_weights(trainer.dataset_json, trainer.device, float(os.environ.get("TSRETRAIN_GTVP_WEIGHT", 5)))
        gamma = float(os.environ.get("TSRETRAIN_FOCAL_GAMMA", 2))
        return _replace_ce(super()._build_loss(), FocalCrossEntropy(weight, gamma))  # type: ignore[misc]


class nnUNetTrainerTsrGTVpWeighted(GTVpWeightedLoss, nnUNetTrainerTsr):
    """``nnUNetTrainerTsr`` with GTVp-weighted cross-entropy."""


class nnUNetTrainerTsrGTVpFocal(GTVpFocalLoss, nnUNetTrainerTsr):
    """``nnUNetTrainerTsr`` with Dice + focal cross-entropy, GTVp up-weighted."""


class nnUNetTrainerTsrTinyGTVpWeighted(GTVpWeightedLoss, nnUNetTrainerTsrTiny):
    """``nnUNetTrainerTsrTiny`` with GTVp-weighted cross-entropy (the demo's second stage on a CPU)."""


class nnUNetTrainerTsrTinyGTVpFocal(GTVpFocalLoss, nnUNetTrainerTsrTiny):
    """``nnUNetTrainerTsrTiny`` with Dice + focal cross-entropy, GTVp up-weighted (the demo's second stage)."""


TRAINERS = {
    cls.__name__: cls
    for cls in (
        nnUNetTrainerTsr,
        nnUNetTrainerTsrTiny,
        nnUNetTrainerTsrGTVpWeighted,
        nnUNetTrainerTsrGTVpFocal,
        nnUNetTrainerTsrTinyGTVpWeighted,
        nnUNetTrainerTsrTinyGTVpFocal,
    )
}
