"""The Argo WorkflowTemplate rendered by Hera: strict schema, references, the GPU/retry contract, golden file."""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tsretrain.pipeline.runner import STAGES

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "tests" / "schemas" / "argo-workflows-v4.0.10.schema.json"  # Argo v4.0.10, as published
GOLDEN = ROOT / "helm" / "tsretrain" / "files" / "workflowtemplate.yaml"
CLUSTER_STAGES = [s for s in STAGES if s != "synth"]  # the cluster run reads real input
TOKENS = {
    "__S3_SECRET__",
    "__S3_ENDPOINT__",
    "__CPU_IMAGE__",
    "__GPU_IMAGE__",
    "__PSEUDOLABEL_IMAGE__",
    "__GPU_POD_SPEC_PATCH__",
    "__SERVICE_ACCOUNT__",
    "__WEIGHTS_CLAIM__",
}


def load_workflow_module() -> Any:
    spec = importlib.util.spec_from_file_location("tsretrain_workflow", ROOT / "pipelines" / "workflow.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_references_resolve(workflow: dict[str, Any], rendered: str) -> None:
    templates = _templates(workflow)
    spec = workflow["spec"]
    assert spec["entrypoint"] in templates and spec["onExit"] in templates
    declared = {p["name"] for p in spec["arguments"]["parameters"]}
    assert set(re.findall(r"workflow\.parameters\.([\w-]+)", rendered)) <= declared
    tasks = {t["name"]: t for t in templates["pipeline"]["dag"]["tasks"]}
    for task in tasks.values():
        assert task["template"] in templates
        for dependency in re.findall(r"[\w-]+", re.sub(r"\.\w+", "", task.get("depends", ""))):
            assert dependency in tasks
        for ref_task, output in re.findall(r"tasks\.([\w-]+)\.outputs\.parameters\.([\w-]+)", json.dumps(task)):
            outputs = templates[tasks[ref_task]["template"]]["outputs"]["parameters"]
            assert output in {p["name"] for p in outputs}
    for template in templates.values():
        inputs = {p["name"] for p in template.get("inputs", {}).get("parameters", [])}
        assert set(re.findall(r"inputs\.parameters\.([\w-]+)", json.dumps(template))) <= inputs
    assert set(re.findall(r"__[A-Z0-9_]+__", rendered)) == TOKENS


def test_steps_run_our_cli_with_an_explicit_command_and_the_gpu_contract(workflow: dict[str, Any]) -> None:
    templates = _templates(workflow)
    containers = {n: t for n, t in templates.items() if "container" in t}
    assert set(containers) == {*CLUSTER_STAGES, "assemble-merged", "record-status"}
    for name, template in containers.items():
        container = template["container"]
        assert container["command"] == ["tsretrain"], name
        env = {e["name"]: e for e in container["env"]}
        assert "secretKeyRef" in env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]  # credentials never in parameters
    for name in ("train", "predict", "pseudolabel"):
        template = templates[name]
        resources = template["container"]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "1"
        assert template["podSpecPatch"] == "{{workflow.parameters.gpu-pod-spec-patch}}"
        shm = next(v for v in template["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"]["medium"] == "Memory"
    assert templates["train"]["retryStrategy"]["limit"] >= 3  # retries resume from the stored checkpoint
    assert "--store" in templates["train"]["container"]["args"]
    tasks = {t["name"]: t for t in templates["pipeline"]["dag"]["tasks"]}
    assert tasks["convert"]["withParam"] == "{{tasks.scan.outputs.parameters.batches}}"
    assert tasks["train"]["withParam"] == "{{workflow.parameters.folds}}"
    assert tasks["pseudolabel"]["when"] == "{{workflow.parameters.pseudolabel}} == true"
    for before, after in itertools.pairwise(CLUSTER_STAGES):
        expected = "assemble && assemble-merged" if after == "preprocess" else before
        assert tasks[after]["depends"] == expected  # a skipped task satisfies a dependency on it
    # Exactly one assembly runs: from the converted label maps, or from the merged pseudo-labels.
    assert tasks["assemble"]["when"] == "{{workflow.parameters.pseudolabel}} != true"
    assert tasks["assemble-merged"]["when"] == "{{workflow.parameters.pseudolabel}} == true"
    assert tasks["assemble-merged"]["depends"] == "split"
    assert "--labels-from" in templates["assemble-merged"]["container"]["args"]


def test_golden_file_is_the_current_rendering(rendered: str) -> None:
    """Any change to the workflow shows here: re-render with `make workflow` and review the diff."""
    assert GOLDEN.read_text() == rendered
