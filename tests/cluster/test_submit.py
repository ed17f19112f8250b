"""`tsretrain submit`/`watch`/`logs` against a local HTTP server that records what the Argo API receives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from tsretrain.cli import app
from tsretrain.cluster.argo import ArgoClient, ArgoError

ROOT = Path(__file__).resolve().parents[2]


class FakeArgo(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, Any]]] = []
    phases: ClassVar[list[str]] = []
    unavailable: ClassVar[int] = 0  # answer this many GETs with 503 first
    pause: ClassVar[float] = 0.0  # silence between two streamed log lines

    def _reply(self, body: dict[str, Any] | str, status: int = 200) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length))
        self.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if body["resourceName"] != "tsretrain":
            self._reply({"code": 5, "message": "workflowtemplates.argoproj.io not found"}, 404)
            return
        self._reply({"metadata": {"name": "tsretrain-abc12", "namespace": "research"}})

    def do_GET(self) -> None:
        if FakeArgo.unavailable > 0:
            FakeArgo.unavailable -= 1
            self._reply({"message": "server restarting"}, 503)
            return
        if self.path.endswith("/log?logOptions.container=main&logOptions.follow=true"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            for n in (1, 2):
                line = {"result": {"podName": "tsretrain-abc12-train-1", "content": f"epoch {n}"}}
                self.wfile.write(json.dumps(line).encode() + b"\n")
                self.wfile.flush()
                time.sleep(self.pause)
            return
        if self.path.endswith("/log?logOptions.container=main&logOptions.follow=false"):
            lines = [{"result": {"podName": "tsretrain-abc12-scan-1", "content": "scan: files=10"}}]
            self._reply("\n".join(json.dumps(line) for line in lines) + "\n")
            return
        phase = self.phases.pop(0) if len(self.phases) > 1 else self.phases[0]
        nodes = {"n1": {"id": "n1", "type": "Pod", "displayName": "scan", "phase": phase, "startedAt": "t"}}
        self._reply({"metadata": {"name": "tsretrain-abc12"}, "status": {"phase": phase, "nodes": nodes}})

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture()
def argo(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    FakeArgo.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeArgo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("ARGO_SERVER", url)
    monkeypatch.setenv("ARGO_NAMESPACE", "research")
    yield url
    server.shutdown()


def test_submit_sends_the_template_and_parameters_and_prints_the_ui_link(
    argo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARGO_TOKEN", "secret-token")
    result = CliRunner().invoke(app, ["submit", "-p", "input-prefix=s3://data/radcure", "-p", 'folds=["0"]'])
    assert result.exit_code == 0, result.output
    (request,) = FakeArgo.requests
    assert request["path"] == "/api/v1/workflows/research/submit"
    assert request["auth"] == "Bearer secret-token"
    assert request["body"]["resourceKind"] == "WorkflowTemplate" and request["body"]["resourceName"] == "tsretrain"
    assert request["body"]["submitOptions"]["parameters"] == ['folds=["0"]', "input-prefix=s3://data/radcure"]
    assert f"{argo}/workflows/research/tsretrain-abc12" in result.output
    assert "secret-token" not in result.output


def test_no_token_on_a_dev_cluster_and_clear_errors(argo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARGO_TOKEN", raising=False)
    assert CliRunner().invoke(app, ["submit"]).exit_code == 0
    assert FakeArgo.requests[-1]["auth"] is None
    result = CliRunner().invoke(app, ["submit", "--template", "missing"])
    assert result.exit_code == 2 and "HTTP 404" in result.stderr and not result.stdout  # errors on stderr
    monkeypatch.setenv("ARGO_SERVER", "http://127.0.0.1:9")
    result = CliRunner().invoke(app, ["submit"])
    assert result.exit_code == 2 and "cannot reach" in result.stderr
    started = time.monotonic()
    result = CliRunner().invoke(app, ["watch", "tsretrain-abc12", "--every", "5"])
    assert result.exit_code == 2 and "cannot reach" in result.stderr  # a server never reached: no retries
    assert time.monotonic() - started < 5


def test_watch_until_finished_and_logs(argo: str) -> None:
    FakeArgo.phases = ["Running", "Running", "Succeeded"]
    result = CliRunner().invoke(app, ["watch", "tsretrain-abc12", "--every", "0.01"])
    assert result.exit_code == 0 and "tsretrain-abc12: Succeeded" in result.output
    FakeArgo.phases = ["Failed"]
    assert CliRunner().invoke(app, ["watch", "tsretrain-abc12", "--every", "0.01"]).exit_code == 1
    logs = CliRunner().invoke(app, ["logs", "tsretrain-abc12", "--no-follow"])
    assert "tsretrain-abc12-scan-1: scan: files=10" in logs.output


def test_logs_survive_a_step_silent_longer_than_the_request_timeout(argo: str) -> None:
    FakeArgo.pause = 1.5
    client = ArgoClient(argo, "research", timeout=0.5)
    assert list(client.logs("tsretrain-abc12")) == [
        "tsretrain-abc12-train-1: epoch 1",
        "tsretrain-abc12-train-1: epoch 2",
    ]


def test_watch_rides_out_transient_errors_for_a_while(argo: str) -> None:
    client = ArgoClient(argo, "research")
    FakeArgo.phases, FakeArgo.unavailable = ["Running", "Succeeded"], 2
    seen: list[str] = []
    assert client.watch("tsretrain-abc12", 0.01, seen.append) == "Succeeded"
    assert sum("Argo server unavailable" in line for line in seen) == 2
    FakeArgo.unavailable = 10**6
    with pytest.raises(ArgoError, match="HTTP 503"):
        client.watch("tsretrain-abc12", 0.01, seen.append, patience=0.2)
    FakeArgo.unavailable = 0


def test_make_submit_keeps_json_parameters_with_spaces_whole(argo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    venv = Path(sys.executable).parent.parent
    params = """input-prefix=s3://data/radcure folds='["0", "1"]' dataset-name=Head\\ and\\ neck"""
    done = subprocess.run(
        ["make", "-s", "-o", f"{venv}/.installed", "submit", f"SUBMIT_VENV={venv}", f"PARAMS={params}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "ARGO_SERVER": argo, "ARGO_NAMESPACE": "research"},
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (request,) = FakeArgo.requests
    assert request["body"]["submitOptions"]["parameters"] == [
        "dataset-name=Head and neck",
        'folds=["0", "1"]',
        "input-prefix=s3://data/radcure",
    ]
    assert f"{argo}/workflows/research/tsretrain-abc12" in done.stdout


def test_the_light_entry_point_needs_only_the_standard_library() -> None:
    probe = (
        "import sys, runpy\n"
        "before = set(sys.modules)\n"
        "sys.argv = ['tsretrain.cluster', '--help']\n"
        "try:\n    runpy.run_module('tsretrain.cluster', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "tops = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(tops - set(sys.stdlib_module_names) - {'tsretrain', '__main__'}))\n"
    )
    done = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_make_watch_without_a_name_says_how_to_give_it() -> None:
    done = subprocess.run(["make", "-s", "watch"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "make watch WORKFLOW=tsretrain-" in done.stderr
    assert "pip" not in done.stdout + done.stderr  # refused before the client is installed
