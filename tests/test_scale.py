"""The cluster run at RADCURE's size and at ten times it, without data: the rendered WorkflowTemplate and the stages'
own batching and sizing code evaluated for 3,346 and 33,460 simulated patients (pseudo-labels on, the most nodes):
the Argo object's size (node statuses as Argo stores them, gzipped), items per fan-out, the exit handler's command
line and the disk each pod gets. RADCURE's cases: 323.5 GB of DICOM for 3,346 patients, CTs of 512 x 512 x about
181 voxels.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_workflow import load_workflow_module

from tsretrain.conversion.scan import fan_out_batches
from tsretrain.layout import batch_id
from tsretrain.resources import quantity_bytes
from tsretrain.sizing import SIZED, WHOLE_DATASET, CaseWork, step_disks, write_sizes

DICOM_PER_PATIENT = 323.5e9 / 3346
VOXELS_PER_CASE = 512 * 512 * 181
NODE_DISK = 2**40  # the local NVMe of a GPU node (1 TiB)
OBJECT_LIMIT = 2**20  # Argo: a workflow object over 1 MiB (node statuses compressed) needs node-status offloading
TEST_FRACTION, TRAINING_SHARE = 0.2, 0.8


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    rendered: dict[str, Any] = yaml.safe_load(load_workflow_module().render())
    return rendered


def defaults(template: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: str(p["value"]) for p in template["spec"]["arguments"]["parameters"]}


def tasks(template: dict[str, Any]) -> list[dict[str, Any]]:
    dag = next(t for t in template["spec"]["templates"] if t["name"] == "pipeline")
    found: list[dict[str, Any]] = dag["dag"]["tasks"]
    return found


def fan_out(patients: int, parameters: dict[str, str]) -> dict[str, list[tuple[str, ...]]]:
    """The batches the scan and the split would make (their own code decides the sizes)."""
    ids = [f"RADCURE-{n:05d}" for n in range(patients)]
    scan = fan_out_batches(ids, int(parameters["convert-batch-size"]), int(parameters["max-batches"]))
    test = ids[: round(patients * TEST_FRACTION)]
    per_test = int(parameters["predict-batch-size"])
    return {
        "scan": [tuple(batch) for batch in scan],
        "split": [tuple(test[i : i + per_test]) for i in range(0, len(test), per_test)],
        "folds": [(fold,) for fold in json.loads(parameters["folds"])],
    }


def node_status(
    workflow: str, name: str, template: str, inputs: dict[str, str], outputs: dict[str, str]
) -> dict[str, Any]:
    """One node as Argo's controller stores it (NodeStatus fields of a finished pod node)."""
    node_id = f"{workflow}-{abs(hash(name)) % 10**10}"
    return {
        "id": node_id,
        "name": name,
        "displayName": name.split(".", 1)[-1],
        "type": "Pod",
        "templateName": template,
        "templateScope": "local/",
        "phase": "Succeeded",
        "boundaryID": workflow,
        "startedAt": "2026-12-06T10:00:00Z",
        "finishedAt": "2026-12-06T11:00:00Z",
        "progress": "1/1",
        "resourcesDuration": {"cpu": 3600, "memory": 7200, "nvidia.com/gpu": 3600},
        "inputs": {"parameters": [{"name": k, "value": v} for k, v in inputs.items()]},
        "outputs": {"parameters": [{"name": k, "value": v} for k, v in outputs.items()], "exitCode": "0"},
        "children": [f"{workflow}-{n}" for n in range(1)],
        "hostNodeName": "gpu-node-017.cluster.local",
    }


def argo_object(template: dict[str, Any], patients: int) -> tuple[int, int, dict[str, int]]:
    """Compressed size of the node statuses and the node count of a finished run (every task run once, with one
    retry node and one pod per item), and the items of each fan-out."""
    parameters = defaults(template) | {"pseudolabel": "true"}
    batches = fan_out(patients, parameters)
    workflow, prefix = "tsretrain-x7k2p", "s3://tsretrain/runs/tsretrain-x7k2p"
    nodes: dict[str, Any] = {}
    items: dict[str, int] = {}
    for task in tasks(template):
        source = task.get("withParam", "")
        found = re.search(r"tasks\.(\w+)\.outputs", source)
        group = batches[found[1]] if found else batches["folds"] if source else [()]
        items[task["name"]] = len(group)
        for n, item in enumerate(group):
            key = batch_id(item) if found else "".join(item)
            display = f"{task['name']}({n}:{key})" if source else task["name"]
            inputs = {"output-prefix": prefix, **({"batch" if found else "fold": key} if source else {})}
            outputs = (
                {"batches": json.dumps([batch_id(b) for b in batches[task["name"]]])} if task["name"] in batches else {}
            )
            for kind in ("retry", "pod"):
                name = f"{workflow}.{display}" + ("(0)" if kind == "pod" else "")
                nodes[name] = node_status(workflow, name, task["template"], inputs, outputs)
    packed = base64.b64encode(gzip.compress(json.dumps(nodes).encode()))
    return len(packed), len(nodes), items


@pytest.mark.parametrize("patients", [3346, 33460], ids=["RADCURE", "10x"])
def test_the_argo_object_stays_far_below_its_limit(template: dict[str, Any], patients: int) -> None:
    size, count, items = argo_object(template, patients)
    parameters = defaults(template)
    assert max(items.values()) <= int(parameters["max-batches"])  # fan-outs bounded, larger batches instead
    assert size < OBJECT_LIMIT / 4, (size, count)
    print(f"{patients} patients: {count} nodes, {size / 1024:.0f} KiB compressed; items {items}")


def test_the_exit_handler_carries_no_failure_list(template: dict[str, Any]) -> None:
    status = next(t for t in template["spec"]["templates"] if t["name"] == "record-status")
    assert "workflow.failures" not in json.dumps(status)  # read from the workflow's record, whatever its size


@pytest.mark.parametrize("patients", [3346, 33460], ids=["RADCURE", "10x"])
def test_each_pod_gets_the_disk_its_work_needs(template: dict[str, Any], patients: int, tmp_path: Path) -> None:
    """The scan's sizing (``tsretrain.sizing``) of RADCURE-like cases: batch pods need a few GiB whatever the
    cohort (their batches grow to at most 66 patients); whole-dataset pods grow with it, within a GPU node's local
    disk at RADCURE's size, beyond it at ten times (README: a shared claim there)."""
    parameters = defaults(template)
    batches = fan_out(patients, parameters)["scan"]
    works = {case: CaseWork(int(DICOM_PER_PATIENT), VOXELS_PER_CASE) for batch in batches for case in batch}
    disks = step_disks(works, batches, int(parameters["predict-batch-size"]))
    sizes = write_sizes(
        tmp_path, disks, quantity_bytes(parameters["scratch"]), quantity_bytes(parameters["data-scratch"])
    )
    assert set(sizes) == set(SIZED) and all((tmp_path / f"disk-{step}").read_text() == sizes[step] for step in SIZED)
    for step in ("convert", "pseudolabel", "fingerprint", "preprocess-cases", "predict"):  # the fan-outs
        assert disks[step] < 64 * 2**30, (step, disks[step] / 2**30)  # any node's local disk
    assert disks["evaluate"] < NODE_DISK  # label maps of the whole test set
    largest = max(disks[step] for step in WHOLE_DATASET)
    assert (largest < NODE_DISK) == (patients == 3346), largest / 2**40
    print(f"{patients} patients: " + ", ".join(f"{step} {size}" for step, size in sizes.items()))


def test_sizes_are_never_below_the_minimums_and_round_up_to_whole_gib(tmp_path: Path) -> None:
    works = {"a": CaseWork(10**9, 10**8), "b": CaseWork(0, 0)}  # b: a case that cannot be converted
    disks = step_disks(works, [("a",), ("b",)], 64)
    assert disks["convert"] == int((10**9 + 10**8 * 0.82) * 1.5 + 2**30)
    sizes = write_sizes(tmp_path, disks, 20 * 2**30, 200 * 2**30)
    assert sizes["convert"] == "20Gi" and sizes["train"] == "200Gi"  # the minimums
    assert write_sizes(tmp_path, disks, 2**30, 2**30)["convert"] == "3Gi"  # 2.6 GiB rounded up


CONVERT_CPU_S = 2.22  # a RADCURE-sized case, `tsretrain convert` (docs/benchmarks.md, bench/convert.py)
EVALUATE_CPU_S = 9.6 / 12  # a case of 90 labels, Dice + HD95 + NSD (docs/benchmarks.md, bench/evaluate.py)


@pytest.mark.parametrize("patients", [3346, 33460], ids=["RADCURE", "10x"])
def test_the_measured_per_case_costs_fit_the_deadlines(template: dict[str, Any], patients: int) -> None:
    """A conversion pod converts its batch, the evaluation pod the whole test set, on the pod's CPU limit, within
    a tenth of their deadlines (the steps whose per-case cost is measured; the others in the README's limits)."""
    parameters = defaults(template)
    largest = max(len(batch) for batch in fan_out(patients, parameters)["scan"])
    templates = {t["name"]: t for t in template["spec"]["templates"]}

    def cpus(name: str) -> float:
        return float(templates[name]["container"]["resources"]["limits"]["cpu"])

    convert = largest * CONVERT_CPU_S / cpus("convert")
    evaluate = round(patients * TEST_FRACTION) * EVALUATE_CPU_S / cpus("evaluate")
    assert convert < templates["convert"]["activeDeadlineSeconds"] / 10, convert
    assert evaluate < templates["evaluate"]["activeDeadlineSeconds"] / 10, evaluate
