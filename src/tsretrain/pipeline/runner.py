"""``tsretrain run``: the stages of one run, in order, on local storage, skipping the finished ones.

Run folder::

    cohort/      synthetic DICOM cohort (when no input is given)
    scan/        inventory.json, cases.csv
    converted/   cases/<case>/..., cases.csv
    pseudolabels/ TotalSegmentator maps and merged label maps (when the stage is in the run)
    split/       split.json, splits_final.json, split_report.md
    nnunet/      nnUNet_raw, nnUNet_preprocessed, nnUNet_results
    predictions/ test/ (fold ensemble), validation/fold_<k>/
    .stages/     one record per finished stage: its configuration hash and result

A stage is skipped when its record exists with the same configuration hash; stages themselves also resume
(conversion skips finished cases, training continues from the last checkpoint).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tsretrain.pipeline import summary
from tsretrain.pipeline.summary import StageClock
from tsretrain.steps import StepResult
from tsretrain.storage.atomic import atomic_write_text
from tsretrain.ui import console, log

STAGES = (
    "synth",
    "scan",
    "convert",
    "pseudolabel",
    "split",
    "assemble",
    "preprocess",
    "train",
    "predict",
    "evaluate",
    "report",
)


def default_config() -> dict[str, Any]:
    text = (resources.files("tsretrain.pipeline") / "default.yaml").read_text()
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def load_config(path: Path | None) -> dict[str, Any]:
    """The default run, updated section by section with the user's YAML."""
    config = default_config()
    if path is not None:
        user = yaml.safe_load(path.read_text()) or {}
        unknown = set(user) - set(config)
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(config)}")
        for key, value in user.items():
            config[key] = {**config[key], **value} if isinstance(config.get(key), dict) else value
    return config


@dataclass(frozen=True)
class Run:
    """One run: its folder and configuration."""

    folder: Path
    config: dict[str, Any]

    @property
    def input(self) -> Path:
        given = self.config.get("input")
        return Path(given) if given else self.folder / "cohort" / "dicom"

    def stage_plan(self) -> dict[str, Callable[[], StepResult]]:
        from tsretrain.conversion.convert import ConvertConfig, convert
        from tsretrain.conversion.scan import ScanConfig, scan
        from tsretrain.dataset.assemble import AssembleConfig, assemble
        from tsretrain.dataset.split import SplitConfig, run_split
        from tsretrain.evaluation.evaluate import EvaluateConfig, evaluate
        from tsretrain.evaluation.report import ReportConfig, report
        from tsretrain.labels.pseudolabel import PseudolabelConfig, pseudolabel
        from tsretrain.synth.cohort import SynthConfig, generate
        from tsretrain.training.nnunet_env import NnunetFolders, dataset_folder_name
        from tsretrain.training.predict import PredictConfig, predict
        from tsretrain.training.preprocess import PreprocessConfig, preprocess
        from tsretrain.training.train import TrainConfig, train

        c, f = self.config, self.folder
        dataset = c["dataset"]
        dataset_folder = dataset_folder_name(dataset["id"], dataset["name"])
        work = f / "nnunet"
        t = c["train"]

        def train_all() -> StepResult:
            counts: dict[str, int] = {}
            for fold in t["folds"]:
                result = train(
                    TrainConfig(
                        work,
                        fold,
                        dataset["id"],
                        dataset["name"],
                        t["configuration"],
                        t["trainer"],
                        t.get("plans", "nnUNetPlans"),
                        t.get("epochs"),
                        t.get("save_every", 5),
                        t.get("device", "auto"),
                        iterations=t.get("iterations"),
                    )
                )
                counts[f"fold_{fold}_from_epoch"] = result.counts["resumed_from_epoch"]
            return StepResult("train", {"results": str(NnunetFolders(work).results)}, counts)

        return {
            "synth": lambda: generate(SynthConfig(out=f / "cohort", **c["synth"])),
            "scan": lambda: scan(ScanConfig(self.input, f / "scan", c["dictionary"])),
            "convert": lambda: convert(
                ConvertConfig(self.input, f / "converted", c["dictionary"], inventory=f / "scan" / "inventory.json")
            ),
            "split": lambda: run_split(SplitConfig(f / "converted", f / "split", **c["split"])),
            "assemble": lambda: assemble(
                AssembleConfig(
                    f / "converted",
                    f / "split",
                    NnunetFolders(work).raw,
                    dataset["id"],
                    dataset["name"],
                    c["dictionary"],
                    labels_from=f / "pseudolabels" if "pseudolabel" in c["stages"] else None,
                )
            ),
            "pseudolabel": lambda: pseudolabel(
                PseudolabelConfig(f / "converted", f / "pseudolabels", c["dictionary"], **c["pseudolabel"])
            ),
            "preprocess": lambda: preprocess(
                PreprocessConfig(work, f / "split", dataset["id"], dataset["name"], **c["preprocess"])
            ),
            "train": train_all,
            "predict": lambda: predict(
                PredictConfig(
                    work,
                    f / "predictions",
                    tuple(t["folds"]),
                    dataset["id"],
                    dataset["name"],
                    t["configuration"],
                    t["trainer"],
                    t.get("plans", "nnUNetPlans"),
                    t.get("device", "auto"),
                    **c["predict"],
                )
            ),
            "evaluate": lambda: evaluate(
                EvaluateConfig(
                    NnunetFolders(work).raw / dataset_folder / "labelsTs",
                    f / "predictions" / "test",
                    f / "evaluation",
                    c["dictionary"],
                    **c["evaluate"],
                )
            ),
            "report": lambda: report(ReportConfig(f, f / "report", dataset_folder, synthetic=not c.get("input"))),
        }

    def stage_hash(self, stage: str) -> str:
        """What a stage's result depends on: the configuration up to and including that stage."""
        upto = STAGES[: STAGES.index(stage) + 1]
        relevant = {k: v for k, v in self.config.items() if k in upto or k in ("input", "dictionary", "dataset")}
        return hashlib.sha256(json.dumps([upto, relevant], sort_keys=True).encode()).hexdigest()

    def record(self, stage: str) -> Path:
        return self.folder / ".stages" / f"{stage}.json"

    def is_done(self, stage: str) -> bool:
        path = self.record(stage)
        return path.is_file() and json.loads(path.read_text()).get("config_hash") == self.stage_hash(stage)


def run(
    folder: Path, config_path: Path | None = None, only: tuple[str, ...] = (), force: bool = False
) -> list[StepResult]:
    """Run the configured stages (or ``only`` those) in order; returns what each stage produced."""
    config = load_config(config_path)
    the_run = Run(folder, config)
    wanted = [s for s in config["stages"] if s in STAGES and (not only or s in only)]
    if config.get("input") and "synth" in wanted:
        wanted.remove("synth")
    unknown = [s for s in (*config["stages"], *only) if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {STAGES}")
    plan = the_run.stage_plan()
    results = []
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "run_config.json", json.dumps(config, indent=1))
    for stage in wanted:
        if not force and the_run.is_done(stage):
            console.print(f"[dim]{stage}: complete, skipped[/dim]")
            continue
        console.rule(f"[bold]{stage}")
        log.info("stage %s starting", stage)
        with StageClock() as clock:
            result = plan[stage]()
        record = {"config_hash": the_run.stage_hash(stage), "result": json.loads(result.to_json()), **clock.record()}
        atomic_write_text(the_run.record(stage), json.dumps(record, indent=1))
        console.print(f"[green]{stage} done[/green] {result.summary()}")
        results.append(result)
    summary.show(folder)
    return results
