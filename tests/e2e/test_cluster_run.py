"""The cluster run, executed: the chart rendered as ``make kind-up`` installs it, its WorkflowTemplate run by the
Argo interpreter of ``argo_sim`` against a real S3 server (SeaweedFS) configured and keyed by the chart's own dev
S3 objects, every pod inside the image its template names (built from ``images/`` with buildah,
``argo_sim.containers``) as the template's securityContext says. Where images cannot be built here (no root, no
buildah) the pods run as local processes from the built wheel (``argo_sim.local``) and the image check skips,
saying why.

What this proves and what only a real cluster can: README, "The cluster path".
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
import torch
from argo_sim import images
from argo_sim.containers import Containers
from argo_sim.engine import Node, Run, Simulation
from argo_sim.local import LocalProcesses
from argo_sim.pods import Runtime, make_writable
from argo_sim.render import installed
from argo_sim.wheel import pod_environment
from support import SeaweedServer, workflow_templates

from tsretrain.labels.dictionary import load_dictionary
from tsretrain.layout import batch_id
from tsretrain.storage.store import S3Store, make_bucket, open_store
from tsretrain.synth.cohort import SynthConfig, generate

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TAG = images.HARNESS_TAG  # a numeric tag, as CI tags by date: up.sh must pass it as a string
ACCESS_KEY, SECRET_KEY = "tsretrain", "tsretrain-dev-secret"  # up.sh's defaults
IMAGES = {f"tsretrain-{family}": ROOT / "images" / f"{family}.Dockerfile" for family in ("cpu", "gpu", "pseudolabel")}
INPUT = "s3://tsretrain/input/dicom"
SAVE_EVERY = 5  # the trainers' checkpoint interval (epochs)
# The tiny configuration on the CPU: one fold, a few short epochs.
TINY = {
    "folds": '["0"]',
    "trainer": "nnUNetTrainerTsrTiny",
    "configuration": "3d_tiny",
    "epochs": "6",
    "iterations": "2",
    "device": "cpu",  # the GPU steps' device: this machine has none
    "convert-batch-size": "12",
}

E2E = {**TINY, "second-stage": "true", "second-stage-epochs": "2"}  # the optional branch, to its report section

SMALL = {"rows": 64, "columns": 64, "slices": 24, "pixel_spacing": 3.0, "slice_thickness": 5.0}


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 regular patients and every edge case, on a small grid (the run must fit a few CI minutes)."""
    out = tmp_path_factory.mktemp("small-cohort")
    generate(SynthConfig(out=out, cases=3, seed=7, edge_cases=True, **SMALL))
    return out


@pytest.fixture(scope="module")
def expected(small_cohort: Path) -> dict[str, dict[str, Any]]:
    return {p["patient_id"]: p for p in json.loads((small_cohort / "cohort.json").read_text())["patients"]}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """Where the pods run: inside their images where those can be built here, else as local processes."""
    folder = tmp_path_factory.mktemp("runtime")
    reason = images.not_ready(TAG, images.FAMILIES, folder / "build.log")
    if reason is not None:
        yield LocalProcesses(pod_environment(folder / "wheel"), IMAGES, why=reason)
        return
    containers = Containers()
    try:
        yield containers
    finally:
        containers.close()


@dataclass
class Cluster:
    simulation: Simulation
    server: SeaweedServer
    cohort: Path
    weights: Path
    inference: Simulation  # the chart's second WorkflowTemplate, on the same API server, store and images

    def store(self, uri: str) -> S3Store:
        store = open_store(uri)
        assert isinstance(store, S3Store)
        return store

    def listing(self, uri: str) -> dict[str, int]:
        return self.store(uri).list("")

    def run(self, parameters: dict[str, str], **options: Any) -> Run:
        return self.simulation.run({"input-prefix": INPUT, **parameters}, **options)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, small_cohort: Path, runtime: Runtime) -> Iterator[Cluster]:
    objects = installed(TAG, ACCESS_KEY, SECRET_KEY)
    template, inference = (workflow_templates(objects)[name] for name in ("tsretrain", "tsretrain-infer"))
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    root = tmp_path_factory.mktemp("cluster")
    pods = Path(tempfile.mkdtemp(prefix="argo-"))  # short: pods' /tmp holds Unix sockets (paths < 108 bytes)
    server = SeaweedServer(root / "s3", config=secrets["tsretrain-s3-config"]["stringData"]["config.json"])
    server.start()
    credentials = secrets["tsretrain-s3-credentials"]["stringData"]
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ |= {
        "AWS_ENDPOINT_URL": server.endpoint,
        "AWS_ACCESS_KEY_ID": credentials["access-key"],
        "AWS_SECRET_ACCESS_KEY": credentials["secret-key"],
    }
    try:
        for attempt in range(50):  # up.sh's last step: tsretrain store mb s3://tsretrain
            try:
                make_bucket("s3://tsretrain")
                break
            except Exception:
                if attempt == 49:
                    raise  # the server never took the bucket: say why
                time.sleep(0.2)
        open_store(INPUT).sync_up(small_cohort / "dicom", "")
        weights = root / "claims" / "weights"
        weights.mkdir(parents=True)  # provisioned but empty: no TotalSegmentator weights
        port = int(server.endpoint.rsplit(":", 1)[1])
        services = {"tsretrain-s3:8333": ("127.0.0.1", port)}
        simulation = Simulation(
            template,
            objects,
            pods,
            runtime,
            services,
            claims={template_claim(template): weights},
            timeout_s=1500,
        )
        contouring = Simulation(inference, objects, pods, runtime, services, timeout_s=900)
        with simulation.session(), contouring.session():
            yield Cluster(simulation, server, small_cohort, weights, contouring)
    finally:
        server.stop()
        shutil.rmtree(pods, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def template_claim(template: dict[str, Any]) -> str:
    """The weights claim the chart put into the pseudolabel template."""
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for t in template["spec"]["templates"]
        for v in t.get("volumes", [])
        if "persistentVolumeClaim" in v
    ]
    assert claims, "the pseudolabel template mounts no weights claim"
    return str(claims[0])


def failures(run: Run) -> str:
    return "\n".join(
        f"--- {n.display}: {n.phase} {n.message}\n{run.log_of(n)[-3000:]}"
        for n in run.pods()
        if n.phase in ("Failed", "Error")
    )


def read_csv(store: S3Store, key: str) -> list[dict[str, str]]:
    data = store.get_bytes(key)
    assert data is not None, f"{key} missing in the store"
    return list(csv.DictReader(io.StringIO(data.decode())))


class Preemption:
    """Deletes the first training pod once the store holds a checkpoint of its fold (a preempted GPU node)."""

    def __init__(self, cluster: Cluster, output: str) -> None:
        self.cluster, self.output = cluster, output
        self.killed_at_epoch: int | None = None  # epochs the killed pod had completed
        self._next = 0.0

    def __call__(self, node: Node, _: Simulation) -> bool:
        if self.killed_at_epoch is not None or node.template != "train" or time.time() < self._next:
            return False
        self._next = time.time() + 1
        stored = self.cluster.listing(f"{self.output}/nnunet")
        if not any(k.endswith("fold_0/checkpoint_latest.pth") for k in stored):
            return False
        log = node.log.read_text() if node.log else ""
        self.killed_at_epoch = log.count("Epoch time:")  # epochs completed before the kill
        return True


@pytest.fixture(scope="module")
def finished(cluster: Cluster) -> tuple[Run, Preemption, str]:
    output = "s3://tsretrain/runs/e2e"
    preemption = Preemption(cluster, output)
    run = cluster.run({**E2E, "output-prefix": output}, chaos=preemption)
    return run, preemption, output


def test_the_run_succeeds_and_the_store_holds_listing_report_and_status(
    cluster: Cluster, finished: tuple[Run, Preemption, str], expected: dict[str, dict[str, Any]]
) -> None:
    run, _, output = finished
    assert run.phase == "Succeeded", failures(run)
    store = cluster.store(output)
    listing = {row["patient_id"]: row for row in read_csv(store, "converted/cases.csv")}
    assert set(listing) == set(expected)  # every patient, excluded ones included
    for patient, truth in expected.items():
        assert listing[patient]["status"] == truth["expected_status"], patient
        assert listing[patient]["reason"] == truth["expected_reason"], patient
    report = store.get_bytes("report/report.html")
    assert report is not None
    for reason in {t["expected_reason"] for t in expected.values()} - {""}:
        assert reason.encode() in report, f"the report's exploration misses {reason}"
    # the second stage: a model per fold from the first stage's fold, its predictions, the paired comparison
    assert run.pods("report-second") and not run.pods("report")  # the variant with the second stage's section
    assert [p.phase for p in run.pods("second-stage")] == ["Succeeded"]
    second = "nnunet/nnUNet_results/Dataset366_TotalSegmentator/nnUNetTrainerTsrTinyGTVpFocal__nnUNetPlans__3d_tiny"
    assert f"{second}/fold_0/checkpoint_final.pth" in store.list(second)
    test_cases = {k.rsplit("/", 1)[1] for k in store.list("predictions/test") if k.endswith(".nii.gz")}
    assert test_cases and test_cases == {k.rsplit("/", 1)[1] for k in store.list("second-stage/test")}
    comparison = json.loads(store.get_bytes("comparison/comparison.json") or b"{}")
    assert comparison["n_cases"] == len(test_cases) and b"Second stage: the tumour-focused model" in report
    markdown = store.get_bytes("report/report.md")
    assert markdown is not None and f"| run | {output} |".encode() in markdown  # the store prefix: a resume's too
    packages = [name for name in store.list("export") if name.endswith(".zip")]
    assert packages == ["export/Dataset366_TotalSegmentator-3d_tiny-1.0.0.zip"], "the run ends with the model package"
    package = store.get_bytes(packages[0])
    assert package is not None
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        contents = b"".join(archive.read(name) for name in archive.namelist())
    assert not [patient for patient in listing if patient.encode() in contents]
    status_bytes = store.get_bytes("status.json")
    assert status_bytes is not None
    status = json.loads(status_bytes)
    assert status["status"] == "Succeeded" and status["workflow"] == run.name
    assert isinstance(status["failures"], list)  # a real list, not Argo's JSON string
    assert [f["displayName"] for f in status["failures"]] == ["train(0:0)(0)"]  # the preempted attempt


def named_images(template: dict[str, Any]) -> dict[str, str]:
    """Each container template's image as the run resolves it (a workflow parameter's default, or literal)."""
    defaults = {p["name"]: str(p.get("value")) for p in template["spec"]["arguments"]["parameters"]}
    named = {}
    for t in template["spec"]["templates"]:
        if "container" in t:
            image = t["container"]["image"]
            parameter = re.fullmatch(r"\{\{workflow\.parameters\.([\w-]+)\}\}", image)
            named[t["name"]] = defaults[parameter.group(1)] if parameter else image
    return named


def ran_in_their_images(cluster: Cluster, run: Run, runtime: Containers) -> set[str]:
    """Checks that each pod of ``run`` ran in the image its template names, as the user, group and fsGroup of the
    workflow's securityContext; returns the images."""
    template = cluster.simulation.template
    named = named_images(template)
    security = template["spec"]["securityContext"]
    user = (security["runAsUser"], security["runAsGroup"], (security["fsGroup"],))
    for pod in run.pods():
        started = runtime.started[pod.pod_name]
        assert started.image == f"localhost/{named[pod.template]}", pod.display
        assert (started.uid, started.gid, started.groups) == user, pod.display
    return {named[pod.template].split(":")[0] for pod in run.pods()}


def test_every_pod_ran_inside_the_image_its_template_names_as_its_security_context_says(
    cluster: Cluster, finished: tuple[Run, Preemption, str], runtime: Runtime
) -> None:
    if isinstance(runtime, LocalProcesses):
        pytest.skip(f"pods ran as local processes, not in images: {runtime.why}")
    run, _, _ = finished
    assert ran_in_their_images(cluster, run, runtime) == {"tsretrain-cpu", "tsretrain-gpu"}


def test_the_inference_template_contours_new_patients_with_the_runs_package(
    cluster: Cluster, finished: tuple[Run, Preemption, str], expected: dict[str, dict[str, Any]]
) -> None:
    """The package the run exported, on the same DICOM tree as new patients: a scan, GPU-template pods per batch
    (their patients' files staged, every CT series predicted) and the gathered listing; every patient listed."""
    _, _, output = finished
    (package,) = [key for key in cluster.store(output).list("export") if key.endswith(".zip")]
    contoured = "s3://tsretrain/runs/contoured"
    parameters = {"model": f"{output}/{package}", "device": "cpu", "infer-batch-size": "12"}
    run = cluster.inference.run({"input-prefix": INPUT, "output-prefix": contoured, **parameters})
    assert run.phase == "Succeeded", failures(run)
    store = cluster.store(contoured)
    batches = [key for key in store.list("scan/batches") if key.endswith(".json")]
    assert len(batches) > 1 and len(run.pods("infer")) == len(batches)  # one pod per batch of 12 patients
    rows = read_csv(store, "inference/cases.csv")
    assert {row["patient_id"] for row in rows} >= {p for p, t in expected.items() if t["expected_status"] == "ok"}
    regular = [row for row in rows if row["patient_id"].startswith("RADCURE-")]
    assert regular and all(row["status"] == "ok" and row["structures"] for row in regular)
    for row in regular:
        files = dict(item.split("=", 1) for item in row["files"].split(" | "))
        assert set(files) == {"rtstruct", "seg", "labels"}
        rtstruct = store.get_bytes(f"inference/{files['rtstruct']}")
        assert rtstruct is not None
        ds = pydicom.dcmread(io.BytesIO(rtstruct))
        referenced = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
        assert referenced.RTReferencedSeriesSequence[0].SeriesInstanceUID == row["series_uid"]
        assert ds.PatientID == row["patient_id"]
    broken = [row for row in rows if row["status"] != "ok"]
    assert broken and all(row["reason"] and row["advice"] for row in broken)
    summary = store.get_bytes("inference/inference.json")
    assert summary is not None and json.loads(summary)["series_predicted"] == sum(r["status"] == "ok" for r in rows)
    status = store.get_bytes("status.json")
    assert status is not None and json.loads(status)["status"] == "Succeeded"


def test_a_preempted_training_pod_resumes_from_the_stored_checkpoint(finished: tuple[Run, Preemption, str]) -> None:
    run, preemption, _ = finished
    train = run.task("train(0:0)")
    assert [a.phase for a in train.attempts] == ["Error", "Succeeded"], failures(run)
    assert train.attempts[0].message == "pod deleted"
    assert preemption.killed_at_epoch is not None
    resumed = re.search(r"resuming from epoch (\d+)", run.log_of(train.attempts[1]))
    assert resumed is not None, run.log_of(train.attempts[1])[-2000:]
    lost = preemption.killed_at_epoch - int(resumed.group(1))
    assert 0 <= lost <= SAVE_EVERY


def test_on_a_cpu_the_gpu_image_never_compiles_the_network(finished: tuple[Run, Preemption, str]) -> None:
    """The GPU image sets nnUNet_compile; with ``--device cpu`` neither the fold's validation nor the prediction
    compiles (nnU-Net's own trainer never does on a CPU)."""
    run, _, _ = finished
    pods = [*run.pods("train"), *run.pods("predict")]
    assert len(pods) == 3
    for pod in pods:
        assert "Using torch.compile" not in run.log_of(pod), pod.display


def test_bytes_fetched_per_pod_are_bounded_by_what_the_step_needs(
    cluster: Cluster, finished: tuple[Run, Preemption, str]
) -> None:
    run, _, output = finished
    out = cluster.listing(output)
    dicom = cluster.listing(INPUT)
    overhead = 256 * 1024  # requests, listings, manifests

    def total(keys: dict[str, int], pattern: str) -> int:
        return sum(size for key, size in keys.items() if re.search(pattern, key))

    inventory = json.loads(cluster.store(output).get_bytes("scan/inventory.json") or b"{}")
    case_bytes = {
        case["case_id"]: sum(size for _, size, _ in case["file_stats"]) for case in inventory.get("cases", [])
    }
    scan_bytes = total(out, r"^scan/")
    for pod in run.pods("convert"):  # its cases' DICOM and its batch's slice of the inventory, not the whole one
        name = pod.display.split(":", 1)[1].split(")", 1)[0]  # the fan-out item: the batch's id
        part = json.loads(cluster.store(output).get_bytes(f"scan/batches/{name}.json") or b"{}")
        batch = [case["case_id"] for case in part["cases"]]
        assert name == batch_id(tuple(batch))
        inventory_slice = out[f"scan/batches/{name}.json"]
        assert inventory_slice < out["scan/inventory.json"] / 2
        assert pod.fetched <= sum(case_bytes[c] for c in batch) * 1.05 + inventory_slice + overhead, pod.display
    (split,) = run.pods("split")
    assert split.fetched <= total(out, r"^converted/.*(manifest\.json|cases\.csv)$") + scan_bytes + overhead
    (evaluate,) = run.pods("evaluate")
    # the test references and predictions, and the case manifests (which references are manual contours)
    wanted = r"(labelsTs/|^predictions/test/|^converted/cases/[^/]+/manifest\.json$)"
    assert evaluate.fetched <= total(out, wanted) * 1.05 + overhead
    (report,) = run.pods("report-second")  # the e2e run's report, with the second stage's section
    # the report's images are the reviewed cases' only (evaluation/review.json), never the whole test set
    review = json.loads(cluster.store(output).get_bytes("evaluation/review.json") or b"{}")["cases"]
    shown = "|".join(re.escape(c["case"]) for c in review)
    images = r"(images|labels)T[rs]/|^predictions/"
    others = total(out, images) - total(out, rf"((images|labels)Ts|^predictions/test)/({shown})(_0000)?\.nii\.gz$")
    assert review and re.search(rf"pod: {len(review)} cases from \S*/evaluation/review\.json", run.log_of(report))
    preprocessed = total(out, r"^nnunet/nnUNet_preprocessed/") - total(
        out, r"^nnunet/nnUNet_preprocessed/[^/]+/[^/]+\.json$"
    )
    assert report.fetched <= total(out, r"") - total(out, r"\.pth$") - preprocessed - others
    assert sum(p.fetched for p in run.pods()) < 30 * total(dicom, r"")  # no pod fetches the world
    record = os.environ.get("TSRETRAIN_CLUSTER_BYTES")  # bench/cluster_bytes.py extrapolates these
    if record:
        Path(record).write_text(
            json.dumps(
                {
                    "pods": [
                        {"template": p.template, "display": p.display, "fetched": p.fetched, "peak": p.peak_bytes}
                        for p in run.pods()
                    ],
                    "dicom_bytes": total(dicom, r""),
                    "dicom_objects": len(dicom),
                    "voxels_per_case": SMALL["rows"] * SMALL["columns"] * SMALL["slices"],
                    "patients": len(inventory.get("cases", [])),
                    "case_bytes": case_bytes,
                    "store": out,
                }
            )
        )


def test_a_second_run_into_the_same_prefix_is_refused_unless_resumed(
    cluster: Cluster, finished: tuple[Run, Preemption, str]
) -> None:
    _, _, output = finished
    before = cluster.listing(output)
    refused = cluster.run({**E2E, "output-prefix": output})
    assert refused.phase == "Failed"
    first = refused.task("claim")
    assert first.phase == "Failed" and len(first.attempts) == 1, failures(refused)
    assert output in refused.log_of(first.attempts[0])
    changed = {k for k, v in cluster.listing(output).items() if before.get(k) != v}
    assert changed <= {"status.json"}  # nothing of the first run overwritten
    resumed = cluster.run({**E2E, "output-prefix": output, "resume": "true"})
    assert resumed.phase == "Succeeded", failures(resumed)
    # every step was done with the same inputs: skipped (no stage run, nothing fetched but manifests and records)
    for pod in resumed.pods():
        if pod.template not in ("claim", "record-status"):
            assert "done before with the same inputs" in resumed.log_of(pod), (pod.display, resumed.log_of(pod)[-800:])
            assert pod.fetched < (1_000_000 if pod.template == "scan" else 200_000), pod.display  # scan: a LIST
    after = cluster.listing(output)
    rewritten = {k for k, v in after.items() if before.get(k) != v and not k.startswith(".stages/")}
    assert rewritten <= {"status.json", "run.json"}, sorted(rewritten)


def test_a_usage_error_is_not_retried(cluster: Cluster) -> None:
    run = cluster.run({**TINY, "output-prefix": "s3://tsretrain/runs/usage", "dictionary": "no-such-dictionary"})
    assert run.phase == "Failed"
    scan = run.task("scan")
    assert len(scan.attempts) == 1 and scan.attempts[0].phase == "Failed", failures(run)
    assert "no-such-dictionary" in run.log_of(scan.attempts[0])


@pytest.fixture(scope="module")
def regular(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The store URI of the regular patients alone: the edge cases only lengthen the conversion."""
    folder = tmp_path_factory.mktemp("regular")
    for patient in (cluster.cohort / "dicom").glob("RADCURE-*"):
        shutil.copytree(patient, folder / patient.name)
    uri = "s3://tsretrain/input/regular"
    open_store(uri).sync_up(folder, "")
    return uri


def test_pseudolabels_without_weights_fail_with_the_weights_error(cluster: Cluster, regular: str) -> None:
    assert not any(cluster.weights.iterdir()), "the weights claim must be empty here"
    parameters = {**TINY, "output-prefix": "s3://tsretrain/runs/pseudo", "pseudolabel": "true"}
    parameters |= {"input-prefix": regular, "convert-batch-size": "2"}  # two of each pod
    run = cluster.run({**parameters, "dictionary": "radcure-ts90"})
    assert run.phase == "Failed"
    pods = run.pods("pseudolabel")
    assert pods, failures(run)
    for pod in pods:
        log = run.log_of(pod)
        assert pod.phase == "Failed" and "weights" in log.lower() and "Usage:" not in log, log[-2000:]
    assert all(len(run.task(p.display.rsplit("(", 1)[0]).attempts) == 1 for p in pods)  # not retried
    stored = cluster.listing(parameters["output-prefix"])
    for pod in pods:  # each fetches its batch's converted cases at most
        batch = pod.display.split(":", 1)[1].split(")", 1)[0].split(",")
        needed = sum(size for key, size in stored.items() if key.split("/")[2:3] and key.split("/")[2] in batch)
        assert pod.fetched <= needed * 1.05 + 256 * 1024, pod.display
    status = json.loads(cluster.store(parameters["output-prefix"]).get_bytes("status.json") or b"{}")
    assert status["status"] == "Failed" and any(f["templateName"] == "pseudolabel" for f in status["failures"])


@contextlib.contextmanager
def provisioned(claim: Path, weights: Path) -> Iterator[None]:
    """``weights`` in the weights claim while the block runs, as an operator copies TotalSegmentator's weights
    there; emptied after, whatever happens (the other tests see the claim as the chart leaves it). The harness
    makes a claim read-only while a pod mounts it so: writable again first."""
    make_writable(claim)
    try:
        shutil.copytree(weights, claim, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".built"))
        yield
    finally:
        make_writable(claim)
        for child in claim.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()


@pytest.mark.timeout(2400)  # TotalSegmentator on three phantoms in two pods, then a 91-label fine-tune
def test_pseudolabels_on_standin_weights_fine_tune_the_exported_model_to_ts90(
    cluster: Cluster, finished: tuple[Run, Preemption, str], standins: Path, regular: str, runtime: Runtime
) -> None:
    """The 90-label path on the harness: pseudolabel pods on the CPU read the STAND-IN weights from the weights
    claim, the labels come from their merge, the evaluation is the merged variant; and ``init-from`` (the store
    URI of the e2e run's package: a 22-output radcure-oar21 model) reaches the plan step, whose plans are the
    package's, and every training pod, which starts from its weights with a 91-output head (90 labels and the
    background). The three regular patients only (a 2-fold split needs three), two per batch: TotalSegmentator
    takes about a minute per patient on 2 cores even with the stand-ins' tiny networks, two thirds of it in the
    worker processes nnU-Net starts for each of its 12 predictions (six tasks, each after its 6 mm crop model)."""
    _, _, e2e = finished
    (package,) = [key for key in cluster.store(e2e).list("export") if key.endswith(".zip")]
    pretrained = f"{e2e}/{package}"
    output = "s3://tsretrain/runs/pseudo-tuned"
    parameters = {**TINY, "output-prefix": output, "input-prefix": regular, "convert-batch-size": "2"}
    parameters |= {"pseudolabel": "true", "dictionary": "radcure-ts90", "init-from": pretrained}
    parameters |= {"cv-folds": "2", "epochs": "2", "export": "false"}  # the least a 2-fold split and the checks need
    with provisioned(cluster.weights, standins):
        run = cluster.run(parameters)
    assert run.phase == "Succeeded", failures(run)
    if isinstance(runtime, Containers):  # TotalSegmentator in the pseudo-label image
        assert "tsretrain-pseudolabel" in ran_in_their_images(cluster, run, runtime)
    store = cluster.store(output)
    ts90 = load_dictionary("radcure-ts90")

    # each pseudolabel pod: every task of radcure-ts90 timed on each case of its batch, the claim's stand-ins
    pods = run.pods("pseudolabel")
    assert len(pods) == 2
    records: dict[str, dict[str, Any]] = {}
    claim = Path("/weights") if isinstance(runtime, Containers) else cluster.weights  # as the pod sees it
    for pod in pods:
        assert "STAND-IN" in run.log_of(pod), run.log_of(pod)[-2000:]
        item = pod.display.split(":", 1)[1].split(")", 1)[0]  # the fan-out item: the batch's id
        batch = json.loads(store.get_bytes(f"scan/batches/{item}.json") or b"{}")
        for case in [c["case_id"] for c in batch["cases"]]:
            record = json.loads(store.get_bytes(f"pseudolabels/{case}/pseudolabel.json") or b"{}")
            assert record["stand_in"] is True and record["weights"] == str(claim / "nnunet" / "results")
            assert set(record["tasks"]) == set(ts90.pseudolabel_tasks())
            assert all(task["seconds"] > 0 for task in record["tasks"].values()), record["tasks"]
            records[case] = record
    assert len(records) == 3
    sources = {source for record in records.values() for source in record["sources"].values() if source}
    assert "rtstruct" in sources and any(s.startswith("totalsegmentator:") for s in sources), sources

    # the merged evaluation: each test label's reference named by its source, the stand-ins said
    assert run.pods("evaluate-merged") and not run.pods("evaluate")
    summary = json.loads(store.get_bytes("evaluation/summary.json") or b"{}")
    assert "pseudo-label merge records" in summary["reference_records"]
    assert "STAND-IN" in summary["reference_records"]
    groups = {"rtstruct": "manual", "body": "body"}
    referenced = [row for row in read_csv(store, "evaluation/per_case.csv") if int(row["ref_voxels"])]
    for row in referenced:
        source = records[row["case"]]["sources"][row["name"]]
        assert row["reference"] == groups.get(source, "totalsegmentator" if source else ""), row
    assert "manual" in {row["reference"] for row in referenced} and "manual" in summary["groups"]

    # init-from: the plan step transferred the package's plans; every training pod loaded its weights
    preprocessed = "nnunet/nnUNet_preprocessed/Dataset366_TotalSegmentator"
    planned = json.loads(store.get_bytes(f"{preprocessed}/planning_summary.json") or b"{}")
    assert planned["plans_identifier"] == "nnUNetPlansTransferred"
    plans = json.loads(store.get_bytes(f"{preprocessed}/nnUNetPlansTransferred.json") or b"{}")
    assert plans["tsretrain_transferred_from"] == pretrained
    archive = zipfile.ZipFile(io.BytesIO(cluster.store(e2e).get_bytes(package) or b""))
    (source_plans,) = [json.loads(archive.read(n)) for n in archive.namelist() if n.endswith("/plans.json")]
    for name in ("3d_fullres", "3d_tiny"):
        ours, theirs = plans["configurations"][name], source_plans["configurations"][name]
        assert {k: v for k, v in ours.items() if k != "data_identifier"} == {
            k: v for k, v in theirs.items() if k != "data_identifier"
        }, name
    trains = run.pods("train")
    assert trains and all(p.phase == "Succeeded" for p in trains)
    for pod in trains:
        assert "Loading pretrained weights from file" in run.log_of(pod), run.log_of(pod)[-2000:]
    model = "nnunet/nnUNet_results/Dataset366_TotalSegmentator/nnUNetTrainerTsrTiny__nnUNetPlansTransferred__3d_tiny"
    labels = json.loads(store.get_bytes(f"{model}/dataset.json") or b"{}")["labels"]
    assert len(labels) == len(ts90.labels) + 1 == 91  # the background and 90 labels
    checkpoint = torch.load(
        io.BytesIO(store.get_bytes(f"{model}/fold_0/checkpoint_final.pth") or b""),
        map_location="cpu",
        weights_only=False,
    )
    (head,) = [v for k, v in checkpoint["network_weights"].items() if k.endswith("seg_layers.0.weight")]
    assert head.shape[0] == 91
    (start,) = [n for n in archive.namelist() if n.endswith("fold_0/checkpoint_final.pth")]
    weights = torch.load(io.BytesIO(archive.read(start)), map_location="cpu", weights_only=False)["network_weights"]
    assert [v.shape[0] for k, v in weights.items() if k.endswith("seg_layers.0.weight")] == [22]  # radcure-oar21
