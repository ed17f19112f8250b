"""Offline checks of what cannot run here: Dockerfiles (hadolint), kind scripts (shellcheck), kind config."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from argo_sim.pods import Image
from argo_sim.render import render, up_sh_flags
from support import workflow_templates

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("dockerfile", sorted((ROOT / "images").glob("*.Dockerfile")), ids=lambda p: p.name)
def test_dockerfiles_are_hadolint_clean(dockerfile: Path) -> None:
    done = subprocess.run([str(BIN / "hadolint"), str(dockerfile)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    text = dockerfile.read_text()
    assert "USER 10001" in text and ":latest" not in text
    assert 'ENTRYPOINT ["tsretrain"]' in text


def test_three_image_families() -> None:
    assert {p.name for p in (ROOT / "images").glob("*.Dockerfile")} == {
        "cpu.Dockerfile",
        "gpu.Dockerfile",
        "pseudolabel.Dockerfile",
    }


def test_kind_scripts_are_shellcheck_clean() -> None:
    scripts = sorted((ROOT / "deploy" / "kind").glob("*.sh"))
    done = subprocess.run([str(BIN / "shellcheck"), "-x", *map(str, scripts)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_kind_config_passes_gpus_through() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "kind" / "cluster.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    workers = [n for n in config["nodes"] if n["role"] == "worker"]
    mounts = [m for n in workers for m in n.get("extraMounts", [])]
    assert {"hostPath": "/dev/null", "containerPath": "/var/run/nvidia-container-devices/all"} in mounts
    versions = dict(
        line.split("=", 1)
        for line in (ROOT / "deploy" / "kind" / "versions.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert versions["ARGO_WORKFLOWS_CHART_VERSION"].startswith("1.0.")  # Argo 4.0.x, as Hera 7 renders
    assert all(v and v != "latest" for v in versions.values())


def test_makefile_has_the_cluster_targets() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("submit:", "watch:", "logs:", "images:", "kind-up:", "kind-down:", "workflow:"):
        assert f"\n{target}" in makefile


def test_the_training_image_has_the_c_compiler_torch_compile_needs() -> None:
    """nnU-Net compiles the network on CUDA unless nnUNet_compile says no; Triton then needs cc and libc headers."""
    objects = render(up_sh_flags("1", "dev", "dev-secret"))
    workflow = workflow_templates(objects)["tsretrain"]
    parameters = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    train = next(t for t in workflow["spec"]["templates"] if t["name"] == "train")
    image = parameters[train["container"]["image"].strip("{}").split(".")[-1]]
    dockerfile = ROOT / "images" / f"{image.split(':')[0].removeprefix('tsretrain-')}.Dockerfile"
    final_stage = dockerfile.read_text().rsplit("\nFROM ", 1)[1]
    compiles = Image.from_dockerfile(dockerfile).env.get("nnUNet_compile", "true").lower() in ("true", "1", "t")
    installs = re.search(r"apt-get install [^\n]*\bgcc\b[^\n]*\blibc6-dev\b", final_stage)
    assert not compiles or installs, f"{dockerfile.name} compiles with torch.compile but has no C compiler"
