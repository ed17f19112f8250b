"""Argo v4 semantics of the fields the WorkflowTemplate uses, applied to local pods (see ``argo_sim``).

Implemented: ``entrypoint`` DAG with ``depends``/``dependencies`` (a bare name means ``Succeeded || Skipped ||
Daemoned``; a failed condition makes the task Omitted), ``when`` (Skipped), ``withParam``/``withItems`` (one child
per item, ``{{item}}``; an empty list Skips the task), input parameters (``value``/``default``), output
parameters from ``valueFrom.path`` (a fan-out's outputs aggregate to a JSON list), ``retryStrategy`` (limit,
retryPolicy, expression with ``lastRetry.*``, backoff duration/factor/cap/maxDuration, in that order, as
``processNodeRetries``), ``activeDeadlineSeconds``, emptyDir ``sizeLimit`` and ``ephemeral-storage`` limits
(evictions), workflow and template ``parallelism``, ``podGC``, ``securityContext`` (``runAsNonRoot`` against
the image's user, read-only root), the
``onExit`` handler with ``{{workflow.status}}`` and ``{{workflow.failures}}`` (a quoted JSON string, exactly as
``operator.go`` renders it). Types are Argo's: the template is first admitted as the API server admits it (the full
CRD, ``argo_sim.crd``), each template is decoded into Go's typed fields after its variables are substituted (a
variable left in a typed field fails), and ``podSpecPatch`` is decoded and merged into the pod spec
(``argo_sim.patch``) before the pod's disk limits are read from it. Fields that only mean something to a
scheduler (resources, node selectors, tolerations, runtime class, labels, ``ttlStrategy``, seccomp) are accepted
as such and listed in ``CLUSTER_ONLY``. Every other field raises :class:`Unsupported`.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from argo_sim import crd, kubeapi, patch
from argo_sim.expressions import Unsupported, evaluate_expr, evaluate_when
from argo_sim.kubeapi import KubeApi
from argo_sim.pods import Mount, Outcome, PodPlan, RunningPod, Runtime, make_writable, quantity_bytes

WORKFLOW_FIELDS = {
    "entrypoint",
    "onExit",
    "templates",
    "arguments",
    "parallelism",
    "activeDeadlineSeconds",
    "podGC",
    "securityContext",
    "volumes",
    "serviceAccountName",
    "ttlStrategy",
    "podMetadata",
    "workflowMetadata",
}
TEMPLATE_FIELDS = {
    "name",
    "container",
    "dag",
    "inputs",
    "outputs",
    "retryStrategy",
    "activeDeadlineSeconds",
    "securityContext",
    "volumes",
    "podSpecPatch",
    "parallelism",
    "metadata",
    "nodeSelector",
    "tolerations",
    "affinity",
    "serviceAccountName",
    "automountServiceAccountToken",
}
CONTAINER_FIELDS = {
    "name",
    "image",
    "command",
    "args",
    "env",
    "volumeMounts",
    "workingDir",
    "securityContext",
    "resources",
    "imagePullPolicy",
}
TASK_FIELDS = {"name", "template", "arguments", "depends", "dependencies", "when", "withParam", "withItems"}
RETRY_FIELDS = {"limit", "retryPolicy", "expression", "backoff", "affinity"}
BACKOFF_FIELDS = {"duration", "factor", "cap", "maxDuration"}
POD_SPEC_FIELDS = {"containers", "volumes", "nodeSelector", "tolerations", "runtimeClassName", "affinity"}
MAIN = "main"  # Argo's name of a container template's container
SECURITY_FIELDS = {
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "fsGroup",
    "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
    "capabilities",
    "seccompProfile",
    "privileged",
}
CLUSTER_ONLY = {
    "serviceAccountName": "RBAC",
    "ttlStrategy": "deletion of finished workflows",
    "podMetadata": "labels",
    "workflowMetadata": "labels",
    "metadata": "labels",
    "nodeSelector": "scheduling",
    "tolerations": "scheduling",
    "affinity": "scheduling",
    "automountServiceAccountToken": "API access",
    "imagePullPolicy": "image pulls",
    "resources": "requests and limits other than ephemeral-storage (enforced) are the scheduler's",
    "capabilities, seccompProfile, allowPrivilegeEscalation, privileged": "kernel policy",
}
TERMINAL = ("Succeeded", "Failed", "Error", "Skipped", "Omitted")


class WorkflowError(RuntimeError):
    """The workflow could not be run the way Argo would (an error Argo reports at submit or run time)."""


def _check(kind: str, data: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise Unsupported(f"{kind} fields the harness does not implement: {sorted(unknown)}")


_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)"
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def duration_s(text: str | int) -> float:
    """Argo's durations in seconds: a whole number of seconds, else Go's ``time.ParseDuration`` (``30s``,
    ``1h30m``, ``1.5h``); anything else is refused, as Go refuses it."""
    text = str(text)
    if re.fullmatch(r"\d+", text):
        return float(text)
    if not re.fullmatch(f"(?:{_DURATION_PART})+", text):
        raise Unsupported(f"duration {text!r} (not a Go duration)")
    return sum(float(number) * _SECONDS[unit] for number, unit in re.findall(_DURATION_PART, text))


def _integer(what: str, value: str | int) -> int:
    """An ``IntOrString`` field that the controller reads as an integer (after substitution)."""
    try:
        return int(value)
    except ValueError:
        raise WorkflowError(f"{what}: {value!r} is not an integer") from None


def fnv32a(text: str) -> int:
    value = 0x811C9DC5
    for byte in text.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def go_json(value: Any) -> str:
    """Go's ``json.Marshal`` of plain data (it escapes <, > and & for HTML)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def substitute(data: Any, scope: dict[str, str], what: str) -> Any:
    """Argo's ``{{tag}}`` replacement on the JSON form of ``data``: values JSON-escaped, any unresolved tag an
    error (Argo fails such a node; expressions ``{{=...}}`` are not implemented)."""

    def replace(match: re.Match[str]) -> str:
        tag = match.group(1).strip()
        if tag.startswith("="):
            raise Unsupported(f"expression tag {{{{{tag}}}}} in {what}")
        if tag not in scope:
            raise WorkflowError(f"failed to resolve {{{{{tag}}}}} in {what}")
        return json.dumps(scope[tag], ensure_ascii=False)[1:-1]

    return json.loads(re.sub(r"\{\{([^{}]*)\}\}", replace, json.dumps(data, ensure_ascii=False)))


@dataclass
class Node:
    name: str
    display: str
    type: str  # DAG, TaskGroup, Retry, Pod, Skipped
    template: str
    phase: str = "Pending"
    message: str = ""
    started: float = field(default_factory=time.time)
    finished: float | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    exit_code: str | None = None
    attempts: list[Node] = field(default_factory=list)
    items: list[Node] = field(default_factory=list)
    pod: RunningPod | None = None
    pod_name: str = ""
    log: Path | None = None
    fetched: int = 0
    peak_bytes: int = 0

    def end(self, phase: str, message: str = "") -> None:
        self.phase, self.message, self.finished = phase, message, time.time()

    @property
    def fulfilled(self) -> bool:
        return self.phase in TERMINAL


@dataclass
class Run:
    """A finished (or stopped) workflow: its phase, every node, and where its logs are."""

    name: str
    phase: str
    nodes: dict[str, Node]
    exit_node: Node | None

    def task(self, display: str) -> Node:
        for node in self.nodes.values():
            if node.display == display:
                return node
        raise KeyError(f"no node {display!r}; nodes: {sorted(n.display for n in self.nodes.values())}")

    def pods(self, template: str | None = None) -> list[Node]:
        return [n for n in self.nodes.values() if n.type == "Pod" and (template is None or n.template == template)]

    def log_of(self, node: Node) -> str:
        return node.log.read_text(errors="replace") if node.log and node.log.is_file() else ""


Chaos = Callable[[Node, "Simulation"], bool]  # True: delete this running pod now


@dataclass
class _Item:
    """One task (or fan-out item) whose pod attempts are managed: its retry node and resolved arguments."""

    node: Node
    template: dict[str, Any]
    arguments: dict[str, str]
    next_start: float = 0.0
    attempt: Node | None = None


class Simulation:
    """Runs one WorkflowTemplate (as rendered by the chart) the way Argo v4 would, with local pods."""

    def __init__(
        self,
        template: dict[str, Any],
        objects: list[dict[str, Any]],
        root: Path,
        runtime: Runtime,
        services: dict[str, tuple[str, int]],
        claims: dict[str, Path] | None = None,
        backoff_scale: float = 0.01,
        timeout_s: float = 1200,
    ) -> None:
        if template.get("kind") != "WorkflowTemplate":
            raise Unsupported(f"kind {template.get('kind')}")
        refused = crd.admit(template, crd.load())
        if refused:
            raise WorkflowError("the API server refuses the WorkflowTemplate: " + "; ".join(refused[:5]))
        self.template, self.spec = template, template["spec"]
        _check("WorkflowTemplate spec", self.spec, WORKFLOW_FIELDS)
        self.templates = {t["name"]: t for t in self.spec["templates"]}
        for t in self.templates.values():
            _check(f"template {t['name']}", t, TEMPLATE_FIELDS)
        self.objects = {(o["kind"], o["metadata"]["name"]): o for o in objects}
        self.root, self.runtime, self.services = root, runtime, services
        self.claims = claims or {}
        self.backoff_scale, self.timeout_s = backoff_scale, timeout_s
        self.max_running = 0
        self.pod_count = 0

    # ---- submit ---------------------------------------------------------------------------------------------
    def run(
        self, parameters: dict[str, str], chaos: Chaos | None = None, stop: Callable[[Run], bool] | None = None
    ) -> Run:
        """Submit with these parameters (like ``argo submit --from workflowtemplate``) and run to the end."""
        declared = {p["name"]: p for p in self.spec.get("arguments", {}).get("parameters", [])}
        unknown = set(parameters) - set(declared)
        if unknown:
            raise WorkflowError(f"parameters not declared by the template: {sorted(unknown)}")
        self.name = f"tsretrain-{secrets.token_hex(3)[:5]}"
        values = {k: str(parameters.get(k, p.get("value", ""))) for k, p in declared.items()}
        for key, value in values.items():
            if value is None or (key not in parameters and "value" not in declared[key]):
                raise WorkflowError(f"parameter {key} has no value")
        self.scope = {f"workflow.parameters.{k}": v for k, v in values.items()}
        self.scope |= {"workflow.name": self.name, "workflow.namespace": "argo"}
        self.scope["workflow.serviceAccountName"] = str(self.spec.get("serviceAccountName", ""))
        self.nodes: dict[str, Node] = {}
        self.running: list[_Item] = []
        self.chaos, self.stop = chaos, stop
        self.stopped = False
        self.deadline = time.time() + float(self.spec.get("activeDeadlineSeconds") or self.timeout_s)
        self.logs = self.root / "logs" / self.name
        self.logs.mkdir(parents=True)
        entry = self.templates[self.spec["entrypoint"]]
        dag = self._node(self.name, self.name, "DAG", entry["name"])
        dag.phase = "Running"
        account = str(self.spec.get("serviceAccountName", "default"))
        self.api = KubeApi(self.root / "api" / self.name, self.objects, account, self.workflow_object)
        try:
            return self._finish(dag, entry)
        finally:
            self.api.stop()

    def workflow_object(self) -> dict[str, Any]:
        """The Workflow as the API server holds it while it runs: Argo's node statuses."""

        def stamp(at: float | None) -> str | None:
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)) if at else None

        nodes = {
            f"{self.name}-{fnv32a(n.name)}": {
                "id": f"{self.name}-{fnv32a(n.name)}",
                "name": n.name,
                "displayName": n.display,
                "type": n.type,
                "templateName": n.template,
                "phase": n.phase,
                "message": n.message,
                "startedAt": stamp(n.started),
                "finishedAt": stamp(n.finished),
            }
            for n in list(self.nodes.values())
        }
        metadata = {"name": self.name, "namespace": kubeapi.NAMESPACE}
        return {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Workflow",
            "metadata": metadata,
            "status": {"nodes": nodes},
        }

    def _finish(self, dag: Node, entry: dict[str, Any]) -> Run:
        try:
            dag.end(self._run_dag(entry))
        finally:
            self._stop_all()
        exit_node = None
        phase = {"Succeeded": "Succeeded", "Failed": "Failed", "Error": "Error"}[dag.phase]
        if "onExit" in self.spec:
            self.scope["workflow.status"] = phase
            failures = [self._failure(n) for n in self.nodes.values() if n.phase in ("Failed", "Error")]
            # operator.go: strconv.Quote(json.Marshal(failures)); a nil slice marshals to null
            self.scope["workflow.failures"] = json.dumps(go_json(failures or None), ensure_ascii=False)
            self.deadline = time.time() + self.timeout_s
            exit_node = self._run_one(f"{self.name}.onExit", "onExit", self.spec["onExit"], {})
            if exit_node.phase != "Succeeded" and phase == "Succeeded":
                phase = "Failed"
        return Run(self.name, phase, self.nodes, exit_node)

    def _failure(self, node: Node) -> dict[str, Any]:
        finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(node.finished)) if node.finished else None
        return {
            "displayName": node.display,
            "message": node.message,
            "templateName": node.template,
            "phase": node.phase,
            "podName": self._pod_name(node.name, node.template),
            "finishedAt": finished,
        }

    def _pod_name(self, node_name: str, template: str) -> str:
        return self.name if node_name == self.name else f"{self.name}-{template}-{fnv32a(node_name)}"

    def _node(self, name: str, display: str, kind: str, template: str) -> Node:
        node = Node(name, display, kind, template)
        self.nodes[name] = node
        return node

    # ---- DAG ------------------------------------------------------------------------------------------------
    def _run_dag(self, dag_template: dict[str, Any]) -> str:
        dag = dag_template["dag"]
        _check("dag", dag, {"tasks"})
        tasks = {t["name"]: t for t in dag["tasks"]}
        for task in tasks.values():
            _check(f"task {task['name']}", task, TASK_FIELDS)
        logic = {name: self._depends(task, tasks) for name, task in tasks.items()}
        nodes: dict[str, Node] = {}
        limit = dag_template.get("parallelism")
        while True:
            progressed = False
            for name, task in tasks.items():
                if name not in nodes and not self.stopped:
                    deps, expression = logic[name]
                    if all(d in nodes and nodes[d].fulfilled for d in deps):
                        nodes[name] = self._start_task(task, nodes, expression)
                        progressed = True
            for node in nodes.values():
                if node.type == "TaskGroup" and not node.fulfilled and all(i.fulfilled for i in node.items):
                    failed = [i.phase for i in node.items if i.phase in ("Failed", "Error")]
                    node.end(failed[-1] if failed else "Succeeded")
                    node.outputs = self._aggregate(node.items)
                    progressed = True
            progressed |= self._tick(limit)
            settled = not self.running and all(n.fulfilled for n in nodes.values())
            if settled and not progressed and (self.stopped or len(nodes) == len(tasks)):
                break
            if time.time() > self.deadline:
                self._stop_all()
                raise WorkflowError(f"workflow {self.name} exceeded its deadline; nodes: {self._summary()}")
            if not progressed:
                time.sleep(0.2)
        return self._dag_phase(tasks, nodes, logic)

    def _depends(self, task: dict[str, Any], tasks: dict[str, dict[str, Any]]) -> tuple[list[str], str]:
        """ancestry.go: the dependencies and the resolved ``depends`` logic."""
        text = task.get("depends") or " && ".join(task.get("dependencies", []))
        deps: list[str] = []

        def expand(match: re.Match[str]) -> str:
            name, result = match.group(1), match.group(2)
            if name not in tasks:
                raise WorkflowError(f"task {task['name']} depends on unknown task {name}")
            if name not in deps:
                deps.append(name)
            if result:
                return f"{name}{result}"
            return f"({name}.Succeeded || {name}.Skipped || {name}.Daemoned)"

        resolved = re.sub(r"([a-zA-Z0-9][-a-zA-Z0-9]*?)(\.[A-Z][a-zA-Z]+)?(?![-a-zA-Z0-9.])", expand, text)
        return deps, resolved

    def _results(self, node: Node) -> dict[str, bool]:
        children = node.items if node.type == "TaskGroup" else []
        return {
            "Succeeded": node.phase == "Succeeded",
            "Failed": node.phase == "Failed",
            "Errored": node.phase == "Error",
            "Skipped": node.phase == "Skipped",
            "Omitted": node.phase == "Omitted",
            "Daemoned": False,
            "AnySucceeded": any(c.phase == "Succeeded" for c in children),
            "AllFailed": bool(children) and all(c.phase == "Failed" for c in children),
        }

    def _start_task(self, task: dict[str, Any], nodes: dict[str, Node], expression: str) -> Node:
        name = task["name"]
        full = f"{self.name}.{name}"
        if expression:
            scope = {d.replace("-", "_"): self._results(n) for d, n in nodes.items()}
            if not evaluate_expr(expression.replace("-", "_"), scope):
                node = self._node(full, name, "Skipped", task["template"])
                node.end("Omitted", "omitted: depends condition not met")
                return node
        scope = dict(self.scope) | {"item": "{{item}}"}  # items are substituted per child, below
        for other, node in nodes.items():
            if node.phase in ("Skipped", "Omitted"):
                continue  # absent optional: a reference to it fails below
            for key, value in node.outputs.items():
                scope[f"tasks.{other}.outputs.parameters.{key}"] = value
        resolved = substitute({k: v for k, v in task.items() if k != "name"}, scope, f"task {name}")
        template = self.templates.get(resolved["template"])
        if template is None:
            raise WorkflowError(f"task {name}: no template {resolved['template']}")
        if "withParam" in resolved or "withItems" in resolved:
            raw = resolved.get("withItems")
            if raw is None:
                try:
                    raw = json.loads(resolved["withParam"])
                except json.JSONDecodeError as exc:
                    raise WorkflowError(f"withParam of {name} is not a JSON list: {resolved['withParam']!r}") from exc
            if not isinstance(raw, list):
                raise WorkflowError(f"withParam of {name} is not a JSON list: {raw!r}")
            if not raw:
                node = self._node(full, name, "Skipped", task["template"])
                node.end("Skipped", "Skipped, empty params")
                return node
            group = self._node(full, name, "TaskGroup", task["template"])
            group.phase = "Running"
            for index, item in enumerate(raw):
                if isinstance(item, bool | int | float):
                    text = json.dumps(item)
                elif isinstance(item, str):
                    text = item
                elif isinstance(item, list):
                    text = go_json(item)
                else:
                    raise Unsupported(f"withParam items of type {type(item).__name__}")
                child = substitute(
                    {k: v for k, v in task.items() if k not in ("withParam", "withItems")},
                    {**scope, "item": text},
                    f"task {name} item {index}",
                )
                group.items.append(self._start_item(f"{full}({index}:{text})", f"{name}({index}:{text})", child))
            return group
        return self._start_item(full, name, resolved)

    def _start_item(self, full: str, display: str, task: dict[str, Any]) -> Node:
        if not evaluate_when(task.get("when", "")):
            node = self._node(full, display, "Skipped", task["template"])
            node.end("Skipped", f"when '{task['when']}' evaluated false")
            return node
        arguments = {p["name"]: str(p["value"]) for p in task.get("arguments", {}).get("parameters", [])}
        template = self.templates[task["template"]]
        return self._queue(full, display, template, arguments)

    def _queue(self, full: str, display: str, template: dict[str, Any], arguments: dict[str, str]) -> Node:
        if "container" not in template:
            raise Unsupported(f"template {template['name']}: only container templates run as tasks")
        kind = "Retry" if "retryStrategy" in template else "Pod"
        node = self._node(full, display, kind, template["name"])
        node.phase = "Pending"
        self.running.append(_Item(node, template, arguments))
        return node

    def _aggregate(self, items: list[Node]) -> dict[str, str]:
        keys = {k for i in items for k in i.outputs}
        return {k: go_json([i.outputs.get(k) for i in items if i.phase == "Succeeded"]) for k in keys}

    def _dag_phase(self, tasks: dict[str, Any], nodes: dict[str, Node], logic: dict[str, Any]) -> str:
        """assessDAGPhase: target (leaf) tasks decide; a Skipped/Omitted one inherits its ancestors' phase,
        Failed/Error first."""
        if self.stopped:
            return "Failed"
        dependents = {d for deps, _ in logic.values() for d in deps}

        def branch(name: str) -> str:
            node = nodes.get(name)
            if node is None:
                return "Failed"
            if node.phase in ("Succeeded", "Failed", "Error"):
                return node.phase
            phases = [branch(d) for d in logic[name][0]]
            bad = [p for p in phases if p in ("Failed", "Error")]
            return bad[0] if bad else "Succeeded"

        phases = [branch(name) for name in tasks if name not in dependents]
        bad = [p for p in phases if p in ("Failed", "Error")]
        return bad[0] if bad else "Succeeded"

    # ---- pods and retries -----------------------------------------------------------------------------------
    def _run_one(self, full: str, display: str, template_name: str, arguments: dict[str, str]) -> Node:
        node = self._queue(full, display, self.templates[template_name], arguments)
        while not node.fulfilled:
            if not self._tick(None):
                time.sleep(0.2)
            if time.time() > self.deadline:
                self._stop_all()
                raise WorkflowError(f"{display} exceeded the harness timeout")
        return node

    def _tick(self, dag_parallelism: int | None) -> bool:
        """Advance every queued or running pod; returns whether anything changed."""
        progressed = False
        limits = [x for x in (self.spec.get("parallelism"), dag_parallelism) if x]
        for item in list(self.running):
            if item.attempt is not None and item.attempt.pod is not None:
                pod = item.attempt.pod
                outcome = pod.poll()
                if outcome is None and self.chaos and self.chaos(item.attempt, self):
                    outcome = pod.delete()
                if outcome is not None:
                    self._finish_pod(item.attempt, outcome)
                    self._settle(item)
                    progressed = True
                continue
            if self.stopped:
                item.node.end("Failed", "Stopped with strategy 'Stop'")
                self.running.remove(item)
                continue
            active = sum(1 for i in self.running if i.attempt is not None and i.attempt.pod is not None)
            if (limits and active >= min(limits)) or time.time() < item.next_start:
                continue
            self._start_pod(item)
            self.max_running = max(self.max_running, active + 1)
            progressed = True
        if self.stop is not None and not self.stopped and self.stop(Run(self.name, "Running", self.nodes, None)):
            self.stopped = True
        return progressed

    def _settle(self, item: _Item) -> None:
        """After an attempt ended: the node's final phase, or a retry after the backoff."""
        node, attempt = item.node, item.attempt
        assert attempt is not None
        verdict = (attempt.phase, attempt.message) if node.type == "Pod" else self._retry_verdict(item)
        if verdict is not None:
            node.outputs, node.exit_code = attempt.outputs, attempt.exit_code
            node.end(*verdict)
            self.running.remove(item)

    def _retry_verdict(self, item: _Item) -> tuple[str, str] | None:
        """processNodeRetries: None to retry (after the backoff), else the retry node's final phase."""
        node, strategy = item.node, item.template["retryStrategy"]
        _check("retryStrategy", strategy, RETRY_FIELDS)
        last = node.attempts[-1]
        if last.phase == "Succeeded":
            return "Succeeded", ""
        first_start = node.attempts[0].started
        wait = 0.0
        backoff = strategy.get("backoff")
        if backoff:
            _check("backoff", backoff, BACKOFF_FIELDS)
            max_deadline = first_start + duration_s(backoff["maxDuration"]) if "maxDuration" in backoff else None
            if max_deadline is not None and time.time() > max_deadline:
                return last.phase, "Max duration limit exceeded"
            wait = duration_s(backoff["duration"]) * float(backoff.get("factor", 1)) ** (len(node.attempts) - 1)
            if "cap" in backoff:
                wait = min(wait, duration_s(backoff["cap"]))
            if max_deadline is not None and (last.finished or 0) + wait > max_deadline:
                return last.phase, "Backoff would exceed max duration limit"
        policy = strategy.get("retryPolicy") or ("Always" if strategy.get("expression") else "OnFailure")
        on_failed, on_error = {
            "Always": (True, True),
            "OnFailure": (True, False),
            "OnError": (False, True),
        }.get(policy, (None, None))
        if on_failed is None:
            raise Unsupported(f"retryPolicy {policy}")
        if (last.phase == "Failed" and not on_failed) or (last.phase == "Error" and not on_error):
            return last.phase, last.message
        limit = int(strategy.get("limit", 0)) if "limit" in strategy else None
        if limit is not None and len(node.attempts) > limit:
            return last.phase, "No more retries left"
        if strategy.get("expression"):
            scope = {
                "retries": str(len(node.attempts) - 1),
                "lastRetry": {
                    "exitCode": last.exit_code if last.exit_code is not None else "-1",
                    "status": last.phase,
                    "duration": str((last.finished or time.time()) - last.started),
                    "message": last.message,
                },
            }
            if not evaluate_expr(strategy["expression"], scope):
                return last.phase, "retryStrategy.expression evaluated to false"
        item.next_start = time.time() + wait * self.backoff_scale
        node.message = f"Backoff for {wait:.0f}s"
        return None

    def _start_pod(self, item: _Item) -> None:
        node = item.node
        if node.type == "Retry":
            n = len(node.attempts)
            attempt = self._node(f"{node.name}({n})", f"{node.display}({n})", "Pod", node.template)
            node.attempts.append(attempt)
        else:
            attempt = node
        item.attempt = attempt
        node.phase = attempt.phase = "Running"
        attempt.started = time.time()
        attempt.pod_name = self._pod_name(attempt.name, attempt.template)
        attempt.log = self.logs / f"{attempt.pod_name}.log"
        try:
            plan = self._plan(item.template, item.arguments, attempt.pod_name)
        except WorkflowError as exc:  # Argo fails such a node without a pod
            self._finish_pod(attempt, Outcome("Error", str(exc), None, {}))
            self._settle(item)
            return
        attempt.pod = RunningPod(plan, attempt.log, self.services, self.runtime)

    def _finish_pod(self, node: Node, outcome: Outcome) -> None:
        node.outputs, node.exit_code = outcome.outputs, outcome.exit_code
        node.end(outcome.phase, outcome.message)
        if node.pod is not None:
            node.fetched, node.peak_bytes = node.pod.fetched, node.pod.peak_bytes
            strategy = (self.spec.get("podGC") or {}).get("strategy", "")
            gone = outcome.message == "pod deleted" or strategy == "OnPodCompletion"
            if gone or (strategy == "OnPodSuccess" and outcome.phase == "Succeeded"):
                _remove(node.pod.plan.folder)
            node.pod = None

    def _stop_all(self) -> None:
        for item in self.running:
            if item.attempt is not None and item.attempt.pod is not None:
                item.attempt.pod.kill()

    def _summary(self) -> str:
        return ", ".join(f"{n.display}={n.phase}" for n in self.nodes.values())

    # ---- a container template to a pod ----------------------------------------------------------------------
    def _plan(self, template: dict[str, Any], arguments: dict[str, str], pod_name: str) -> PodPlan:
        name = template["name"]
        inputs = template.get("inputs", {})
        _check(f"{name} inputs", inputs, {"parameters"})
        scope = dict(self.scope) | {"pod.name": pod_name}
        for parameter in inputs.get("parameters", []):
            _check(f"{name} input parameter", parameter, {"name", "value", "default", "description"})
            key = parameter["name"]
            value = arguments.get(key, parameter.get("value", parameter.get("default")))
            if value is None:
                raise WorkflowError(f"inputs.parameters.{key} was not supplied")
            scope[f"inputs.parameters.{key}"] = str(value)
        extra = set(arguments) - {p["name"] for p in inputs.get("parameters", [])}
        if extra:
            raise WorkflowError(f"{name}: arguments {sorted(extra)} are not inputs of the template")
        body = {k: v for k, v in template.items() if k not in ("retryStrategy", "name")}
        t = substitute(body, scope, f"template {name}")
        undecodable = crd.decode(t, crd.template_schema())
        if undecodable:  # Argo's controller fails the node: its typed fields cannot hold these values
            raise WorkflowError(f"template {name} cannot be decoded: " + "; ".join(undecodable))
        spec = self._pod_spec(name, t)
        (container,) = spec["containers"]
        _check(f"{name} container", container, CONTAINER_FIELDS)
        if "command" not in container:
            raise Unsupported(f"{name}: a container without command (Argo would look the entrypoint up)")
        image = self.runtime.image(container["image"])
        security = dict(self.spec.get("securityContext") or {}) | dict(t.get("securityContext") or {})
        _check(f"{name} pod securityContext", security, SECURITY_FIELDS)
        container_security = container.get("securityContext") or {}
        _check(f"{name} container securityContext", container_security, SECURITY_FIELDS)
        security |= container_security
        user = security.get("runAsUser", image.user)
        if security.get("runAsNonRoot") and user == 0:
            raise WorkflowError(f"{name}: container has runAsNonRoot and image will run as root")
        self.pod_count += 1  # short folder names: Unix socket paths below a pod's /tmp must stay < 108 bytes
        folder = self.root / "p" / str(self.pod_count)
        mounts = self._mounts(name, spec["volumes"], container, folder)
        resources = container.get("resources", {})
        limit = resources.get("limits", {}).get("ephemeral-storage")
        outputs = t.get("outputs", {})
        _check(f"{name} outputs", outputs, {"parameters"})
        paths = {}
        for parameter in outputs.get("parameters", []):
            _check(f"{name} output parameter", parameter, {"name", "valueFrom", "description"})
            source = parameter["valueFrom"]
            _check(f"{name} output valueFrom", source, {"path"})
            paths[parameter["name"]] = source["path"]
        env = dict(self.api.env())  # what Kubernetes puts in every pod's environment
        for variable in container.get("env", []):
            env[variable["name"]] = self._env_value(name, variable)
        if t.get("automountServiceAccountToken", self.spec.get("automountServiceAccountToken", True)):
            mounts.append(Mount(kubeapi.SERVICE_ACCOUNT, self.api.folder, True, None, "projected"))
            env["TSRETRAIN_SERVICE_ACCOUNT"] = kubeapi.SERVICE_ACCOUNT
        deadline = t.get("activeDeadlineSeconds")
        return PodPlan(
            name=pod_name,
            image=image,
            command=list(container["command"]),
            args=[str(a) for a in container.get("args", [])],
            env=env,
            mounts=mounts,
            folder=folder,
            working_dir=container.get("workingDir"),
            read_only_root=bool(security.get("readOnlyRootFilesystem")),
            user=user,
            group=security.get("runAsGroup"),
            fs_group=security.get("fsGroup"),
            deadline_s=_integer(f"{name} activeDeadlineSeconds", deadline) if deadline is not None else None,
            ephemeral_limit=quantity_bytes(limit) if limit is not None else None,
            output_paths=paths,
        )

    def _pod_spec(self, name: str, t: dict[str, Any]) -> dict[str, Any]:
        """The pod spec Argo makes of a substituted container template: its container (named ``main``), the
        workflow's and the template's volumes and scheduling, then the ``podSpecPatch`` merged in."""
        spec: dict[str, Any] = {
            "containers": [{**t["container"], "name": MAIN}],
            "volumes": [*self.spec.get("volumes", []), *t.get("volumes", [])],
        }
        spec |= {key: t[key] for key in ("nodeSelector", "tolerations", "affinity") if key in t}
        if "podSpecPatch" in t:
            try:
                spec = patch.apply(spec, t["podSpecPatch"])
            except patch.InvalidPatch as exc:
                raise WorkflowError(f"{name}: Error applying PodSpecPatch: {exc}") from exc
        _check(f"{name} pod spec", spec, POD_SPEC_FIELDS)
        if [c["name"] for c in spec["containers"]] != [MAIN]:
            raise Unsupported(f"{name}: containers {[c['name'] for c in spec['containers']]} (a patch added one)")
        return spec

    def _env_value(self, template: str, variable: dict[str, Any]) -> str:
        if "value" in variable:
            return str(variable["value"])
        source = variable.get("valueFrom", {})
        if set(source) != {"secretKeyRef"}:
            raise Unsupported(f"{template}: env {variable['name']} from {sorted(source)}")
        ref = source["secretKeyRef"]
        secret = self.objects.get(("Secret", ref["name"]))
        if secret is None:
            raise WorkflowError(f"{template}: secret {ref['name']} not found (the pod would not start)")
        data = secret.get("stringData", {})
        if ref["key"] not in data:
            raise WorkflowError(f"{template}: secret {ref['name']} has no key {ref['key']}")
        return str(data[ref["key"]])

    def _mounts(
        self, name: str, pod_volumes: list[dict[str, Any]], container: dict[str, Any], folder: Path
    ) -> list[Mount]:
        volumes = {v["name"]: v for v in pod_volumes}
        mounts = []
        for mount in container.get("volumeMounts", []):
            _check(f"{name} volumeMount", mount, {"name", "mountPath", "readOnly", "subPath"})
            volume = volumes.get(mount["name"])
            if volume is None:
                raise WorkflowError(f"{name}: volume {mount['name']} not found")
            kinds = set(volume) - {"name"}
            kind = min(kinds, default="")  # one kind, or the else branch below refuses the volume
            read_only = bool(mount.get("readOnly"))
            size_limit = None
            if kinds == {"emptyDir"}:
                _check(f"{name} emptyDir", volume["emptyDir"], {"medium", "sizeLimit"})
                host = folder / "v" / volume["name"]
                if "sizeLimit" in volume["emptyDir"]:
                    size_limit = quantity_bytes(volume["emptyDir"]["sizeLimit"])
            elif kinds == {"persistentVolumeClaim"}:
                claim = volume["persistentVolumeClaim"]
                _check(f"{name} claim", claim, {"claimName", "readOnly"})
                if claim["claimName"] not in self.claims:
                    raise WorkflowError(f"{name}: claim {claim['claimName']} not found (the pod stays Pending)")
                host = self.claims[claim["claimName"]]
                read_only = read_only or bool(claim.get("readOnly"))
            elif kinds == {"configMap"}:
                _check(f"{name} configMap", volume["configMap"], {"name"})
                config = self.objects.get(("ConfigMap", volume["configMap"]["name"]))
                if config is None:
                    raise WorkflowError(f"{name}: configMap {volume['configMap']['name']} not found")
                host = folder / "v" / volume["name"]
                host.mkdir(parents=True)
                for key, text in config.get("data", {}).items():
                    (host / key).write_text(text)
                read_only = True  # configMap volumes are always read-only
            else:
                raise Unsupported(f"{name}: volume kinds {sorted(kinds)}")
            if "subPath" in mount:
                host = host / mount["subPath"]
            host.mkdir(parents=True, exist_ok=True)
            mounts.append(Mount(mount["mountPath"], host, read_only, size_limit, kind))
        return mounts

    def close(self) -> None:
        for claim in self.claims.values():
            make_writable(claim)

    @contextlib.contextmanager
    def session(self) -> Iterator[Simulation]:
        try:
            yield self
        finally:
            self.close()


def _remove(folder: Path) -> None:
    make_writable(folder)
    shutil.rmtree(folder, ignore_errors=True)
