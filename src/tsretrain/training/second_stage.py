"""The tumour-focused second stage (the seed report's next step 1): per fold, a model initialised from the first
stage's model of that fold (every layer, its head included: the labels are the same) and fine-tuned with a
tumour-focused loss, then predicted on the test set beside the first stage.

**Whole volume, not a crop around the first stage's tumour.** A cascade that crops around the first stage's
prediction cannot find a tumour the first stage missed, and a missed or second primary is the failure that matters
most (a lesion never contoured is never treated); it also inherits every first-stage false positive as a region
to refine. On the whole volume the second stage uses the first stage's plans, preprocessed data and sliding
window unchanged (no new preprocessing, no crop margins to tune, nothing of the test case's reference involved),
and its prediction is compared with the first stage's on exactly the same voxels. The cost is compute: a
fine-tune of the whole network instead of a small crop model.

The loss: the first stage's trainer with GTVp up-weighted in the cross-entropy (``weighted``) or Dice + focal
cross-entropy with GTVp up-weighted (``focal``): ``<trainer>GTVpWeighted`` / ``<trainer>GTVpFocal`` of
:mod:`tsretrain.training.nnunet_trainers.tsretrain_trainers`. Learning rate: nnU-Net's schedule after a warm-up
(a tenth of the epochs by default), as any fine-tune here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from tsretrain.errors import UserError
from tsretrain.model import Model
from tsretrain.resources import Device
from tsretrain.run_files import second_stage_trainer
from tsretrain.stages import StageResult
from tsretrain.training.nnunet_env import NnunetFolders
from tsretrain.training.precision import Precision
from tsretrain.training.predict import PredictConfig, predict
from tsretrain.training.train import TrainConfig, train

Loss = Literal["focal", "weighted"]
LOSSES: dict[Loss, str] = {"focal": "Focal", "weighted": "Weighted"}  # the trainer classes' suffixes


def focused_trainer(trainer: str, loss: str) -> str:
    """The tumour-focused variant of a first-stage trainer (``nnUNetTrainerTsrTiny`` -> ``...TinyGTVpFocal``)."""
    from tsretrain.training.nnunet_trainers.tsretrain_trainers import TRAINERS

    if loss not in LOSSES:
        raise UserError(f"second stage: unknown loss {loss!r}", f"give one of {', '.join(LOSSES)}")
    name = second_stage_trainer(trainer, LOSSES[loss])
    if name not in TRAINERS:
        focused = tuple(second_stage_trainer("", suffix) for suffix in LOSSES.values())
        bases = sorted(t for t in TRAINERS if not t.endswith(focused))
        raise UserError(
            f"second stage: the first stage's trainer {trainer} has no tumour-focused variant ({name})",
            f"train the first stage with one of {', '.join(bases)}",
        )
    return name


def focused_model(model: Model, loss: str) -> Model:
    """The second stage's model: the first stage's with its tumour-focused trainer."""
    return replace(model, trainer=focused_trainer(model.trainer, loss))


@dataclass(frozen=True, kw_only=True)
class SecondStageConfig:
    """Configuration of the ``second-stage`` stage (one fold)."""

    work: Path
    fold: int
    model: Model = field(default_factory=Model)  # the first stage's
    loss: Loss = "focal"
    epochs: int | None = None
    iterations: int | None = None
    warmup_epochs: int | None = None
    save_every: int = 5
    device: Device = "auto"
    precision: Precision = "auto"
    store: str | None = None
    seed: int = 0


def second_stage(config: SecondStageConfig) -> StageResult:
    """Fine-tune one fold's tumour-focused model from the first stage's model of the same fold."""
    folders = NnunetFolders(config.work)
    first = config.model.model_folder(config.model.plans_in(folders.preprocessed))
    fold = folders.results / config.model.dataset / first / f"fold_{config.fold}"
    if not (fold / "checkpoint_final.pth").is_file():
        raise UserError(
            f"second stage: the first stage's fold {config.fold} is not trained ({fold} has no checkpoint_final.pth)",
            f"train fold {config.fold} first",
        )
    result = train(
        TrainConfig(
            work=config.work,
            fold=config.fold,
            model=focused_model(config.model, config.loss),
            epochs=config.epochs,
            iterations=config.iterations,
            warmup_epochs=config.warmup_epochs,
            save_every=config.save_every,
            device=config.device,
            precision=config.precision,
            init_from=str(fold),
            init_head=True,
            store=config.store,
            validate=False,
            seed=config.seed,
        )
    )
    return StageResult("second-stage", result.outputs, {**result.counts, "initialised_from_fold": config.fold})


@dataclass(frozen=True, kw_only=True)
class SecondPredictConfig(PredictConfig):
    """Configuration of the ``second-predict`` stage: ``predict``'s, with the second stage's loss."""

    loss: Loss = "focal"


def second_predict(config: SecondPredictConfig) -> StageResult:
    """The second stage's fold ensemble on the test set (``OUT/test/``)."""
    result = predict(replace(config, model=focused_model(config.model, config.loss)))
    return StageResult("second-predict", {"test": result.outputs["test"]}, result.counts)
