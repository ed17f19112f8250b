"""What a workflow pod does around a stage: fetch by need, exit codes, the run prefix's claim, the run status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tsretrain.cli import app, failure_list
from tsretrain.errors import UserError
from tsretrain.layout import batch_id
from tsretrain.pipeline.pod import Transfer, expand, fetch, parse_get, parse_put
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
    with pytest.raises(UserError, match="--batch or --cases-from"):
        expand(("cases/{case}/*",), None)


def test_a_pod_fetches_only_what_its_stage_needs(tmp_path: Path) -> None:
    uri = published(tmp_path)
    fetched = fetch([Transfer(uri, tmp_path / "batch", ("cases/{case}/*",))], ("A", "C"))
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
    with pytest.raises(UserError, match="exclude each other"):
        fetch(gets, ("A",), tmp_path / "pod" / "evaluation" / "review.json")
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
    assert failed.exit_code == 1 and not store.exists()  # too few cases: a failure, nothing published


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


def test_status_holds_a_real_list_and_only_in_the_runs_own_prefix(tmp_path: Path) -> None:
    failures = '[{"displayName": "train(0)", "message": "OOMKilled", "templateName": "train"}]'
    assert failure_list(failures)[0]["displayName"] == "train(0)"
    assert failure_list(json.dumps(failures))[0]["templateName"] == "train"  # a JSON string of the JSON list
    assert failure_list("") == [] and failure_list("null") == [] and failure_list("oops") == ["oops"]
    runs = str(tmp_path / "runs")
    runner.invoke(
        app,
        [
            "claim",
            "--output-prefix",
            "",
            "--runs-prefix",
            runs,
            "--workflow",
            "wf-1",
            "--out-file",
            str(tmp_path / "p"),
        ],
    )
    args = ["status", "--output-prefix", "", "--runs-prefix", runs, "--status", "Failed", "--failures", failures]
    assert runner.invoke(app, [*args, "--workflow", "wf-1"]).exit_code == 0
    status = json.loads((tmp_path / "runs" / "wf-1" / "status.json").read_text())
    assert status["status"] == "Failed" and status["failures"][0]["message"] == "OOMKilled"
    other = [*args[:2], str(tmp_path / "runs" / "wf-1"), *args[3:], "--workflow", "wf-9"]
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
    for attempt, batch in ((1, "A,B"), (2, "A,B"), (1, "C")):
        out = tmp_path / f"out-{attempt}-{batch}"
        for case in batch.split(","):
            (out / "cases" / case).mkdir(parents=True)
            (out / "cases" / case / "manifest.json").write_text(json.dumps({"case_id": case, "attempt": attempt}))
        result = runner.invoke(app, ["pod", "--put", f"{out}={store}", "--batch", batch, "--", "version"])
        assert result.exit_code == 0, result.output
    assert len(list(store.glob("_manifest-batch-*.json"))) == 2
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
    batches = [tuple(b.split(",")) for b in json.loads(batches_file.read_text())]
    inventory = json.loads((out / "inventory.json").read_text())
    assert [c for b in batches for c in b] == [c["case_id"] for c in inventory["cases"]]  # every case, once
    assert len(batches) > 2
    for batch in batches:
        part = json.loads((out / "batches" / f"{batch_id(batch)}.json").read_text())
        assert tuple(c["case_id"] for c in part["cases"]) == batch
        assert {k: v for k, v in part.items() if k != "cases"} == {k: v for k, v in inventory.items() if k != "cases"}
    open_store(f"{store}/scan").sync_up(out, "")
    work, batch = tmp_path / "work", batches[1]
    result = runner.invoke(
        app,
        [
            "pod", "--get", f"{store}/scan={work}/scan=batches/{{batch}}.json",
            "--put", f"{work}/converted={store}/converted=cases/*/*", "--batch", ",".join(batch), "--",
            "convert", str(cohort / "dicom"), "--out", f"{work}/converted", "--inventory",
            f"{work}/scan/batches/{{batch}}.json", "--cases", ",".join(batch), "--workers", "1",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [p.name for p in (work / "scan").rglob("*.json")] == [f"{batch_id(batch)}.json"]  # its slice only
    assert sorted(p.name for p in (work / "converted" / "cases").iterdir()) == sorted(batch)
    assert (store / "converted" / f"_manifest-batch-{batch_id(batch)}.json").is_file()
    refused = runner.invoke(app, ["pod", "--", "convert", "x", "--inventory", "scan/batches/{batch}.json"])
    assert refused.exit_code == 2 and "give --batch" in refused.output
