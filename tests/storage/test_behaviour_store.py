"""What the S3 store sends over the wire (SeaweedFS on loopback): parts, ranges, headers only, retries."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from botocore.exceptions import EndpointConnectionError
from support import SeaweedServer
from test_store import BUCKET, s3_env, server  # noqa: F401 (the module's fixtures, started for this module too)

from tsretrain.conversion.headers import HEADER_READS
from tsretrain.storage import store as store_module
from tsretrain.storage.store import MULTIPART_THRESHOLD, S3Store, s3_client


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


def test_large_files_travel_in_parts_and_small_ones_whole(s3_env: SeaweedServer, tmp_path: Path) -> None:  # noqa: F811
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
    s3_env: SeaweedServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tsretrain.conversion.listing import read_listing
    from tsretrain.conversion.scan import ScanConfig, scan
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
    s3_env: SeaweedServer,  # noqa: F811
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
