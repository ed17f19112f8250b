"""nnU-Net's folders and process settings, set in the environment before nnU-Net reads them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsretrain.errors import UserError
from tsretrain.layout import NNUNET_FOLDERS
from tsretrain.resources import cpu_quota


@dataclass(frozen=True)
class NnunetFolders:
    """The three nnU-Net folders under one work root."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / NNUNET_FOLDERS["raw"]

    @property
    def preprocessed(self) -> Path:
        return self.root / NNUNET_FOLDERS["preprocessed"]

    @property
    def results(self) -> Path:
        return self.root / NNUNET_FOLDERS["results"]

    def activate(self) -> None:
        """Point nnU-Net at these folders; worker counts come from the CPU quota unless already set (before torch
        is first imported, so that the OpenMP setting applies)."""
        for name in NNUNET_FOLDERS.values():
            path = self.root / name
            path.mkdir(parents=True, exist_ok=True)
            os.environ[name] = str(path)
        os.environ.setdefault("nnUNet_n_proc_DA", str(augmentation_workers()))
        # idle OpenMP threads sleep instead of spinning: on a CPU shared with augmentation workers (or other
        # jobs) spinning tripled the CPU time of a training step (docs/benchmarks.md)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        os.environ.setdefault("nnUNet_def_n_proc", str(cpu_quota()))


def augmentation_workers() -> int:
    """Data-augmentation processes per GPU: the container's CPU quota less one for the training process."""
    cpus = cpu_quota()
    return max(1, cpus - 1) if cpus > 2 else cpus


def torch_device(name: str) -> Any:
    """``auto`` (CUDA when present), ``cuda`` (refused without a GPU) or ``cpu``; on the CPU torch gets the
    container's CPU quota and nnU-Net never compiles the network."""
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "--device cuda but this process sees no CUDA device: on Kubernetes the pod needs the GPU runtime "
            "(runtimeClassName, the chart's gpu.runtimeClassName) and an nvidia.com/gpu limit"
        )
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        torch.set_num_threads(cpu_quota())
        # nnU-Net's trainer never compiles on a CPU, but its predictor (the fold's validation, ``predict``) does
        # when nnUNet_compile is set, as the GPU image sets it: 2.2x the CPU of a small prediction (bench/cpu_predict)
        os.environ["nnUNet_compile"] = "false"  # noqa: SIM112 (nnU-Net's name)
    return torch.device(name)
