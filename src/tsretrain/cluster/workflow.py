"""The cluster run as Argo WorkflowTemplates (Hera 7.x, Argo Workflows v4), generated from the stage registry: the
training run (``tsretrain``) and the inference on new patients with a run's model package (``tsretrain-infer``),
each a ``Flavour`` (its stages, parameters and cluster-only option values).

Every stage of ``tsretrain.pipeline.registry`` that runs on a cluster becomes one container template running
``tsretrain pod`` from its image family: the pod fetches what the stage reads (only the files it needs), runs
the stage's subcommand with the options the registry declares, and publishes what the stage writes, all at the
run layout's relative paths below ``/work`` and below the run's store prefix. A ``claim`` step first fixes the
prefix (``output-prefix``, or ``runs-prefix/<workflow name>``) and refuses one holding another run unless
``resume=true``; the exit handler records how the run ended in ``status.json`` (the failed steps read from the
workflow's own record in the Kubernetes API).

Values only the Helm chart knows (secret, images, GPU scheduling, claims, ConfigMap) are ``__TOKENS__`` that the
chart replaces when it installs this file.

Argo substitutes its ``{{...}}`` variables in string fields only: a typed field (a resource quantity, an emptyDir
``sizeLimit``) holding one is refused by the API server (the CRD's patterns) and by Argo's decoder. Sizes that a run
sets (``scratch``, ``data-scratch``) therefore reach the pod through the template's ``podSpecPatch``, a string that
Argo substitutes and then applies to the pod spec as a strategic merge patch; the GPU steps' scheduling (runtime
class, node selector, tolerations) is part of the same patch, filled in by the chart.

Needs the ``cluster`` extra (Hera). Render: ``python pipelines/workflow.py training >
helm/tsretrain/files/workflowtemplate.yaml`` and ``... infer > helm/tsretrain/files/infer-workflowtemplate.yaml``
(``make workflow`` writes both).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from typing import Any

import yaml
from hera.workflows import (
    DAG,
    ConfigMapVolume,
    Container,
    EmptyDirVolume,
    Env,
    ExistingVolume,
    Parameter,
    Resources,
    RetryStrategy,
    SecretEnv,
    Task,
    WorkflowTemplate,
)
from hera.workflows.models import (
    Backoff,
    Capabilities,
    IntOrString,
    PodGC,
    PodSecurityContext,
    Quantity,
    SeccompProfile,
    SecurityContext,
    TTLStrategy,
    ValueFrom,
)

from tsretrain.errors import USER_ERROR_EXIT
from tsretrain.layout import relative
from tsretrain.pipeline.registry import BY_NAME, STAGES
from tsretrain.pipeline.stage import INFERENCE, INPUT, RUN, AnyStage, Files, Gather, OnCluster, Option
from tsretrain.pipeline.stage import TRAINING as TRAINING_RUN
from tsretrain.sizing import MEMORY_SIZED, POD_CLASSES, SIZED, TIMED, quantity

NAME = "tsretrain"
WORK = "/work"
OUT = "{{inputs.parameters.output-prefix}}"  # every stage template receives the claimed prefix
DICTIONARIES = "/etc/tsretrain/dictionaries"  # the chart's dictionaries ConfigMap, mounted in every pod
BATCHES = "/tmp/batches.json"
SIZES = "/tmp/sizes"  # the scan's budget of each sized step (disk, memory, deadline), from the run's work
RECORDS = f"{OUT}/{relative('records')}"  # the steps' completion records in the run's store
CLAIMED = "/tmp/output-prefix"
IMAGE_USER = 10001  # the user (and group) of every image (images/*.Dockerfile): pods run as it


def param(name: str) -> str:
    return "{{workflow.parameters." + name + "}}"


@dataclass(frozen=True)
class WorkflowParameter:
    """A workflow parameter; the stage options it sets name it (``Option.parameters``). Its default is the
    options' configuration default (``None``), or one the cluster wants instead (a GPU, a real run's epochs)."""

    name: str
    default: str | None
    description: str

    def value(self, stages: list[AnyStage]) -> str:
        """The default as Argo passes it: given, or the configurations' (one value, as the command line takes it)."""
        if self.default is not None:
            return self.default
        found = {
            _argument(stage.defaults()[name])
            for stage in stages
            for name, option in stage.all_options().items()
            if self.name in option.parameters
        }
        if len(found) != 1:
            raise ValueError(f"parameter {self.name}: its options' defaults differ or are missing ({found})")
        return found.pop()


def _argument(value: Any) -> str:
    """A configuration default as a workflow parameter holds it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return json.dumps([str(item) for item in value])
    return "" if value is None else str(value)


PARAMETERS = (
    WorkflowParameter("input-prefix", "s3://tsretrain/input/dicom", "store URI of the DICOM tree (any layout)"),
    WorkflowParameter("output-prefix", "", "store URI of this run's outputs; empty: runs-prefix/<workflow name>"),
    WorkflowParameter("runs-prefix", "s3://tsretrain/runs", "store URI under which each run gets its own prefix"),
    WorkflowParameter("resume", "false", "true: continue a run in a non-empty output-prefix (resumes training)"),
    WorkflowParameter("s3-endpoint", "__S3_ENDPOINT__", "S3 endpoint URL (empty for AWS)"),
    WorkflowParameter(
        "dictionary",
        "radcure-oar21",
        f"organ dictionary: a shipped name or a YAML of the chart's ConfigMap ({DICTIONARIES}/NAME.yaml)",
    ),
    WorkflowParameter("model-version", None, "version of the model package"),
    WorkflowParameter("dataset", None, "nnU-Net dataset: Dataset<3-digit id>_<name>"),
    WorkflowParameter("cv-folds", None, "cross-validation folds the split makes"),
    WorkflowParameter("folds", '["0", "1", "2", "3", "4"]', "JSON list of folds trained (one GPU pod each)"),
    WorkflowParameter("trainer", None, "nnU-Net trainer (nnUNetTrainerTsrTiny: a cheap run)"),
    WorkflowParameter("planner", None, "default, resenc-m or resenc-l"),
    WorkflowParameter("plans", None, "plans name; empty: the planner's"),
    WorkflowParameter("configuration", None, "nnU-Net configuration (3d_tiny: a cheap run)"),
    WorkflowParameter("epochs", "1000", "training epochs"),
    WorkflowParameter(
        "device",
        "cuda",
        "device of pseudolabel, train, validate and predict: cuda (fails at once without a GPU) or cpu",
    ),
    WorkflowParameter("iterations", None, "iterations per epoch of the tiny trainer; empty: its own"),
    WorkflowParameter(
        "init-from",
        None,
        "fine-tune from a pretrained model: store URI of a model package (a run's export); its plans are "
        "transferred and every layer but the head loaded; empty: train from scratch",
    ),
    WorkflowParameter("second-stage-loss", None, "its loss: focal or weighted"),
    WorkflowParameter("second-stage-epochs", "250", "its fine-tuning epochs"),
    WorkflowParameter(
        "postprocess-search",
        None,
        "all: nnU-Net's post-processing search on the validation folds (a full evaluation per label: choose none "
        "for radcure-ts90 at RADCURE's size); none: the test predictions unchanged",
    ),
    WorkflowParameter("convert-batch-size", None, "cases per conversion and pseudo-label pod"),
    WorkflowParameter("predict-batch-size", None, "test cases per prediction pod"),
    WorkflowParameter(
        "max-batches",
        None,
        "most conversion and pseudo-label pods: larger batches beyond (the workflow object stays under 1 MiB)",
    ),
    WorkflowParameter(
        "scratch", None, "least local disk of a step holding a batch or a listing (more when the work needs it)"
    ),
    WorkflowParameter(
        "data-scratch",
        None,
        "least local disk of a step holding the whole dataset (more when the work needs it; see README)",
    ),
    WorkflowParameter("cpu-image", "__CPU_IMAGE__", "image of the CPU steps"),
    WorkflowParameter("gpu-image", "__GPU_IMAGE__", "image of the GPU steps"),
    WorkflowParameter("pseudolabel-image", "__PSEUDOLABEL_IMAGE__", "image of the pseudo-label step"),
)
DISKS = ("scratch", "data-scratch")  # sizes of the pods' /work, checked by the claim step before any pod asks

# What only a cluster run sets: options with cluster values, retries, deadlines, local disk.


def batch_file(stage: AnyStage) -> str:
    """Where a batch of the stage's fan-out lists its cases (the scan's inventory slice, the split's test batch)."""
    return f"{WORK}/{relative(stage.batches.location)}/{stage.batches.pattern(batch='{batch}')}"


# The inference template: new patients' DICOM, a model package, contours out (``tsretrain infer`` per batch).
INFER_PARAMETERS = (
    *(p for p in PARAMETERS if p.name in ("input-prefix", "output-prefix", "runs-prefix", "resume", "s3-endpoint")),
    WorkflowParameter(
        "model", "s3://tsretrain/runs/RUN/export/PACKAGE.zip", "store URI of the model package (a run's export)"
    ),
    WorkflowParameter("device", "cuda", "device of the infer pods: cuda (fails at once without a GPU) or cpu"),
    WorkflowParameter("formats", "rtstruct,seg,nifti", "what each CT series gets"),
    WorkflowParameter("folds", "", "folds of the package ensembled; empty: all it holds"),
    WorkflowParameter("infer-batch-size", None, "patients per inference pod"),
    *(p for p in PARAMETERS if p.name in ("max-batches", "scratch", "cpu-image", "gpu-image")),
)


@dataclass(frozen=True)
class Flavour:
    """One WorkflowTemplate: the stages of its workflow in registry order, its parameters, and whether its scan
    sizes every step from the run's work."""

    name: str
    workflow: str
    parameters: tuple[WorkflowParameter, ...]
    sizes: bool

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in STAGES if self.workflow in stage.workflows)

    def all_parameters(self) -> tuple[WorkflowParameter, ...]:
        """Its parameters, then the switches of its optional stages (registry order)."""
        switches = dict.fromkeys(s.switch for s in STAGES if self.workflow in s.workflows and s.switch is not None)
        return self.parameters + tuple(
            WorkflowParameter(switch.name, str(switch.default).lower(), switch.description) for switch in switches
        )

    def parameter(self, option: Option) -> WorkflowParameter | None:
        """The workflow parameter of this template setting ``option`` (None: the option keeps its default)."""
        found = [p for p in self.all_parameters() if p.name in option.parameters]
        if len(found) > 1:
            raise ValueError(f"{self.name}: parameters {[p.name for p in found]} set the same option")
        return found[0] if found else None

    def budget(self, stage: str) -> tuple[str, ...]:
        """What the scan of this template sizes for the step from the run's work: ``disk``, ``memory``,
        ``deadline`` (none when this template's scan writes no budgets)."""
        if not self.sizes:
            return ()
        sized = {"disk": SIZED, "memory": MEMORY_SIZED, "deadline": TIMED}
        return tuple(kind for kind, steps in sized.items() if stage in steps)

    def disks(self) -> tuple[str, ...]:
        return tuple(d for d in DISKS if d in {p.name for p in self.parameters})

    def least_disk(self, stage: str) -> str:
        """The parameter of a step's least local disk: ``data-scratch`` for a step holding the whole dataset (where
        this template has it), ``scratch`` otherwise."""
        return "data-scratch" if BY_NAME[stage].whole_dataset and "data-scratch" in self.disks() else "scratch"


TRAINING = Flavour(NAME, TRAINING_RUN, PARAMETERS, sizes=True)
INFER = Flavour(f"{NAME}-{INFERENCE}", INFERENCE, INFER_PARAMETERS, sizes=False)
FLAVOURS = {flavour.workflow: flavour for flavour in (TRAINING, INFER)}
# The input parameter each fan-out item sets: a batch id (its cases come from its batch file), a fold.
ITEM = {"cases": "batch", "fold": "fold"}
RESOURCES = {
    name: Resources(
        cpu_request=pod.cpu_request,
        cpu_limit=pod.cpu_limit,
        memory_request=quantity(pod.memory_request),
        memory_limit=quantity(pod.memory_limit),
        gpus=pod.gpus or None,
    )
    for name, pod in POD_CLASSES.items()
}
SHM = "8Gi"  # nnU-Net's worker processes share batches through /dev/shm (counted against the memory limit)
RETRY_EXPRESSION = f"lastRetry.exitCode != '{USER_ERROR_EXIT}'"  # a usage error cannot go away: never retried
MAIN = "main"  # the name Argo gives a container template's container in the pod
# The GPU pods' scheduling, from the chart's values: JSON values the chart puts in place of these tokens.
GPU_SCHEDULING = {
    "runtimeClassName": "__GPU_RUNTIME_CLASS__",
    "nodeSelector": "__GPU_NODE_SELECTOR__",
    "tolerations": "__GPU_TOLERATIONS__",
}


def _env() -> list[Env | SecretEnv]:
    return [
        Env(name="AWS_ENDPOINT_URL", value=param("s3-endpoint")),
        SecretEnv(name="AWS_ACCESS_KEY_ID", secret_name="__S3_SECRET__", secret_key="access-key"),
        SecretEnv(name="AWS_SECRET_ACCESS_KEY", secret_name="__S3_SECRET__", secret_key="secret-key"),
        Env(name="PYTHONUNBUFFERED", value="1"),
        Env(name="HOME", value=f"{WORK}/home"),  # a writable home for a non-root user (matplotlib, torch caches)
    ]


def pod_spec_patch(disk: str, gpu: bool, memory: str | None = None) -> str:
    """The pod spec patch of a step: its ``/work`` disk (the emptyDir's ``sizeLimit`` and the container's
    ``ephemeral-storage`` request, both ``disk``, a quantity or an Argo variable), its memory when the run sizes it
    (request and limit both ``memory``) and a GPU pod's scheduling."""
    resources: dict[str, Any] = {"requests": {"ephemeral-storage": disk}}
    if memory is not None:
        resources = {"requests": {"ephemeral-storage": disk, "memory": memory}, "limits": {"memory": memory}}
    patch: dict[str, Any] = {
        "containers": [{"name": MAIN, "resources": resources}],
        "volumes": [{"name": "work", "emptyDir": {"sizeLimit": disk}}],
    }
    text = json.dumps(patch, separators=(",", ":"))
    if not gpu:
        return text
    scheduling = ",".join(f'"{key}":{token}' for key, token in GPU_SCHEDULING.items())
    return text[:-1] + "," + scheduling + "}"


def _volumes(stage: AnyStage | None) -> list[Any]:
    volumes: list[Any] = [
        EmptyDirVolume(name="work", mount_path=WORK),  # sized by the pod spec patch
        EmptyDirVolume(name="tmp", mount_path="/tmp", size_limit=Quantity("1Gi")),
        ConfigMapVolume(name="__DICTIONARIES__", mount_path=DICTIONARIES, read_only=True),
    ]
    if stage is not None and POD_CLASSES[stage.resources].shared_memory:  # nnU-Net's worker processes
        volumes.append(EmptyDirVolume(name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=Quantity(SHM)))
    if stage is not None and OnCluster.WEIGHTS in stage.on_cluster.values():  # provisioned once (README)
        volumes.append(
            ExistingVolume(name="weights", claim_name="__WEIGHTS_CLAIM__", mount_path="/weights", read_only=True)
        )
    return volumes


def _container(
    name: str,
    image: str,
    args: list[str],
    resources: Resources,
    *,
    stage: AnyStage | None = None,
    disk: str = param("scratch"),
    memory: str | None = None,
    deadline: int | str = 900,
    retries: int = 1,
    inputs: list[Parameter] | None = None,
    outputs: list[Parameter] | None = None,
) -> Container:
    return Container(
        name=name,
        image=param(f"{image}-image"),
        image_pull_policy="IfNotPresent",
        command=["tsretrain"],
        args=args,
        env=_env(),
        volumes=_volumes(stage),
        resources=resources,
        security_context=SecurityContext(allow_privilege_escalation=False, capabilities=Capabilities(drop=["ALL"])),
        inputs=inputs or [],
        outputs=outputs or [],
        active_deadline_seconds=deadline,
        retry_strategy=RetryStrategy(
            limit=retries,
            retry_policy="Always",
            expression=RETRY_EXPRESSION,
            backoff=Backoff(duration="30s", factor=IntOrString(2), cap="10m"),
        ),
        pod_spec_patch=pod_spec_patch(disk, stage is not None and POD_CLASSES[stage.resources].gpus > 0, memory),
    )


def _path(location: str, below: str = "") -> str:
    base = WORK if location == RUN else f"{WORK}/{relative(location)}"
    return f"{base}/{below.format(dataset=param('dataset'))}" if below else base


def cluster_values(stage: AnyStage, flavour: Flavour) -> dict[str, str | bool]:
    """The options the stage takes on a cluster (its record's ``on_cluster``), as this template gives them."""
    values: dict[str, str | bool] = {}
    for name, value in stage.on_cluster.items():
        if isinstance(value, bool):
            values[name] = value
        elif value is OnCluster.SIZES:
            if flavour.sizes:
                values[name] = SIZES
        else:
            values[name] = {
                OnCluster.INPUT_PREFIX: param("input-prefix"),
                OnCluster.STAGED_INPUT: f"{WORK}/dicom",
                OnCluster.BATCH_INVENTORY: batch_file(stage),
                OnCluster.BATCHES: BATCHES,
                OnCluster.RESULTS_STORE: f"{OUT}/{relative('results')}",
                OnCluster.RUN_PREFIX: OUT,
                OnCluster.WEIGHTS: "/weights",
                OnCluster.MODEL: param("model"),
            }[value]
    return values


def stage_args(stage: AnyStage, with_stages: set[str], flavour: Flavour = TRAINING) -> list[str]:
    """The stage's command line in a pod: cluster values, the fan-out item, workflow parameters, layout paths."""
    positional, options = [], []
    cluster = cluster_values(stage, flavour)
    for name, option in stage.all_options().items():
        value: str | bool | None = None
        parameter = flavour.parameter(option)
        if name in cluster:
            value = cluster[name]
        elif name == stage.fan_out:  # a batch's cases: filled in by the pod from the batch's inventory
            value = "{cases}" if name == "cases" else "{{inputs.parameters." + ITEM[name] + "}}"
        elif parameter is not None:
            value = param(parameter.name)
        elif option.at == INPUT:
            value = param("input-prefix")
        elif option.at and (option.when is None or option.when in with_stages):
            value = _path(option.at, option.below)
        if isinstance(value, bool):  # a --flag/--no-flag option
            options.append(option.cli_flags(name)[0].split("/")[0 if value else 1])
        elif value is not None:
            positional += [value] if option.argument else []
            options += [] if option.argument else [option.cli_flags(name)[0], value]
    return [stage.name, *positional, *options]


def _transfer(source: str, target: str, files: Files) -> str:
    return f"{source}={target}" + ("=" + ",".join(files.include) if files.include else "")


def _model_patterns(stage: AnyStage, files: Files) -> Files:
    """``files`` with the model placeholders of its patterns filled in as Argo variables: ``{trainer}`` the run's
    trainer, ``{fold}`` the fold of a fold fan-out (refused in any other stage)."""
    include = tuple(pattern.replace("{trainer}", param("trainer")) for pattern in files.include)
    if any("{fold}" in pattern for pattern in include):
        if stage.fan_out != "fold":
            raise ValueError(f"{stage.name} reads {files.include} but fans out over no folds")
        include = tuple(pattern.replace("{fold}", "{{inputs.parameters." + ITEM["fold"] + "}}") for pattern in include)
    return replace(files, include=include)


def pod_args(stage: AnyStage, with_stages: set[str], flavour: Flavour = TRAINING) -> list[str]:
    """``tsretrain pod`` around the stage: what it reads (only the files it needs), what it writes."""
    written = {files.location for name in with_stages for files in BY_NAME[name].writes}
    args = ["pod"]
    for files in stage.reads:
        if files.location in written:
            source = f"{OUT}/{relative(files.location)}"
            args += ["--get", _transfer(source, _path(files.location), _model_patterns(stage, files))]
    if not stage.publishes:
        for files in stage.writes:
            args += ["--put", _transfer(_path(files.location), f"{OUT}/{relative(files.location)}", files)]
    if stage.fan_out == "cases":  # the batch's id ({batch}, its manifest) and its cases ({case}, {cases})
        args += ["--batch", "{{inputs.parameters.batch}}", "--cases-from", batch_file(stage)]
    if stage.cases_from:  # {case} is each case listed in a file that the pod fetched first
        listed = stage.cases_from
        args += ["--cases-from", f"{_path(listed.location)}/{listed.name}"]
    args += ["--record", RECORDS]  # a resumed run skips the step when it was done with the same inputs
    if _reads_raw_input(stage, flavour):  # the raw DICOM tree's listing is one of those inputs
        args += ["--inputs", param("input-prefix")]
    for path in output_files(stage, flavour).values():  # what it leaves for the workflow, given back if skipped
        args += ["--output-file", path]
    return [*args, "--", *stage_args(stage, with_stages, flavour)]


def output_files(stage: AnyStage, flavour: Flavour = TRAINING) -> dict[str, str]:
    """The output parameters a stage's pod leaves in files: a later fan-out's batches, the steps' disk sizes."""
    cluster = cluster_values(stage, flavour)
    files = {"batches": BATCHES} if "batches_out" in cluster else {}
    if "sizes_out" in cluster:
        files |= {f"{kind}-{step}": f"{SIZES}/{kind}-{step}" for step in SIZED for kind in flavour.budget(step)}
    return files


def _reads_raw_input(stage: AnyStage, flavour: Flavour) -> bool:
    """Whether the stage reads the input prefix itself (scan lists it; convert reads what its batch's inventory
    names, whose sizes and times are in the inventory)."""
    raw = param("input-prefix")
    return any(
        option.at == INPUT and cluster_values(stage, flavour).get(name, raw) == raw
        for name, option in stage.options.items()
    )


def _prefix_args() -> list[str]:
    return ["--output-prefix", param("output-prefix"), "--runs-prefix", param("runs-prefix")]


def _gather(gather: Gather, prefix: Parameter) -> Container:
    """The step that gathers every batch's records of a fan-out stage into its listing."""
    stored, local = f"{OUT}/{relative(gather.location)}", _path(gather.location)
    return _container(
        gather.name,
        "cpu",
        [
            "pod",
            "--get",
            f"{stored}={local}={gather.records}",
            "--put",
            f"{local}={stored}={gather.listing}",
            "--manifest-name",
            f"_manifest-{gather.name}.json",
            "--record",
            RECORDS,
            "--",
            gather.command,
            local,
        ],
        RESOURCES["cpu"],
        deadline=3600,
        retries=2,
        inputs=[prefix],
    )


def _output(task: Task, name: str) -> str:
    """A reference to an output parameter of an earlier task (Hera checks that its template has it)."""
    value = task.get_parameter(name).value
    assert isinstance(value, str)
    return value


def _task(template: Container, **kwargs: Any) -> Task:
    """A DAG task calling ``template`` (inside the DAG's context)."""
    task = template(**kwargs)
    assert isinstance(task, Task)
    return task


def build(flavour: Flavour = TRAINING) -> WorkflowTemplate:
    """The WorkflowTemplate of a flavour."""
    cluster = [BY_NAME[name] for name in flavour.stages]
    always = {s.name for s in cluster if s.switch is None}
    prefix = Parameter(name="output-prefix")
    with WorkflowTemplate(
        name=flavour.name,
        entrypoint="pipeline",
        on_exit="record-status",
        service_account_name="__SERVICE_ACCOUNT__",
        parallelism=16,
        arguments=[
            Parameter(name=p.name, value=p.value(cluster), description=p.description) for p in flavour.all_parameters()
        ],
        labels={"app.kubernetes.io/name": NAME},
        security_context=PodSecurityContext(
            run_as_non_root=True,
            run_as_user=IMAGE_USER,
            run_as_group=IMAGE_USER,
            fs_group=IMAGE_USER,  # the emptyDirs and claims writable by the images' user
            seccomp_profile=SeccompProfile(type="RuntimeDefault"),
        ),
        pod_gc=PodGC(strategy="OnPodSuccess"),
        ttl_strategy=TTLStrategy(seconds_after_success=7 * 86400, seconds_after_failure=14 * 86400),
    ) as template:
        small = Resources(cpu_request=0.1, cpu_limit=1, memory_request="256Mi", memory_limit="1Gi")
        claim = _container(
            "claim",
            "cpu",
            [
                "claim",
                *_prefix_args(),
                "--workflow",
                "{{workflow.name}}",
                "--resume",
                param("resume"),
                *[arg for size in flavour.disks() for arg in ("--disk", f"{size}={param(size)}")],
                "--out-file",
                CLAIMED,
            ],
            small,
            disk="1Gi",
            retries=2,
            outputs=[Parameter(name="output-prefix", value_from=ValueFrom(path=CLAIMED))],
        )
        templates: dict[str, tuple[Container, AnyStage, set[str]]] = {}
        for stage in cluster:
            # an optional stage runs with the stages its parameter adds (the second stage's compare reads its predict)
            same = {s.name for s in cluster if s.switch is not None and s.switch == stage.switch}
            variants = {stage.name: always | same}
            optional = {when for option in stage.options.values() if (when := option.when) and _optional(when)}
            assert len(optional) <= 1, f"{stage.name}: variants for one optional stage only ({optional})"
            for when in optional:
                variants[f"{stage.name}-{BY_NAME[when].variant}"] = always | {when}
            for name, with_stages in variants.items():
                inputs = [prefix] + ([Parameter(name=ITEM[stage.fan_out])] if stage.fan_out else [])
                outputs = [
                    Parameter(name=n, value_from=ValueFrom(path=f)) for n, f in output_files(stage, flavour).items()
                ]
                budget = flavour.budget(stage.name)
                inputs += [Parameter(name=kind) for kind in budget]
                disk = "{{inputs.parameters.disk}}" if "disk" in budget else param(flavour.least_disk(stage.name))
                memory = "{{inputs.parameters.memory}}" if "memory" in budget else None
                hours = "{{inputs.parameters.deadline}}" if "deadline" in budget else int(_hours(stage) * 3600)
                container = _container(
                    name,
                    stage.image,
                    pod_args(stage, with_stages | {stage.name}, flavour),
                    RESOURCES[stage.resources],
                    stage=stage,
                    disk=disk,
                    memory=memory,
                    deadline=hours,
                    retries=stage.retries,
                    inputs=inputs,
                    outputs=outputs,
                )
                templates[name] = (container, stage, with_stages)
        _container(
            "record-status",
            "cpu",
            [
                "status",
                *_prefix_args(),
                "--workflow",
                "{{workflow.name}}",
                "--status",
                "{{workflow.status}}",
                "--namespace",
                "{{workflow.namespace}}",
            ],  # the failed steps: read from the workflow's record, never carried on the command line
            small,
            disk="1Gi",
            retries=2,
        )
        gathers = {stage.name: _gather(stage.gather, prefix) for stage in cluster if stage.gather is not None}
        sizer = next((s.name for s in cluster if "sizes_out" in cluster_values(s, flavour)), None)
        with DAG(name="pipeline"):
            nodes: dict[str, list[Task]] = {"claim": [_task(claim, name="claim")]}
            claimed = _output(nodes["claim"][0], "output-prefix")
            for stage in cluster:
                tasks = []
                for name, (container, owner, with_stages) in templates.items():
                    if owner is not stage:
                        continue
                    arguments = {"output-prefix": claimed}
                    for kind in flavour.budget(owner.name):  # sized by the scan from the work
                        assert sizer is not None
                        arguments[kind] = _output(nodes[sizer][0], f"{kind}-{owner.name}")
                    kwargs: dict[str, Any] = {}
                    if stage.fan_out:  # over the batches its batch-writing stage made, or the folds
                        arguments[ITEM[stage.fan_out]] = "{{item}}"
                        batches = nodes[stage.batches.writer][0] if stage.fan_out == "cases" else None
                        kwargs["with_param"] = _output(batches, "batches") if batches else param("folds")
                    condition = _condition(stage, with_stages)
                    if condition:
                        kwargs["when"] = condition
                    tasks.append(_task(container, name=name, arguments=arguments, **kwargs))
                nodes[stage.name] = tasks
                if stage.gather is not None:  # the listing of every batch's cases (excluded ones included)
                    gathered = _task(gathers[stage.name], name=stage.gather.name, arguments={"output-prefix": claimed})
                    nodes[stage.gather.name] = [gathered]
            for node, before in dependencies(steps(cluster, flavour, sizer)).items():
                for earlier in before:
                    for task in nodes[earlier]:
                        task >> nodes[node]
    return template


@dataclass(frozen=True)
class Step:
    """A task of the DAG as its edges see it: the run locations it reads and writes, and the steps it follows
    whatever it reads (a fan-in listing its fan-out; a sized step the scan)."""

    name: str
    reads: frozenset[str]
    writes: frozenset[str]
    after: frozenset[str] = frozenset()


def steps(cluster: list[AnyStage], flavour: Flavour, sizer: str | None) -> list[Step]:
    """The flavour's steps in registry order, each stage's fan-in listing right after it."""
    found = []
    for stage in cluster:
        sized = frozenset({sizer} if sizer and sizer != stage.name and flavour.budget(stage.name) else ())
        writes = frozenset(f.location for f in stage.writes)
        found.append(Step(stage.name, frozenset(f.location for f in stage.reads), writes, sized))
        if stage.gather is not None:
            location = frozenset({stage.gather.location})
            found.append(Step(stage.gather.name, location, location, frozenset({stage.name})))
    return found


def dependencies(ordered: list[Step]) -> dict[str, list[str]]:
    """The DAG's edges from what each step reads and writes: a step runs after every earlier step that writes a
    location it reads or writes, or reads a location it writes (the order of the registry kept wherever data
    flows), and after its ``after``; edges implied by others are left out; the first steps follow the claim."""
    direct: dict[str, set[str]] = {}
    for index, step in enumerate(ordered):
        direct[step.name] = set(step.after) | {
            earlier.name
            for earlier in ordered[:index]
            if earlier.writes & (step.reads | step.writes) or earlier.reads & step.writes
        }
    ancestors: dict[str, set[str]] = {}
    for step in ordered:
        ancestors[step.name] = set().union(*(ancestors[b] | {b} for b in direct[step.name]))
    edges = {}
    for step in ordered:
        before = direct[step.name]
        kept = [e.name for e in ordered if e.name in before and not any(e.name in ancestors[o] for o in before)]
        edges[step.name] = kept or ["claim"]
    return edges


def _optional(name: str) -> bool:
    """Whether ``name`` is a stage that a workflow parameter adds."""
    return name in BY_NAME and BY_NAME[name].switch is not None


def _hours(stage: AnyStage) -> float:
    if stage.hours is None:
        raise ValueError(f"{stage.name}: no deadline (hours) and no budget from the scan")
    return float(stage.hours)


def _condition(stage: AnyStage, with_stages: set[str]) -> str | None:
    """When a task runs: an optional stage when its parameter is true; a variant only with its stages."""
    if stage.switch is not None:
        return f"{param(stage.switch.name)} == true"
    variant = [when for o in stage.options.values() if (when := o.when) and _optional(when)]
    if not variant:
        return None
    on, switch = variant[0] in with_stages, BY_NAME[variant[0]].switch
    assert switch is not None
    return f"{param(switch.name)} {'==' if on else '!='} true"


EMPTY_ALLOWED = {"__S3_ENDPOINT__"}  # chart tokens whose value may be empty ("empty for AWS")


class _Dumper(yaml.SafeDumper):
    """Hera's YAML, with the tokens the chart may replace by nothing quoted (an empty value stays a string) and
    the pod spec patches holding GPU tokens in single quotes (the chart escapes for them)."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = '"' if value in EMPTY_ALLOWED else None
    if any(token in value for token in GPU_SCHEDULING.values()):
        style = "'"  # the chart puts JSON in place of these tokens, quotes doubled
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def render(flavour: Flavour = TRAINING) -> str:
    return yaml.dump(build(flavour).to_dict(), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1 << 16)


def main(argv: list[str]) -> None:
    """Write a flavour's template to standard output: ``training`` (the default) or ``infer``."""
    sys.stdout.write(render(FLAVOURS[argv[0] if argv else TRAINING_RUN]))
