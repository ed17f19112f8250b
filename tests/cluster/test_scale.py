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

from tsretrain.conversion.scan import batched, fan_out_batch_size
from tsretrain.layout import batch_id
from tsretrain.pipeline.registry import BY_NAME
from tsretrain.resources import quantity_bytes
from tsretrain.sizing import (
    EXPORT_BYTES,
    EXPORT_NS,
    FINGERPRINT_BYTES,
    FINGERPRINT_NS,
    FIXED,
    INVENTORY_PER_PATIENT,
    MARGIN,
    MEMORY_SIZED,
    POD_CLASSES,
    PREPROCESS_BYTES,
    PREPROCESS_NS,
    SCAN_BYTES_PER_CASE,
    SCAN_BYTES_PER_RECORD,
    SCAN_CACHE,
    SCAN_INDEX_PER_FILE,
    SIZED,
    TIMED,
    Budget,
    CaseWork,
    PodClass,
    Work,
    step_budgets,
    write_budgets,
)

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
    size = fan_out_batch_size(len(ids), int(parameters["convert-batch-size"]), int(parameters["max-batches"]))
    scan = list(batched(ids, size))  # as the scan writes them
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


def budgets(template: dict[str, Any], patients: int, classes: int) -> dict[str, Budget]:
    """The scan's budgets (``tsretrain.sizing``) for RADCURE-like cases, each step on its own pod class."""
    parameters = defaults(template)
    batches = fan_out(patients, parameters)["scan"]
    works = {case: CaseWork(int(DICOM_PER_PATIENT), VOXELS_PER_CASE) for batch in batches for case in batch}
    work = Work(works, batches, int(parameters["predict-batch-size"]), classes)
    return step_budgets(work, PODS)


PODS = {name: POD_CLASSES[stage.resources] for name, stage in BY_NAME.items()}
WHOLE_DATASET = {name for name, stage in BY_NAME.items() if stage.whole_dataset}
POD_MEMORY = 256 * 2**30  # a GPU's share of an 8-GPU node with 2 TiB (a CPU pod: a quarter of a 1 TiB node)
DEADLINE = 7 * 86400  # a pod running a week is a design fault, whatever it does
# What exceeds those at each size, with the model's classes (README, Limits): nnU-Net's post-processing search
# with 90 labels (run it with postprocess-search=none); at ten times the size a fold's validation on one GPU, and
# the whole-dataset steps' local disk (a shared claim instead)
EXCEEDED = {
    (3346, 22): set(),
    (3346, 91): {"postprocess deadline"},
    (33460, 22): {"validate deadline"},
    (33460, 91): {"validate deadline", "postprocess deadline"},
}
EXCEEDED = {
    key: value | ({"assemble disk", "train disk", "validate disk", "second-stage disk"} if key[0] > 3346 else set())
    for key, value in EXCEEDED.items()
}


@pytest.mark.parametrize(
    ("patients", "classes"), list(EXCEEDED), ids=["RADCURE-oar21", "RADCURE-ts90", "10x-oar21", "10x-ts90"]
)
def test_each_pod_gets_the_budget_its_work_needs(
    template: dict[str, Any], patients: int, classes: int, tmp_path: Path
) -> None:
    """Disk, memory and deadline of every sized step for RADCURE-like cases: batch pods stay small whatever the
    cohort (their batches grow to at most 66 patients); whole-dataset pods grow with it; what exceeds a node's
    disk, a pod's share of memory or a week is exactly what README's Limits lists."""
    parameters = defaults(template)
    found = budgets(template, patients, classes)
    written = write_budgets(
        tmp_path,
        found,
        quantity_bytes(parameters["scratch"]),
        quantity_bytes(parameters["data-scratch"]),
        PODS,
        WHOLE_DATASET,
    )
    assert set(found) == set(SIZED)
    for step, values in written.items():
        assert all((tmp_path / f"{kind}-{step}").read_text() == value for kind, value in values.items())
        assert set(values) == {"disk"} | ({"memory"} if step in MEMORY_SIZED else set()) | (
            {"deadline"} if step in TIMED else set()
        ), step
    for step in ("convert", "pseudolabel", "fingerprint", "preprocess-cases", "predict"):  # the fan-outs
        assert found[step].disk < 64 * 2**30, (step, found[step].disk / 2**30)  # any node's local disk
    exceeded = {f"{step} disk" for step, budget in found.items() if budget.disk > NODE_DISK}
    exceeded |= {f"{step} memory" for step, budget in found.items() if (budget.memory or 0) > POD_MEMORY}
    exceeded |= {f"{step} deadline" for step, budget in found.items() if (budget.seconds or 0) > DEADLINE}
    assert exceeded == EXCEEDED[patients, classes]
    print(f"{patients} patients, {classes} classes: {written}")


def test_budgets_follow_the_work(template: dict[str, Any]) -> None:
    """A batch step's budget follows its batch (ten times the cohort: batches of 66, not 8), a prediction pod's its
    fixed count of test cases, a whole-dataset step's the cohort; the model's classes weigh on the steps that hold
    one case's logits or compute per label."""
    small, large = budgets(template, 3346, 22), budgets(template, 33460, 22)
    for step in ("convert", "fingerprint", "preprocess-cases"):
        assert large[step].disk > small[step].disk, step
    assert large["predict"] == small["predict"]
    assert large["validate"].seconds > 5 * small["validate"].seconds  # type: ignore[operator]
    labels = budgets(template, 3346, 91)
    for step in ("validate", "predict"):
        assert labels[step].memory > 3 * small[step].memory, step  # type: ignore[operator]
    assert labels["postprocess"].seconds > 10 * small["postprocess"].seconds  # type: ignore[operator]
    assert labels["convert"] == small["convert"]


def test_budgets_are_never_below_the_minimums_and_round_up_to_whole_gib(tmp_path: Path) -> None:
    works = {"a": CaseWork(10**9, 10**8), "b": CaseWork(0, 0)}  # b: a case that cannot be converted
    found = step_budgets(Work(works, [("a",), ("b",)], 64, 22), PODS)
    assert found["convert"].disk == int((10**9 + 10**8 * 0.82) * 1.5 + 2**30)
    written = write_budgets(tmp_path, found, 20 * 2**30, 200 * 2**30, PODS, WHOLE_DATASET)
    assert written["convert"]["disk"] == "20Gi" and written["train"]["disk"] == "200Gi"  # the minimums
    assert written["convert"]["memory"] == "16Gi"  # the pod class's limit
    assert written["evaluate"]["deadline"] == "3600"  # an hour at least
    assert (
        write_budgets(tmp_path, found, 2**30, 2**30, PODS, WHOLE_DATASET)["convert"]["disk"] == "3Gi"
    )  # 2.6 GiB rounded up


def test_the_per_voxel_costs_are_the_benchmarks() -> None:
    """The sizing's nnU-Net figures are those ``bench/case_costs.py`` recorded in docs/benchmarks.md."""
    text = (Path(__file__).parents[2] / "docs" / "benchmarks.md").read_text()
    section = text.split("<!-- bench/case_costs.py begin -->")[1].split("<!-- bench/case_costs.py end -->")[0]
    rows = re.findall(r"^\| (\w+) \| (\d+) \| (\d+) \| ([\d.]+) \|", section, re.MULTILINE)
    tables = {
        "fingerprint": (FINGERPRINT_NS, FINGERPRINT_BYTES),
        "preprocess": (PREPROCESS_NS, PREPROCESS_BYTES),
        "export": (EXPORT_NS, EXPORT_BYTES),
    }
    assert len(rows) == sum(len(ns) for ns, _ in tables.values())
    for step, classes, ns, nbytes in rows:
        assert tables[step][0][int(classes)] == float(ns) and tables[step][1][int(classes)] == float(nbytes), step


@pytest.mark.parametrize("patients", [3346, 33460], ids=["RADCURE", "10x"])
def test_the_scan_fits_its_pod(template: dict[str, Any], patients: int) -> None:
    """The scan's memory is one patient's header records, the fan-out batch of plans being written (as objects and
    JSON: three times the inventory's text), a line per case and SQLite's cache (flat in the files: RADCURE's 600k
    objects, 179 a patient, or ten times them, on a CPU pod); its disk the header index and the inventory with its
    batch slices, within the whole-dataset disk it gets."""
    files = patients * FILES_PER_PATIENT
    largest_patient = 4 * FILES_PER_PATIENT  # several CT series and RTSTRUCTs
    batch = fan_out_batch_size(patients, 8, 512) * 3 * INVENTORY_PER_PATIENT
    held = largest_patient * SCAN_BYTES_PER_RECORD + batch + patients * SCAN_BYTES_PER_CASE + SCAN_CACHE
    memory = held * MARGIN + FIXED
    assert BY_NAME["scan"].resources == "cpu" and memory < PODS["scan"].memory_limit / 8, memory / 2**30
    disk = (files * SCAN_INDEX_PER_FILE + 2 * patients * INVENTORY_PER_PATIENT) * MARGIN
    scan = next(t for t in template["spec"]["templates"] if t["name"] == "scan")
    assert "data-scratch" in scan["podSpecPatch"]
    assert disk < quantity_bytes(defaults(template)["data-scratch"]), disk / 2**30


FILES_PER_PATIENT = 600_000 // 3346


def test_the_scans_budgets_come_from_its_batches_whether_or_not_it_writes_their_slices(
    cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch step's budget is its largest batch's: the scan sizes from the batches it makes, with or without
    ``--batches-out`` (batches of one case here)."""
    from tsretrain.conversion import scan as scan_module

    seen: list[Work] = []

    def recorded(work: Work, pods: dict[str, PodClass]) -> dict[str, Budget]:
        seen.append(work)
        return {}

    monkeypatch.setattr(scan_module, "step_budgets", recorded)
    for name, batches_out in (("slices", tmp_path / "batches.json"), ("none", None)):
        config = scan_module.ScanConfig(
            input=cohort / "dicom",
            out=tmp_path / name / "scan",
            workers=1,
            batch_size=1,
            batches_out=batches_out,
            sizes_out=tmp_path / name,
        )
        scan_module.scan(config)
    with_slices, without = seen
    assert with_slices.batches == without.batches
    assert len(without.batches) == len(without.cases) > 1
