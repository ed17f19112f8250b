"""One URI-based store for every stage: ``file:///path`` (or a plain path) and ``s3://bucket/prefix``.

S3 goes through boto3: endpoint and credentials from the environment (``AWS_ENDPOINT_URL`` or
``S3_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``; in pods they come from a Kubernetes
Secret), adaptive retries with backoff on throttling and dropped connections, multipart transfers above
8 MiB. An object appears whole or not at all (a PUT is atomic); a folder is published by uploading its files
and then its checksum manifest ``_manifest.json``, which readers trust as the list of complete files. Syncing
again skips files whose size and SHA-256 already match, so a sync interrupted by a crash or a lost server is
simply re-run: nothing is lost, nothing duplicated.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from tsretrain.storage.atomic import atomic_write_bytes

MANIFEST = "_manifest.json"
MULTIPART_THRESHOLD = 8 * 2**20
REQUESTS_IN_FLIGHT = 16  # concurrent requests of one transfer (boto3 clients are thread-safe)


T = TypeVar("T")
R = TypeVar("R")


def in_order(pool: Executor, work: Callable[[T], R], items: Iterable[T], in_flight: int) -> Iterator[R]:
    """``work`` on each item in ``pool``, results in the items' order, with at most ``in_flight`` items submitted
    at a time: memory stays flat however many items there are (``Executor.map`` submits them all at once)."""
    pending: deque[Future[R]] = deque()
    for item in items:
        pending.append(pool.submit(work, item))
        if len(pending) >= in_flight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def in_parallel(work: Callable[[T], R], items: Iterable[T], threads: int = REQUESTS_IN_FLIGHT) -> Iterator[R]:
    """``work`` on each item in ``threads`` threads, results in the items' order, at most twice ``threads``
    requests submitted at a time."""
    with ThreadPoolExecutor(threads) as pool:
        yield from in_order(pool, work, items, 2 * threads)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def matches(path: str, patterns: tuple[str, ...]) -> bool:
    """Whether a ``/``-separated relative path matches a pattern segment by segment (``*`` never crosses ``/``)."""
    parts = path.split("/")
    for pattern in patterns:
        segments = pattern.split("/")
        if len(segments) == len(parts) and all(fnmatchcase(p, s) for p, s in zip(parts, segments, strict=True)):
            return True
    return False


def folder_manifest(folder: Path, include: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Relative path -> size and SHA-256 of every file below folder (hidden files and folders excluded; with
    ``include``, only the files matching one of these patterns)."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if include and not matches(rel, include):
            continue
        hidden = any(part.startswith(".") for part in rel.split("/"))  # temporaries, staged weights
        if path.is_file() and not hidden and not path.name.startswith("_manifest"):
            entries[rel] = {"size": path.stat().st_size, "sha256": sha256_of(path)}
    return entries


class Store(ABC):
    """Keys are '/'-separated paths below the store's root."""

    @abstractmethod
    def put_file(self, local: Path, key: str) -> None: ...

    @abstractmethod
    def get_file(self, key: str, local: Path, size: int | None = None) -> None:
        """Download an object to ``local`` (atomically); ``size``, when the caller knows it, spares a request."""

    @abstractmethod
    def put_bytes(self, data: bytes, key: str) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes | None: ...

    def list(self, prefix: str) -> dict[str, int]:
        """Key -> size of every object below prefix."""
        return {key: size for key, size, _ in self.iter_detailed(prefix)}

    @abstractmethod
    def iter_detailed(self, prefix: str) -> Iterator[tuple[str, int, int]]:
        """(key, size, modification time in ns) of every object below prefix, a page at a time, in key order."""

    @abstractmethod
    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Bytes [start, start + length) of an object (fewer at its end)."""

    @abstractmethod
    def uri(self, key: str = "") -> str: ...

    def manifest(self, prefix: str) -> dict[str, dict[str, Any]] | None:
        """The union of the checksum manifests under prefix (several writers may publish into one prefix,
        each with a manifest of its own, e.g. the batches of a fan-out); None when there is none."""
        base = f"{prefix}/".lstrip("/")
        names = [k for k in self.list(prefix) if k.startswith(base) and k[len(base) :].startswith("_manifest")]
        if not names:
            return None
        files: dict[str, dict[str, Any]] = {}
        for name in sorted(names):
            files.update(self.manifest_file(name) or {})
        return files

    def manifest_for(
        self, prefix: str, include: tuple[str, ...] = (), prefer_manifest: str | None = None
    ) -> dict[str, dict[str, Any]] | None:
        """The manifest a fetch of ``include`` reads: ``prefer_manifest`` when it lists files for every pattern,
        else the union of all the folder's manifests (files written by other writers)."""
        preferred = self.manifest_file(f"{prefix}/{prefer_manifest}".lstrip("/")) if prefer_manifest else None
        if preferred is not None and all(any(matches(rel, (p,)) for rel in preferred) for p in include):
            return preferred
        return self.manifest(prefix)

    def manifest_file(self, key: str) -> dict[str, dict[str, Any]] | None:
        """The files one checksum manifest lists; None when it does not exist."""
        data = self.get_bytes(key)
        return None if data is None else dict(json.loads(data)["files"])

    def sync_up(
        self, folder: Path, prefix: str, manifest_name: str = MANIFEST, include: tuple[str, ...] = ()
    ) -> dict[str, int]:
        """Publish a local folder (with ``include``, its files matching one of these patterns) under prefix; files
        that this writer's own manifest (``manifest_name``, written last) already lists with the same checksum are
        skipped. One read and one write besides the files: other writers' manifests are never read."""
        wanted = folder_manifest(folder, include)
        manifest_key = f"{prefix}/{manifest_name}".lstrip("/")
        stored = self.manifest_file(manifest_key) or {}
        uploaded = skipped = 0
        for rel, info in wanted.items():
            if stored.get(rel) == info:  # published completely by an earlier run of this writer
                skipped += 1
                continue
            self.put_file(folder / rel, f"{prefix}/{rel}".lstrip("/"))
            uploaded += 1
        self.put_bytes(json.dumps({"files": wanted}, indent=1).encode(), manifest_key)
        return {"uploaded": uploaded, "skipped": skipped}

    def download_all(self, prefix: str, folder: Path) -> int:
        """Fetch every object under prefix (raw input such as a DICOM tree, which has no manifest)."""
        count = 0
        for key, size in self.list(prefix).items():
            target = folder / key[len(prefix) :].lstrip("/")
            if target.is_file() and target.stat().st_size == size:
                continue
            self.get_file(key, target)
            count += 1
        return count

    def sync_down(
        self, prefix: str, folder: Path, include: tuple[str, ...] = (), prefer_manifest: str | None = None
    ) -> dict[str, int]:
        """Fetch a published folder (with ``include``, only its files matching one of these patterns); local files
        with the right checksum are kept. With ``prefer_manifest``, that one manifest of the folder is read when it
        exists (a fan-out batch reading what the same batch wrote), instead of the union of all of them."""
        manifest = self.manifest_for(prefix, include, prefer_manifest)
        if manifest is None:
            raise FileNotFoundError(f"{self.uri(prefix)} has no {MANIFEST}: it was never published completely")
        fetched = kept = size = 0
        for rel, info in manifest.items():
            if include and not matches(rel, include):
                continue
            target = folder / rel
            if target.is_file() and target.stat().st_size == info["size"] and sha256_of(target) == info["sha256"]:
                kept += 1
                continue
            self.get_file(f"{prefix}/{rel}".lstrip("/"), target)
            if sha256_of(target) != info["sha256"]:
                target.unlink()
                raise OSError(f"{self.uri(prefix)}/{rel}: checksum mismatch after download; run again")
            fetched += 1
            size += info["size"]
        return {"fetched": fetched, "kept": kept, "bytes": size}


@dataclass
class LocalStore(Store):
    """A folder on a local or mounted file system."""

    root: Path

    def _path(self, key: str) -> Path:
        return self.root / key

    def put_file(self, local: Path, key: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        shutil.copyfile(local, tmp)
        os.replace(tmp, target)

    def get_file(self, key: str, local: Path, size: int | None = None) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.part")
        shutil.copyfile(self._path(key), tmp)
        os.replace(tmp, local)

    def put_bytes(self, data: bytes, key: str) -> None:
        atomic_write_bytes(self._path(key), data)

    def get_bytes(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def iter_detailed(self, prefix: str) -> Iterator[tuple[str, int, int]]:
        base = self._path(prefix)
        if not base.is_dir():
            return
        keys = sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if not p.name.startswith("."))
        for key in keys:
            info = self._path(key).stat()
            if stat.S_ISREG(info.st_mode):
                yield key, info.st_size, info.st_mtime_ns

    def read_range(self, key: str, start: int, length: int) -> bytes:
        with self._path(key).open("rb") as handle:
            handle.seek(start)
            return handle.read(length)

    def uri(self, key: str = "") -> str:
        return (self.root / key).as_uri() if key else self.root.as_uri()


class S3Store(Store):
    """A bucket and prefix on any S3 API (AWS, MinIO, SeaweedFS)."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client or s3_client()
        from boto3.s3.transfer import TransferConfig

        self.transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}".strip("/") if self.prefix else key.strip("/")

    def put_file(self, local: Path, key: str) -> None:
        self.client.upload_file(str(local), self.bucket, self._key(key), Config=self.transfer)

    def get_file(self, key: str, local: Path, size: int | None = None) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.part")
        if size is not None and size < MULTIPART_THRESHOLD:  # one GET (boto3's download_file HEADs first)
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            with open(tmp, "wb") as handle:
                shutil.copyfileobj(body, handle)
        else:
            self.client.download_file(self.bucket, self._key(key), str(tmp), Config=self.transfer)
        os.replace(tmp, local)

    def put_bytes(self, data: bytes, key: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return body

    def iter_detailed(self, prefix: str) -> Iterator[tuple[str, int, int]]:
        full = self._key(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{full}/" if full else ""):
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) + 1 :] if self.prefix else item["Key"]
                yield key, int(item["Size"]), int(item["LastModified"].timestamp() * 1e9)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        answer = self.client.get_object(
            Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{start + length - 1}"
        )
        data: bytes = answer["Body"].read()
        return data

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def s3_client() -> Any:
    """A boto3 S3 client configured from the environment, with adaptive retries and backoff."""
    import boto3
    from botocore.config import Config

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT_URL")
    config = Config(
        retries={"max_attempts": int(os.environ.get("TSRETRAIN_S3_RETRIES", 10)), "mode": "adaptive"},
        connect_timeout=10,
        read_timeout=60,
        s3={"addressing_style": "path"},
        max_pool_connections=REQUESTS_IN_FLIGHT,  # one connection per thread of a parallel transfer
    )
    return boto3.session.Session().client(  # a fresh session reads the current environment
        "s3", endpoint_url=endpoint, config=config, region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    )


def open_store(uri: str) -> Store:
    """The store of a URI: ``s3://bucket/prefix``, ``file:///path`` or a plain local path."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return S3Store(parsed.netloc, parsed.path)
    if parsed.scheme in ("", "file"):
        return LocalStore(Path(parsed.path if parsed.scheme else uri))
    raise ValueError(f"unsupported store URI {uri!r}: use s3://bucket/prefix or a local path")


def make_bucket(uri: str) -> None:
    """Create the bucket of an ``s3://`` URI unless it exists."""
    from botocore.exceptions import ClientError

    bucket = urlparse(uri).netloc
    client = s3_client()
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError:
        client.create_bucket(Bucket=bucket)
