"""What a workflow pod does around a stage: fetch by need, exit codes, the run prefix's claim, the run status."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from argo_sim.engine import fnv32a
from argo_sim.kubeapi import KubeApi
from argo_sim.render import render
from typer.testing import CliRunner

from tsretrain.cli import app
from tsretrain.cluster.incluster import ApiError, failures
from tsretrain.errors import UserError
from tsretrain.layout import batch_id
from tsretrain.pipeline.pod import Completion, Transfer, expand, fetch, parse_get, parse_put, placeholders
from tsretrain.storage.store import matches, open_store

runner = CliRunner()


def published(tmp_path: Path) -> str:
    """A converted folder of three cases published into a store folder."""
    folder = tmp_path / "local"
    for case in ("A", "B", "C"):
        (folder / "cases" / case).mkdir(parents=True)
        (folder / "cases" / case / "manifest.json").write_text(json.dumps({"case_id": case}))
        (folder / "cases" / case / f"{case}.nii.gz").write_bytes(case.encode() * 1000)
    (folder / "cases.csv").write_text("case_id\nA\nB\nC\n")
    uri = str(tmp_path / "store" / "converted")
    open_store(uri).sync_up(folder, "")
    return uri


def test_patterns_match_segment_by_segment() -> None:
    assert matches("cases/A/manifest.json", ("cases/*/manifest.json",))
    assert not matches("cases/A/tasks/x.nii.gz", ("cases/*/*.nii.gz",))  # * never crosses /
    assert not matches("cases.csv", ("cases/*/*",))
    assert expand(("cases/{case}/*", "x"), ("A", "B")) == ("cases/A/*", "cases/B/*", "x")
    assert expand(("cases/{case}/*", "x"), ()) == ("x",)  # no case: no pattern of a case
    with pytest.raises(UserError, match="needs --cases-from"):
        expand(("cases/{case}/*",), None)
    assert placeholders("scan/batches/{batch}.json", "b7") == "scan/batches/b7.json"
    assert placeholders("--cases={cases}", "b7", ("A", "B")) == "--cases=A,B"
    with pytest.raises(UserError, match="give --batch"):
        placeholders("{batch}", "")
    with pytest.raises(UserError, match="give --cases-from"):
        placeholders("{cases}", "b7")


def test_a_pod_fetches_only_what_its_stage_needs(tmp_path: Path) -> None:
    uri = published(tmp_path)
    (tmp_path / "batch.json").write_text(json.dumps({"cases": [{"case_id": "A"}, {"case_id": "C"}]}))
    fetched, cases = fetch([Transfer(uri, tmp_path / "batch", ("cases/{case}/*",))], "b1", tmp_path / "batch.json")
    assert cases == ("A", "C")
    assert sorted(p.relative_to(tmp_path / "batch").as_posix() for p in (tmp_path / "batch").rglob("*.*")) == [
        "cases/A/A.nii.gz",
        "cases/A/manifest.json",
        "cases/C/C.nii.gz",
        "cases/C/manifest.json",
    ]
    assert fetched == 2 * 1000 + sum(len(json.dumps({"case_id": c})) for c in "AC")
    fetch([Transfer(uri, tmp_path / "manifests", ("cases/*/manifest.json",))])
    assert len(list((tmp_path / "manifests").rglob("*"))) == 3 + 3 + 1  # three manifests, their folders, cases/


def test_cases_listed_in_a_fetched_file_name_what_the_later_fetches_bring(tmp_path: Path) -> None:
    """The report pod's way: the evaluation folder (with review.json) first, then only the listed cases."""
    uri = published(tmp_path)
    review = tmp_path / "local-eval"
    review.mkdir()
    (review / "review.json").write_text(json.dumps({"cases": [{"case": "C", "kind": "lowest"}, {"case": "A"}]}))
    (review / "summary.json").write_text("{}")
    evaluation = str(tmp_path / "store" / "evaluation")
    open_store(evaluation).sync_up(review, "")
    gets = [  # the per-case folder first on purpose: the pod must reorder
        Transfer(uri, tmp_path / "pod" / "converted", ("cases/{case}/*.nii.gz", "cases.csv")),
        Transfer(evaluation, tmp_path / "pod" / "evaluation"),
    ]
    fetch(gets, cases_from=tmp_path / "pod" / "evaluation" / "review.json")
    got = sorted(p.relative_to(tmp_path / "pod").as_posix() for p in (tmp_path / "pod").rglob("*.*"))
    assert got == [
        "converted/cases.csv",
        "converted/cases/A/A.nii.gz",
        "converted/cases/C/C.nii.gz",
        "evaluation/review.json",
        "evaluation/summary.json",
    ]
    (review / "review.json").write_text(json.dumps({"cases": []}))  # nothing to review: no case fetched, not all
    open_store(evaluation).sync_up(review, "")
    fetch(
        [
            Transfer(evaluation, tmp_path / "none" / "evaluation"),
            Transfer(uri, tmp_path / "none" / "converted", ("cases/{case}/*",)),
        ],
        cases_from=tmp_path / "none" / "evaluation" / "review.json",
    )
    assert not (tmp_path / "none" / "converted").exists()
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="list of cases"):
        fetch(gets[:1], cases_from=tmp_path / "bad.json")


def test_transfer_specs() -> None:
    assert parse_get("s3://b/run/raw=/work/raw=*/labelsTs/*,*/dataset.json") == Transfer(
        "s3://b/run/raw", Path("/work/raw"), ("*/labelsTs/*", "*/dataset.json")
    )
    assert parse_put("/work/split=s3://b/run/split") == Transfer("s3://b/run/split", Path("/work/split"))
    with pytest.raises(UserError, match="expected"):
        parse_get("s3://b/run/raw")


def test_usage_errors_exit_2_and_a_pod_passes_its_stages_exit_code_on(tmp_path: Path) -> None:
    """Exit code 2 is what the workflow never retries: a bad option, a bad value, a stage that cannot run as
    configured, a bad transfer spec."""
    converted = tmp_path / "converted"
    (converted / "cases").mkdir(parents=True)
    assert runner.invoke(app, ["split", str(converted), "--out", str(tmp_path / "s"), "--nope"]).exit_code == 2
    assert runner.invoke(app, ["split", str(converted), "--out", str(tmp_path / "s"), "--folds", "x"]).exit_code == 2
    refused = runner.invoke(app, ["split", str(converted), "--out", str(tmp_path / "s"), "--folds", "7"])
    assert refused.exit_code == 2 and "do not exist in a 5-fold split" in refused.output
    result = runner.invoke(app, ["pod", "--", "train", "--work", str(tmp_path), "--fold", "0", "--dataset", "D1_x"])
    assert result.exit_code == 2 and "Dataset<id 001-999>" in result.output
    assert runner.invoke(app, ["pod", "--get", "nonsense", "--", "version"]).exit_code == 2
    store = tmp_path / "store"
    failed = runner.invoke(
        app, ["pod", "--put", f"{tmp_path / 's'}={store}/split", "--", "split", str(converted), "--out", "x"]
    )
    assert failed.exit_code == 2 and not store.exists()  # too few cases: a user's error, nothing published


def test_a_prefix_holding_another_run_is_refused_unless_resuming(tmp_path: Path) -> None:
    runs = str(tmp_path / "runs")

    def claim(workflow: str, resume: str = "false", prefix: str = "") -> tuple[int, str]:
        out = tmp_path / f"{workflow}.prefix"
        args = ["claim", "--output-prefix", prefix, "--runs-prefix", runs, "--workflow", workflow]
        result = runner.invoke(app, [*args, "--resume", resume, "--out-file", str(out)])
        return result.exit_code, out.read_text() if out.is_file() else result.output

    assert claim("wf-1") == (0, f"{runs}/wf-1")  # by default a prefix of its own
    open_store(f"{runs}/wf-1").put_bytes(b"x", "scan/inventory.json")
    assert claim("wf-1")[0] == 0  # the claim step of the same workflow, retried
    code, message = claim("wf-2", prefix=f"{runs}/wf-1")
    assert code == 2 and "already holds wf-1" in message and "resume=true" in message
    assert claim("wf-2", resume="true", prefix=f"{runs}/wf-1") == (0, f"{runs}/wf-1")
    record = json.loads((tmp_path / "runs" / "wf-1" / "run.json").read_text())
    assert record == {"workflow": "wf-2", "resumed_from": "wf-1"}


def test_the_claim_step_refuses_a_disk_size_kubernetes_would_refuse(tmp_path: Path) -> None:
    """A pod asking for a wrong size could not be made (Argo: invalid podSpecPatch); the claim step stops the run
    first, with exit 2, naming the parameter, and claims nothing."""
    runs = str(tmp_path / "runs")
    args = ["claim", "--output-prefix", "", "--runs-prefix", runs, "--workflow", "wf-1", "--out-file", "p"]
    for size in ("20GB", "20 Gi", "", "-"):
        result = runner.invoke(app, [*args, "--disk", "scratch=20Gi", "--disk", f"data-scratch={size}"])
        assert result.exit_code == 2 and "workflow parameter data-scratch" in result.output, size
        assert not (tmp_path / "runs").exists()
    good = ["--disk", "scratch=20Gi", "--disk", "data-scratch=1.5Ti", "--disk", "x=500G", "--disk", "y=1e12"]
    assert runner.invoke(app, [*args[:-1], str(tmp_path / "p"), *good]).exit_code == 0


def workflow_record(name: str, nodes: list[tuple[str, str, str, str]]) -> dict[str, Any]:
    """A Workflow as the API server holds it: node statuses (name, display name, template, phase) by id."""
    statuses = {
        f"{name}-{n}": {"id": f"{name}-{n}", "name": node, "displayName": display, "templateName": template,
                        "type": "Pod", "phase": phase, "message": "OOMKilled" if phase == "Failed" else "",
                        "finishedAt": f"2026-12-06T10:0{n}:00Z"}
        for n, (node, display, template, phase) in enumerate(nodes)
    }  # fmt: skip
    return {"metadata": {"name": name, "namespace": "argo"}, "status": {"nodes": statuses}}


def test_the_failed_steps_are_argos_whether_the_controller_compressed_the_nodes_or_not() -> None:
    record = workflow_record(
        "wf-1",
        [("wf-1.train(0:0)(0)", "train(0:0)(0)", "train", "Failed"), ("wf-1.scan(0)", "scan(0)", "scan", "Succeeded")],
    )
    (failure,) = failures(record)
    assert failure["displayName"] == "train(0:0)(0)" and failure["message"] == "OOMKilled"
    assert failure["podName"] == f"wf-1-train-{fnv32a('wf-1.train(0:0)(0)')}"  # Argo's pod names v2
    packed = base64.b64encode(gzip.compress(json.dumps(record["status"]["nodes"]).encode())).decode()
    assert failures({"metadata": record["metadata"], "status": {"compressedNodes": packed}}) == [failure]
    with pytest.raises(ApiError, match="offloaded"):
        failures({"metadata": record["metadata"], "status": {"offloadNodeStatusVersion": "fnv:1"}})


@pytest.mark.parametrize("granted", [True, False], ids=["chart-role", "no-role"])
def test_status_reads_the_failed_steps_from_the_api_and_writes_only_in_the_runs_own_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, granted: bool
) -> None:
    """The exit handler's command line carries no failure list: it reads the workflow's record over TLS with the
    pod's service account, which the chart's Role allows; without that Role the status is still recorded."""
    runs = str(tmp_path / "runs")
    claim = ["claim", "--output-prefix", "", "--runs-prefix", runs, "--workflow", "wf-1", "--out-file", "p"]
    assert runner.invoke(app, [*claim[:-1], str(tmp_path / "p")]).exit_code == 0
    chart = {(d["kind"], d["metadata"]["name"]): d for d in render([]) if d["kind"] in ("Role", "RoleBinding")}
    record = workflow_record("wf-1", [("wf-1.train(0:0)(0)", "train(0:0)(0)", "train", "Failed")])
    api = KubeApi(tmp_path / "api", chart if granted else {}, "tsretrain-workflow", lambda: record)
    try:
        monkeypatch.setenv("TSRETRAIN_SERVICE_ACCOUNT", str(api.folder))
        for key, value in api.env().items():
            monkeypatch.setenv(key, value)
        args = ["status", "--output-prefix", "", "--runs-prefix", runs, "--status", "Failed", "--namespace", "argo"]
        assert runner.invoke(app, [*args, "--workflow", "wf-1"]).exit_code == 0
    finally:
        api.stop()
    status = json.loads((tmp_path / "runs" / "wf-1" / "status.json").read_text())
    assert status["status"] == "Failed"
    if granted:
        assert [f["message"] for f in status["failures"]] == ["OOMKilled"] and api.requests[0][1] == 200
    else:
        assert status["failures"] is None and "HTTP 403" in status["failures_unavailable"]
    other = [*args[:2], str(tmp_path / "runs" / "wf-1"), *args[3:], "--workflow", "wf-9"]
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")  # outside a pod: recorded without the failed steps
    assert runner.invoke(app, other).exit_code == 0
    assert json.loads((tmp_path / "runs" / "wf-1" / "status.json").read_text())["workflow"] == "wf-1"  # untouched


def test_hidden_folders_are_never_published(tmp_path: Path) -> None:
    """E.g. TotalSegmentator weights staged below the pseudolabel output: never part of what the pod publishes."""
    out = tmp_path / "pseudolabels"
    (out / ".weights" / "nnunet").mkdir(parents=True)
    (out / ".weights" / "nnunet" / "model.pth").write_bytes(b"w")
    (out / "A").mkdir()
    (out / "A" / "A.nii.gz").write_bytes(b"m")
    open_store(str(tmp_path / "store")).sync_up(out, "")
    assert set(open_store(str(tmp_path / "store")).manifest("") or {}) == {"A/A.nii.gz"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
@pytest.mark.parametrize("stage", ["train", "predict"])
def test_a_gpu_stage_without_a_gpu_fails_at_once(tmp_path: Path, stage: str) -> None:
    """--device cuda (what the workflow's GPU steps ask for) never falls back to the CPU: a usage error."""
    args = ["--fold", "0"] if stage == "train" else ["--out", str(tmp_path / "p")]
    result = runner.invoke(app, [stage, "--work", str(tmp_path), *args, "--device", "cuda"])
    assert result.exit_code == 2 and "runtimeClassName" in result.output
    assert not (tmp_path / "nnUNet_results").exists()  # failed before touching anything


def test_a_retried_batch_replaces_its_own_manifest(tmp_path: Path) -> None:
    """Two attempts of one batch publish one manifest; batches publish manifests of their own."""
    store = tmp_path / "store"
    for attempt, batch, cases in ((1, "b1", "A,B"), (2, "b1", "A,B"), (1, "b2", "C")):
        out = tmp_path / f"out-{attempt}-{batch}"
        for case in cases.split(","):
            (out / "cases" / case).mkdir(parents=True)
            (out / "cases" / case / "manifest.json").write_text(json.dumps({"case_id": case, "attempt": attempt}))
        result = runner.invoke(app, ["pod", "--put", f"{out}={store}", "--batch", batch, "--", "version"])
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in store.glob("_manifest-batch-*.json")) == [
        "_manifest-batch-b1.json",
        "_manifest-batch-b2.json",
    ]
    fetch([Transfer(str(store), tmp_path / "fetched")])  # the union of the manifests matches the objects
    assert json.loads((tmp_path / "fetched" / "cases" / "A" / "manifest.json").read_text())["attempt"] == 2


def test_a_conversion_pod_fetches_its_batchs_slice_of_the_inventory_and_converts_from_it(
    cohort: Path, tmp_path: Path
) -> None:
    """The scan writes each fan-out batch's own inventory; the pod of one batch, run as the workflow runs it
    (``{batch}`` in its patterns and arguments), fetches that slice alone and converts exactly its cases."""
    from tsretrain.conversion.scan import ScanConfig, scan

    out, batches_file, store = tmp_path / "scan", tmp_path / "batches.json", tmp_path / "store"
    scan(ScanConfig(input=cohort / "dicom", out=out, batches_out=batches_file, batch_size=4, workers=1))
    inventory = json.loads((out / "inventory.json").read_text())
    ids = json.loads(batches_file.read_text())
    batches = {}
    for name in ids:  # the fan-out's items: batch ids, each naming its slice of the inventory
        part = json.loads((out / "batches" / f"{name}.json").read_text())
        batches[name] = tuple(c["case_id"] for c in part["cases"])
        assert name == batch_id(batches[name]) and len(batches[name]) <= 4
        assert {k: v for k, v in part.items() if k != "cases"} == {k: v for k, v in inventory.items() if k != "cases"}
    assert [c for name in ids for c in batches[name]] == [c["case_id"] for c in inventory["cases"]]  # each once
    assert len(ids) > 2
    capped = tmp_path / "capped.json"  # at most max_batches batches: larger ones
    scan(ScanConfig(input=cohort / "dicom", out=out, batches_out=capped, batch_size=1, max_batches=3, workers=1))
    assert len(json.loads(capped.read_text())) == 3 and len(list((out / "batches").iterdir())) == 3
    scan(ScanConfig(input=cohort / "dicom", out=out, batches_out=batches_file, batch_size=4, workers=1))
    open_store(f"{store}/scan").sync_up(out, "")
    work, name = tmp_path / "work", ids[1]
    batch = batches[name]
    result = runner.invoke(
        app,
        [
            "pod", "--get", f"{store}/scan={work}/scan=batches/{{batch}}.json",
            "--put", f"{work}/converted={store}/converted=cases/*/*", "--batch", name,
            "--cases-from", f"{work}/scan/batches/{{batch}}.json", "--",
            "convert", str(cohort / "dicom"), "--out", f"{work}/converted", "--inventory",
            f"{work}/scan/batches/{{batch}}.json", "--cases", "{cases}", "--workers", "1",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [p.name for p in (work / "scan").rglob("*.json")] == [f"{name}.json"]  # its slice only
    assert sorted(p.name for p in (work / "converted" / "cases").iterdir()) == sorted(batch)
    assert (store / "converted" / f"_manifest-batch-{name}.json").is_file()
    refused = runner.invoke(app, ["pod", "--", "convert", "x", "--inventory", "scan/batches/{batch}.json"])
    assert refused.exit_code == 2 and "give --batch" in refused.output


def test_a_step_done_with_the_same_inputs_is_skipped_and_gives_its_outputs_back(tmp_path: Path) -> None:
    """A resumed run's pod skips a step whose record holds the same input key (command, fetched checksums, raw
    inputs' listing) while its outputs are all still published; any change of those runs it again."""
    uri = published(tmp_path)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.dcm").write_bytes(b"dicom")
    records, out, store = str(tmp_path / "store" / ".stages"), tmp_path / "out", tmp_path / "store" / "split"
    out.mkdir()
    (out / "x.json").write_text("{}")  # what the stage ("version" here) leaves to publish
    items = tmp_path / "items.json"  # and to the workflow (an output parameter)
    items.write_text("[1]")

    def skipped(*stage: str) -> bool:
        args = ["pod", "--get", f"{uri}={tmp_path / 'work'}=cases/*/manifest.json", "--put", f"{out}={store}"]
        args += ["--record", records, "--inputs", str(raw), "--output-file", str(items), "--", *stage]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        return "done before with the same inputs" in result.output

    assert not skipped("version")
    items.unlink()
    assert skipped("version") and items.read_text() == "[1]"  # given back to the workflow
    (raw / "a.dcm").write_bytes(b"DICOM")  # a raw input changed: run again
    assert not skipped("version") and skipped("version")
    open_store(uri).sync_up(tmp_path / "local", "")  # published again, the same content: still done
    assert skipped("version")
    (tmp_path / "local" / "cases" / "B" / "manifest.json").write_text('{"case_id": "B", "v": 2}')
    open_store(uri).sync_up(tmp_path / "local", "")  # a fetched file changed: run again
    assert not skipped("version") and skipped("version")
    (store / "_manifest.json").unlink()  # an output no longer published: run again
    assert not skipped("version")
    (out / "x.json").write_text('{"other": 1}')  # another command publishing there (another test fraction)
    assert not skipped("version", "--help")
    (out / "x.json").write_text("{}")
    assert not skipped("version")  # its outputs were overwritten since: run again, even with the same inputs
    assert skipped("version")
    dictionary = tmp_path / "my.yaml"  # a file the command names, e.g. a dictionary of the chart's ConfigMap
    shipped = Path(__file__).resolve().parents[2] / "src/tsretrain/labels/dictionaries/radcure-oar21.yaml"
    dictionary.write_text(shipped.read_text())
    show = ("dictionary", "show", str(dictionary))
    assert not skipped(*show) and skipped(*show)
    dictionary.write_text(shipped.read_text() + "# edited\n")  # the same name, another content: run again
    assert not skipped(*show)
    assert not skipped("version", "--help")  # another command

    def record(*command: str) -> Completion:
        return Completion.of(records, list(command), [], "", [])

    same = record("split", "/work/converted", "--out", "/work/split")  # each attempt's disk differs
    assert same == record("split", "/tmp/p/7/work/converted", "--out", "/tmp/p/7/work/split")
    assert same != record("split", "/work/converted", "--out", "/work/split", "--seed", "1")
    batch = ["pod", "--get", f"{uri}={tmp_path / 'work'}=cases/*/manifest.json", "--put", f"{out}={store}"]
    batch += ["--record", records, "--batch", "b1", "--", "version"]
    assert runner.invoke(app, batch).exit_code == 0
    other = runner.invoke(app, [*batch[:-3], "b2", "--", "version"])  # another batch of the same step
    assert other.exit_code == 0 and "done before" not in other.output
    assert "done before" in runner.invoke(app, batch).output
