"""``tsretrain run``: the stages of one run, in the registry's order, on local storage, skipping the finished ones.

The run folder follows the run layout (``tsretrain.layout``); ``.stages/`` holds one record per finished stage
with its configuration hash and result. A stage is skipped when its record exists with the same configuration
hash; stages themselves also resume (conversion skips finished cases, training continues from the last
checkpoint).

The configuration (``default.yaml``, updated section by section with ``--config``): ``input`` (a DICOM folder;
null generates the synthetic cohort), ``model`` (the Model's fields), one section per stage holding its own
settings (paths come from the layout, model fields from ``model``) and ``stages`` (which ones run).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tsretrain.errors import UserError
from tsretrain.layout import RunLayout
from tsretrain.model import Model
from tsretrain.pipeline import summary
from tsretrain.pipeline.registry import BY_NAME, NAMES, run_stage
from tsretrain.pipeline.stage import INPUT, RUN, AnyStage, Local
from tsretrain.pipeline.summary import StageClock
from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_text
from tsretrain.ui import console, log


def default_config() -> dict[str, Any]:
    text = (resources.files("tsretrain.pipeline") / "default.yaml").read_text()
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def load_config(path: Path | None) -> dict[str, Any]:
    """The default run, updated section by section with the user's YAML; unknown sections, stages and settings
    are refused."""
    config = default_config()
    if path is not None:
        if not path.is_file():
            raise UserError(f"run configuration {path} does not exist", "give a YAML file (default.yaml's sections)")
        try:
            user = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{path} is not valid YAML: {exc}".replace("\n", " ")) from exc
        if not isinstance(user, dict):
            raise UserError(
                f"{path}: expected sections (input, model, stages, one per stage), not {type(user).__name__}"
            )
        unknown = set(user) - set(config) - set(NAMES)
        if unknown:
            raise UserError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted({*config, *NAMES})}")
        for key, value in user.items():
            config[key] = {**config.get(key, {}), **value} if isinstance(config.get(key, {}), dict) else value
    unknown_stages = [s for s in config["stages"] if s not in BY_NAME]
    if unknown_stages:
        raise UserError(f"unknown stage(s) {unknown_stages}", f"stages are {', '.join(NAMES)}")
    model_fields = {f.name for f in fields(Model)}
    for key in config["model"]:
        if key not in model_fields:
            raise UserError(f"model: unknown setting {key!r}; known: {sorted(model_fields)}")
    for name in NAMES:
        bound = {k for k, option in BY_NAME[name].options.items() if option.at} | {BY_NAME[name].fan_out}
        settable = set(BY_NAME[name].options) - bound
        given = set(config.get(name) or {})
        if given & bound:
            raise UserError(f"{name}: {sorted(given & bound)} cannot be set here (paths come from the run layout)")
        unknown_settings = sorted(given - settable)
        if unknown_settings:
            wrong = unknown_settings[0]
            close = difflib.get_close_matches(wrong, sorted(settable), n=1)
            raise UserError(
                f"{name}: unknown setting {wrong!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
                f"{name}'s settings: {', '.join(sorted(settable))}",
            )
    return config


@dataclass(frozen=True)
class Run:
    """One run: its folder and configuration."""

    folder: Path
    config: dict[str, Any]

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.folder)

    @property
    def model(self) -> Model:
        values = dict(self.config["model"])
        if "folds" in values:
            values["folds"] = tuple(values["folds"])
        return Model(**values)

    @property
    def input(self) -> Path:
        given = self.config.get("input")
        return Path(given) if given else self.layout.cohort / "dicom"

    def path(self, location: str, below: str = "") -> Path:
        base = self.input if location == INPUT else self.folder if location == RUN else self.layout.at(location)
        return base / below.format(dataset=self.model.dataset) if below else base

    def settings(self, stage: AnyStage) -> dict[str, Any]:
        """A stage's option values in this run: its section, the run layout's paths and the model's fields."""
        model = {f.name: getattr(self.model, f.name) for f in fields(Model)}
        values: dict[str, Any] = {k: model[k] for k in stage.all_options() if k in model}
        values.update(self.config.get(stage.name) or {})
        for name, option in stage.options.items():
            if option.at and (option.when is None or option.when in self.config["stages"]):
                values[name] = self.path(option.at, option.below)
        for name, option in stage.options.items():
            if option.locally is Local.SYNTHETIC:
                values[name] = not self.config.get("input")
        return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}

    def configure(self, stage: AnyStage, **values: Any) -> Any:
        """A stage's configuration in this run (``values`` on top of its settings, as a fold): a stage holding a
        model gets the run's whole model."""
        return stage.configure({**self.settings(stage), **values}, self.model)

    def execute(self, stage: AnyStage) -> StageResult:
        """Run a stage; a stage that fans out over folds runs once per fold of the model."""
        if stage.fan_out != "fold":
            return run_stage(stage, self.configure(stage))
        outputs, counts = {}, {}
        for fold in self.model.folds:
            result = run_stage(stage, self.configure(stage, fold=fold))
            outputs[f"fold_{fold}"] = next(iter(result.outputs.values()))
            counts.update({f"fold_{fold}_{k}": v for k, v in result.counts.items() if k != "fold"})
        return StageResult(stage.name, outputs, counts)

    def stage_hash(self, stage: str) -> str:
        """What a stage's result depends on: the configuration up to and including that stage."""
        upto = NAMES[: NAMES.index(stage) + 1]
        relevant = {k: v for k, v in self.config.items() if k in upto or k in ("input", "model")}
        return hashlib.sha256(json.dumps([upto, relevant], sort_keys=True).encode()).hexdigest()

    def record(self, stage: str) -> Path:
        return self.layout.records / f"{stage}.json"

    def is_done(self, stage: str) -> bool:
        path = self.record(stage)
        return path.is_file() and json.loads(path.read_text()).get("config_hash") == self.stage_hash(stage)


def run(
    folder: Path, config_path: Path | None = None, only: tuple[str, ...] = (), force: bool = False
) -> list[StageResult]:
    """Run the configured stages (or ``only`` those) in registry order; returns what each stage produced."""
    config = load_config(config_path)
    unknown = [s for s in only if s not in BY_NAME]
    if unknown:
        raise UserError(f"unknown stage(s) {unknown}; stages are {NAMES}")
    the_run = Run(folder, config)
    wanted = [
        s
        for s in NAMES
        if s in config["stages"] and (not only or s in only) and not (config.get("input") and BY_NAME[s].makes_input)
    ]
    results = []
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RunLayout(folder).at("run_config"), json.dumps(config, indent=1))
    for name in wanted:
        if not force and the_run.is_done(name):
            console.print(f"[dim]{name}: complete, skipped[/dim]")
            continue
        console.rule(f"[bold]{name}")
        log.info("stage %s starting", name)
        with StageClock() as clock:
            result = the_run.execute(BY_NAME[name])
        record = {"config_hash": the_run.stage_hash(name), "result": json.loads(result.to_json()), **clock.record()}
        atomic_write_text(the_run.record(name), json.dumps(record, indent=1))
        console.print(f"[green]{name} done[/green] {result.summary()}")
        results.append(result)
    summary.show(folder)
    return results
