"""``tsretrain pod``: how a workflow pod runs a stage against the store.

A pod fetches its inputs from the store to local disk, runs one ``tsretrain`` subcommand on local paths, then
publishes its outputs (files first, checksum manifest last). The same subcommand runs on a laptop without the
store, so the local runner and Argo execute the same code::

    tsretrain pod --get s3://b/run/converted=/work/converted --put /work/split=s3://b/run/split \\
        -- split /work/converted --out /work/split
"""

from __future__ import annotations

import time
from pathlib import Path

from tsretrain.storage.store import open_store
from tsretrain.ui import log


def parse_pair(text: str, uri_first: bool) -> tuple[str, Path]:
    """``URI=PATH`` (``--get``) or ``PATH=URI`` (``--put``) as (uri, path)."""
    left, sep, right = text.partition("=")
    if not sep or not left or not right:
        raise ValueError(f"expected {'URI=PATH' if uri_first else 'PATH=URI'}, got {text!r}")
    return (left, Path(right)) if uri_first else (right, Path(left))


def fetch(pairs: list[tuple[str, Path]], raw: bool = False) -> None:
    """Fetch published folders (checked against their manifests) or, ``raw``, every object of a prefix."""
    for uri, local in pairs:
        started = time.perf_counter()
        store = open_store(uri)
        counts = {"fetched": store.download_all("", local)} if raw else store.sync_down("", local)
        log.info("pod: %s -> %s: %s in %.1f s", uri, local, counts, time.perf_counter() - started)


def publish(pairs: list[tuple[str, Path]], manifest_name: str) -> None:
    for uri, local in pairs:
        if not local.is_dir():
            raise FileNotFoundError(f"pod: {local} was not produced; nothing to publish to {uri}")
        started = time.perf_counter()
        counts = open_store(uri).sync_up(local, "", manifest_name)
        log.info("pod: %s -> %s: %s in %.1f s", local, uri, counts, time.perf_counter() - started)
