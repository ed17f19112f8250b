"""The ``train`` stage: one nnU-Net fold, resumable after preemption.

A fold restarted after a kill loses at most the epochs since its last checkpoint: the trainer writes
``checkpoint_latest.pth`` atomically every ``save_every`` epochs, and a re-run continues from it (nnU-Net's
``--c``). With ``store`` set, the fold's checkpoints, logs and progress are mirrored there after every save
and restored from there before training, so a pod that lands on a fresh node resumes too.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsretrain.errors import UserError
from tsretrain.model import Model
from tsretrain.resources import Device
from tsretrain.run_files import NNUNET_SPLITS, PROGRESS
from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_text
from tsretrain.storage.store import Store, open_store
from tsretrain.training.lifetime import end_children_with_parent
from tsretrain.training.nnunet_env import (
    NnunetFolders,
    augmentation_processes,
    environment,
    nnunets_own_export,
    size_export_pool,
    torch_device,
)
from tsretrain.training.precision import Precision
from tsretrain.training.pretrained import check_compatible, load_head, network_weights, open_pretrained
from tsretrain.ui import log

CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")
MIRRORED = ("*.pth", "training_log_*.txt", "progress.png", PROGRESS.basename, "debug.json")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Configuration of the ``train`` stage (one fold)."""

    work: Path
    fold: int
    model: Model = field(default_factory=Model)
    epochs: int | None = None
    save_every: int = 5
    device: Device = "auto"
    precision: Precision = "auto"
    init_from: str | None = None
    init_head: bool = False  # ... and its head too (the second stage: the same labels)
    warmup_epochs: int | None = None
    store: str | None = None
    validate: bool = True
    iterations: int | None = None
    seed: int = 0

    def fold_folder(self) -> Path:
        folders = NnunetFolders(self.work)
        model = self.model.model_folder(self.model.plans_in(folders.preprocessed))
        return folders.results / self.model.dataset / model / f"fold_{self.fold}"

    def stored(self) -> Store:
        """The store folder mirroring this fold's model folder (the same path below ``store``)."""
        assert self.store is not None
        model = self.fold_folder().parent.relative_to(NnunetFolders(self.work).results).as_posix()
        return open_store(f"{self.store.rstrip('/')}/{model}")


def _mirror(config: TrainConfig, new: tuple[Path, str] | None = None) -> None:
    """Copy the fold's checkpoints, logs and progress (and the model's plans and dataset JSON) to the store.
    ``new`` is a checkpoint being written (its file, its final name): then it is the only checkpoint uploaded (the
    others were uploaded when they were written), beside the small files."""
    store = config.stored()
    fold = config.fold_folder()
    for path in sorted(fold.parent.glob("*.json")):
        store.put_file(path, path.name)
    for pattern in MIRRORED:
        if new is not None and pattern == "*.pth":
            continue
        for path in sorted(fold.glob(pattern)):
            store.put_file(path, f"{fold.name}/{path.name}")
    if new is not None:
        store.put_file(new[0], f"{fold.name}/{new[1]}")


def restore(config: TrainConfig) -> None:
    """On a fresh node (no local checkpoint), bring the fold's stored checkpoints and logs back first."""
    if config.store is None:
        return
    local = config.fold_folder()
    if any((local / name).is_file() for name in CHECKPOINTS):
        return
    store = config.stored()
    stored = [key for key in store.list(local.name) if key.count("/") == 1]
    if not any(key.rsplit("/", 1)[-1] in CHECKPOINTS for key in stored):
        return
    log.info("restoring %d file(s) of fold %d from %s", len(stored), config.fold, config.store)
    for key in stored:
        store.get_file(key, local.parent / key)


def publish(config: TrainConfig) -> None:
    """Publish the finished fold (and its model's JSON files) under ``store`` with a manifest of its own beside
    the other folds' (the prediction step fetches them all from there)."""
    assert config.store is not None
    fold = config.fold_folder()
    model = fold.parent.relative_to(NnunetFolders(config.work).results).as_posix()
    include = (f"{model}/*.json", f"{model}/{fold.name}/*", f"{model}/{fold.name}/*/*")
    manifest = f"_manifest-{fold.parent.name}-{fold.name}.json"
    open_store(config.store).sync_up(NnunetFolders(config.work).results, "", manifest, include)


def training_environment(device: Any) -> dict[str, str]:
    """What this training process runs on (torch, CUDA, GPU model, nnU-Net): recorded with the fold's progress,
    so that the report names the training pod's environment, not its own."""
    import platform
    from importlib import metadata

    import torch

    from tsretrain import __version__

    cuda = str(device).startswith("cuda")
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "cudnn": str(torch.backends.cudnn.version()) if cuda else "none",
        "gpu": torch.cuda.get_device_name(device) if cuda else "none",
        "nnunetv2": metadata.version("nnunetv2"),
        "tsretrain": __version__,
        "python": platform.python_version(),
        "host": platform.node(),
    }


def progress_of(trainer: Any) -> dict[str, Any]:
    """Epoch, losses, pseudo-Dice, learning rate and epoch times so far (from nnU-Net's logger), and the
    training environment."""
    logged = trainer.logger.get_checkpoint()
    starts, ends = logged.get("epoch_start_timestamps", []), logged.get("epoch_end_timestamps", [])
    environment = training_environment(trainer.device)
    return {
        "device": str(trainer.device),
        "device_name": environment["gpu"] if environment["gpu"] != "none" else "CPU",
        "environment": environment,
        "epoch": int(trainer.current_epoch),
        "num_epochs": int(trainer.num_epochs),
        "iterations_per_epoch": int(trainer.num_iterations_per_epoch),
        "batch_size": int(trainer.batch_size),
        "train_losses": [float(v) for v in logged.get("train_losses", [])],
        "val_losses": [float(v) for v in logged.get("val_losses", [])],
        "pseudo_dice": [[float(x) for x in v] for v in logged.get("dice_per_class_or_region", [])],
        "ema_fg_dice": [float(v) for v in logged.get("ema_fg_dice", [])],
        "learning_rates": [float(v) for v in logged.get("lrs", [])],
        "epoch_seconds": [float(e - s) for s, e in zip(starts, ends, strict=False)],
    }


def nnunet_trainer(model: Model, fold: int, folders: NnunetFolders, device: Any, resume: bool = False) -> Any:
    """nnU-Net's trainer object of the model's fold (its trainer class found already)."""
    from nnunetv2.run.run_training import get_trainer_from_args

    return get_trainer_from_args(
        str(model.dataset_id),
        model.configuration,
        fold,
        model.trainer,
        model.plans_in(folders.preprocessed),
        continue_training=resume,
        device=device,
    )


def check_fold(folders: NnunetFolders, model: Model, fold: int) -> None:
    """Refuse a fold the split did not make: nnU-Net would train it on a random 80:20 split of its own."""
    splits = folders.preprocessed / model.dataset / NNUNET_SPLITS.basename
    if not splits.is_file():
        raise UserError(f"{splits} is missing", "run the split and preprocess stages first")
    made = len(json.loads(splits.read_text()))
    if not 0 <= fold < made:
        raise UserError(
            f"fold {fold} is not one of the split's {made} folds (0 to {made - 1})",
            "train a fold the split made, or split again with more --cv-folds",
        )


def train(config: TrainConfig) -> StageResult:
    """Train (or resume, or skip when finished) one fold."""
    device = torch_device(config.device, config.precision)  # first: a pod without the GPU it asked for fails at once
    folders = NnunetFolders(config.work)
    folders.activate()
    check_fold(folders, config.model, config.fold)
    with environment(*trainer_settings(config).items()):
        return _train_fold(config, device, folders)


def trainer_settings(config: TrainConfig) -> dict[str, str]:
    """The settings tsretrain's trainers read from the environment, for one training; those the configuration leaves
    open (the learning rate, for instance) keep what the process environment says."""
    settings = {"TSRETRAIN_SAVE_EVERY": str(config.save_every)}
    if config.epochs is not None:
        settings["TSRETRAIN_EPOCHS"] = str(config.epochs)
    if config.iterations is not None:
        settings["TSRETRAIN_ITERATIONS"] = str(config.iterations)
    warmup = "0" if config.warmup_epochs is None and not config.init_from else config.warmup_epochs
    settings["TSRETRAIN_WARMUP_EPOCHS"] = "auto" if warmup is None else str(warmup)
    return settings


def _train_fold(config: TrainConfig, device: Any, folders: NnunetFolders) -> StageResult:
    """``train`` within its trainer settings."""
    restore(config)
    local = config.fold_folder()
    started = time.time()
    # nnU-Net writes the validation's summary.json last: a validation killed midway leaves the folder without it
    validated = (local / "validation/summary.json").is_file()  # nnU-Net's file in the fold
    if (local / "checkpoint_final.pth").is_file() and (not config.validate or validated):
        log.info("fold %d already trained (%s); nothing to do", config.fold, local)
        return StageResult("train", {"fold": str(local)}, {"fold": config.fold, "resumed_from_epoch": -1})

    import numpy as np
    import torch
    from nnunetv2.run.run_training import maybe_load_checkpoint

    from tsretrain.training import discovery

    discovery.install()
    trainer_class = discovery.find_trainer(config.model.trainer)
    end_children_with_parent()  # no orphaned augmentation workers when this process is killed

    def on_checkpoint(trainer: Any, written: str, filename: str) -> None:
        atomic_write_text(local / PROGRESS.basename, json.dumps(progress_of(trainer)))
        if config.store is not None:
            _mirror(config, (Path(written), Path(filename).name))

    resume = any((local / name).is_file() for name in CHECKPOINTS)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    trainer = nnunet_trainer(config.model, config.fold, folders, device, resume)
    if hasattr(trainer_class, "checkpoint_hook"):
        trainer_class.checkpoint_hook = lambda written, filename: on_checkpoint(trainer, written, filename)
    staged = None
    if config.init_from and not resume:  # a resumed fine-tune continues from its own checkpoint
        pretrained = open_pretrained(config.init_from, config.work / ".pretrained")
        weights, staged = network_weights(pretrained, config.work / ".pretrained" / f"fold_{config.fold}.pth")
        trainer.initialize()
        check_compatible(trainer.network, pretrained, weights, config.init_head)
    maybe_load_checkpoint(trainer, resume, False, str(staged) if staged else None)
    if staged is not None and config.init_head:
        load_head(trainer.network, weights)
    first_epoch = int(trainer.current_epoch)
    with augmentation_processes(device.type) as augmentation:
        log.info(
            "fold %d: %s from epoch %d of %d (DA workers %s)",
            config.fold,
            "resuming" if resume else "training",
            first_epoch,
            trainer.num_epochs,
            augmentation,
        )
        trainer.run_training()
    atomic_write_text(local / PROGRESS.basename, json.dumps(progress_of(trainer)))
    if config.validate:
        validate_trainer(trainer, folders.preprocessed / config.model.dataset)
    if config.store is not None:
        _mirror(config)
        publish(config)
    return StageResult(
        "train",
        {"fold": str(local)},
        {"fold": config.fold, "resumed_from_epoch": first_epoch, "seconds": int(time.time() - started)},
    )


def validate_trainer(trainer: Any, preprocessed: Path) -> None:
    """nnU-Net's validation of a trained fold (``--val``), its export pool sized to the memory limit, with nnU-Net's
    own export function (:func:`nnunets_own_export`)."""
    size_export_pool(preprocessed)
    with nnunets_own_export():
        trainer.perform_actual_validation(False)


@dataclass(frozen=True, kw_only=True)
class ValidateConfig:
    """Configuration of the ``validate`` stage (one trained fold)."""

    work: Path
    fold: int
    model: Model = field(default_factory=Model)
    device: Device = "auto"
    precision: Precision = "auto"
    store: str | None = None


def validate(config: ValidateConfig) -> StageResult:
    """Predict a trained fold's validation cases and export them (nnU-Net's ``--val``): the end of ``train`` as a
    step of its own, so that a cluster runs it on a pod with the memory nnU-Net's export needs (a resampled case's
    logits in float64), never after hours of training on a pod without it."""
    device = torch_device(config.device, config.precision)
    folders = NnunetFolders(config.work)
    folders.activate()
    check_fold(folders, config.model, config.fold)
    fold = TrainConfig(
        work=config.work,
        fold=config.fold,
        model=config.model,
        device=config.device,
        precision=config.precision,
        store=config.store,
    )
    restore(fold)
    local = fold.fold_folder()
    if not (local / "checkpoint_final.pth").is_file():
        raise UserError(f"fold {config.fold} has no checkpoint_final.pth under {local}", "train the fold first")
    from nnunetv2.run.run_training import maybe_load_checkpoint

    from tsretrain.training import discovery

    discovery.install()
    discovery.find_trainer(config.model.trainer)
    trainer = nnunet_trainer(config.model, config.fold, folders, device)
    maybe_load_checkpoint(trainer, False, True, None)  # the final checkpoint, for validation only
    validate_trainer(trainer, folders.preprocessed / config.model.dataset)
    if config.store is not None:  # the validation alone, under a manifest of its own beside the fold's
        model = local.parent.relative_to(folders.results).as_posix()
        manifest = f"_manifest-{local.parent.name}-{local.name}-validation.json"
        open_store(config.store).sync_up(folders.results, "", manifest, (f"{model}/{local.name}/validation/*",))
    cases = len(list((local / "validation").glob(f"*{trainer.dataset_json['file_ending']}")))
    return StageResult("validate", {"validation": str(local / "validation")}, {"fold": config.fold, "cases": cases})
