"""The ``export`` stage: a finished run's model as a versioned package that leaves the run.

The package is a zip in nnU-Net's export layout (``nnUNetv2_install_pretrained_model_from_zip`` installs it into
``nnUNet_results``; ``tsretrain infer --model`` reads it as it is)::

    DATASET/TRAINER__PLANS__CONFIGURATION/plans.json, dataset.json, dataset_fingerprint.json
    DATASET/TRAINER__PLANS__CONFIGURATION/fold_K/checkpoint_final.pth, progress.png
    DATASET/TRAINER__PLANS__CONFIGURATION/crossval_results_folds_K_L/postprocessing.pkl, postprocessing.json
                                        the post-processing the run decided on these folds' validation, if any
    DATASET/tsretrain/model.json        what infer needs and the model card's numbers, machine-readable
    DATASET/tsretrain/MODEL_CARD.md     training data, split, per-label test metrics, versions, caveats
    DATASET/tsretrain/dictionary.yaml   the label dictionary (structure ids, types, colours)
    DATASET/tsretrain/trainers/tsretrain_trainers.py   for plain nnU-Net: nnUNet_extTrainer=<that folder>

Nothing in it names a patient, as TotalSegmentator's releases do not: no validation outputs, logs or split
files; ``dataset.json`` and the checkpoints lose the test-case list; checkpoints lose the optimizer state. The
finished zip is searched for every case and patient id of the run, and refused if one appears. ``Package``
opens one for prediction (``tsretrain infer``).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tsretrain import __version__
from tsretrain.delivery.source import Algorithm
from tsretrain.errors import UserError
from tsretrain.labels.dictionary import OrganDictionary, dictionary_text, load_dictionary, parse_dictionary
from tsretrain.layout import RunLayout
from tsretrain.model import Model
from tsretrain.run_files import (
    CASE_LISTING,
    DECISION,
    EVALUATION_SUMMARY,
    SPLIT,
    CaseStatus,
    EvaluationSummary,
    Split,
    read_decision,
    read_evaluation_summary,
    read_rows,
    read_split,
)
from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_bytes, atomic_write_text
from tsretrain.storage.store import open_store
from tsretrain.training.nnunet_env import NnunetFolders
from tsretrain.training.postprocessing_steps import Steps, steps_of
from tsretrain.ui import log
from tsretrain.versions import commit, installed

PACKAGE_FORMAT = "tsretrain-model/1"
CARD_FOLDER = "tsretrain"
MODEL_JSON = f"{CARD_FOLDER}/model.json"
MODEL_CARD = "MODEL_CARD.md"
DICTIONARY_FILE = f"{CARD_FOLDER}/dictionary.yaml"
TRAINERS_FILE = f"{CARD_FOLDER}/trainers/tsretrain_trainers.py"
MODEL_FILES = ("plans.json", "dataset.json", "dataset_fingerprint.json")


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """Configuration of the ``export`` stage."""

    work: Path
    run_dir: Path
    out: Path
    model: Model = field(default_factory=Model)
    version: str = "1.0.0"
    synthetic: bool = False


def package_name(model: Model, version: str) -> str:
    return f"{model.dataset}-{model.configuration}-{version}.zip"


def versions() -> dict[str, str]:
    found = {"tsretrain": __version__}
    for package in ("nnunetv2", "torch", "highdicom", "pydicom"):
        found[package] = installed(package) or "not installed"
    return found


def _missing(config: ExportConfig, trained: Path) -> list[str]:
    """What the run lacks for a package, each with the stage that makes it."""
    needed = {trained / name: "train" for name in MODEL_FILES}
    needed.update({trained / f"fold_{fold}" / "checkpoint_final.pth": "train" for fold in config.model.folds})
    for file in (SPLIT, CASE_LISTING, EVALUATION_SUMMARY):
        needed[file.in_run(config.run_dir)] = file.writer
    return [f"{path} (from {stage})" for path, stage in needed.items() if not path.is_file()]


def _identifiers(listing: list[dict[str, str]], split: Split) -> set[str]:
    """Every case and patient id the run knows of: none may appear in the package."""
    ids = {str(row.get(key) or "") for row in listing for key in ("case_id", "patient_id")}
    ids.update(split["test"])
    ids.update(case for fold in split["folds"] for case in fold)
    return {i for i in ids if len(i) >= 3}


def _dataset_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    data.get("tsretrain", {}).pop("test_cases", None)
    return data


def _checkpoint(path: Path, dataset_json: dict[str, Any]) -> bytes:
    """The checkpoint as inference and fine-tuning need it: without the optimizer and the test-case list."""
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("optimizer_state", "grad_scaler_state"):
        checkpoint.pop(key, None)
    if "init_args" in checkpoint and "dataset_json" in checkpoint["init_args"]:
        checkpoint["init_args"]["dataset_json"] = dataset_json
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def _postprocessing(config: ExportConfig, trained: Path) -> dict[str, Any] | None:
    """The post-processing the run decided (``postprocess``) for exactly the packaged model and folds: what it
    keeps, where nnU-Net's files go in the package; None without a searched decision for them."""
    layout = RunLayout(config.run_dir)
    if not DECISION.at(layout.postprocessing).is_file():
        return None
    decision = read_decision(layout.postprocessing)
    if not decision.get("searched") or decision["model"] != trained.name:
        return None
    if decision["folds"] != list(config.model.folds):
        log.info("export: post-processing decided on folds %s, not the package's: left out", decision["folds"])
        return None
    from nnunetv2.utilities.file_path_utilities import folds_tuple_to_string

    return {
        "keep_largest_component": decision["keep_largest_component"],
        "decided_on": f"the validation predictions of folds {decision['folds']} ({decision['validation_cases']} "
        f"cases), by nnU-Net {decision['nnunetv2']}'s determine_postprocessing",
        "folder": f"crossval_results_folds_{folds_tuple_to_string(config.model.folds)}",
    }


def _label_metrics(summary: EvaluationSummary) -> list[dict[str, Any]]:
    rows = []
    for group, content in summary["groups"].items():
        for label in content["labels"]:
            rows.append(
                {
                    "label": label["name"],
                    "reference": group,
                    "n": label["n_reference"],
                    "dice_mean": label["dice_mean"],
                    "dice_median": label["dice_median"],
                    "hd95_mean_mm": label["hd95_mean"],
                    "nsd_mean": label["nsd_mean"],
                    "missed": label["n_missed"],
                    "false_positive": label["n_false_positive"],
                }
            )
    return rows


def describe(
    config: ExportConfig,
    plans_name: str,
    trained: Path,
    listing: list[dict[str, str]],
    split: Split,
    dictionary: OrganDictionary,
) -> dict[str, Any]:
    """model.json: the model, where it came from (the run's listing and split) and how it measured."""
    summary = read_evaluation_summary(RunLayout(config.run_dir).evaluation)
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = json.loads((trained / "plans.json").read_text())
    configuration = PlansManager(plans).get_configuration(config.model.configuration)
    origin = plans.get("tsretrain_transferred_from")
    statuses: dict[str, int] = {}
    for row in listing:
        key = row["status"] if row["status"] == CaseStatus.OK else f"{row['status']}: {row['reason']}"
        statuses[key] = statuses.get(key, 0) + 1
    return {
        "format": PACKAGE_FORMAT,
        "id": f"{config.model.dataset}-{config.model.configuration}",
        "version": config.version,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dataset": config.model.dataset,
        "trainer": config.model.trainer,
        "plans": plans_name,
        "configuration": config.model.configuration,
        "folds": list(config.model.folds),
        "patch_size": list(configuration.patch_size),
        "spacing_mm": list(configuration.spacing),
        "dictionary": dictionary.to_json(),
        "synthetic_data": config.synthetic,
        "weights": f"fine-tuned by this run from {origin} (its plans transferred)" if origin else "trained by this run",
        "postprocessing": _postprocessing(config, trained),
        "reference_labels": summary["reference_records"],
        "training_data": {
            "patients_listed": len(listing),
            "cases_by_status": dict(sorted(statuses.items())),
            "training_cases": sum(len(fold) for fold in split["folds"]),
            "cross_validation_folds": len(split["folds"]),
            "test_cases": len(split["test"]),
            "split_seed": split["seed"],
        },
        "test_metrics": _label_metrics(summary),
        "test_metric_conventions": summary["conventions"],
        "versions": versions(),
        "commit": commit(),
    }


def _postprocessing_text(postprocessing: dict[str, Any] | None) -> str:
    if not postprocessing:
        return "Post-processing: none."
    kept = postprocessing["keep_largest_component"]
    what = "; then of ".join(", ".join(group) for group in kept) if kept else "nothing (no step helped)"
    return (
        f"Post-processing (applied by `tsretrain infer`; the test metrics below are before it): keep only the "
        f"largest connected component of {what}; decided on {postprocessing['decided_on']}."
    )


def model_card(card: dict[str, Any]) -> str:
    """MODEL_CARD.md from model.json."""
    warning = (
        "> **Synthetic data.** This model was trained and tested on a synthetic cohort generated by tsretrain. Its "
        "numbers say that the pipeline works, nothing about patients. Do not use it clinically.\n\n"
        if card["synthetic_data"]
        else "> Automatic contours: review every structure before clinical use.\n\n"
    )
    data = card["training_data"]
    lines = [
        f"# {card['id']} {card['version']}",
        "",
        warning + f"nnU-Net v2 model, trainer `{card['trainer']}`, plans `{card['plans']}`, configuration "
        f"`{card['configuration']}`, folds {card['folds']} ensembled; patch {card['patch_size']} at "
        f"{card['spacing_mm']} mm (z, y, x). Labels: dictionary `{card['dictionary']['name']}` "
        f"{card['dictionary']['version']} (`dictionary.yaml`). Weights: {card['weights']}. "
        f"Test references: {card['reference_labels']}. {_postprocessing_text(card.get('postprocessing'))}",
        "",
        "## Training data",
        "",
        f"- patients listed: {data['patients_listed']}; by status: "
        + ", ".join(f"{k} {v}" for k, v in data["cases_by_status"].items()),
        f"- training cases: {data['training_cases']} in {data['cross_validation_folds']} cross-validation folds; "
        f"held-out test cases: {data['test_cases']} (patient-level split, seed {data['split_seed']})",
        "",
        "## Test metrics (held-out test set, fold ensemble)",
        "",
        "| label | reference | n | Dice mean | Dice median | HD95 mean (mm) | NSD mean | missed | false positive |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in card["test_metrics"]:
        values = [row[k] for k in ("dice_mean", "dice_median", "hd95_mean_mm", "nsd_mean")]
        shown = ["–" if v is None else f"{v:.3f}" for v in values]
        lines.append(
            f"| {row['label']} | {row['reference']} | {row['n']} | " + " | ".join(shown) + f" | {row['missed']} | "
            f"{row['false_positive']} |"
        )
    lines += [
        "",
        "Conventions: " + "; ".join(f"{k}: {v}" for k, v in card["test_metric_conventions"].items()),
        "",
        "## Use",
        "",
        "- tsretrain: `tsretrain infer DICOM_FOLDER --model THIS.zip --out OUT` writes an RTSTRUCT and a DICOM-SEG "
        "per CT series.",
        "- nnU-Net: `nnUNetv2_install_pretrained_model_from_zip THIS.zip`; for a tsretrain trainer set "
        "`nnUNet_extTrainer` to the folder of `tsretrain/trainers/` (or install tsretrain).",
        "",
        "## Provenance",
        "",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in card["versions"].items()),
        f"- commit: {card['commit']}; created {card['created']}",
        "- the package names no patient: no validation outputs, logs or split files; checked at export.",
        "",
    ]
    return "\n".join(lines)


def export(config: ExportConfig) -> StageResult:
    folders = NnunetFolders(config.work)
    plans_name = config.model.plans_in(folders.preprocessed)
    trained = folders.results / config.model.dataset / config.model.model_folder(plans_name)
    missing = _missing(config, trained)
    if missing:
        raise UserError("export: the run is not finished; missing:\n  " + "\n  ".join(missing))
    dictionary = load_dictionary(config.model.dictionary)
    problems = dictionary.structure_id_problems()
    if problems:
        raise UserError(f"export: dictionary {dictionary.name}: " + "; ".join(problems))
    layout = RunLayout(config.run_dir)
    listing, split = read_rows(CASE_LISTING, layout.converted), read_split(layout.split)
    card = describe(config, plans_name, trained, listing, split, dictionary)
    dataset_json = _dataset_json(trained / "dataset.json")
    base = f"{config.model.dataset}/{trained.name}"
    members: dict[str, bytes] = {
        f"{base}/plans.json": (trained / "plans.json").read_bytes(),
        f"{base}/dataset.json": json.dumps(dataset_json, indent=1).encode(),
        f"{base}/dataset_fingerprint.json": (trained / "dataset_fingerprint.json").read_bytes(),
    }
    for fold in config.model.folds:
        fold_dir = trained / f"fold_{fold}"
        members[f"{base}/fold_{fold}/checkpoint_final.pth"] = _checkpoint(
            fold_dir / "checkpoint_final.pth", dataset_json
        )
        if (fold_dir / "progress.png").is_file():
            members[f"{base}/fold_{fold}/progress.png"] = (fold_dir / "progress.png").read_bytes()
    if card["postprocessing"]:  # nnU-Net's own files, as its export places them (no summary: it names the cases)
        decided = RunLayout(config.run_dir).postprocessing / "validation"
        for name in ("postprocessing.pkl", "postprocessing.json"):
            members[f"{base}/{card['postprocessing']['folder']}/{name}"] = (decided / name).read_bytes()
    from tsretrain.training.nnunet_trainers import tsretrain_trainers

    card_text = model_card(card)
    root = config.model.dataset
    members[f"{root}/{MODEL_JSON}"] = json.dumps(card, indent=1).encode()
    members[f"{root}/{CARD_FOLDER}/{MODEL_CARD}"] = card_text.encode()
    members[f"{root}/{DICTIONARY_FILE}"] = dictionary_text(config.model.dictionary).encode()
    members[f"{root}/{TRAINERS_FILE}"] = Path(tsretrain_trainers.__file__).read_bytes()
    identifiers = [i.encode() for i in _identifiers(listing, split)]
    named = sorted({f"{name}: {i.decode()}" for name, data in members.items() for i in identifiers if i in data})
    if named:
        raise RuntimeError(f"export: the package would name patients ({named[:5]}); nothing was written")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
    path = config.out / package_name(config.model, config.version)
    atomic_write_bytes(path, buffer.getvalue())
    atomic_write_text(config.out / MODEL_CARD, card_text)
    return StageResult(
        "export",
        {"package": str(path), "model_card": str(config.out / MODEL_CARD)},
        {"folds": len(config.model.folds), "labels": len(dictionary.labels), "bytes": len(buffer.getvalue())},
    )


@dataclass(frozen=True)
class Package:
    """A model package, ready to predict: its nnU-Net model folder, card and dictionary."""

    model_folder: Path
    card: dict[str, Any]
    dictionary: OrganDictionary

    def postprocessing(self) -> Steps | None:
        """nnU-Net's post-processing steps the package carries (from its postprocessing.json), or None."""
        described = self.card.get("postprocessing")
        if not described:
            return None
        path = self.model_folder / described["folder"] / "postprocessing.json"
        if not path.is_file():
            raise UserError(f"the package's model card names {described['folder']}/postprocessing.json; it is missing")
        return steps_of(json.loads(path.read_text()), str(path.relative_to(self.model_folder.parent)))

    @property
    def algorithm(self) -> Algorithm:
        return Algorithm(str(self.card["id"]), str(self.card["version"]))

    @classmethod
    def open(cls, location: Path | str, scratch: Path) -> Package:
        """The package at ``location`` (a zip, extracted below ``scratch``, a folder, or a store URI of a zip)."""
        path = Path(location)
        if "://" in str(location):
            path = scratch / "package.zip"
            prefix, _, name = str(location).rpartition("/")
            store = open_store(prefix)
            size = store.list("").get(name)  # the objects beside it (a package folder is small)
            if size is None:
                raise UserError(f"--model {location}: no such object in the store", "give the URI export published")
            store.get_file(name, path, size)
        if not path.exists():
            raise UserError(f"--model {path} does not exist: give the zip that `tsretrain export` wrote")
        if path.is_dir() and not list(path.glob(f"*/{MODEL_JSON}")):  # export's output folder: its one package
            zips = sorted(path.glob("*.zip"))
            if len(zips) != 1:
                found = ", ".join(z.name for z in zips) or "none"
                raise UserError(f"--model {path}: name one package zip of the folder (found: {found})")
            path = zips[0]
        root = path
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise UserError(f"--model {path} is not a zip: give the package that `tsretrain export` wrote")
            root = scratch / "model"
            with zipfile.ZipFile(path) as archive:
                archive.extractall(root)
        cards = sorted(root.glob(f"*/{MODEL_JSON}"))
        if not cards:
            raise UserError(f"--model {path} holds no {MODEL_JSON}: it is not a tsretrain model package")
        card = json.loads(cards[0].read_text())
        dataset = cards[0].parents[1]
        trained = dataset / f"{card['trainer']}__{card['plans']}__{card['configuration']}"
        dictionary = parse_dictionary((dataset / DICTIONARY_FILE).read_text(), f"{path}: {DICTIONARY_FILE}")
        return cls(trained, card, dictionary)
