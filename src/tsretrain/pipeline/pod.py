"""``tsretrain pod``: how a workflow pod runs a stage against the store.

A pod fetches what the stage reads from the store to local disk, runs one ``tsretrain`` subcommand on local
paths, then publishes what the stage wrote (files first, checksum manifest last). Paths below the pod's work
folder are the run layout's, the same as below the store prefix and in a local run folder::

    tsretrain pod --get 's3://b/run/converted=/work/converted=cases/*/manifest.json' \\
        --put /work/split=s3://b/run/split -- split /work/converted --out /work/split

A ``--get`` may end with ``=PATTERN,PATTERN``: only the published files matching one of them are fetched
(``*`` never crosses ``/``; ``{case}`` stands for each case of ``--batch``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tsretrain.stages import UsageError
from tsretrain.storage.store import open_store
from tsretrain.ui import log


@dataclass(frozen=True)
class Transfer:
    """One folder moved between the store and the pod's disk."""

    uri: str
    path: Path
    include: tuple[str, ...] = ()


def parse_get(text: str) -> Transfer:
    """``URI=PATH`` or ``URI=PATH=PATTERN,PATTERN``."""
    parts = text.split("=")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise UsageError(f"--get: expected URI=PATH or URI=PATH=PATTERN,..., got {text!r}")
    include = tuple(p for p in parts[2].split(",") if p) if len(parts) == 3 else ()
    return Transfer(parts[0], Path(parts[1]), include)


def parse_put(text: str) -> Transfer:
    """``PATH=URI``."""
    path, sep, uri = text.partition("=")
    if not sep or not path or not uri:
        raise UsageError(f"--put: expected PATH=URI, got {text!r}")
    return Transfer(uri, Path(path))


def expand(patterns: tuple[str, ...], batch: tuple[str, ...]) -> tuple[str, ...]:
    """Patterns with ``{case}`` repeated for each case of the batch."""
    out: list[str] = []
    for pattern in patterns:
        if "{case}" in pattern:
            if not batch:
                raise UsageError(f"include pattern {pattern!r} needs --batch")
            out += [pattern.replace("{case}", case) for case in batch]
        else:
            out.append(pattern)
    return tuple(out)


def fetch(gets: list[Transfer], batch: tuple[str, ...] = ()) -> int:
    """Fetch published folders (checked against their manifests); returns the bytes fetched."""
    total = 0
    for get in gets:
        started = time.perf_counter()
        counts = open_store(get.uri).sync_down("", get.path, expand(get.include, batch))
        total += counts["bytes"]
        log.info("pod: %s -> %s: %s in %.1f s", get.uri, get.path, counts, time.perf_counter() - started)
    return total


def publish(puts: list[Transfer], manifest_name: str) -> None:
    for put in puts:
        if not put.path.is_dir():
            raise FileNotFoundError(f"pod: {put.path} was not produced; nothing to publish to {put.uri}")
        started = time.perf_counter()
        counts = open_store(put.uri).sync_up(put.path, "", manifest_name)
        log.info("pod: %s -> %s: %s in %.1f s", put.path, put.uri, counts, time.perf_counter() - started)
