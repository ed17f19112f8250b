"""The ``predict`` stage: the ensemble of trained folds on the held-out test set, plus each fold's
validation predictions, into one output folder.

Outputs: ``OUT/test/<case>.nii.gz`` (ensemble), ``OUT/validation/fold_<k>/<case>.nii.gz``.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsretrain.errors import UserError
from tsretrain.model import Model
from tsretrain.resources import Device, cpu_quota, memory_limit_bytes
from tsretrain.stages import StageResult
from tsretrain.training import precision
from tsretrain.training.nnunet_env import NnunetFolders, export_processes, image_size, torch_device
from tsretrain.training.precision import Precision
from tsretrain.ui import log


@dataclass(frozen=True, kw_only=True)
class PredictConfig:
    """Configuration of the ``predict`` stage."""

    work: Path
    out: Path
    model: Model = field(default_factory=Model)  # its folds are ensembled
    device: Device = "auto"
    precision: Precision = "auto"
    # nnU-Net's mirroring test-time augmentation, along the axes the checkpoint allows: none for tsretrain's
    # trainers (they learn without mirroring), so it only changes models of mirroring trainers (nnUNetTrainer)
    tta: bool = False
    step_size: float = 0.5
    # a batch of a prediction fan-out: only these test cases, and no validation predictions collected (they stay
    # with each fold in nnUNet_results); empty: the whole test set and every fold's validation predictions
    cases: tuple[str, ...] = ()


def load_predictor(model: Path, folds: tuple[int, ...], device: Any, step_size: float, tta: bool = False) -> Any:
    """nnU-Net's predictor on a trained model folder (``TRAINER__PLANS__CONFIGURATION``) and its folds."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from tsretrain.training import discovery

    discovery.install()
    missing = [f for f in folds if not (model / f"fold_{f}" / "checkpoint_final.pth").is_file()]
    if missing:
        raise UserError(f"folds {missing} have no checkpoint_final.pth under {model}; train them first")
    predictor = nnUNetPredictor(
        tile_step_size=step_size,
        use_gaussian=True,
        use_mirroring=tta,
        device=device,
        verbose=False,
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(str(model), use_folds=folds, checkpoint_name="checkpoint_final.pth")
    precision.apply(predictor.network, device)
    return predictor


def predict_images(predictor: Any, device: Any, images: list[Path], outputs: list[Path]) -> None:
    """Predict ``images`` (``*_0000.nii.gz``) into ``outputs`` (label maps without the file ending), with as many
    of nnU-Net's worker processes as the CPUs and memory allow."""
    if not images:
        return
    inputs = [[str(path)] for path in images]
    targets = [str(path) for path in outputs]
    for folder in {path.parent for path in outputs}:
        folder.mkdir(parents=True, exist_ok=True)
    cpus = cpu_quota()
    if device.type == "cpu" and cpus == 1:
        # nnU-Net's workers (each a spawned process importing torch and nnU-Net, 2-4 s of CPU) would only take
        # turns with this process: all in this process (bench/one_cpu.py)
        predictor.predict_from_files_sequential(inputs, targets, save_probabilities=False, overwrite=True)
        return
    workers = max(1, min(2, cpus, len(images)))
    voxels = max(math.prod(image_size(path)) for path in images)
    classes = len(predictor.dataset_json["labels"])
    exports = min(workers, export_processes(classes, voxels, memory_limit_bytes(), cpus))
    predictor.predict_from_files(
        inputs,
        targets,
        save_probabilities=False,
        overwrite=True,
        num_processes_preprocessing=workers,
        num_processes_segmentation_export=exports,
    )


def predict(config: PredictConfig) -> StageResult:
    device = torch_device(config.device, config.precision)  # first: a pod without the GPU it asked for fails at once
    folders = NnunetFolders(config.work)
    folders.activate()
    name = config.model.dataset
    model = folders.results / name / config.model.model_folder(config.model.plans_in(folders.preprocessed))
    predictor = load_predictor(model, config.model.folds, device, config.step_size, config.tta)
    if config.tta and not predictor.allowed_mirroring_axes:
        log.warning("--tta: %s was trained without mirroring; predicting without mirroring", config.model.trainer)
    test_out = config.out / "test"
    test_out.mkdir(parents=True, exist_ok=True)
    images = sorted((folders.raw / name / "imagesTs").glob("*_0000.nii.gz"))
    if config.cases:
        images = [path for path in images if path.name.removesuffix("_0000.nii.gz") in set(config.cases)]
    if not images:
        log.info("predict: no test case among the %d case(s) of the batch", len(config.cases))
    predict_images(predictor, device, images, [test_out / path.name.removesuffix("_0000.nii.gz") for path in images])
    validated = 0
    for fold in () if config.cases else config.model.folds:
        source = model / f"fold_{fold}" / "validation"
        if source.is_dir():
            shutil.copytree(source, config.out / "validation" / f"fold_{fold}", dirs_exist_ok=True)
            validated += 1
    return StageResult(
        "predict",
        {"test": str(test_out), "validation": str(config.out / "validation")},
        {
            "test_cases": len(images),
            "folds": len(config.model.folds),
            "validated_folds": validated,
        },
    )
