"""The Stage record and its parts: everything tsretrain knows about a stage is one ``Stage`` (its typed
configuration and run function, its options, what it reads and writes in the run layout, what it fans out over,
its pod class and image, its cluster and local policy). The records themselves are in ``registry``."""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from tsretrain.errors import UserError
from tsretrain.model import Model
from tsretrain.run_files import BATCH, RunFile
from tsretrain.sizing import PodClassName
from tsretrain.stages import StageResult

FanOut = Literal["cases", "fold"]
"""What a stage runs once per (the configuration field set per item): ``cases``, a batch of cases (a cluster pod
each), or ``fold``, a fold of the model (a GPU pod each on a cluster, one after the other locally)."""
ImageFamily = Literal["cpu", "gpu", "pseudolabel"]
"""The images a step runs from: the CPU steps', the GPU steps' (CUDA torch) and the pseudo-label step's
(TotalSegmentator too)."""

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

INPUT = "input"
"""The location of the run's DICOM input (a folder locally, the ``input-prefix`` on a cluster)."""
RUN = "."
"""The run folder itself (a pod's work folder, the store prefix)."""
TRAINING, INFERENCE = "training", "infer"
"""The cluster's workflows (WorkflowTemplates): a training run, and the inference on new patients."""


class OnCluster(StrEnum):
    """A value the rendered workflow gives an option on a cluster (``Stage.on_cluster``)."""

    INPUT_PREFIX = "input-prefix"  # the DICOM tree's store URI (the workflow parameter), read by header ranges
    STAGED_INPUT = "staged-input"  # the batch's own files, staged into the pod from the input prefix first
    BATCH_INVENTORY = "batch-inventory"  # the batch's slice of the scan's inventory
    BATCHES = "batches"  # the file leaving a later fan-out's batch ids (an output parameter)
    SIZES = "sizes"  # the folder leaving each step's budget (output parameters): the training workflow only
    RESULTS_STORE = "results-store"  # the run's nnUNet_results in the store: each fold publishes there itself
    RUN_PREFIX = "run-prefix"  # the run's store prefix (the same on a resume, unlike the workflow's name)
    WEIGHTS = "weights"  # TotalSegmentator's weights: the chart's read-only claim, mounted in the pod
    MODEL = "model"  # the model package's store URI (the inference workflow's parameter)


class Local(StrEnum):
    """A value a local run gives an option (``Option.locally``)."""

    SYNTHETIC = "synthetic"  # true when the run makes its own input (no ``input``: the synthetic cohort)


@dataclass(frozen=True)
class Gather:
    """A fan-in step after a fan-out stage: every batch's records of ``location`` gathered into its listing by the
    ``command`` subcommand (step ``name``), which publishes ``listing``."""

    name: str
    location: str
    records: str
    listing: str
    command: str


@dataclass(frozen=True)
class Switch:
    """The boolean workflow parameter adding optional stages to a cluster run: its name, default and description."""

    name: str
    default: bool
    description: str


@dataclass(frozen=True)
class Option:
    """How one configuration field is set from the command line, and, for a path, where it points in a run."""

    help: str
    flags: tuple[str, ...] = ()  # default --field-name; a bool may give "--on/--off"
    argument: bool = False  # positional
    at: str | None = None  # a run location (``tsretrain.layout``) or INPUT: the field points there in a run
    below: str = ""  # ... at this path below it ({dataset}: the model's dataset folder)
    when: str | None = None  # ... only when this stage is part of the run (unset otherwise)
    # on a cluster: the workflow parameter setting it (the one its workflow has, where options share a record)
    parameters: tuple[str, ...] = ()
    locally: Local | None = None  # in a local run: a value the run gives it

    def cli_flags(self, name: str) -> tuple[str, ...]:
        return self.flags or ("--" + name.replace("_", "-"),)


@dataclass(frozen=True)
class Files:
    """Files of a location a stage reads or writes; on a cluster its pod moves only those matching ``include``."""

    location: str
    # fnmatch patterns relative to the location (``*`` never crosses ``/``); the pod fills in ``{batch}`` and
    # ``{case}``, the rendered workflow ``{trainer}`` (the run's trainer) and ``{fold}`` (a fold fan-out's item)
    include: tuple[str, ...] = ()


C = TypeVar("C", bound="DataclassInstance")


@dataclass(frozen=True)
class Stage(Generic[C]):
    """One stage, declared once: its configuration's type ``C`` and the function running it on one."""

    name: str
    config: type[C]
    run: Callable[[C], StageResult]
    help: str
    options: dict[str, Option]
    model: tuple[str, ...] = ()  # the Model fields the stage takes as options (its configuration has ``model``)
    reads: tuple[Files, ...] = ()
    writes: tuple[Files, ...] = ()
    fan_out: FanOut | None = None  # what it runs once per: a batch of cases or a fold of the model
    batches: RunFile = BATCH  # the batch files of a "cases" fan-out (their writer makes the list of batches)
    cases_from: RunFile | None = None  # the file naming the cases of ``{case}`` in ``reads``
    resources: PodClassName = "cpu"  # its pod's class (tsretrain.sizing.POD_CLASSES)
    image: ImageFamily = "cpu"  # its image (images/<family>.Dockerfile)
    workflows: tuple[str, ...] = (TRAINING,)  # the cluster workflows running it (synth makes a local cohort only)
    on_cluster: dict[str, OnCluster | bool] = field(default_factory=dict, hash=False)  # options only a cluster sets
    gather: Gather | None = None  # the fan-in step after its fan-out
    # On a cluster: attempts after the first (a usage error is never retried); the deadline (hours) of a step whose
    # time does not follow from the data (the others get the scan's budget, tsretrain.sizing); whether the stage
    # publishes what it writes itself (each fold under --store) instead of its pod; the workflow parameter that
    # adds an optional stage, and the suffix of a later stage's variant that reads this one's outputs
    retries: int = 1
    hours: float | None = None
    whole_dataset: bool = False  # its pod holds the whole dataset: at least data-scratch of disk, not scratch
    publishes: bool = False
    switch: Switch | None = None
    variant: str = ""
    makes_input: bool = False  # writes the run's input (the synthetic cohort): left out when the run names one
    local: bool = True  # part of a local run (a cluster run's shares of preprocess are not: preprocess does it all)
    internal: tuple[str, ...] = ()  # configuration fields left at their defaults (not options)

    def all_options(self) -> dict[str, Option]:
        """The stage's options in command-line order: its own, then the model's it takes."""
        return {**self.options, **{name: MODEL_OPTIONS[name] for name in self.model}}

    def defaults(self) -> dict[str, Any]:
        """Default of every option (``MISSING`` when required)."""
        own = {f.name: _default(f) for f in fields(self.config) if f.name in self.options}
        model = {f.name: _default(f) for f in fields(Model) if f.name in self.model}
        return {**own, **model}

    def types(self) -> dict[str, Any]:
        """Type of every option: its configuration field's (or the model's)."""
        own, model = typing.get_type_hints(self.config), typing.get_type_hints(Model)
        return {**{name: own[name] for name in self.options}, **{name: model[name] for name in self.model}}

    def configure(self, values: dict[str, Any], model: Model | None = None) -> C:
        """The stage's configuration from option values: the model fields among them gathered into one Model (on
        ``model``, the run's whole model, when given); a value outside its field's choices (a ``Literal``) is
        refused."""
        own = {k: v for k, v in values.items() if k in self.options}
        unknown = set(values) - set(self.options) - set(self.model)
        if unknown:
            raise UserError(f"{self.name}: unknown setting(s) {sorted(unknown)}; known: {sorted(self.all_options())}")
        types = self.types()
        for name, value in values.items():
            choices = _choices(types[name])
            if choices and value not in choices:
                raise UserError(
                    f"{self.name}: {name} is {value!r}", f"choose one of {', '.join(str(c) for c in choices)}"
                )
        try:
            if self.model:
                given = {k: v for k, v in values.items() if k in self.model}
                own["model"] = replace(model, **given) if model is not None else Model(**given)
            return self.config(**own)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{self.name}: {exc}") from exc


AnyStage = Stage[Any]
"""A stage of any configuration (the registry's tuple holds all of them)."""


def _choices(hint: Any) -> tuple[Any, ...]:
    """The values a ``Literal`` field (or an optional one) takes; none for any other type."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    options = [arg for arg in typing.get_args(hint) if typing.get_origin(arg) is Literal]
    return (*typing.get_args(options[0]), None) if options and type(None) in typing.get_args(hint) else ()


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def parse_list(text: str) -> list[str]:
    """``a,b`` or a JSON list (``["0", "1"]``, as Argo passes one) as a list of strings."""
    text = text.strip()
    if text.startswith("["):
        try:
            return [str(item) for item in json.loads(text)]
        except json.JSONDecodeError as exc:
            raise UserError(f"not a JSON list: {text}") from exc
    return [item.strip() for item in text.split(",") if item.strip()]


DICTIONARY = Option("Shipped dictionary name or YAML path.", flags=("--dictionary", "-d"), parameters=("dictionary",))
MODEL_OPTIONS = {
    "dataset": Option("nnU-Net dataset folder name: Dataset<3-digit id>_<name>.", parameters=("dataset",)),
    "dictionary": DICTIONARY,
    "trainer": Option("Trainer class (tsretrain's or nnU-Net's).", parameters=("trainer",)),
    "plans": Option("Plans name (default: the plans the preprocess stage wrote).", parameters=("plans",)),
    "configuration": Option(
        "nnU-Net configuration (3d_tiny: the CPU-sized one of tsretrain).", parameters=("configuration",)
    ),
    "folds": Option("Folds trained and ensembled: 0,1,2 or a JSON list.", parameters=("folds",)),
}
