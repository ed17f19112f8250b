"""A workflow's own record, read from the Kubernetes API inside one of its pods (the exit handler's way to learn
which steps failed: Argo's ``{{workflow.failures}}`` on a command line outgrows Linux's 128 KiB per argument at a
few hundred failed nodes, and any list in the pod's spec grows with the run).

The pod's service account (``/var/run/secrets/kubernetes.io/serviceaccount``: token, CA, namespace) needs ``get``
on ``workflows`` (the chart's Role grants it). Standard library only.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
FAILED = ("Failed", "Error")


class ApiError(RuntimeError):
    """The workflow could not be read; the message says why."""


def read_workflow(name: str, namespace: str = "", timeout: float = 30.0) -> dict[str, Any]:
    """The Workflow object ``name`` as the API server holds it, read with the pod's service account."""
    account = Path(os.environ.get("TSRETRAIN_SERVICE_ACCOUNT", SERVICE_ACCOUNT))
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ApiError("not in a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set)")
    try:
        token = (account / "token").read_text().strip()
        namespace = namespace or (account / "namespace").read_text().strip()
    except OSError as exc:
        raise ApiError(f"no service account token in {account}: {exc.strerror}") from exc
    host = f"[{host}]" if ":" in host else host
    url = f"https://{host}:{port}/apis/argoproj.io/v1alpha1/namespaces/{namespace}/workflows/{name}"
    context = ssl.create_default_context(cafile=str(account / "ca.crt"))
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            data: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise ApiError(f"GET {url}: HTTP {exc.code} ({exc.read().decode(errors='replace')[:200]})") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ApiError(f"GET {url}: {exc}") from exc
    return data


def nodes_of(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The workflow's node statuses: plain, or compressed by the controller (base64 of gzipped JSON)."""
    status = workflow.get("status") or {}
    if status.get("offloadNodeStatusVersion"):
        raise ApiError("the node statuses are offloaded to Argo's database: see the run in the Argo UI")
    if status.get("compressedNodes"):
        try:
            nodes: dict[str, dict[str, Any]] = json.loads(gzip.decompress(base64.b64decode(status["compressedNodes"])))
        except (ValueError, OSError) as exc:  # binascii.Error is a ValueError; gzip's BadGzipFile an OSError
            raise ApiError(f"the compressed node statuses cannot be read: {exc}") from exc
        return nodes
    return dict(status.get("nodes") or {})


def failures(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    """Its failed and errored nodes, as Argo's ``{{workflow.failures}}`` lists them (``operator.go``)."""
    name = str((workflow.get("metadata") or {}).get("name", ""))
    found = []
    for node in nodes_of(workflow).values():
        if node.get("phase") in FAILED:
            template = str(node.get("templateName") or (node.get("templateRef") or {}).get("template", ""))
            found.append(
                {
                    "displayName": node.get("displayName", ""),
                    "message": node.get("message", ""),
                    "templateName": template,
                    "phase": node["phase"],
                    "podName": pod_name(name, str(node.get("name", "")), template),
                    "finishedAt": node.get("finishedAt"),
                }
            )
    return sorted(found, key=lambda f: (str(f["finishedAt"]), f["displayName"]))


def pod_name(workflow: str, node: str, template: str) -> str:
    """Argo's pod name of a node (``GeneratePodName``, pod names v2): workflow, template, FNV-1a of the node."""
    if workflow == node:
        return workflow
    value = 0x811C9DC5
    for byte in node.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return f"{workflow}-{template}"[:242] + f"-{value}"
