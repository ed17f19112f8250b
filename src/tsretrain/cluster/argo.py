"""A small client of the Argo Server REST API (no Docker, kubectl or Helm needed to submit a run).

``ARGO_SERVER`` (e.g. ``https://argo.example.org:2746``), ``ARGO_TOKEN`` (a service-account token; none on a
dev cluster with ``--auth-mode=server``), ``ARGO_NAMESPACE`` and ``ARGO_INSECURE_SKIP_VERIFY`` configure it.
Standard library only, so that submitting and watching need no more than ``pip install --no-deps tsretrain``.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

FINISHED = ("Succeeded", "Failed", "Error")
TRANSIENT_HTTP = (408, 429, 500, 502, 503, 504)


class ArgoError(RuntimeError):
    """The Argo server refused or could not be reached; the message says what it answered. ``transient``: the
    same request may succeed later (server unreachable, timeout, overload)."""

    def __init__(self, message: str, transient: bool = False, unreachable: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.unreachable = unreachable  # no connection at all (wrong address, server down)


@dataclass(frozen=True)
class ArgoClient:
    server: str
    namespace: str = "argo"
    token: str | None = None
    insecure: bool = False
    timeout: float = 30.0
    extra_headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, server: str | None = None, namespace: str | None = None) -> ArgoClient:
        url = server or os.environ.get("ARGO_SERVER", "")
        if not url:
            raise ArgoError("no Argo server: set ARGO_SERVER (e.g. https://localhost:2746) or pass --server")
        if "://" not in url:
            url = f"https://{url}"
        return cls(
            url.rstrip("/"),
            namespace or os.environ.get("ARGO_NAMESPACE", "argo"),
            os.environ.get("ARGO_TOKEN") or None,
            os.environ.get("ARGO_INSECURE_SKIP_VERIFY", "").lower() in ("1", "true", "yes"),
        )

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json", **self.extra_headers}
        if self.token:
            headers["Authorization"] = self.token if self.token.startswith("Bearer ") else f"Bearer {self.token}"
        return headers

    def _open(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.server + path,
            method=method,
            headers=self._headers(),
            data=json.dumps(body).encode() if body is not None else None,
        )
        try:
            return urllib.request.urlopen(request, timeout=self.timeout, context=self._context())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise ArgoError(f"{method} {path}: HTTP {exc.code}: {detail}", exc.code in TRANSIENT_HTTP) from exc
        except urllib.error.URLError as exc:
            raise ArgoError(f"cannot reach {self.server}: {exc.reason}", transient=True, unreachable=True) from exc
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise ArgoError(f"{method} {path}: {exc!r}", transient=True) from exc

    def _context(self) -> ssl.SSLContext | None:
        return ssl._create_unverified_context() if self.insecure else None

    def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._open(method, path, body) as response:
            data: dict[str, Any] = json.loads(response.read())
        return data

    def submit(self, template: str, parameters: dict[str, str], generate_name: str = "tsretrain-") -> dict[str, Any]:
        """Create a Workflow from the installed WorkflowTemplate with these parameters."""
        body = {
            "namespace": self.namespace,
            "resourceKind": "WorkflowTemplate",
            "resourceName": template,
            "submitOptions": {
                "generateName": generate_name,
                "parameters": [f"{k}={v}" for k, v in sorted(parameters.items())],
            },
        }
        return self._json("POST", f"/api/v1/workflows/{urllib.parse.quote(self.namespace)}/submit", body)

    def workflow(self, name: str) -> dict[str, Any]:
        return self._json("GET", f"/api/v1/workflows/{self.namespace}/{urllib.parse.quote(name)}")

    def ui_link(self, name: str) -> str:
        return f"{self.server}/workflows/{self.namespace}/{name}"

    def watch(
        self, name: str, every: float = 10.0, echo: Callable[[str], None] = print, patience: float = 900.0
    ) -> str:
        """Poll until the workflow finishes; print each change of phase or node status; return the phase.
        Transient errors (server restarting, network) are reported and retried for up to ``patience`` seconds in
        a row; any other error (wrong name, no permission), or a server never reached (a wrong address), ends the
        watch at once."""
        seen: dict[str, str] = {}
        failing_since: float | None = None
        reached = False
        while True:
            try:
                status = self.workflow(name).get("status", {})
            except ArgoError as exc:
                failing_since = failing_since or time.monotonic()
                never = exc.unreachable and not reached
                if never or not exc.transient or time.monotonic() - failing_since > patience:
                    raise
                echo(f"(Argo server unavailable, retrying in {every:.0f} s: {exc})")
                time.sleep(every)
                continue
            failing_since, reached = None, True
            for node in sorted(status.get("nodes", {}).values(), key=lambda n: n.get("startedAt") or ""):
                if node.get("type") in ("Pod", "Retry") and seen.get(node["id"]) != node.get("phase"):
                    seen[node["id"]] = node.get("phase", "")
                    echo(
                        f"{node.get('displayName', node['id'])}: {node.get('phase')} {node.get('message', '')}".rstrip()
                    )
            phase = status.get("phase", "Pending")
            if phase in FINISHED:
                echo(f"{name}: {phase} {status.get('message', '')}".rstrip())
                return str(phase)
            time.sleep(every)

    def logs(self, name: str, follow: bool = True) -> Iterator[str]:
        """Log lines of every pod of the workflow (main containers), prefixed with the pod name. The request
        timeout covers connecting and the response headers only: a step may stay silent for hours."""
        query = urllib.parse.urlencode({"logOptions.container": "main", "logOptions.follow": str(follow).lower()})
        path = f"/api/v1/workflows/{self.namespace}/{urllib.parse.quote(name)}/log?{query}"
        with self._open("GET", path) as response:
            _untimed(response)
            for raw in response:
                if not raw.strip():
                    continue
                result = json.loads(raw).get("result", {})
                yield f"{result.get('podName', '')}: {result.get('content', '')}"


def _untimed(response: Any) -> None:
    """Lift the socket timeout of an open streaming response (urllib applies it to every read)."""
    raw = getattr(getattr(response, "fp", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    if not isinstance(sock, socket.socket):
        raise ArgoError("cannot stream the log: unexpected response object")
    sock.settimeout(None)
