"""The ``postprocess`` stage: nnU-Net's post-processing, decided on the folds' validation predictions and applied to
the test predictions, as nnU-Net's ``find_best_configuration`` decides it for its best model.

The validation predictions of the model's folds are merged into one folder with the model's plans and dataset JSON,
as ``accumulate_cv_results`` merges them (a case that two folds validated is refused). nnU-Net's
``determine_postprocessing`` then tries, against the preprocessed dataset's ``gt_segmentations``, keeping only the
largest connected component of all foreground labels together (kept when the validation foreground mean Dice rises
and no label's falls), then of each label in turn (kept when that label's Dice rises);
``apply_postprocessing_to_folder`` applies what it kept to the test predictions. When it keeps nothing, the test
predictions are written through unchanged, so that later stages read one folder either way; so they are with
``--search none``, which tries nothing (the search evaluates every validation case again for each label).

Outputs (``OUT/``): ``validation/`` (the merged predictions and nnU-Net's files: ``summary.json`` before,
``postprocessed/summary.json`` after, ``postprocessing.pkl``, ``postprocessing.json``), ``trials/`` (the summary of
every step nnU-Net tried, kept before it deletes them), ``test/`` (the post-processed test predictions) and
``decision.json`` (what was kept, the validation Dice before and after each step, the cases). ``decision.json`` is
written last and names its inputs: a folder without it, or with it for other inputs, is done again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import shutil
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from tsretrain import __version__
from tsretrain.errors import UserError
from tsretrain.model import Model
from tsretrain.resources import cpu_quota
from tsretrain.run_files import DECISION, Decision, read_decision
from tsretrain.sizing import POSTPROCESS_NS_PER_LABEL
from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_text
from tsretrain.storage.store import sha256_of
from tsretrain.training.nnunet_env import NnunetFolders, image_size, nnunet_pools, worth_spawning
from tsretrain.training.postprocessing_steps import apply_to_folder
from tsretrain.ui import log
from tsretrain.versions import installed

Search = Literal["all", "none"]  # nnU-Net's whole search; none: the test predictions passed on unchanged
SEARCHES: tuple[Search, ...] = typing.get_args(Search)
FOREGROUND = "all foreground labels together"
FILES = {  # nnU-Net's files of the decision, relative to the stage's output folder
    "postprocessing": "validation/postprocessing.json",
    "pickle": "validation/postprocessing.pkl",
    "before": "validation/summary.json",
    "after": "validation/postprocessed/summary.json",
    "trials": "trials/",
}


@dataclass(frozen=True, kw_only=True)
class PostprocessConfig:
    """Configuration of the ``postprocess`` stage."""

    work: Path
    predictions: Path
    out: Path
    model: Model = field(default_factory=Model)  # its folds' validation predictions decide
    search: Search = "all"
    workers: int = 0


@dataclass(frozen=True)
class Inputs:
    """What the decision and its application read."""

    model: Path  # nnU-Net's model folder (plans.json, dataset.json, fold_K/validation/)
    references: Path  # the preprocessed dataset's gt_segmentations
    validation: dict[str, Path]  # file name -> its fold's validation prediction
    test: Path  # the test predictions' folder
    file_ending: str

    def test_cases(self) -> list[Path]:
        return sorted(self.test.glob(f"*{self.file_ending}"))

    def key(self, folds: tuple[int, ...], search: str) -> str:
        """A digest of the versions, the folds, the search and every file read: the same inputs, the same
        decision."""
        versions = {"tsretrain": __version__, "nnunetv2": installed("nnunetv2"), "folds": list(folds), "search": search}
        digest = hashlib.sha256(json.dumps(versions).encode())
        references = [self.references / name for name in self.validation]
        for path in [self.model / "plans.json", self.model / "dataset.json", *self.validation.values(), *references]:
            digest.update(f"{path.parent.name}/{path.name}:{sha256_of(path)}".encode())
        for path in self.test_cases():
            digest.update(f"test/{path.name}:{sha256_of(path)}".encode())
        return digest.hexdigest()


def _inputs(config: PostprocessConfig) -> Inputs:
    """The model's folder, the references, each fold's validation predictions and the test predictions; whatever is
    missing is a usage error naming what to run."""
    folders = NnunetFolders(config.work)
    folders.activate()
    name = config.model.dataset
    model = folders.results / name / config.model.model_folder(config.model.plans_in(folders.preprocessed))
    if not (model / "dataset.json").is_file():
        raise UserError(f"no trained model in {model}", "train the model's folds first")
    ending = str(json.loads((model / "dataset.json").read_text())["file_ending"])
    references = folders.preprocessed / name / "gt_segmentations"
    test = config.predictions / "test"
    for folder, what in ((references, "reference segmentations"), (test, "test predictions")):
        if not folder.is_dir():
            raise FileNotFoundError(errno.ENOENT, f"no {what}", str(folder))
    validation: dict[str, Path] = {}
    for fold in config.model.folds:
        folder = model / f"fold_{fold}" / "validation"
        if not folder.is_dir():
            raise UserError(
                f"fold {fold} has no validation predictions ({folder})",
                "validate it first (tsretrain validate, or train with --validate)",
            )
        for path in sorted(folder.glob(f"*{ending}")):
            if path.name in validation:
                raise UserError(
                    f"{path.name} is in the validation of two folds ({validation[path.name].parent.parent.name} "
                    f"and fold_{fold})",
                    "post-process folds of one split: each case is validated by one fold",
                )
            validation[path.name] = path
    if not validation:
        raise UserError(f"the validation folders of folds {list(config.model.folds)} hold no predictions")
    unknown = sorted(name for name in validation if not (references / name).is_file())
    if unknown:
        raise UserError(
            f"{len(unknown)} validation case(s) without a reference in {references}: {', '.join(unknown[:5])}",
            "preprocess the dataset the folds were trained on",
        )
    return Inputs(model, references, validation, test, ending)


def merge_validation(inputs: Inputs, merged: Path) -> None:
    """The folds' validation predictions in one folder with the model's plans and dataset JSON, as nnU-Net's
    ``accumulate_cv_results`` merges them (a folder left by an earlier try is replaced)."""
    shutil.rmtree(merged, ignore_errors=True)
    merged.mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copyfile(inputs.model / name, merged / name)
    for name, path in inputs.validation.items():
        shutil.copyfile(path, merged / name)


@contextlib.contextmanager
def kept_trials(module: ModuleType, folder: Path) -> Iterator[list[Path]]:
    """Every summary that ``determine_postprocessing`` (in ``module``) computes, copied into ``folder`` once written
    (nnU-Net deletes its trials' folders at the end): the one before, then one per step tried, in its order."""
    original = module.compute_metrics_on_folder
    kept: list[Path] = []

    def compute(folder_ref: str, folder_pred: str, output_file: str, *args: Any, **kwargs: Any) -> Any:
        result = original(folder_ref, folder_pred, output_file, *args, **kwargs)
        folder.mkdir(parents=True, exist_ok=True)
        kept.append(folder / f"{len(kept):03d}-{Path(folder_pred).name}.json")
        shutil.copyfile(output_file, kept[-1])
        return result

    setattr(module, "compute_metrics_on_folder", compute)  # noqa: B010 (a module's global, not an attribute)
    try:
        yield kept
    finally:
        setattr(module, "compute_metrics_on_folder", original)  # noqa: B010


def _dice(summary: dict[str, Any], label: int | None = None) -> float | None:
    """A summary's mean Dice of a label (its foreground mean without one); None where nnU-Net has NaN."""
    entry = summary["foreground_mean"] if label is None else summary["mean"][str(label)]
    value = float(entry["Dice"])
    return None if math.isnan(value) else round(value, 6)


def steps(
    trials: list[dict[str, Any]], foreground: list[int], kept: list[Any], names: dict[int, str]
) -> list[dict[str, Any]]:
    """Each step nnU-Net tried, with the validation Dice it compared (before: the predictions as they stood then,
    after: with the step) and whether it kept it: all foreground labels together, then each label in turn."""
    baseline, *tried = trials
    if len(tried) != 1 + (len(foreground) if len(foreground) > 1 else 0):
        raise RuntimeError(f"nnU-Net computed {len(trials)} summaries for {len(foreground)} labels")
    together = {"labels_or_regions": foreground} in kept
    done: list[dict[str, Any]] = [
        {
            "step": FOREGROUND,
            "labels": [names[label] for label in foreground],
            "measure": "foreground mean Dice",
            "before": _dice(baseline),
            "after": _dice(tried[0]),
            "kept": together,
        }
    ]
    source = tried[0] if together else baseline
    for label, trial in zip(foreground, tried[1:], strict=True):
        chosen = {"labels_or_regions": label} in kept
        done.append(
            {
                "step": names[label],
                "labels": [names[label]],
                "measure": f"Dice of {names[label]}",
                "before": _dice(source, label),
                "after": _dice(trial, label),
                "kept": chosen,
            }
        )
        source = trial if chosen else source
    if sum(step["kept"] for step in done) != len(kept):
        raise RuntimeError(f"nnU-Net kept {kept}, which its trials do not explain")
    return done


def decision(inputs: Inputs, folds: tuple[int, ...], out: Path, trials: list[Path], key: str) -> Decision:
    """What ``decision.json`` holds: the steps kept (each the labels whose largest component alone is kept), the
    validation Dice before and after from nnU-Net's ``postprocessing.json``, every step tried, the cases."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    merged = out / "validation"
    dataset = json.loads((merged / "dataset.json").read_text())
    foreground = [
        int(label) for label in PlansManager(str(merged / "plans.json")).get_label_manager(dataset).foreground_labels
    ]
    names = {int(value): name for name, value in dataset["labels"].items() if isinstance(value, int)}
    nnunet = json.loads((merged / "postprocessing.json").read_text())
    kept = nnunet["postprocessing_kwargs"]
    groups = [
        [names[label] for label in kwargs["labels_or_regions"]]
        if isinstance(kwargs["labels_or_regions"], list)
        else [names[kwargs["labels_or_regions"]]]
        for kwargs in kept
    ]
    before, after = nnunet["input_folder"], nnunet["postprocessed"]
    return {
        **not_searched(inputs, folds, key),
        "searched": True,
        "keep_largest_component": groups,
        "labels": sorted({name for group in groups for name in group}),
        "foreground_dice": {"before": _dice(before), "after": _dice(after)},
        "dice": {
            names[label]: {"label": label, "before": _dice(before, label), "after": _dice(after, label)}
            for label in foreground
        },
        "steps": steps([json.loads(path.read_text()) for path in trials], foreground, kept, names),
        "files": FILES,
    }


def not_searched(inputs: Inputs, folds: tuple[int, ...], key: str) -> Decision:
    """``decision.json`` without a search (``--search none``): nothing kept, nothing tried."""
    return {
        "inputs": key,
        "searched": False,
        "model": inputs.model.name,
        "folds": list(folds),
        "validation_cases": len(inputs.validation),
        "training_cases": len(list(inputs.references.glob(f"*{inputs.file_ending}"))),
        "test_cases": len(inputs.test_cases()),
        "keep_largest_component": [],
        "labels": [],
        "steps": [],
        "nnunetv2": installed("nnunetv2"),
    }


def postprocess(config: PostprocessConfig) -> StageResult:
    """Decide nnU-Net's post-processing on the folds' validation predictions, apply it to the test predictions."""
    if config.search not in SEARCHES:
        raise UserError(f"postprocess: unknown search {config.search!r}", f"give one of {', '.join(SEARCHES)}")
    inputs = _inputs(config)
    key = inputs.key(config.model.folds, config.search)
    path = DECISION.at(config.out)
    if path.is_file() and (config.out / "test").is_dir():
        done = read_decision(config.out)
        if done.get("inputs") == key:
            log.info("postprocess: decided already for these inputs (%s)", path)
            return _result(config.out, done)
    path.unlink(missing_ok=True)
    from nnunetv2.evaluation import evaluate_predictions
    from nnunetv2.postprocessing import remove_connected_components as nnunet

    workers = config.workers or cpu_quota()
    shutil.rmtree(config.out / "validation", ignore_errors=True)
    shutil.rmtree(config.out / "trials", ignore_errors=True)
    functions: list[Any] = []
    kwargs: list[Any] = []
    if config.search == "none":
        document = not_searched(inputs, config.model.folds, key)
    else:
        merged = config.out / "validation"
        merge_validation(inputs, merged)
        # each step tried evaluates every validation case (nnU-Net's compute_metrics, per label)
        labels = len(json.loads((inputs.model / "dataset.json").read_text())["labels"])
        voxels = sum(math.prod(image_size(inputs.references / name)) for name in inputs.validation)
        deciding = worth_spawning(
            min(workers, len(inputs.validation)), POSTPROCESS_NS_PER_LABEL * labels * voxels / 1e9
        )
        with nnunet_pools(deciding, nnunet, evaluate_predictions), kept_trials(nnunet, config.out / "trials") as trials:
            functions, kwargs = nnunet.determine_postprocessing(
                str(merged),
                str(inputs.references),
                str(merged / "plans.json"),
                str(merged / "dataset.json"),
                deciding,
                keep_postprocessed_files=True,
            )
        document = decision(inputs, config.model.folds, config.out, trials, key)
    apply_to_folder(inputs.test, config.out / "test", (functions, kwargs), inputs.model, workers)
    atomic_write_text(path, json.dumps(document, indent=1, allow_nan=False))
    log.info("postprocess: keep the largest component of %s", document["keep_largest_component"] or "nothing")
    return _result(config.out, document)


def _result(out: Path, document: Decision) -> StageResult:
    return StageResult(
        "postprocess",
        {"decision": str(DECISION.at(out)), "test": str(out / "test")},
        {
            "validation_cases": document["validation_cases"],
            "test_cases": document["test_cases"],
            "steps_kept": len(document["keep_largest_component"]),
        },
    )
