"""The Helm chart: helm lint --strict, helm template, kubernetes-validate --strict on the core objects and the
strict Argo schema on the WorkflowTemplate; dictionaries in the chart equal the package's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import helm_binary
from test_workflow import validate as validate_workflow

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "tsretrain"
DEV_VALUES = [
    "--set",
    "devS3.enabled=true",
    "--set",
    "s3.createSecret=true",
    "--set",
    "s3.devCredentials.accessKey=dev",
    "--set",
    "s3.devCredentials.secretKey=dev-secret",
]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, timeout=120)


def render(*values: str) -> list[dict[str, Any]]:
    done = helm("template", "tsretrain", str(CHART), "--namespace", "research", *values)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def test_helm_lint_strict() -> None:
    for values in ([], DEV_VALUES):
        done = helm("lint", "--strict", str(CHART), *values)
        assert done.returncode == 0, done.stdout + done.stderr


def test_values_schema_rejects_bad_values() -> None:
    done = helm("template", "t", str(CHART), "--set", "images.cpu.tag=latest")
    assert done.returncode != 0 and "/images/cpu/tag" in done.stderr
    done = helm("template", "t", str(CHART), "--set", "s3.typo=1")
    assert done.returncode != 0
    done = helm("template", "t", str(CHART), "--set", "s3.createSecret=true")
    assert done.returncode != 0 and "devCredentials" in done.stderr


def test_rendered_objects_are_valid(tmp_path: Path) -> None:
    documents = render(*DEV_VALUES, "--set", "gpu.nodeSelector.gpu=h100")
    kinds = sorted(d["kind"] for d in documents)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ConfigMap",
            "ConfigMap",
            "Secret",
            "Secret",
            "PersistentVolumeClaim",
            "Deployment",
            "Service",
            "WorkflowTemplate",
        ]
    )
    core = [d for d in documents if d["kind"] != "WorkflowTemplate"]
    path = tmp_path / "core.yaml"
    path.write_text(yaml.safe_dump_all(core))
    checker = Path(sys.executable).parent / "kubernetes-validate"
    done = subprocess.run(
        [str(checker), "--strict", "--kubernetes-version", "1.30.0", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (workflow,) = [d for d in documents if d["kind"] == "WorkflowTemplate"]
    validate_workflow(workflow)
    text = json.dumps(workflow)
    assert "__" not in text.replace("__nnUNetPlans__", "")  # every token replaced
    train = next(t for t in workflow["spec"]["templates"] if t["name"] == "train")
    assert train["container"]["args"].count("--store") == 1
    parameters = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    assert json.loads(parameters["gpu-pod-spec-patch"])["nodeSelector"] == {"gpu": "h100"}
    assert parameters["cpu-image"] == "tsretrain-cpu:0.1.0"
    assert "{{workflow.parameters.input-prefix}}" in text  # Argo's own expressions survive Helm


def test_credentials_only_by_secret_reference() -> None:
    documents = render()
    assert not [d for d in documents if d["kind"] == "Secret"]  # production: an existing Secret
    (workflow,) = [d for d in documents if d["kind"] == "WorkflowTemplate"]
    for template in workflow["spec"]["templates"]:
        for env in template.get("container", {}).get("env", []):
            if env["name"].startswith("AWS_") and env["name"] != "AWS_ENDPOINT_URL":
                assert env["valueFrom"]["secretKeyRef"]["name"] == "tsretrain-s3-credentials"


@pytest.mark.parametrize("name", ["radcure-oar21.yaml", "radcure-ts90.yaml"])
def test_chart_dictionaries_equal_the_package(name: str) -> None:
    packaged = ROOT / "src" / "tsretrain" / "labels" / "dictionaries" / name
    assert (CHART / "files" / "dictionaries" / name).read_text() == packaged.read_text()
