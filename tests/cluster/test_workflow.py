"""The Argo WorkflowTemplate generated from the stage registry: strict schema, references, every container's
command parsed by the real CLI (workflow parameters reach every stage that needs them), the cluster contract
(GPU, retries, deadlines, hardening), golden file."""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from argo_sim.patch import apply as apply_patch
from argo_sim.pods import Image

from tsretrain.cli import parse_stage, subcommand
from tsretrain.conversion.scan import ScanConfig
from tsretrain.layout import relative
from tsretrain.model import Model
from tsretrain.pipeline.pod import parse_get, parse_put, placeholders
from tsretrain.pipeline.registry import BY_NAME, STAGES
from tsretrain.pipeline.stage import TRAINING, Files, OnCluster, Option, Stage, Switch
from tsretrain.sizing import MEMORY_SIZED, SIZED, TIMED
from tsretrain.stages import StageResult
from tsretrain.storage.store import matches

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "tests" / "cluster" / "schemas" / "argo-workflows-v4.0.10.schema.json"  # Argo v4.0.10, as published
GOLDEN = ROOT / "helm" / "tsretrain" / "files" / "workflowtemplate.yaml"
INFER_GOLDEN = ROOT / "helm" / "tsretrain" / "files" / "infer-workflowtemplate.yaml"
CLUSTER_STAGES = [s.name for s in STAGES if TRAINING in s.workflows]
TOKENS = {
    "__S3_SECRET__",
    "__S3_ENDPOINT__",
    "__CPU_IMAGE__",
    "__GPU_IMAGE__",
    "__PSEUDOLABEL_IMAGE__",
    "__GPU_RUNTIME_CLASS__",
    "__GPU_NODE_SELECTOR__",
    "__GPU_TOLERATIONS__",
    "__SERVICE_ACCOUNT__",
    "__WEIGHTS_CLAIM__",
    "__DICTIONARIES__",
}
PREFIX = "s3://bucket/runs/tsretrain-x1"
# A small, cheap cluster run: one fold of the tiny configuration, ResEnc M, a dataset id below 100, a custom
# dictionary from the chart's ConfigMap.
SAMPLE = {
    "workflow.parameters.folds": '["0"]',
    "workflow.parameters.planner": "resenc-m",
    "workflow.parameters.plans": "",
    "workflow.parameters.dictionary": "/etc/tsretrain/dictionaries/my-oars.yaml",
    "workflow.parameters.dataset": "Dataset042_HeadNeck",
    "workflow.parameters.trainer": "nnUNetTrainerTsrTiny",
    "workflow.parameters.configuration": "3d_tiny",
    "workflow.parameters.epochs": "3",
    "workflow.parameters.device": "cuda",
    "workflow.parameters.iterations": "4",
    "workflow.parameters.cv-folds": "5",
    "workflow.parameters.model-version": "2.1.0",
    "workflow.parameters.model": "s3://bucket/runs/tsretrain-x0/export/Dataset042_HeadNeck-3d_tiny-2.1.0.zip",
    "workflow.parameters.formats": "rtstruct,seg",
    "workflow.parameters.init-from": "s3://bucket/runs/tsretrain-x0/export/Dataset042_HeadNeck-3d_tiny-2.0.0.zip",
    "workflow.parameters.second-stage-loss": "weighted",
    "workflow.parameters.second-stage-epochs": "7",
    "workflow.parameters.postprocess-search": "none",
    "workflow.parameters.infer-batch-size": "3",
    "workflow.parameters.convert-batch-size": "2",
    "workflow.parameters.input-prefix": "s3://bucket/dicom",
    "inputs.parameters.output-prefix": PREFIX,
    "workflow.parameters.max-batches": "64",
    "workflow.parameters.predict-batch-size": "16",
    "workflow.parameters.scratch": "20Gi",
    "workflow.parameters.data-scratch": "200Gi",
    "inputs.parameters.batch": "0123456789abcdef",
    "inputs.parameters.fold": "0",
    "pod.name": "tsretrain-x1-convert-123",
    "workflow.name": "tsretrain-x1",
}
BATCH_CASES = ("RADCURE-0001", "RADCURE-0002")  # what a batch's inventory lists
EXPECTED = {  # option -> the value every stage having it must parse
    "folds": (0,),
    "planner": "resenc-m",
    "plans": "",
    "dictionary": "/etc/tsretrain/dictionaries/my-oars.yaml",
    "dataset": "Dataset042_HeadNeck",
    "trainer": "nnUNetTrainerTsrTiny",
    "configuration": "3d_tiny",
    "epochs": 3,
    "iterations": 4,
    "cv_folds": 5,
    "fold": 0,
    "version": "2.1.0",
    "cases": BATCH_CASES,
    "search": "none",
}


def load_workflow_module() -> Any:
    return importlib.import_module("tsretrain.cluster.workflow")


@pytest.fixture(scope="module")
def rendered() -> str:
    return str(load_workflow_module().render())


@pytest.fixture(scope="module")
def workflow(rendered: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(rendered)
    return data


def strict_schema() -> dict[str, Any]:
    """Argo's official v4 schema, made strict: unknown fields rejected, IntOrString and Quantity as Kubernetes
    accepts them (the published schema types both as strings only)."""
    schema = json.loads(SCHEMA.read_text())
    definitions = schema["definitions"]
    definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = {"type": ["integer", "string"]}
    definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"] = {"type": ["number", "string"]}
    for definition in definitions.values():
        if "properties" in definition and "additionalProperties" not in definition:
            definition["additionalProperties"] = False
    return schema


def validate(document: dict[str, Any]) -> None:
    schema = strict_schema()
    wrapped = {**schema, "oneOf": None, "$ref": "#/definitions/io.argoproj.workflow.v1alpha1.WorkflowTemplate"}
    del wrapped["oneOf"]
    jsonschema.validate(document, wrapped, cls=jsonschema.Draft202012Validator)


def test_rendered_template_passes_the_strict_argo_v4_schema(workflow: dict[str, Any]) -> None:
    validate(workflow)


def hera_strict_schema() -> dict[str, Any]:
    """The schema of Hera's own WorkflowTemplate model, made strict the same way."""
    from hera.workflows.models import WorkflowTemplate

    schema: dict[str, Any] = WorkflowTemplate.model_json_schema(by_alias=True)
    definitions = schema["$defs"]
    definitions["IntOrString"] = {"type": ["integer", "string"]}
    definitions["Quantity"] = {"type": ["number", "string"]}
    for definition in [schema, *definitions.values()]:
        if "properties" in definition and "additionalProperties" not in definition:
            definition["additionalProperties"] = False
    return schema


def test_rendered_template_passes_a_strict_schema_of_heras_models(workflow: dict[str, Any]) -> None:
    schema = hera_strict_schema()
    jsonschema.validate(workflow, schema, cls=jsonschema.Draft202012Validator)
    typo = copy.deepcopy(workflow)
    typo["spec"]["templates"][1]["retryStrategy"]["limitt"] = 3
    with pytest.raises(jsonschema.ValidationError, match="limitt"):
        jsonschema.validate(typo, schema, cls=jsonschema.Draft202012Validator)


def test_the_strict_schema_catches_real_mistakes(workflow: dict[str, Any]) -> None:
    typo = copy.deepcopy(workflow)
    typo["spec"]["templates"][0]["container"]["comand"] = ["tsretrain"]
    with pytest.raises(jsonschema.ValidationError, match="comand"):
        validate(typo)
    wrong_type = copy.deepcopy(workflow)
    wrong_type["spec"]["parallelism"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        validate(wrong_type)


def _templates(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in workflow["spec"]["templates"]}


def _tasks(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in _templates(workflow)["pipeline"]["dag"]["tasks"]}


def test_references_resolve(workflow: dict[str, Any], rendered: str) -> None:
    templates = _templates(workflow)
    spec = workflow["spec"]
    assert spec["entrypoint"] in templates and spec["onExit"] in templates
    declared = {p["name"] for p in spec["arguments"]["parameters"]}
    assert set(re.findall(r"workflow\.parameters\.([\w-]+)", rendered)) <= declared
    tasks = _tasks(workflow)
    for task in tasks.values():
        assert task["template"] in templates
        for dependency in re.findall(r"[\w-]+", re.sub(r"\.\w+", "", task.get("depends", ""))):
            assert dependency in tasks
        for ref_task, output in re.findall(r"tasks\.([\w-]+)\.outputs\.parameters\.([\w-]+)", json.dumps(task)):
            outputs = templates[tasks[ref_task]["template"]]["outputs"]["parameters"]
            assert output in {p["name"] for p in outputs}
        given = {p["name"] for p in task.get("arguments", {}).get("parameters", [])}
        wanted = {p["name"] for p in templates[task["template"]].get("inputs", {}).get("parameters", [])}
        assert given == wanted, task["name"]
    for template in templates.values():
        inputs = {p["name"] for p in template.get("inputs", {}).get("parameters", [])}
        assert set(re.findall(r"inputs\.parameters\.([\w-]+)", json.dumps(template))) <= inputs
    assert set(re.findall(r"__[A-Z0-9_]+__", rendered)) == TOKENS


def substitute(text: str, values: dict[str, str]) -> str:
    """Argo's substitution of ``{{...}}`` variables, failing on any variable without a sample value."""

    def value(match: re.Match[str]) -> str:
        name = match[1].strip()
        assert name in values, f"no sample value for {{{{{name}}}}}"
        return values[name]

    return re.sub(r"\{\{([^}]+)\}\}", value, text)


def parsed_pods(workflow: dict[str, Any]) -> dict[str, tuple[Any, Any, list[Any], list[Any], list[str]]]:
    """Every stage container's command line parsed by the real CLI: (stage, configuration, gets, puts, batch)."""
    parsed = {}
    for name, template in _templates(workflow).items():
        container = template.get("container")
        if container is None or container["args"][0] != "pod":
            continue
        args = [substitute(a, SAMPLE) for a in container["args"]]
        split = args.index("--")
        context = subcommand("pod").make_context("pod", args[1:split])
        if args[split + 1] not in BY_NAME:  # the listing gathered after the conversion batches: parses too
            subcommand(args[split + 1]).make_context(args[split + 1], args[split + 2 :])
            continue
        # what the pod fills in once it has fetched the batch's inventory: the batch's id and its cases
        stage_args = [placeholders(a, context.params["batch"], BATCH_CASES) for a in args[split + 1 :]]
        stage, config = parse_stage(stage_args)
        gets = [parse_get(g) for g in context.params["get"] or []]
        puts = [parse_put(p) for p in context.params["put"] or []]
        parsed[name] = (stage, config, gets, puts, context.params["batch"])
    return parsed


def _option_value(config: Any, option: str) -> Any:
    value = getattr(config, option) if hasattr(config, option) else getattr(config.model, option)
    return tuple(value) if isinstance(value, list) else value


def test_every_parameter_reaches_every_stage_that_needs_it(workflow: dict[str, Any]) -> None:
    """Parse every container's command with the CLI, Argo's variables replaced by a cheap run's values: each
    stage's configuration holds the workflow's folds, planner, plans, configuration, dictionary, dataset,
    trainer, epochs and iterations wherever it has such an option."""
    parsed = parsed_pods(workflow)
    assert {s.name for s, *_ in parsed.values()} == {*CLUSTER_STAGES}
    module = load_workflow_module()
    reached = set()
    for name, (stage, config, *_) in parsed.items():
        for option, declared in stage.all_options().items():
            parameter = module.TRAINING.parameter(declared)  # the run's, or one of this stage's own (second-stage-*)
            generic = parameter is not None and parameter.name == option.replace("_", "-")
            if option in EXPECTED and (generic or option == stage.fan_out):
                assert _option_value(config, option) == EXPECTED[option], (name, option)
                reached.add((stage.name, option))
    needs = {
        "folds": {"split", "predict", "postprocess", "second-predict"},
        "fold": {"train", "second-stage"},
        "planner": {"plan"},
        "plans": {"plan", "train", "predict", "postprocess", "second-stage", "second-predict"},
        "configuration": {"plan", "train", "predict", "postprocess", "second-stage", "second-predict"},
        "dictionary": {"scan", "convert", "pseudolabel", "assemble", "evaluate", "compare-stages"},
        "dataset": {"assemble", "fingerprint", "plan", "preprocess-cases", "train", "predict", "postprocess", "report"},
        "trainer": {"train", "predict", "postprocess", "second-stage", "second-predict"},
        "epochs": {"train"},
        "iterations": {"train", "second-stage"},
        "cases": {"convert", "pseudolabel"},
    }
    for option, stages in needs.items():
        assert stages <= {s for s, o in reached if o == option}, option
    configs = {name: config for name, (_, config, *_) in parsed.items()}
    assert configs["evaluate"].reference == Path("/work/nnunet/nnUNet_raw/Dataset042_HeadNeck/labelsTs")
    assert configs["train"].device == configs["validate"].device == configs["predict"].device == "cuda"  # no fallback
    assert configs["pseudolabel"].device == "cuda"  # the run's device, as train's
    # the second stage: its own epochs and loss, the run's device, checkpoints mirrored as train's
    assert configs["second-stage"].epochs == 7 and configs["second-stage"].loss == configs["second-predict"].loss
    assert configs["second-stage"].loss == "weighted" and configs["second-stage"].store == configs["train"].store
    assert configs["second-stage"].device == configs["second-predict"].device == "cuda"
    assert configs["compare-stages"].second == Path("/work/second-stage/test")
    assert configs["report-second"].comparison == Path("/work/comparison") and configs["report"].comparison is None
    # the post-processed test predictions evaluated beside the raw ones, and reported
    assert configs["postprocess"].predictions == Path("/work/predictions")
    assert configs["evaluate"].postprocessed == configs["evaluate-merged"].postprocessed
    assert configs["evaluate"].postprocessed == Path("/work/postprocessing/test")
    assert configs["report"].postprocessing == configs["report-second"].postprocessing == Path("/work/postprocessing")
    pretrained = SAMPLE["workflow.parameters.init-from"]
    assert configs["plan"].plans_from == configs["train"].init_from == pretrained
    assert configs["train"].validate is False and configs["validate"].store == configs["train"].store
    defaults = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    assert defaults["device"] == "cuda"  # cpu only when asked for (a CPU-only test cluster)
    assert configs["train"].store == f"{PREFIX}/{relative('results')}"
    assert configs["assemble-merged"].labels_from == Path("/work/pseudolabels")
    assert configs["assemble"].labels_from is None
    assert configs["pseudolabel"].weights == "/weights"
    assert configs["split"].cv_folds == 5 and configs["scan"].batch_size == 2
    assert configs["plan"].batch_size is None  # convert-batch-size is the scan's, not the planner's
    assert configs["fingerprint"].cases == configs["preprocess-cases"].cases == BATCH_CASES  # a batch's share
    model = configs["predict"].model
    assert model == Model(
        dataset="Dataset042_HeadNeck",
        dictionary="radcure-oar21",
        trainer="nnUNetTrainerTsrTiny",
        plans="",
        configuration="3d_tiny",
        folds=(0,),
    )


def test_pods_fetch_and_publish_at_the_layouts_paths(workflow: dict[str, Any]) -> None:
    """A pod's paths below /work are the store prefix's and a local run's; each path option of a stage is
    fetched (only what it needs) or produced by the stage; fan-out batches fetch only their cases."""
    for name, (stage, config, gets, puts, batch) in parsed_pods(workflow).items():
        for transfer in gets + puts:
            rel = transfer.uri.removeprefix(PREFIX + "/")
            assert transfer.path == Path("/work") / rel, name
        fetched = {g.path for g in gets}
        written = {p.path for p in puts} | ({Path("/work/nnunet/nnUNet_results")} if name == "train" else set())
        for option_name, option in stage.options.items():
            value = getattr(config, option_name)
            if option.at and isinstance(value, Path) and option.at != "input":
                assert any(value == p or p in value.parents or value in p.parents for p in fetched | written), (
                    name,
                    option_name,
                )
        if stage.fan_out == "cases":  # the batch's id; its cases from its slice of the inventory
            assert batch == SAMPLE["inputs.parameters.batch"]
            assert any(g.include == ("batches/{batch}.json",) for g in gets)
    gets = {name: parsed[2] for name, parsed in parsed_pods(workflow).items()}
    assert gets["pseudolabel"][1].include == ("cases/{case}/*",)  # expanded per case of the batch
    assert gets["split"][0].include == ("cases/*/manifest.json",)
    assert {g.include for g in gets["evaluate"]} == {("*/labelsTs/*",), ("test/*.nii.gz",), ("cases/*/manifest.json",)}
    assert ("*/pseudolabel.json",) in {g.include for g in gets["evaluate-merged"]}  # merge records: their sources
    assert {g.include for g in gets["postprocess"]} == {  # the references, the folds' validation, the test set
        ("*/planning_summary.json", "*/gt_segmentations/*"),
        ("*/nnUNetTrainerTsrTiny__*/*.json", "*/nnUNetTrainerTsrTiny__*/fold_*/validation/*"),
        ("test/*.nii.gz",),
    }
    assert Path("/work/postprocessing") in {g.path for g in gets["evaluate"]}
    puts = {name: parsed[3] for name, parsed in parsed_pods(workflow).items()}
    assert puts["predict"][0].include == ("test/*.nii.gz",)  # nnU-Net's own files there differ from batch to batch
    # each stage reads its own stage's models: the first stage's steps never the second stage's beside them
    first, second = (f"Dataset042_HeadNeck/nnUNetTrainerTsrTiny{s}__nnUNetPlans__3d_tiny" for s in ("", "GTVpFocal"))
    reads_model = {
        "validate": {f"{first}/fold_0/progress.json"},
        "predict": {
            f"{first}/plans.json",
            f"{first}/fold_0/checkpoint_final.pth",
            f"{first}/fold_2/checkpoint_final.pth",
        },
        "second-stage": {f"{first}/plans.json", f"{first}/fold_0/checkpoint_final.pth"},
        "second-predict": {f"{second}/plans.json", f"{second}/fold_1/checkpoint_final.pth"},
        "export": {f"{first}/dataset.json", f"{first}/fold_1/checkpoint_final.pth", f"{first}/fold_1/progress.png"},
        "postprocess": {f"{first}/plans.json", f"{first}/dataset.json"},
    }
    candidates = {f"{model}/{rest}" for model in (first, second) for rest in ("plans.json", "dataset.json")}
    candidates |= {f"{m}/fold_{f}/{n}" for m in (first, second) for f in range(3) for n in ("checkpoint_final.pth",)}
    candidates |= {
        f"{m}/fold_{f}/{n}" for m in (first, second) for f in range(3) for n in ("progress.json", "progress.png")
    }
    for name, wanted in reads_model.items():
        (results,) = [g for g in gets[name] if g.uri.endswith("/nnUNet_results")]
        read = {path for path in candidates if matches(path, results.include)}
        assert wanted <= read and not read & {
            c for c in candidates if (c.startswith(second)) != (name == "second-predict")
        }
        assert name != "validate" or read == wanted  # its own fold's training only


CHART_SAMPLE = {  # what the chart puts in place of the GPU scheduling tokens, as JSON values
    "__GPU_RUNTIME_CLASS__": '"nvidia"',
    "__GPU_NODE_SELECTOR__": '{"gpu": "h100"}',
    "__GPU_TOLERATIONS__": '[{"key": "nvidia.com/gpu", "operator": "Exists"}]',
}


def pod_spec(template: dict[str, Any]) -> dict[str, Any]:
    """The pod spec Argo makes of a container template (its container, volumes and pod spec patch) with the
    workflow parameters' defaults and the chart's sample GPU scheduling."""
    text = template["podSpecPatch"]
    for token, value in CHART_SAMPLE.items():
        text = text.replace(token, value)
    sizes = (
        ("workflow.parameters.scratch", "20Gi"),
        ("workflow.parameters.data-scratch", "200Gi"),
        ("inputs.parameters.disk", "37Gi"),
    )
    for size, value in (*sizes, ("inputs.parameters.memory", "99Gi")):
        text = text.replace("{{" + size + "}}", value)
    spec = {"containers": [{**template["container"], "name": "main"}], "volumes": template["volumes"]}
    return apply_patch(spec, text)


def test_the_cluster_contract(workflow: dict[str, Any]) -> None:
    templates = _templates(workflow)
    containers = {n: t for n, t in templates.items() if "container" in t}
    assert set(containers) == {
        *CLUSTER_STAGES,
        "assemble-merged",
        "evaluate-merged",
        "report-second",
        "claim",
        "listing",
        "record-status",
    }
    for name, template in containers.items():
        container = template["container"]
        assert container["command"] == ["tsretrain"], name
        env = {e["name"]: e for e in container["env"]}
        assert "secretKeyRef" in env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]  # credentials never in parameters
        retry = template["retryStrategy"]
        assert "maxDuration" not in retry["backoff"] and retry["backoff"]["cap"] == "10m"  # no deadline on retries
        assert retry["expression"] == "lastRetry.exitCode != '2'"  # usage errors are never retried
        deadline = template["activeDeadlineSeconds"]  # an integer, or the scan's budget (substituted by Argo)
        assert deadline == "{{inputs.parameters.deadline}}" or (isinstance(deadline, int) and deadline > 0), name
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        spec = pod_spec(template)  # sizes come with the pod spec patch: Argo substitutes no typed field
        for volume in spec["volumes"]:
            assert "emptyDir" not in volume or volume["emptyDir"]["sizeLimit"], (name, volume["name"])
        (work,) = [v for v in spec["volumes"] if v["name"] == "work"]
        (main,) = spec["containers"]
        assert main["resources"]["requests"]["ephemeral-storage"] == work["emptyDir"]["sizeLimit"], name
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/etc/tsretrain/dictionaries" in mounts  # a custom dictionary from the chart's ConfigMap
    assert templates["train"]["activeDeadlineSeconds"] > 24 * 3600 > templates["split"]["activeDeadlineSeconds"]
    for name in ("train", "validate", "predict", "pseudolabel", "second-stage", "second-predict"):
        template = templates[name]
        resources = template["container"]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "1"
        spec = pod_spec(template)
        assert spec["runtimeClassName"] == "nvidia" and spec["nodeSelector"] == {"gpu": "h100"}, name
        assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}], name
        shm = next(v for v in template["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"]["medium"] == "Memory"
    tasks = _tasks(workflow)
    for name in CLUSTER_STAGES:  # the budget of a step holding cases is the scan's for it, from the work
        template, given = templates[name], {p["name"]: p["value"] for p in tasks[name]["arguments"]["parameters"]}
        resources = pod_spec(template)["containers"][0]["resources"]
        least = "200Gi" if BY_NAME[name].whole_dataset else "20Gi"  # the scan: its header index and inventory
        assert resources["requests"]["ephemeral-storage"] == ("37Gi" if name in SIZED else least), name
        memory = resources["requests"]["memory"], resources["limits"]["memory"]
        assert memory == ("99Gi", "99Gi") if name in MEMORY_SIZED else memory[0] != "99Gi" != memory[1], name
        deadline = template["activeDeadlineSeconds"]
        assert (deadline == "{{inputs.parameters.deadline}}") == (name in TIMED), name
        for kind, steps in (("disk", SIZED), ("memory", MEMORY_SIZED), ("deadline", TIMED)):
            output = {"name": f"{kind}-{name}", "valueFrom": {"path": f"/tmp/sizes/{kind}-{name}"}}
            assert (output in templates["scan"]["outputs"]["parameters"]) == (name in steps), (name, kind)
            if name in steps:
                assert given[kind] == "{{tasks.scan.outputs.parameters." + f"{kind}-{name}" + "}}"
                assert {"name": kind} in template["inputs"]["parameters"]
    assert templates["train"]["retryStrategy"]["limit"] >= 3  # retries resume from the stored checkpoint
    spec = workflow["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["podGC"]["strategy"] == "OnPodSuccess" and spec["ttlStrategy"]["secondsAfterSuccess"] > 0


def test_the_dag(workflow: dict[str, Any]) -> None:
    tasks = _tasks(workflow)
    assert "depends" not in tasks["claim"]
    assert tasks["scan"]["depends"] == "claim"
    assert tasks["convert"]["withParam"] == "{{tasks.scan.outputs.parameters.batches}}"
    assert tasks["listing"]["depends"] == "convert"  # every batch's cases gathered into one listing
    assert tasks["pseudolabel"]["depends"] == "listing"
    assert tasks["pseudolabel"]["withParam"] == "{{tasks.scan.outputs.parameters.batches}}"
    assert tasks["pseudolabel"]["when"] == "{{workflow.parameters.pseudolabel}} == true"
    assert tasks["split"]["depends"] == "listing"  # beside the pseudo-labels: it reads only the listing
    assert tasks["assemble"]["depends"] == "pseudolabel && split"  # a skipped task satisfies a dependency on it
    # Exactly one assembly runs: from the converted label maps, or from the merged pseudo-labels.
    assert tasks["assemble"]["when"] == "{{workflow.parameters.pseudolabel}} != true"
    assert tasks["assemble-merged"]["when"] == "{{workflow.parameters.pseudolabel}} == true"
    # nnU-Net's preprocessing shared out: fingerprints per batch, one plan, preprocessing per batch
    assert tasks["fingerprint"]["depends"] == "assemble && assemble-merged"
    for name in ("fingerprint", "preprocess-cases"):
        assert tasks[name]["withParam"] == "{{tasks.scan.outputs.parameters.batches}}"
    assert "preprocess" not in tasks  # no pod holds the whole dataset to preprocess it
    assert tasks["train"]["withParam"] == "{{workflow.parameters.folds}}"
    order = ["fingerprint", "plan", "preprocess-cases", "train", "validate", "predict", "postprocess"]
    assert tasks["validate"]["withParam"] == "{{workflow.parameters.folds}}"  # each fold's validation its own pod
    for before, after in itertools.pairwise(order):
        assert tasks[after]["depends"] == before
    # The evaluation reads the merge records too when there are pseudo-labels (which reference is whose).
    assert tasks["evaluate"]["when"] == "{{workflow.parameters.pseudolabel}} != true"
    assert tasks["evaluate-merged"]["when"] == "{{workflow.parameters.pseudolabel}} == true"
    # nnU-Net's post-processing decided once, on every fold's validation and every test batch's predictions
    assert "withParam" not in tasks["postprocess"] and "when" not in tasks["postprocess"]
    assert tasks["evaluate"]["depends"] == tasks["evaluate-merged"]["depends"] == "postprocess"
    # The optional second stage: per fold from the first stage's fold, predicted per test batch, compared; the
    # report with its section only when it ran.
    assert tasks["second-stage"]["depends"] == "postprocess"  # beside the evaluation
    assert tasks["second-stage"]["withParam"] == "{{workflow.parameters.folds}}"
    assert tasks["second-predict"]["withParam"] == "{{tasks.split.outputs.parameters.batches}}"
    for before, after in itertools.pairwise(["second-stage", "second-predict", "compare-stages"]):
        assert tasks[after]["depends"] == before
        assert tasks[after]["when"] == tasks[before]["when"] == "{{workflow.parameters.second-stage}} == true"
    assert (
        tasks["report"]["depends"]
        == tasks["report-second"]["depends"]
        == "evaluate && evaluate-merged && compare-stages"
    )
    assert tasks["report"]["when"] == "{{workflow.parameters.second-stage}} != true"
    assert tasks["report-second"]["when"] == "{{workflow.parameters.second-stage}} == true"
    for task in tasks.values():
        if task["name"] != "claim":  # every stage writes below the prefix the claim step fixed
            parameters = {p["name"]: p["value"] for p in task["arguments"]["parameters"]}
            assert parameters["output-prefix"] == "{{tasks.claim.outputs.parameters.output-prefix}}"


def _ancestors(tasks: dict[str, dict[str, Any]], name: str) -> set[str]:
    direct = set(tasks[name].get("depends", "").replace("&&", " ").split())
    return direct.union(*(_ancestors(tasks, before) for before in direct))


def test_the_dag_follows_the_data(workflow: dict[str, Any]) -> None:
    """Every step runs after each earlier stage that writes a location it reads or writes, or reads one it writes
    (its outputs are there, and nothing it reads changes under it), its fan-in listing included; steps with no
    data between them run side by side."""
    tasks = _tasks(workflow)
    stages = [s for s in STAGES if TRAINING in s.workflows]
    for index, stage in enumerate(stages):
        reads, writes = {f.location for f in stage.reads}, {f.location for f in stage.writes}
        for earlier in stages[:index]:
            their_reads, their_writes = {f.location for f in earlier.reads}, {f.location for f in earlier.writes}
            if their_writes & (reads | writes) or their_reads & writes:
                for task in [t for t in tasks if t == stage.name or t.startswith(f"{stage.name}-")]:
                    assert earlier.name in _ancestors(tasks, task) or any(
                        t.startswith(f"{earlier.name}-") for t in _ancestors(tasks, task)
                    ), (earlier.name, task)
    assert "pseudolabel" not in _ancestors(tasks, "split")
    assert not {"evaluate", "evaluate-merged"} & _ancestors(tasks, "second-stage")


def test_an_empty_chart_value_stays_a_string(rendered: str) -> None:
    """The chart replaces tokens by its values; an empty s3.endpoint ("empty for AWS") must stay "" (Argo
    rejects a null parameter value)."""
    installed = yaml.safe_load(rendered.replace("__S3_ENDPOINT__", ""))
    parameters = {p["name"]: p["value"] for p in installed["spec"]["arguments"]["parameters"]}
    assert parameters["s3-endpoint"] == ""


def test_the_cluster_stages_are_the_registrys(workflow: dict[str, Any]) -> None:
    """Nothing is spelled by hand: each stage template runs the registry's stage with its image family."""
    templates = _templates(workflow)
    for name in CLUSTER_STAGES:
        stage = BY_NAME[name]
        assert templates[name]["container"]["image"] == "{{workflow.parameters." + stage.image + "-image}}"
        assert templates[name]["container"]["args"][templates[name]["container"]["args"].index("--") + 1] == name


def test_golden_file_is_the_current_rendering(rendered: str) -> None:
    """Any change to the workflow shows here: re-render with `make workflow` and review the diff."""
    assert GOLDEN.read_text() == rendered


@pytest.fixture(scope="module")
def infer_rendered() -> str:
    return str(load_workflow_module().render(load_workflow_module().INFER))


def test_the_inference_template_is_argos_and_parses_with_the_cli(infer_rendered: str) -> None:
    """The second WorkflowTemplate: scan the new patients, infer per batch on GPU pods (every series of the
    batch's patients staged from the store, the package from its URI), gather the listing."""
    workflow: dict[str, Any] = yaml.safe_load(infer_rendered)
    validate(workflow)
    assert workflow["metadata"]["name"] == "tsretrain-infer"
    tasks = _tasks(workflow)
    assert [t["name"] for t in tasks.values()] == ["claim", "scan", "infer", "infer-listing"]
    assert tasks["infer"]["withParam"] == "{{tasks.scan.outputs.parameters.batches}}"
    declared = {p["name"] for p in workflow["spec"]["arguments"]["parameters"]}
    assert set(re.findall(r"workflow\.parameters\.([\w-]+)", infer_rendered)) <= declared
    assert set(re.findall(r"__[A-Z0-9_]+__", infer_rendered)) <= TOKENS
    pods = parsed_pods(workflow)
    assert set(pods) == {"scan", "infer"}
    _, scan_config, *_ = pods["scan"]
    assert scan_config.batch_size == 3 and scan_config.sizes_out is None
    stage, config, gets, puts, batch = pods["infer"]
    assert stage.name == "infer" and config.cases == BATCH_CASES
    assert config.model == SAMPLE["workflow.parameters.model"] and config.source == "s3://bucket/dicom"
    assert config.inventory == Path(f"/work/scan/batches/{batch}.json") and config.input == Path("/work/dicom")
    assert config.formats == ("rtstruct", "seg") and config.device == "cuda" and config.folds == (0,)
    defaults = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    assert defaults["folds"] == "" and defaults["device"] == "cuda"  # empty: every fold the package holds
    assert [g.path for g in gets] == [Path("/work/scan")] and [p.path for p in puts] == [Path("/work/inference")]
    infer = _templates(workflow)["infer"]
    assert "nvidia.com/gpu" in infer["container"]["resources"]["limits"]
    assert infer["container"]["image"] == "{{workflow.parameters.gpu-image}}"


def test_the_inference_golden_file_is_the_current_rendering(infer_rendered: str) -> None:
    assert INFER_GOLDEN.read_text() == infer_rendered


def test_a_fold_pattern_outside_a_fold_fan_out_is_refused_at_rendering() -> None:
    module = load_workflow_module()
    with pytest.raises(ValueError, match="fans out over no folds"):
        module._model_patterns(BY_NAME["predict"], Files("results", ("*/{trainer}__*/fold_{fold}/progress.json",)))
    filled = module._model_patterns(BY_NAME["validate"], Files("results", ("*/{trainer}__*/fold_{fold}/x",)))
    assert filled.include == ("*/{{workflow.parameters.trainer}}__*/fold_{{inputs.parameters.fold}}/x",)


def test_every_containers_command_parses_with_the_cli(workflow: dict[str, Any], infer_rendered: str) -> None:
    """Not only the stages' pods: the claim, the listings and the exit handler's status step too, in both
    templates; a wrong option there would fail on the cluster only."""
    values = {**SAMPLE, "workflow.status": "Failed", "workflow.namespace": "tsretrain"}
    values |= {"workflow.parameters.output-prefix": "", "workflow.parameters.runs-prefix": "s3://bucket/runs"}
    values |= {"workflow.parameters.resume": "false", "workflow.parameters.scratch": "20Gi"}
    for document in (workflow, yaml.safe_load(infer_rendered)):
        for name, template in _templates(document).items():
            container = template.get("container")
            if container is None:
                continue
            assert container["command"] == ["tsretrain"], name
            args = [substitute(a, values) for a in container["args"]]
            context = subcommand(args[0]).make_context(args[0], args[1 : split_at(args)])
            assert context.params, name
            if "--" in args:  # a pod's stage, parsed as the pod runs it
                stage = args[split_at(args) + 1 :]
                subcommand(stage[0]).make_context(stage[0], stage[1:])


def split_at(args: list[str]) -> int:
    return args.index("--") if "--" in args else len(args)


def test_pods_run_as_the_images_user(workflow: dict[str, Any]) -> None:
    """Every image's user (its Dockerfile's last USER) is the user, group and fsGroup the pods run as, so the files
    the image made for its user (its home) are the pod's."""
    context = workflow["spec"]["securityContext"]
    for dockerfile in sorted((ROOT / "images").glob("*.Dockerfile")):
        user = Image.from_dockerfile(dockerfile).user
        assert user == context["runAsUser"] == context["runAsGroup"] == context["fsGroup"] != 0, dockerfile.name


@dataclass(frozen=True)
class _CountConfig:
    converted: Path
    out: Path
    run_id: str = ""
    minimum: int = 3


def test_a_new_stage_reaches_the_workflow_from_its_record_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage added to the registry (a toy: it reads the converted listing and writes its counts) becomes a
    template and a task of both the DAG and the pod contract, with its cluster value, its own workflow parameter
    (default from its configuration) and the switch adding it, without any edit of the generator: everything about
    it comes from its ``Stage`` record."""
    module = load_workflow_module()
    toy = Stage(
        "count-labels",
        _CountConfig,
        lambda config: StageResult(stage="count-labels", outputs={}, counts={}),
        "Count the labels of the converted cases.",
        {
            "converted": Option("Converted cases.", argument=True, at="converted"),
            "out": Option("Output folder.", at="report"),
            "run_id": Option("Run name."),
            "minimum": Option("Least voxels of a counted label.", parameters=("count-minimum",)),
        },
        reads=(Files("converted", ("cases.csv",)),),
        writes=(Files("report", ("counts.json",)),),
        on_cluster={"run_id": OnCluster.RUN_PREFIX},
        hours=1,
        switch=Switch("count-labels", False, "count the labels"),
    )
    parameter = module.WorkflowParameter("count-minimum", None, "least voxels of a counted label")
    flavour = replace(module.TRAINING, parameters=(*module.PARAMETERS, parameter))
    stages = (*STAGES, toy)
    monkeypatch.setattr(module, "STAGES", stages)
    monkeypatch.setattr(module, "BY_NAME", {stage.name: stage for stage in stages})
    document = yaml.safe_load(module.render(flavour))
    template = _templates(document)["count-labels"]
    args = template["container"]["args"]
    out = "{{inputs.parameters.output-prefix}}"
    assert args[:3] == ["pod", "--get", f"{out}/converted=/work/converted=cases.csv"]
    assert args[args.index("--") + 1 :] == [
        "count-labels",
        "/work/converted",
        "--out",
        "/work/report",
        "--run-id",
        out,
        "--minimum",
        "{{workflow.parameters.count-minimum}}",
    ]
    assert template["activeDeadlineSeconds"] == 3600
    task = _tasks(document)["count-labels"]
    assert task["depends"] == "report && report-second"  # after the last writer of what it writes (report/)
    assert task["when"] == "{{workflow.parameters.count-labels}} == true"
    defaults = {p["name"]: p["value"] for p in document["spec"]["arguments"]["parameters"]}
    assert defaults["count-minimum"] == "3" and defaults["count-labels"] == "false"


def test_a_workflow_parameter_defaults_to_its_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """A parameter's default is written once, on the configuration it sets: a different default there is the
    rendered parameter's default; a parameter whose options disagree must state its own."""
    module = load_workflow_module()

    @dataclass(frozen=True, kw_only=True)
    class FiveCases(ScanConfig):
        batch_size: int = 5

    stages = tuple(replace(s, config=FiveCases) if s.name == "scan" else s for s in STAGES)
    monkeypatch.setattr(module, "STAGES", stages)
    monkeypatch.setattr(module, "BY_NAME", {stage.name: stage for stage in stages})
    parameters = {p["name"]: p["value"] for p in yaml.safe_load(module.render())["spec"]["arguments"]["parameters"]}
    assert parameters["convert-batch-size"] == "5" and parameters["max-batches"] == "512"
    disagreeing = module.WorkflowParameter("folds", None, "folds")  # train's five, predict's all
    with pytest.raises(ValueError, match="defaults differ"):
        disagreeing.value(list(stages))


def test_the_generator_and_the_runner_name_no_stage() -> None:
    """Everything about a stage is in its record: neither the workflow generator nor the local runner spells a
    stage's name (or its fan-in listing's)."""
    names = {stage.name for stage in STAGES} | {stage.gather.name for stage in STAGES if stage.gather is not None}
    sources = [ROOT / "src/tsretrain/cluster/workflow.py", ROOT / "src/tsretrain/pipeline/runner.py"]
    for source in sources:
        strings = set(re.findall(r"""["']([a-z-]+)["']""", source.read_text()))
        assert not strings & names, f"{source.name} names stages {sorted(strings & names)}"
