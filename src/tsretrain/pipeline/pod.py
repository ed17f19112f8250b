"""``tsretrain pod``: how a workflow pod runs a stage against the store.

A pod fetches what the stage reads from the store to local disk, runs one ``tsretrain`` subcommand on local
paths, then publishes what the stage wrote (files first, checksum manifest last). Paths below the pod's work
folder are the run layout's, the same as below the store prefix and in a local run folder::

    tsretrain pod --get 's3://b/run/converted=/work/converted=cases/*/manifest.json' \\
        --put /work/split=s3://b/run/split -- split /work/converted --out /work/split

A ``--get`` or ``--put`` may end with ``=PATTERN,PATTERN``: only the files matching one of them move (``*``
never crosses ``/``; in a ``--get``, ``{case}`` stands for each case of ``--batch``, or of the list in
the file ``--cases-from`` names, fetched by an earlier ``--get``). In a fan-out over batches of cases, ``--batch``
gives the batch's id: ``{batch}`` stands for it in patterns, in ``--cases-from`` and in the stage's arguments (the
scan's inventory of the batch's cases alone is ``scan/batches/{batch}.json``), and ``{cases}`` in the stage's
arguments for the batch's cases.

The store requests of a fan-out pod do not grow with the number of batches: it fetches the files of its own
cases, reading only its batch's manifest when the folder was written batch by batch with the same batches, and
it publishes with one read of its own earlier manifest (a retried pod) and one write.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from tsretrain.errors import UserError
from tsretrain.layout import relative
from tsretrain.resources import quantity_bytes
from tsretrain.storage.atomic import atomic_write_text
from tsretrain.storage.store import MANIFEST, matches, open_store
from tsretrain.ui import log
from tsretrain.versions import installed


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


def placeholders(text: str, batch: str, cases: tuple[str, ...] | None = None) -> str:
    """``text`` with ``{batch}`` (the fan-out batch's id) and ``{cases}`` (its cases, comma-joined) filled in."""
    if "{batch}" in text:
        if not batch:
            raise UserError(f"{text!r} names {{batch}}: give --batch")
        text = text.replace("{batch}", batch)
    if "{cases}" in text:
        if cases is None:
            raise UserError(f"{text!r} names {{cases}}: give --cases-from")
        text = text.replace("{cases}", ",".join(cases))
    return text


def expand(patterns: tuple[str, ...], cases: tuple[str, ...] | None) -> tuple[str, ...]:
    """Patterns with ``{case}`` repeated for each of ``cases`` (an empty tuple drops them)."""
    out: list[str] = []
    for pattern in patterns:
        if "{case}" in pattern:
            if cases is None:
                raise UserError(f"include pattern {pattern!r} needs --cases-from")
            out += [pattern.replace("{case}", case) for case in cases]
        else:
            out.append(pattern)
    return tuple(out)


def read_cases(path: Path) -> tuple[str, ...]:
    """The case ids a JSON file lists under ``"cases"``: ids, or objects with a ``"case"`` or ``"case_id"`` field
    (a batch's inventory)."""
    try:
        listed = json.loads(path.read_text())["cases"]
        return tuple(str(item.get("case", item.get("case_id")) if isinstance(item, dict) else item) for item in listed)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"--cases-from {path}: not a JSON file with a list of cases ({exc})") from exc


def _per_case(get: Transfer) -> bool:
    return any("{case}" in pattern for pattern in get.include)


def fetch(gets: list[Transfer], batch: str = "", cases_from: Path | None = None) -> tuple[int, tuple[str, ...] | None]:
    """Fetch published folders (checked against their manifests); returns the bytes fetched and the cases.

    ``{batch}`` in include patterns is the fan-out batch's id; ``{case}`` each case listed in the file
    ``cases_from``, which one of the folders without ``{case}`` brings (those are fetched first). A folder whose
    patterns all name cases is skipped when there are none. A folder of named cases that the same batch wrote
    upstream is fetched with that batch's manifest alone.
    """
    total = 0
    cases: tuple[str, ...] | None = None
    for get in sorted(gets, key=_per_case):  # stable: the order given, folders of named cases last
        if cases is None and cases_from is not None and _per_case(get):
            cases = read_cases(cases_from)
            log.info("pod: %d cases from %s: %s", len(cases), cases_from, ", ".join(cases))
        include = tuple(placeholders(p, batch) for p in expand(get.include, cases))
        if get.include and not include:
            log.info("pod: %s: no case to fetch", get.uri)
            continue
        started = time.perf_counter()
        counts = open_store(get.uri).sync_down("", get.path, include, prefer_manifest=_writer(get, batch))
        total += counts["bytes"]
        log.info("pod: %s -> %s: %s in %.1f s", get.uri, get.path, counts, time.perf_counter() - started)
    if cases is None and cases_from is not None:
        cases = read_cases(cases_from)
    return total, cases


def _writer(get: Transfer, batch: str) -> str | None:
    """The manifest to read first for a fetch (``sync_down`` falls back to the union of all the folder's manifests
    when it holds nothing for a pattern): a batch's own cases, the manifest the same batch wrote upstream; named
    files of a folder that fan-out batches also write (plans beside the batches' data), the single writer's; the
    whole folder, the union."""
    if batch and _per_case(get):
        return batch_manifest(batch)
    return MANIFEST if get.include else None


def batch_manifest(batch: str) -> str:
    """The manifest a fan-out batch publishes: named after the batch, so that a retried pod replaces its own."""
    return f"_manifest-batch-{batch}.json" if batch else MANIFEST


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
            if quantity_bytes(value) <= 0:
                raise ValueError(f"{value!r} is not a positive size")
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


def portable(command: list[str]) -> list[str]:
    """A command line without where the pod's disk is: local paths by their last part (``/work/scan`` and a
    harness's ``/tmp/p/3/work/scan`` alike are ``scan``), so that every attempt of a step names it the same."""
    return [
        "=".join(part.rsplit("/", 1)[-1] if part.startswith("/") else part for part in arg.split("="))
        for arg in command
    ]


def input_key(command: list[str], gets: list[Transfer], batch: str, inputs: list[str]) -> str:
    """What a step's outputs depend on: its command line (before the pod fills in a batch's cases), tsretrain's
    version, the checksums of the files it would fetch (from the manifests: a batch's own where the same batch
    wrote them, ``{case}`` standing for any case) and the listing (key, size, time) of raw inputs such as the DICOM
    tree. The same key means the same outputs: a resumed run skips the step."""
    versions = {name: installed(name) or "" for name in ("tsretrain", "nnunetv2", "torch", "TotalSegmentator")}
    digest = hashlib.sha256(json.dumps({"versions": versions, "command": portable(command)}).encode())
    for arg in command:  # files the command names that the pod already holds (a dictionary from the ConfigMap)
        for part in arg.split("="):
            if part.startswith("/") and Path(part).is_file():
                digest.update(hashlib.sha256(Path(part).read_bytes()).digest())
    for get in gets:
        patterns = tuple(placeholders(p, batch).replace("{case}", "*") for p in get.include)
        manifest = open_store(get.uri).manifest_for("", patterns, _writer(get, batch)) or {}  # as fetch reads it
        files = sorted(
            (rel, info["sha256"]) for rel, info in manifest.items() if not patterns or matches(rel, patterns)
        )
        digest.update(json.dumps([get.uri, files]).encode())
    for uri in inputs:  # a page of the listing at a time (a DICOM tree can hold millions of objects)
        digest.update(json.dumps(uri).encode())
        for entry in open_store(uri).iter_detailed(""):
            digest.update(json.dumps(entry).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Completion:
    """A step's completion record in the run's store (``.stages/<stage>-<id>.json``), written after it published:
    the key of the inputs it ran with, its outputs' manifest checksums and the files it produced for Argo (output
    parameters), given back when the step is skipped."""

    folder: str
    name: str
    key: str

    @classmethod
    def of(cls, folder: str, command: list[str], gets: list[Transfer], batch: str, inputs: list[str]) -> Completion:
        step = [*command, *(["--batch", batch] if batch else [])]  # each batch of a fan-out its own
        stage = next((a for a in step if not a.startswith("-")), "step")
        name = f"{stage}-{hashlib.sha256(json.dumps(portable(step)).encode()).hexdigest()[:16]}.json"
        return cls(folder, name, input_key(step, gets, batch, inputs))

    def skipped(self, puts: list[Transfer], manifest_name: str, output_files: list[Path]) -> bool:
        """Whether the step was done before with the same inputs and its outputs are still the ones it published:
        then what it left for the workflow is written back and nothing else is to be done."""
        data = open_store(self.folder).get_bytes(self.name)
        if data is None:
            return False
        record = json.loads(data)
        if record.get("inputs") != self.key or record.get("published") != _published(puts, manifest_name):
            return False
        for path, text in zip(output_files, record.get("outputs", []), strict=False):
            atomic_write_text(path, text)
        log.info("pod: done before with the same inputs (%s/%s): skipped", self.folder, self.name)
        return True

    def write(self, output_files: list[Path], puts: list[Transfer], manifest_name: str) -> None:
        record = {
            "inputs": self.key,
            "published": _published(puts, manifest_name),
            "outputs": [p.read_text() for p in output_files],
            "finished": time.time(),
        }
        open_store(self.folder).put_bytes(json.dumps(record).encode(), self.name)


def _published(puts: list[Transfer], manifest_name: str) -> list[str | None]:
    """The checksum of each output folder's manifest of this writer (None where there is none)."""
    found = [open_store(put.uri).get_bytes(manifest_name) for put in puts]
    return [hashlib.sha256(data).hexdigest() if data is not None else None for data in found]
