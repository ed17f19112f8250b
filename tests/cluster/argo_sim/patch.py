"""A template's ``podSpecPatch`` applied as Argo v4 applies it (``util.ApplyPodSpecPatch``): the substituted text
converted from YAML to JSON, decoded into a PodSpec (a value Go cannot decode fails the node: "invalid
podSpecPatch"), then merged into the pod spec as a Kubernetes strategic merge patch (lists of containers, volumes,
env and mounts merged by their keys, other lists replaced, ``null`` removing a field)."""

from __future__ import annotations

from typing import Any

import yaml

from argo_sim import crd
from argo_sim.expressions import Unsupported

MERGE_KEYS = {  # PodSpec's patchMergeKey of each merged list (k8s.io/api/core/v1 types.go)
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}


class InvalidPatch(ValueError):
    """Argo fails the node without a pod: the patch is not YAML, or not a PodSpec Go can decode."""


def apply(spec: dict[str, Any], text: str) -> dict[str, Any]:
    """``spec`` with the patch ``text`` merged in (``spec`` itself is left unchanged)."""
    try:
        patch = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidPatch(f"invalid podSpecPatch {text!r}: {exc}") from exc
    if not isinstance(patch, dict):
        raise InvalidPatch(f"invalid podSpecPatch {text!r}: not an object")
    problems = crd.decode(patch, crd.pod_spec_schema())
    if problems:
        raise InvalidPatch(f"invalid podSpecPatch {text!r}: " + "; ".join(problems))
    merged: dict[str, Any] = _merge(spec, patch)
    return merged


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in patch.items():
        if key.startswith("$"):
            raise Unsupported(f"strategic merge directive {key}")
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merge(base[key], value)
        elif isinstance(value, list) and key in MERGE_KEYS:
            merged[key] = _merge_list(base.get(key) or [], value, MERGE_KEYS[key])
        else:
            merged[key] = value
    return merged


def _merge_list(base: list[dict[str, Any]], patch: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    merged = list(base)
    for item in patch:
        index = next((i for i, old in enumerate(merged) if old.get(key) == item.get(key)), None)
        if index is None:
            merged.append(item)
        else:
            merged[index] = _merge(merged[index], item)
    return merged
