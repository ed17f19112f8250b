"""The cluster run at RADCURE's size and at ten times it, without data: the rendered WorkflowTemplate and the stages'
own batching code evaluated for 3,346 and 33,460 simulated patients (pseudo-labels on, the most nodes): the Argo
object's size (node statuses as Argo stores them, gzipped), items per fan-out, and per pod of each fan-out the bytes
fetched, the store requests and the disk needed, against the budgets of the rendered templates.

Per-patient figures (RADCURE, ``../shared`` facts and the scale audit): 323.5 GB of DICOM for 3,346 patients in about
183 objects each, 57.8 KB of inventory per patient, converted and assembled NIfTI of about 40 MB per case, about
48 MB of preprocessed data per training case (129 GB for RADCURE's training set at the upper end).
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import re
from typing import Any

import pytest
import yaml
from test_workflow import load_workflow_module

from tsretrain.conversion.scan import fan_out_batch_size
from tsretrain.layout import batch_id
from tsretrain.resources import quantity_bytes

DICOM_PER_PATIENT = 323.5e9 / 3346
OBJECTS_PER_PATIENT = 183
INVENTORY_PER_PATIENT = 57.8e3
NIFTI_PER_CASE = 40e6  # CT (int16, gzip) and label map
PREPROCESSED_PER_CASE = 129e9 / 2677
MANIFEST_PER_FILE = 150  # bytes of a checksum manifest entry
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
    size = fan_out_batch_size(patients, int(parameters["convert-batch-size"]), int(parameters["max-batches"]))
    test = ids[: round(patients * TEST_FRACTION)]
    per_test = int(parameters["predict-batch-size"])
    return {
        "scan": [tuple(ids[i : i + size]) for i in range(0, patients, size)],
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
def test_each_batch_pod_fits_its_disk_and_its_store_requests_do_not_grow_with_the_batches(
    template: dict[str, Any], patients: int
) -> None:
    parameters = defaults(template)
    scratch = quantity_bytes(parameters["scratch"])
    batches = fan_out(patients, parameters)
    largest = max(len(b) for b in batches["scan"])
    training = math.ceil(largest * TRAINING_SHARE * (1 - TEST_FRACTION))
    pods = {  # bytes a pod holds on its /work and the store requests it makes, besides its own files
        "convert": (
            largest * (DICOM_PER_PATIENT + INVENTORY_PER_PATIENT + NIFTI_PER_CASE),
            largest * OBJECTS_PER_PATIENT,
        ),
        "fingerprint": (training * NIFTI_PER_CASE, 2 * training),
        "preprocess-cases": (training * (NIFTI_PER_CASE + PREPROCESSED_PER_CASE), 2 * training),
    }
    for name, (disk, requests) in pods.items():
        assert disk < 0.8 * scratch, (name, patients, disk / 2**30)
        # besides its files: its record, its batch's slice, one manifest per folder read and the ones it writes
        assert requests + 8 < 2 * largest * OBJECTS_PER_PATIENT, name
    listing_manifests = len(batches["scan"])  # the one pod gathering every batch reads each batch's manifest once
    assert listing_manifests <= int(parameters["max-batches"])
