"""The chart as ``deploy/kind/up.sh`` installs it: the same flags (from ``deploy/kind/chart-flags.sh``, which
up.sh sources), a real Helm, the kind node's Kubernetes version."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml
from support import helm_binary

ROOT = Path(__file__).resolve().parents[3]
KIND = ROOT / "deploy" / "kind"


def versions() -> dict[str, str]:
    lines = (KIND / "versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def kube_version() -> str:
    return versions()["KIND_NODE_IMAGE"].rsplit(":v", 1)[1]


def up_sh_flags(tag: str, access_key: str, secret_key: str) -> list[str]:
    """The chart flags up.sh passes for this image tag and these dev credentials."""
    script = f'source "{KIND / "chart-flags.sh"}"; tsretrain_chart_flags "$1" "$2" "$3"; '
    script += 'printf "%s\\0" "${chart_flags[@]}"'
    done = subprocess.run(
        ["bash", "-c", script, "flags", tag, access_key, secret_key], capture_output=True, text=True, check=True
    )
    return done.stdout.split("\0")[:-1]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, timeout=120)


def render(flags: list[str], release: str = "tsretrain", namespace: str = "argo") -> list[dict[str, Any]]:
    """``helm template`` of the chart with these flags; every rendered object."""
    done = helm(
        "template", release, str(ROOT / "helm" / "tsretrain"), "--namespace", namespace,
        "--kube-version", kube_version(), *flags,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"helm template failed: {done.stderr}")
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def installed(tag: str, access_key: str, secret_key: str) -> list[dict[str, Any]]:
    """The objects ``make kind-up TAG=tag`` installs (release tsretrain, namespace argo)."""
    return render(up_sh_flags(tag, access_key, secret_key))
