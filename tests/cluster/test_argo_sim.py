"""The Argo interpreter of the test harness against Argo v4's documented and coded semantics, on small
templates whose pods are short Python processes (the real workflow runs in test_cluster_run.py)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from argo_sim.engine import Run, Simulation, WorkflowError
from argo_sim.expressions import Unsupported, evaluate_expr, evaluate_when
from argo_sim.local import LocalProcesses

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {"tsretrain-cpu": ROOT / "images" / "cpu.Dockerfile"}
DEV_ENV = Path(sys.executable).parent.parent  # the pods' python: the dev install's


def py(code: str, *args: str) -> dict[str, Any]:
    """A container running Python code; container paths go in ``args`` (sys.argv[1:]), as real steps pass them."""
    return {"image": "tsretrain-cpu:1", "command": ["python"], "args": ["-c", code, *args]}


def container(name: str, code: str, *args: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "container": py(code, *args), **more}


def output(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"path": path}}


def template(tasks: list[dict[str, Any]], templates: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "toy"},
        "spec": {"entrypoint": "main", "templates": [{"name": "main", "dag": {"tasks": tasks}}, *templates], **spec},
    }


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return tmp_path


def simulate(root: Path, workflow: dict[str, Any], claims: dict[str, Path] | None = None) -> Simulation:
    pods = LocalProcesses(DEV_ENV, IMAGES)
    return Simulation(workflow, [], root, pods, {}, claims=claims, backoff_scale=0.001, timeout_s=120)


def phases(run: Run) -> dict[str, str]:
    return {n.display: n.phase for n in run.nodes.values()}


def test_expression_languages_as_argo_evaluates_them() -> None:
    assert evaluate_when("true == true") and not evaluate_when("false == true")
    assert not evaluate_when("yes == true")  # a bare word is a string: never equal to a boolean
    assert evaluate_when("yes != true") and evaluate_when("'a b' == 'a b'")
    scope = {"lastRetry": {"exitCode": "2", "status": "Failed"}, "a": {"Succeeded": False, "Skipped": True}}
    assert evaluate_expr('lastRetry.status == "Failed" and asInt(lastRetry.exitCode) in [2, 64]', scope)
    assert not evaluate_expr("lastRetry.exitCode == 2", scope)  # exitCode is a string in Argo's scope
    assert evaluate_expr("(a.Succeeded || a.Skipped) && !a.Succeeded", scope)
    with pytest.raises(Unsupported):
        evaluate_expr("lastRetry.exitCode matches '2'", scope)
    with pytest.raises(Unsupported):
        evaluate_when("{{x}} == 1")


def test_dag_depends_when_withparam_and_outputs(root: Path) -> None:
    write = "import json,sys; open(sys.argv[1],'w').write(json.dumps(['a','b c']))"
    workflow = template(
        [
            {"name": "gen", "template": "gen"},
            {"name": "off", "template": "echo", "depends": "gen", "when": "{{workflow.parameters.flag}} == true",
             "arguments": {"parameters": [{"name": "v", "value": "x"}]}},
            {"name": "fan", "template": "echo", "depends": "off", "withParam": "{{tasks.gen.outputs.parameters.items}}",
             "arguments": {"parameters": [{"name": "v", "value": "{{item}}"}]}},
            {"name": "folds", "template": "echo", "depends": "gen", "withParam": "{{workflow.parameters.folds}}",
             "arguments": {"parameters": [{"name": "v", "value": "fold {{item}}"}]}},
            {"name": "none", "template": "echo", "depends": "gen", "withParam": "[]",
             "arguments": {"parameters": [{"name": "v", "value": "{{item}}"}]}},
            {"name": "on-failure", "template": "echo", "depends": "gen.Failed",
             "arguments": {"parameters": [{"name": "v", "value": "x"}]}},
            {"name": "after-omitted", "template": "echo", "depends": "on-failure",
             "arguments": {"parameters": [{"name": "v", "value": "x"}]}},
            {"name": "after-skipped", "template": "echo", "depends": "none && fan",
             "arguments": {"parameters": [{"name": "v", "value": "x"}]}},
        ],
        [
            container("gen", write, "/tmp/o.json", outputs={"parameters": [output("items", "/tmp/o.json")]}),
            container(
                "echo",
                "import sys; print('value=' + sys.argv[2]); open(sys.argv[1],'w').write(sys.argv[2])",
                "/tmp/v",
                inputs={"parameters": [{"name": "v"}]},
                outputs={"parameters": [{"name": "v", "valueFrom": {"path": "/tmp/v"}}]},
            ),
        ],
        arguments={"parameters": [{"name": "flag", "value": "false"}, {"name": "folds", "value": '["0", "1"]'}]},
    )  # fmt: skip
    for container_template in workflow["spec"]["templates"][2:]:
        container_template["container"]["args"].append("{{inputs.parameters.v}}")
    run = simulate(root, workflow).run({})
    assert run.phase == "Succeeded", phases(run)
    got = phases(run)
    assert got["off"] == "Skipped" and got["none"] == "Skipped"  # when false; empty withParam
    assert got["fan"] == "Succeeded"
    assert got["fan(0:a)"] == "Succeeded" and got["fan(1:b c)"] == "Succeeded"  # a bare Skipped dependency runs
    assert got["folds(0:0)"] == "Succeeded" and got["folds(1:1)"] == "Succeeded"
    assert got["on-failure"] == "Omitted" and got["after-omitted"] == "Omitted"  # Omitted does not satisfy a bare name
    assert got["after-skipped"] == "Succeeded"
    assert json.loads(run.task("fan").outputs["v"]) == ["a", "b c"]  # a fan-out's outputs aggregate to a JSON list
    assert "value=fold 1" in run.log_of(run.task("folds(1:1)"))


def test_retries_follow_policy_limit_expression_and_backoff(root: Path) -> None:
    retry = {"limit": 2, "retryPolicy": "OnFailure", "backoff": {"duration": "10s", "factor": 2, "cap": "15s"}}
    usage = {"limit": 3, "expression": 'asInt(lastRetry.exitCode) != 2 || lastRetry.status == "Error"'}
    workflow = template(
        [{"name": "flaky", "template": "flaky"}, {"name": "usage", "template": "usage"}],
        [
            container("flaky", "import sys; sys.exit(3)", retryStrategy=retry),
            container("usage", "import sys; sys.exit(2)", retryStrategy=usage),
        ],
    )
    run = simulate(root, workflow).run({})
    assert run.phase == "Failed"
    flaky, usage_node = run.task("flaky"), run.task("usage")
    assert [a.phase for a in flaky.attempts] == ["Failed"] * 3 and flaky.message == "No more retries left"
    assert len(usage_node.attempts) == 1 and usage_node.message == "retryStrategy.expression evaluated to false"
    assert flaky.attempts[0].message == "Error (exit code 3)"


def test_deleted_pod_is_an_error_retried_only_when_the_policy_says_so(root: Path) -> None:
    sleeper = "import time; time.sleep(30)"
    workflow = template(
        [{"name": "on-error", "template": "on-error"}, {"name": "on-failure", "template": "on-failure"}],
        [
            container("on-error", sleeper, retryStrategy={"limit": 1, "retryPolicy": "OnError"}),
            container("on-failure", sleeper, retryStrategy={"limit": 1, "retryPolicy": "OnFailure"}),
        ],
        activeDeadlineSeconds=60,
    )
    killed: set[str] = set()

    def chaos(node: Any, _: Simulation) -> bool:
        if node.display.endswith("(0)") and node.display not in killed:
            killed.add(node.display)
            return True
        return node.display == "on-error(1)"  # the retry too: the task ends in Error

    run = simulate(root, workflow).run({}, chaos=chaos)
    assert [(a.phase, a.message) for a in run.task("on-error").attempts] == [("Error", "pod deleted")] * 2
    assert len(run.task("on-failure").attempts) == 1 and run.task("on-failure").phase == "Error"


def test_exit_handler_gets_status_and_failures_as_argo_renders_them(root: Path) -> None:
    claim = root / "claim"
    claim.mkdir()
    record = "import sys; open(sys.argv[1] + '/' + sys.argv[2], 'w').write(sys.argv[3])"
    exit_template = container(
        "record", record, "/out", volumes=[{"name": "out", "persistentVolumeClaim": {"claimName": "c"}}]
    )
    exit_template["container"]["args"] += ["{{workflow.status}}", "{{workflow.failures}}"]
    exit_template["container"]["volumeMounts"] = [{"name": "out", "mountPath": "/out"}]
    for code in (0, 4):
        workflow = template(
            [{"name": "step", "template": "step"}],
            [container("step", f"import sys; sys.exit({code})"), exit_template],
            onExit="record",
        )
        run = simulate(root, workflow, {"c": claim}).run({})
        assert run.exit_node is not None and run.exit_node.phase == "Succeeded", run.log_of(run.exit_node)
    assert (claim / "Succeeded").read_text() == '"null"'  # strconv.Quote of a nil slice's JSON
    failures = (claim / "Failed").read_text()
    decoded = json.loads(json.loads(failures))  # a JSON string holding the JSON list
    assert ("step", "Failed", "Error (exit code 4)") in {(f["displayName"], f["phase"], f["message"]) for f in decoded}
    step = next(f for f in decoded if f["displayName"] == "step")
    assert step["podName"].startswith(f"{run.name}-step-") and step["templateName"] == "step"


def test_parallelism_limits_running_pods(root: Path) -> None:
    workflow = template(
        [{"name": "many", "template": "nap", "withItems": [1, 2, 3, 4, 5]}],
        [container("nap", "import time; time.sleep(0.5)")],
        parallelism=2,
    )
    simulation = simulate(root, workflow)
    assert simulation.run({}).phase == "Succeeded"
    assert simulation.max_running == 2


def test_mounts_read_only_and_unmapped_paths_fail(root: Path) -> None:
    weights = root / "weights"
    weights.mkdir()
    (weights / "model.bin").write_text("w")
    volumes = [{"name": "w", "persistentVolumeClaim": {"claimName": "weights", "readOnly": True}}]
    writer = container("write", "import sys; open(sys.argv[1], 'w').write('x')", "/weights/x", volumes=volumes)
    writer["container"]["volumeMounts"] = [{"name": "w", "mountPath": "/weights", "readOnly": True}]
    run = simulate(root, template([{"name": "w", "template": "write"}], [writer]), {"weights": weights}).run({})
    if os.geteuid() == 0:  # root ignores permissions: the harness notices the write instead
        assert run.phase == "Error" and run.task("w").message == "read-only mount /weights was written to"
    else:
        assert run.phase == "Failed" and "Permission denied" in run.log_of(run.task("w"))
    outside = container("outside", "0", "/etc/tsretrain")
    with pytest.raises(Unsupported, match="not a mount"):
        simulate(root, template([{"name": "o", "template": "outside"}], [outside])).run({})


@pytest.mark.parametrize(
    "change",
    [
        {"memoize": {"key": "x", "maxAge": "1h", "cache": {"configMap": {"name": "c"}}}},
        {"container": None, "script": {"image": "x", "source": "x"}},
        {"sidecars": [{"name": "s"}]},
        {"container": {**py("0"), "envFrom": [{"secretRef": {"name": "s"}}]}},
    ],
    ids=["memoize", "script", "sidecars", "envFrom"],
)
def test_fields_it_does_not_implement_fail_loudly(root: Path, change: dict[str, Any]) -> None:
    step = {k: v for k, v in {**container("step", "0"), **change}.items() if v is not None}
    with pytest.raises(Unsupported):
        simulate(root, template([{"name": "s", "template": "step"}], [step])).run({})


def test_unknown_parameters_are_refused(root: Path) -> None:
    workflow = template([{"name": "s", "template": "s"}], [container("s", "0")])
    with pytest.raises(WorkflowError, match="not declared"):
        simulate(root, workflow).run({"typo": "1"})


def disk_step(patch: str, megabytes: int = 2) -> dict[str, Any]:
    """A step writing ``megabytes`` into its /work emptyDir, which its pod spec patch sizes."""
    step = container("disk", f"import sys; open(sys.argv[1], 'wb').write(bytes({megabytes} << 20))", "/work/blob")
    step["container"]["volumeMounts"] = [{"name": "work", "mountPath": "/work"}]
    return {**step, "volumes": [{"name": "work", "emptyDir": {}}], "podSpecPatch": patch}


SIZED = json.dumps(
    {
        "containers": [
            {"name": "main", "resources": {"requests": {"ephemeral-storage": "{{workflow.parameters.disk}}"}}}
        ],
        "volumes": [{"name": "work", "emptyDir": {"sizeLimit": "{{workflow.parameters.disk}}"}}],
    }
)


@pytest.mark.parametrize(
    ("where", "field"),
    [
        (("container", "resources"), {"requests": {"ephemeral-storage": "{{workflow.parameters.disk}}"}}),
        (("volumes",), [{"name": "work", "emptyDir": {"sizeLimit": "{{workflow.parameters.disk}}"}}]),
        (("parallelism",), "{{workflow.parameters.disk}}"),
    ],
    ids=["quantity", "sizeLimit", "integer"],
)
def test_the_api_server_refuses_a_variable_in_a_typed_field(root: Path, where: tuple[str, ...], field: Any) -> None:
    step = container("step", "0")
    target = step
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = field
    workflow = template([{"name": "s", "template": "step"}], [step], arguments={"parameters": [{"name": "disk"}]})
    with pytest.raises(WorkflowError, match=r"API server refuses .*templates\[1\]\." + r"\.".join(where)):
        simulate(root, workflow)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"retryStrategyy": {"limit": 1}}, "unknown field"),  # pruned without a word by the API server
        ({"script": {"image": "x", "source": "x"}}, "at most one template type"),  # the CRD's CEL rule
        ({"activeDeadlineSeconds": 1.5}, "activeDeadlineSeconds"),
        ({"retryStrategy": {"retryPolicy": "Sometimes"}}, "Sometimes"),  # enum
    ],
    ids=["pruned", "cel", "int-or-string", "enum"],
)
def test_the_api_server_refuses_what_the_full_crd_refuses(root: Path, change: dict[str, Any], message: str) -> None:
    step = {**container("step", "0"), **change}
    with pytest.raises(WorkflowError, match=message):
        simulate(root, template([{"name": "s", "template": "step"}], [step]))


def test_a_pod_spec_patch_sizes_the_pod_as_argo_applies_it(root: Path) -> None:
    workflow = template(
        [{"name": "d", "template": "disk"}], [disk_step(SIZED)], arguments={"parameters": [{"name": "disk"}]}
    )
    assert simulate(root, workflow).run({"disk": "100Mi"}).phase == "Succeeded"
    evicted = simulate(root, workflow).run({"disk": "1Mi"})
    assert evicted.phase == "Failed" and "exceeds its sizeLimit" in evicted.task("d").message
    wrong = simulate(root, workflow).run({"disk": "20GB"})  # not a Kubernetes quantity: Go cannot decode the patch
    assert wrong.phase == "Error" and "invalid podSpecPatch" in wrong.task("d").message
    assert "ephemeral-storage" in wrong.task("d").message
    misspelt = [disk_step(SIZED.replace("sizeLimit", "sizeLimt"))]  # Go would ignore it: the disk unlimited
    disk = {"parameters": [{"name": "disk"}]}
    typo = simulate(root, template([{"name": "d", "template": "disk"}], misspelt, arguments=disk)).run({"disk": "1Mi"})
    assert typo.phase == "Error" and "sizeLimt: unknown field" in typo.task("d").message


def test_variables_are_decoded_into_argos_typed_fields_after_substitution(root: Path) -> None:
    step = {**container("step", "0"), "activeDeadlineSeconds": "{{workflow.parameters.deadline}}"}
    workflow = template([{"name": "s", "template": "step"}], [step], arguments={"parameters": [{"name": "deadline"}]})
    assert simulate(root, workflow).run({"deadline": "60"}).phase == "Succeeded"
    run = simulate(root, workflow).run({"deadline": "soon"})
    assert run.phase == "Error" and "not an integer" in run.task("s").message
