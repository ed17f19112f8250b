"""The store: local folders and a real S3 server (SeaweedFS on loopback), including a server lost mid-sync."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from support import SeaweedServer

from tsretrain.conversion.headers import HEADER_READS
from tsretrain.storage import store as store_module
from tsretrain.storage.store import (
    MANIFEST,
    MULTIPART_THRESHOLD,
    LocalStore,
    S3Store,
    make_bucket,
    open_store,
    s3_client,
)

BUCKET = "tsretrain-test"


def make_folder(root: Path, files: int = 20, big: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for n in range(files):
        (root / f"sub{n % 3}").mkdir(exist_ok=True)
        (root / f"sub{n % 3}" / f"file{n}.bin").write_bytes(hashlib.sha256(str(n).encode()).digest() * (n + 1))
    if big:
        (root / "big.bin").write_bytes(os.urandom(20 * 2**20))  # multipart
    return root


def digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    weed = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    weed.start()
    yield weed
    weed.stop()


@pytest.fixture()
def s3_env(server: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> SeaweedServer:
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.SECRET_KEY)
    for attempt in range(50):
        try:
            make_bucket(f"s3://{BUCKET}")
            break
        except (BotoCoreError, ClientError):  # the gateway can answer a moment before its filer takes buckets
            if attempt == 49:
                raise
            time.sleep(0.2)
    return server


def test_local_store_round_trip(tmp_path: Path) -> None:
    source = make_folder(tmp_path / "a")
    store = open_store(str(tmp_path / "store"))
    assert isinstance(store, LocalStore)
    assert store.sync_up(source, "run/converted") == {"uploaded": 20, "skipped": 0}
    assert store.sync_up(source, "run/converted") == {"uploaded": 0, "skipped": 20}
    store.sync_down("run/converted", tmp_path / "b")
    assert digests(tmp_path / "b") == digests(source)
    with pytest.raises(FileNotFoundError, match="never published"):
        store.sync_down("run/missing", tmp_path / "c")
    # Manifests of nested prefixes are theirs, not the parent's.
    store.sync_up(source / "sub0", "run/converted/sub0", "_manifest-nested.json")
    assert set(store.manifest("run/converted") or {}) == set(digests(source))


def test_s3_round_trip_with_multipart(s3_env: SeaweedServer, tmp_path: Path) -> None:
    source = make_folder(tmp_path / "a", big=True)
    store = open_store(f"s3://{BUCKET}/runs/one")
    assert isinstance(store, S3Store)
    assert store.sync_up(source, "converted")["uploaded"] == 21
    assert store.sync_up(source, "converted") == {"uploaded": 0, "skipped": 21}
    assert store.sync_down("converted", tmp_path / "b")["fetched"] == 21
    assert digests(tmp_path / "b") == digests(source)
    assert store.sync_down("converted", tmp_path / "b") == {"fetched": 0, "kept": 21, "bytes": 0}
    assert store.get_bytes("converted/nothing-here") is None
    assert store.uri("converted") == f"s3://{BUCKET}/runs/one/converted"


def test_s3_refuses_wrong_credentials(s3_env: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    monkeypatch.setenv("TSRETRAIN_S3_RETRIES", "1")
    with pytest.raises(Exception, match=r"SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId|Forbidden|403"):
        S3Store(BUCKET, "runs").list("x")


SYNC = (
    "from pathlib import Path; import sys; from tsretrain.storage.store import open_store; "
    "print(open_store(sys.argv[1]).sync_up(Path(sys.argv[2]), 'stage'))"
)


def test_server_lost_mid_sync_then_rerun_loses_and_duplicates_nothing(
    s3_env: SeaweedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_folder(tmp_path / "a", files=300)
    uri = f"s3://{BUCKET}/fault"
    env = {**os.environ, "TSRETRAIN_S3_RETRIES": "2"}
    sync = subprocess.Popen(
        [sys.executable, "-c", SYNC, uri, str(source)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    store = open_store(uri)
    deadline = time.time() + 60
    while time.time() < deadline and len(store.list("stage")) < 30:
        time.sleep(0.05)
    s3_env.stop()  # the server goes away in the middle of the upload
    assert sync.wait(timeout=180) != 0
    s3_env.start()  # same data folder and ports
    done = subprocess.run(
        [sys.executable, "-c", SYNC, uri, str(source)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    objects = store.list("stage")
    assert set(objects) == {f"stage/{rel}" for rel in digests(source)} | {f"stage/{MANIFEST}"}
    store.sync_down("stage", tmp_path / "b")
    assert digests(tmp_path / "b") == digests(source)


def test_a_pod_fetches_runs_a_stage_and_publishes(s3_env: SeaweedServer, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tsretrain.cli import app
    from tsretrain.conversion.convert import ConvertConfig, convert
    from tsretrain.synth.cohort import SynthConfig, generate

    generate(
        SynthConfig(
            out=tmp_path / "cohort", cases=4, rows=40, columns=40, slices=10, pixel_spacing=5.0, edge_cases=False
        )
    )
    convert(ConvertConfig(input=tmp_path / "cohort" / "dicom", out=tmp_path / "converted", workers=1))
    run = f"s3://{BUCKET}/pod-run"
    open_store(f"{run}/converted").sync_up(tmp_path / "converted", "")
    work = tmp_path / "pod"
    result = CliRunner().invoke(
        app,
        [
            "pod",
            "--get",
            f"{run}/converted={work / 'converted'}",
            "--put",
            f"{work / 'split'}={run}/split",
            "--",
            "split",
            str(work / "converted"),
            "--out",
            str(work / "split"),
            "--cv-folds",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    published = open_store(f"{run}/split").list("")
    assert {"split.json", "splits_final.json", "split_report.md", MANIFEST} <= set(published)


def test_a_failing_stage_fails_the_pod_and_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from tsretrain.cli import app

    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "no-weights"))
    (tmp_path / "converted" / "cases").mkdir(parents=True)
    store = tmp_path / "store"
    result = CliRunner().invoke(
        app,
        [
            "pod",
            "--put",
            f"{tmp_path / 'out'}={store}/pseudolabels",
            "--",
            "pseudolabel",
            str(tmp_path / "converted"),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 2, result.output  # a usage error: missing weights cannot go away by retrying
    assert "weights" in result.output
    assert not (store / "pseudolabels").exists()


def test_scan_reads_only_headers_from_s3_and_convert_stages_its_cases(s3_env: SeaweedServer, tmp_path: Path) -> None:
    from tsretrain.conversion.convert import ConvertConfig, convert
    from tsretrain.conversion.scan import ScanConfig, scan
    from tsretrain.run_files import read_csv as read_listing
    from tsretrain.synth.cohort import SynthConfig, generate
    from tsretrain.synth.edge_cases import EDGE_CASES

    generate(
        SynthConfig(
            out=tmp_path / "cohort", cases=2, rows=40, columns=40, slices=10, pixel_spacing=5.0, edge_cases=True
        )
    )
    uri = f"s3://{BUCKET}/headers/dicom"
    store = open_store(uri)
    for path in (tmp_path / "cohort" / "dicom").rglob("*"):
        if path.is_file():
            store.put_file(path, path.relative_to(tmp_path / "cohort" / "dicom").as_posix())
    scan(ScanConfig(input=tmp_path / "cohort" / "dicom", out=tmp_path / "local", workers=1))
    scan(ScanConfig(input=uri, out=tmp_path / "remote"))
    local = {
        r["case_id"]: (r["status"], r["reason"], r["n_slices"]) for r in read_listing(tmp_path / "local" / "cases.csv")
    }
    remote = {
        r["case_id"]: (r["status"], r["reason"], r["n_slices"]) for r in read_listing(tmp_path / "remote" / "cases.csv")
    }
    assert remote == local and len(remote) == 2 + len(EDGE_CASES)
    case = "RADCURE-0001"
    convert(
        ConvertConfig(
            input=tmp_path / "staged",
            out=tmp_path / "converted",
            inventory=tmp_path / "remote" / "inventory.json",
            cases=(case,),
            source=uri,
            workers=1,
        )
    )
    assert json.loads((tmp_path / "converted" / "cases" / case / "manifest.json").read_text())["status"] == "ok"
    assert {p.name for p in (tmp_path / "staged").iterdir()} == {case}  # only its own files were fetched


class CountingStore(LocalStore):
    """A local store counting the requests made of it, by kind (an S3 store makes one request per call)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.requests: dict[str, int] = {}

    def _count(self, kind: str) -> None:
        self.requests[kind] = self.requests.get(kind, 0) + 1

    def list(self, prefix: str) -> dict[str, int]:
        self._count("list")
        return super().list(prefix)

    def get_bytes(self, key: str) -> bytes | None:
        self._count("get")
        return super().get_bytes(key)

    def get_file(self, key: str, local: Path, size: int | None = None) -> None:
        self._count("get")
        super().get_file(key, local, size)

    def put_bytes(self, data: bytes, key: str) -> None:
        self._count("put")
        super().put_bytes(data, key)

    def put_file(self, local: Path, key: str) -> None:
        self._count("put")
        super().put_file(local, key)


def test_a_fan_out_batch_costs_the_same_requests_whatever_the_number_of_batches(tmp_path: Path) -> None:
    """Publishing reads only the writer's own manifest (a retried pod's), never the other batches'; a batch
    reading what the same batch wrote upstream reads that one manifest: O(1) requests per batch, not O(batches)."""
    store = CountingStore(tmp_path / "store")
    for batch in range(30):
        folder = tmp_path / f"batch{batch}"
        for case in ("a", "b"):
            (folder / "cases" / f"c{batch}{case}").mkdir(parents=True)
            (folder / "cases" / f"c{batch}{case}" / "ct.nii.gz").write_bytes(f"{batch}{case}".encode())
        store.requests.clear()
        counts = store.sync_up(folder, "converted", f"_manifest-batch-{batch}.json", ("cases/*/*",))
        assert counts == {"uploaded": 2, "skipped": 0}
        assert store.requests == {"get": 1, "put": 3}, batch  # own manifest read; two files and the manifest
    store.requests.clear()
    assert store.sync_up(folder, "converted", "_manifest-batch-29.json", ("cases/*/*",))["skipped"] == 2
    assert store.requests == {"get": 1, "put": 1}  # retried: nothing uploaded again
    store.requests.clear()
    wanted = ("cases/c7a/*", "cases/c7b/*")
    got = store.sync_down("converted", tmp_path / "down", wanted, prefer_manifest="_manifest-batch-7.json")
    assert got["fetched"] == 2 and store.requests == {"get": 3}  # its manifest and its two files
    assert (tmp_path / "down" / "cases" / "c7b" / "ct.nii.gz").read_bytes() == b"7b"
    store.requests.clear()  # cases another batch wrote: the union of every manifest, as without a preference
    got = store.sync_down("converted", tmp_path / "other", ("cases/c3a/*",), prefer_manifest="_manifest-batch-7.json")
    assert got["fetched"] == 1 and store.requests["list"] == 1 and store.requests["get"] == 1 + 30 + 1


def test_parallel_requests_stay_bounded_however_many_items(tmp_path: Path) -> None:
    from tsretrain.storage.store import in_parallel

    drawn = done = peak = 0

    def items() -> Iterator[int]:
        nonlocal drawn, peak
        for n in range(200):
            drawn += 1
            peak = max(peak, drawn - done)
            yield n

    def work(n: int) -> int:
        time.sleep(0.001)
        return n * n

    results = []
    for result in in_parallel(work, items(), threads=4):
        done += 1
        results.append(result)
    assert results == [n * n for n in range(200)]  # in order
    assert peak <= 2 * 4 + 1  # never more than twice the threads submitted ahead


# What the S3 store sends over the wire (SeaweedFS on loopback): parts, ranges, headers only, retries.


class Wire:
    """The S3 operations a client sends (name and parameters) and the body bytes it receives."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.attempts = 0
        self.received = 0

    def client(self) -> Any:
        client = s3_client()
        events = client.meta.events
        events.register("before-parameter-build.s3", lambda model, params, **_: self.calls.append((model.name, params)))
        events.register("before-send.s3", self._attempt)
        events.register("after-call.s3.GetObject", self._got)
        return client

    def _attempt(self, **_: Any) -> None:
        self.attempts += 1

    def _got(self, parsed: dict[str, Any], **_: Any) -> None:
        self.received += int(parsed.get("ContentLength", 0))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def ranges(self, key_suffix: str) -> list[str | None]:
        return [p.get("Range") for n, p in self.calls if n == "GetObject" and p["Key"].endswith(key_suffix)]


def test_large_files_travel_in_parts_and_small_ones_whole(s3_env: SeaweedServer, tmp_path: Path) -> None:
    big, small = tmp_path / "big.bin", tmp_path / "small.bin"
    big.write_bytes(os.urandom(2 * MULTIPART_THRESHOLD + 12345))  # three parts
    small.write_bytes(b"x" * 1000)
    wire = Wire()
    store = S3Store(BUCKET, "wire", client=wire.client())
    store.put_file(big, "big.bin")
    assert wire.names().count("CreateMultipartUpload") == 1 and wire.names().count("UploadPart") == 3
    assert "CompleteMultipartUpload" in wire.names() and "PutObject" not in wire.names()
    wire.calls.clear()
    store.put_file(small, "small.bin")
    assert wire.names() == ["PutObject"]
    wire.calls.clear()
    store.get_file("big.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()
    assert len([r for r in wire.ranges("big.bin") if r is not None]) == 3  # ranged, in parts


def test_a_remote_scan_fetches_only_the_first_bytes_of_each_image(
    s3_env: SeaweedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tsretrain.conversion.scan import ScanConfig, scan
    from tsretrain.run_files import read_csv as read_listing
    from tsretrain.synth.cohort import SynthConfig, generate

    # 256 x 256 CT slices: 128 KiB of pixels each, twice what a header read fetches
    generate(SynthConfig(out=tmp_path / "cohort", cases=1, rows=256, columns=256, slices=6, pixel_spacing=1.0))
    uri = f"s3://{BUCKET}/headers-only/dicom"
    dicom = tmp_path / "cohort" / "dicom"
    files = {p.relative_to(dicom).as_posix(): p.stat().st_size for p in dicom.rglob("*") if p.is_file()}
    uploader = S3Store(BUCKET, "headers-only/dicom")
    for rel in files:
        uploader.put_file(dicom / rel, rel)
    wire = Wire()
    monkeypatch.setattr(store_module, "s3_client", wire.client)
    scan(ScanConfig(input=uri, out=tmp_path / "scanned"))
    scan(ScanConfig(input=dicom, out=tmp_path / "local", workers=1))
    remote, local = (read_listing(tmp_path / name / "cases.csv") for name in ("scanned", "local"))
    assert [(r["reason"], r["n_slices"]) for r in remote] == [(r["reason"], r["n_slices"]) for r in local]
    assert remote[0]["n_slices"] == "6"
    images = [rel for rel in files if pydicom.dcmread(dicom / rel, stop_before_pixels=True).Modality == "CT"]
    first = HEADER_READS[0]
    assert len(images) == 6 and all(files[rel] > 16 * first for rel in images)  # the CT slices
    for rel in images:
        assert wire.ranges(rel) == [f"bytes=0-{first - 1}"]  # one header-sized read
    others = sum(size for rel, size in files.items() if rel not in images)  # the RTSTRUCT: read to its end
    assert wire.received <= first * len(images) + sum(HEADER_READS) + others < sum(files.values()) / 2


@pytest.mark.slow
def test_requests_are_retried_with_backoff_until_the_server_is_back(
    s3_env: SeaweedServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TSRETRAIN_S3_RETRIES", "1")
    s3_env.stop()
    with pytest.raises(EndpointConnectionError):
        S3Store(BUCKET, "retry").put_bytes(b"lost", "key")
    monkeypatch.setenv("TSRETRAIN_S3_RETRIES", "12")
    wire = Wire()
    store = S3Store(BUCKET, "retry", client=wire.client())
    restart = threading.Timer(1.0, s3_env.start)
    restart.start()
    started = time.monotonic()
    try:
        store.put_bytes(b"kept", "key")
    finally:
        restart.join()
    assert wire.attempts >= 2 and time.monotonic() - started >= 1.0
    assert store.get_bytes("key") == b"kept"
