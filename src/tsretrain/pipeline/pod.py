"""``tsretrain pod``: how a workflow pod runs a stage against the store.

A pod fetches what the stage reads from the store to local disk, runs one ``tsretrain`` subcommand on local
paths, then publishes what the stage wrote (files first, checksum manifest last). Paths below the pod's work
folder are the run layout's, the same as below the store prefix and in a local run folder::

    tsretrain pod --get 's3://b/run/converted=/work/converted=cases/*/manifest.json' \\
        --put /work/split=s3://b/run/split -- split /work/converted --out /work/split

A ``--get`` or ``--put`` may end with ``=PATTERN,PATTERN``: only the files matching one of them move (``*``
never crosses ``/``; in a ``--get``, ``{case}`` stands for each case of ``--batch``, or of the list in
the file ``--cases-from`` names, fetched by an earlier ``--get``). ``{batch}`` stands for the batch's id in
patterns and in the stage's arguments (e.g. the scan's inventory of the batch's cases alone).

The store requests of a fan-out pod do not grow with the number of batches: it fetches the files of its own
cases, reading only its batch's manifest when the folder was written batch by batch with the same batches, and
it publishes with one read of its own earlier manifest (a retried pod) and one write.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from tsretrain.errors import UserError
from tsretrain.layout import batch_id, relative
from tsretrain.resources import quantity_bytes
from tsretrain.storage.store import MANIFEST, open_store
from tsretrain.ui import log


@dataclass(frozen=True)
class Transfer:
    """One folder moved between the store and the pod's disk."""

    uri: str
    path: Path
    include: tuple[str, ...] = ()


def _parts(option: str, text: str) -> tuple[str, str, tuple[str, ...]]:
    parts = text.split("=")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise UserError(f"{option}: expected {option[2:].upper()}=PATH[=PATTERN,...], got {text!r}")
    include = tuple(p for p in parts[2].split(",") if p) if len(parts) == 3 else ()
    return parts[0], parts[1], include


def parse_get(text: str) -> Transfer:
    """``URI=PATH`` or ``URI=PATH=PATTERN,PATTERN``."""
    uri, path, include = _parts("--get", text)
    return Transfer(uri, Path(path), include)


def parse_put(text: str) -> Transfer:
    """``PATH=URI`` or ``PATH=URI=PATTERN,PATTERN``."""
    path, uri, include = _parts("--put", text)
    return Transfer(uri, Path(path), include)


def with_batch(text: str, batch: tuple[str, ...]) -> str:
    """``text`` with ``{batch}`` replaced by the batch's id."""
    if "{batch}" not in text:
        return text
    if not batch:
        raise UserError(f"{text!r} names {{batch}}: give --batch")
    return text.replace("{batch}", batch_id(batch))


def expand(patterns: tuple[str, ...], cases: tuple[str, ...] | None) -> tuple[str, ...]:
    """Patterns with ``{case}`` repeated for each of ``cases`` (an empty tuple drops them)."""
    out: list[str] = []
    for pattern in patterns:
        if "{case}" in pattern:
            if cases is None:
                raise UserError(f"include pattern {pattern!r} needs --batch or --cases-from")
            out += [pattern.replace("{case}", case) for case in cases]
        else:
            out.append(pattern)
    return tuple(out)


def read_cases(path: Path) -> tuple[str, ...]:
    """The case ids a JSON file lists under ``"cases"``: ids, or objects with a ``"case"`` field."""
    try:
        listed = json.loads(path.read_text())["cases"]
        return tuple(str(item["case"] if isinstance(item, dict) else item) for item in listed)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"--cases-from {path}: not a JSON file with a list of cases ({exc})") from exc


def _per_case(get: Transfer) -> bool:
    return any("{case}" in pattern for pattern in get.include)


def fetch(gets: list[Transfer], batch: tuple[str, ...] = (), cases_from: Path | None = None) -> int:
    """Fetch published folders (checked against their manifests); returns the bytes fetched.

    ``{case}`` in include patterns is each case of ``batch`` or, with ``cases_from``, each case listed in that
    file, which one of the folders without ``{case}`` brings (those are fetched first). A folder whose patterns
    all name cases is skipped when there are none.
    """
    if batch and cases_from is not None:
        raise UserError("--batch and --cases-from exclude each other")
    total = 0
    cases: tuple[str, ...] | None = batch or None
    for get in sorted(gets, key=_per_case):  # stable: the order given, folders of named cases last
        if cases is None and cases_from is not None and _per_case(get):
            cases = read_cases(cases_from)
            log.info("pod: %d cases from %s: %s", len(cases), cases_from, ", ".join(cases))
        include = tuple(with_batch(p, batch) for p in expand(get.include, cases))
        if get.include and not include:
            log.info("pod: %s: no case to fetch", get.uri)
            continue
        started = time.perf_counter()
        own = batch_manifest(batch) if batch and _per_case(get) else None  # written by the same batch upstream
        counts = open_store(get.uri).sync_down("", get.path, include, prefer_manifest=own)
        total += counts["bytes"]
        log.info("pod: %s -> %s: %s in %.1f s", get.uri, get.path, counts, time.perf_counter() - started)
    return total


def batch_manifest(batch: tuple[str, ...]) -> str:
    """The manifest a fan-out batch publishes: named after its cases, so that a retried pod replaces its own."""
    return f"_manifest-batch-{batch_id(batch)}.json" if batch else MANIFEST


def publish(puts: list[Transfer], manifest_name: str) -> None:
    for put in puts:
        if not put.path.is_dir():
            raise FileNotFoundError(f"pod: {put.path} was not produced; nothing to publish to {put.uri}")
        started = time.perf_counter()
        counts = open_store(put.uri).sync_up(put.path, "", manifest_name, put.include)
        log.info("pod: %s -> %s: %s in %.1f s", put.path, put.uri, counts, time.perf_counter() - started)


def run_prefix(output_prefix: str, runs_prefix: str, workflow: str) -> str:
    """A cluster run's store prefix: the one given, or one of its own below ``runs_prefix``."""
    return output_prefix.rstrip("/") or f"{runs_prefix.rstrip('/')}/{workflow}"


def check_disks(sizes: list[str]) -> None:
    """Each ``PARAMETER=SIZE`` a Kubernetes quantity, or a usage error naming the workflow parameter to fix."""
    for size in sizes:
        parameter, _, value = size.partition("=")
        try:
            quantity_bytes(value)
        except ValueError as exc:
            raise UserError(f"workflow parameter {parameter}: {exc}; submit the run again with a valid size") from None


def claim(prefix: str, workflow: str, resume: bool) -> None:
    """Make ``prefix`` this workflow's: refused when it holds another run's outputs, unless resuming on purpose
    (a second run would otherwise mix the first one's manifests and checkpoints into its own)."""
    store = open_store(prefix)
    owner = store.get_bytes(relative("claim"))
    if owner is not None and json.loads(owner).get("workflow") == workflow:
        return  # this workflow's claim step, retried
    if store.list("") and not resume:
        holder = json.loads(owner).get("workflow") if owner else "files of another run"
        raise UserError(
            f"{prefix} already holds {holder}: give another output-prefix, leave it empty for one of this run's own, "
            "or set resume=true to continue that run"
        )
    previous = json.loads(owner).get("workflow") if owner else None
    record = {"workflow": workflow, "resumed_from": previous if resume else None}
    store.put_bytes(json.dumps(record).encode(), relative("claim"))


def owns(prefix: str, workflow: str) -> bool:
    """Whether ``prefix`` is claimed by this workflow."""
    owner = open_store(prefix).get_bytes(relative("claim"))
    return owner is not None and json.loads(owner).get("workflow") == workflow
