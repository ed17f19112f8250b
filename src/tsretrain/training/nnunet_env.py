"""nnU-Net's folders and process settings, set in the environment before nnU-Net reads them."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.pool import ThreadPool
from pathlib import Path
from types import ModuleType
from typing import Any

from tsretrain.errors import UserError
from tsretrain.layout import NNUNET_FOLDERS
from tsretrain.resources import cpu_quota, memory_limit_bytes
from tsretrain.sizing import FIXED, export_bytes
from tsretrain.training.precision import PRECISION_VARIABLE, Precision
from tsretrain.training.precision import describe as describe_precision
from tsretrain.ui import log

AUGMENTATION = "nnUNet_n_proc_DA"  # nnU-Net's data-augmentation process count
DEFAULT_PROCESSES = "nnUNet_def_n_proc"  # nnU-Net's default pool size (its validation's export pool among them)


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
        """Point nnU-Net at these folders; its process counts come from the CPU quota unless already set (before
        torch is first imported, so that the OpenMP setting applies)."""
        for name in NNUNET_FOLDERS.values():
            path = self.root / name
            path.mkdir(parents=True, exist_ok=True)
            os.environ[name] = str(path)
        # idle OpenMP threads sleep instead of spinning: on a CPU shared with augmentation workers (or other
        # jobs) spinning tripled the CPU time of a training step (docs/benchmarks.md)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        os.environ.setdefault(DEFAULT_PROCESSES, str(cpu_quota()))


@contextlib.contextmanager
def augmentation_processes(device_type: str) -> Iterator[str]:
    """nnU-Net's data-augmentation process count for a training on ``device_type``, for the block only: the user's
    ``nnUNet_n_proc_DA``, else :func:`augmentation_workers` (none on one CPU, which nnU-Net's planner could not
    take in a later stage)."""
    workers = os.environ.get(AUGMENTATION, str(augmentation_workers(device_type)))
    with environment((AUGMENTATION, workers)):
        yield workers


def planner_threads() -> contextlib.AbstractContextManager[None]:
    """For nnU-Net's planner, which sizes torch's threads by ``nnUNet_n_proc_DA`` while it builds networks: the CPU
    quota, whatever the user set for augmentation (0, augmentation in the training process, would stop it)."""
    return environment((AUGMENTATION, str(cpu_quota())))


@contextlib.contextmanager
def environment(*settings: tuple[str, str]) -> Iterator[None]:
    """Environment variables set for the block, then restored (or removed)."""
    before = {name: os.environ.get(name) for name, _ in settings}
    os.environ.update(dict(settings))
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _ThreadPools:
    """``multiprocessing`` as nnU-Net's pool users call it (``get_context("spawn").Pool(n)``), every pool a thread
    pool of one in this process."""

    def get_context(self, method: str | None = None) -> _ThreadPools:
        return self

    def Pool(self, processes: int | None = None) -> ThreadPool:  # multiprocessing's name
        return ThreadPool(1)


SPAWN_CPU_SECONDS = 3.0
"""CPU seconds a spawned nnU-Net worker spends importing torch and nnU-Net before it works (2-4 s measured)."""


def worth_spawning(workers: int, cpu_seconds: float) -> int:
    """How many of ``workers`` processes to spawn for ``cpu_seconds`` of work shared among them: all when each
    gets more work than its start costs, else one (``nnunet_pools`` then keeps the work in this process)."""
    return workers if workers > 1 and cpu_seconds / workers > SPAWN_CPU_SECONDS else 1


@contextlib.contextmanager
def nnunet_pools(workers: int, *modules: ModuleType) -> Iterator[None]:
    """nnU-Net's process pools in these modules, for the block: with more than one worker the spawned processes
    nnU-Net starts; with one none (each pool a thread of this process), since a spawned process imports torch and
    nnU-Net (2-4 s of CPU) only to take turns with this one."""
    if workers > 1:
        yield
        return
    before = [module.multiprocessing for module in modules]
    for module in modules:
        setattr(module, "multiprocessing", _ThreadPools())  # noqa: B010 (a module's global, not an attribute)
    try:
        yield
    finally:
        for module, original in zip(modules, before, strict=True):
            setattr(module, "multiprocessing", original)  # noqa: B010


@contextlib.contextmanager
def nnunets_own_export() -> Iterator[None]:
    """nnU-Net's export function where its trainer's export pool looks it up, for the block. TotalSegmentator, once
    imported, replaces ``nnunetv2.inference.export_prediction.export_prediction_from_logits`` with its own (its
    cropped-logits path); the trainer still holds nnU-Net's, which the pool then cannot pickle ("not the same object"),
    so a fold trained in a process that ran the pseudo-label stage (``tsretrain run``) failed at its validation."""
    import nnunetv2.inference.export_prediction as export_module
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module

    current = export_module.export_prediction_from_logits
    export_module.export_prediction_from_logits = trainer_module.export_prediction_from_logits
    try:
        yield
    finally:
        export_module.export_prediction_from_logits = current


def augmentation_workers(device_type: str) -> int:
    """Data-augmentation processes: on a GPU, the container's CPU quota less one for the training process (all
    of it up to two CPUs, the training process mostly waiting for the GPU); on the CPU, none on a single CPU,
    where a worker only takes turns with the training process and adds its start and every batch's transfer
    (bench/one_cpu.py)."""
    cpus = cpu_quota()
    if device_type == "cpu" and cpus == 1:
        return 0
    return max(1, cpus - 1) if cpus > 2 else cpus


def torch_device(name: str, precision: Precision = "auto") -> Any:
    """``auto`` (CUDA when present), ``cuda`` (refused without a GPU) or ``cpu``; on the CPU torch gets the
    container's CPU quota, nnU-Net never compiles the network, and the trainers and the predictor compute in
    ``precision`` (:mod:`tsretrain.training.precision`)."""
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
        os.environ[PRECISION_VARIABLE] = precision
        log.info("CPU arithmetic: %s (--precision %s)", describe_precision(), precision)
    return torch.device(name)


def export_processes(classes: int, voxels: int, memory: int, cpus: int) -> int:
    """nnU-Net's segmentation export processes (validation and prediction) that fit beside the training or
    predicting process: each holds the largest case's resampled logits plus its own imports (1 GiB), within three
    quarters of the memory limit; at most one per CPU, at least one."""
    per_process = export_bytes(classes) * voxels + FIXED
    return max(1, min(cpus, int(memory * 0.75 // per_process)))


def largest_case(preprocessed: Path) -> tuple[int, int]:
    """Classes (background included) and voxels of the largest case of a preprocessed dataset, from nnU-Net's
    fingerprint and dataset.json."""
    fingerprint = json.loads((preprocessed / "dataset_fingerprint.json").read_text())
    dataset = json.loads((preprocessed / "dataset.json").read_text())
    voxels = max(math.prod(shape) for shape in fingerprint["shapes_after_crop"])
    return len(dataset["labels"]), int(voxels)


def size_export_pool(preprocessed: Path) -> int:
    """Set nnU-Net's export pool (``nnUNet_def_n_proc``, read at import) to what fits in the memory limit; the
    end of a fold then cannot run out of memory where a process per CPU would (a user's smaller value is kept)."""
    classes, voxels = largest_case(preprocessed)
    memory, cpus = memory_limit_bytes(), cpu_quota()
    fits = export_processes(classes, voxels, memory, cpus)
    chosen = min(fits, int(os.environ.get(DEFAULT_PROCESSES, fits)))
    need = export_bytes(classes) * voxels / 2**30
    log.info(
        "export pool: %d process(es) (largest case %d voxels x %d classes: about %.1f GiB each; memory limit %.1f GiB)",
        chosen,
        voxels,
        classes,
        need,
        memory / 2**30,
    )
    if need + 1 > memory * 0.75 / 2**30:
        log.warning("even one export process may not fit in %.1f GiB: give the pod more memory", memory / 2**30)
    os.environ[DEFAULT_PROCESSES] = str(chosen)
    import nnunetv2.configuration
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module

    nnunetv2.configuration.default_num_processes = chosen  # read at import by the modules that use it
    trainer_module.default_num_processes = chosen
    return chosen


def image_size(path: Path) -> tuple[int, ...]:
    """An image's size, from its header alone."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return tuple(int(n) for n in reader.GetSize())
