"""The part of the Kubernetes API a workflow's pods use, as the real one serves it: ``GET`` of the running Workflow
(its node statuses, in Argo's shape) over TLS, for a pod's service-account token, allowed only when the chart's Role
and RoleBinding grant that service account ``get`` on ``workflows``. Each pod gets what Kubernetes gives it: the
service-account folder (token, ``ca.crt``, namespace) and ``KUBERNETES_SERVICE_HOST``/``PORT``."""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
NAMESPACE = "argo"


def allowed(objects: dict[tuple[str, str], dict[str, Any]], account: str, verb: str, resource: str) -> bool:
    """Whether a RoleBinding of ``objects`` gives the service account a Role rule allowing ``verb`` on argoproj.io
    ``resource``."""
    for (kind, _), binding in objects.items():
        if kind != "RoleBinding":
            continue
        subjects = binding.get("subjects") or []
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == account for s in subjects):
            continue
        role = objects.get(("Role", binding["roleRef"]["name"]), {})
        for rule in role.get("rules") or []:
            if (
                "argoproj.io" in rule.get("apiGroups", [])
                and resource in rule.get("resources", [])
                and verb in rule.get("verbs", [])
            ):
                return True
    return False


class KubeApi:
    """A TLS server on loopback answering ``GET /apis/argoproj.io/v1alpha1/namespaces/NS/workflows/NAME``."""

    def __init__(
        self,
        folder: Path,
        objects: dict[tuple[str, str], dict[str, Any]],
        account: str,
        workflow: Callable[[], dict[str, Any]],
    ) -> None:
        self.folder = folder / "serviceaccount"
        self.folder.mkdir(parents=True)
        self.token = secrets.token_hex(16)
        (self.folder / "token").write_text(self.token)
        (self.folder / "namespace").write_text(NAMESPACE)
        key, cert = folder / "api.key", self.folder / "ca.crt"
        subprocess.run(  # a self-signed certificate for 127.0.0.1, as the pods' CA bundle
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=kubernetes",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        self.requests: list[tuple[str, int]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code, body = api.answer(self.path, self.headers.get("Authorization", ""))
                api.requests.append((self.path, code))
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.objects, self.account, self.workflow = objects, account, workflow
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, path: str, authorization: str) -> tuple[int, dict[str, Any]]:
        if authorization != f"Bearer {self.token}":
            return 401, {"kind": "Status", "reason": "Unauthorized"}
        current = self.workflow()
        expected = f"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/workflows/{current['metadata']['name']}"
        if path != expected:
            return 404, {"kind": "Status", "reason": "NotFound", "message": path}
        if not allowed(self.objects, self.account, "get", "workflows"):
            message = f"serviceaccount {self.account} cannot get resource workflows in API group argoproj.io"
            return 403, {"kind": "Status", "reason": "Forbidden", "message": message}
        return 200, current

    def env(self) -> dict[str, str]:
        """The variables Kubernetes puts in every pod's environment for its API."""
        return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.server.server_port)}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
