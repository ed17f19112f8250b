"""Digest of a run folder, timings aside: one sha256 per file, so that two runs of the same configuration (before
and after a change that must not change behaviour) can be compared file by file.

What is compared is what a file holds, not when or where it was written: the run folder's own path is ``RUN`` in
every text; JSON and CSV files lose the fields that hold wall-clock times, dates, hosts or process ids
(``VOLATILE``) and the input files' modification times; nnU-Net's checkpoints are compared by their tensors, its
preprocessed arrays (``.b2nd``) by their decompressed values, DICOM files without the UIDs and dates every export
makes anew. Files that only record how a run went (logs, the stage records, figures, the zipped package) are left
out (``SKIPPED``).

    python bench/run_digest.py RUN_DIR --out digest.json
    python bench/run_digest.py RUN_DIR --compare digest.json   # exit 1 and the differing files when they differ
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

VOLATILE = {
    "seconds",
    "epoch_seconds",
    "epoch_start_timestamps",
    "epoch_end_timestamps",
    "started",
    "finished",
    "written",
    "date",
    "created",
    "wall_seconds",
    "peak_rss_mib",
    "peak_memory_mib",
    "host",
    "pid",
    "fingerprint",  # of a case's input files: their modification times included
}
"""JSON fields whose values are times, dates, hosts or processes: never the same twice."""

SKIPPED = (
    "*.log",
    "*/training_log_*.txt",
    "report/report.html",  # holds the date it was written and the figures' bytes (both below)
    "report/report.md",
    "*.png",  # matplotlib's metadata and font hinting: compared by the numbers they draw instead
    "export/*.zip",  # zip member times; the package's files are compared where export reads them
    "export/MODEL_CARD.md",
    "*/debug.json",
)
"""Files that record how a run went rather than what it produced."""


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        stripped = {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
        for stats in ("file_stats", "other_files"):  # [path, size, mtime] of each input file
            if isinstance(stripped.get(stats), list):
                stripped[stats] = [entry[:2] for entry in stripped[stats]]
        return stripped
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _text(path: Path, run: Path) -> str:
    return path.read_text().replace(str(run.resolve()), "RUN").replace(str(run), "RUN")


def _csv(path: Path, run: Path) -> bytes:
    rows = list(csv.DictReader(io.StringIO(_text(path, run))))
    return json.dumps([{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]).encode()


def _checkpoint(path: Path) -> bytes:
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    digest = hashlib.sha256(str(checkpoint.get("current_epoch")).encode())
    for name, tensor in sorted(checkpoint["network_weights"].items()):
        digest.update(name.encode() + tensor.numpy().tobytes())
    return digest.digest()


def _array(path: Path) -> bytes:
    import blosc2

    array = blosc2.open(str(path), mode="r")[...]
    return str((array.shape, array.dtype)).encode() + array.tobytes()


def _dicom(path: Path) -> bytes:
    import pydicom

    lines: list[str] = []

    def walk(dataset: Any, depth: int) -> None:
        for element in dataset:
            if element.VR in ("UI", "DA", "TM", "DT"):
                continue
            if element.VR == "SQ":
                for item in element.value:
                    lines.append(f"{depth} {element.tag} item")
                    walk(item, depth + 1)
            elif isinstance(element.value, bytes):
                lines.append(f"{depth} {element.tag} {hashlib.sha256(element.value).hexdigest()}")
            else:
                lines.append(f"{depth} {element.tag} {element.value!r}")

    walk(pydicom.dcmread(path), 0)
    return "\n".join(lines).encode()


def file_digest(path: Path, run: Path) -> str:
    """The sha256 of what the file holds (see the module's docstring)."""
    if path.suffix == ".json":
        try:
            data = json.dumps(_strip(json.loads(_text(path, run))), sort_keys=True).encode()
        except ValueError:
            data = path.read_bytes()
    elif path.suffix == ".csv":
        data = _csv(path, run)
    elif path.suffix == ".pth":
        data = _checkpoint(path)
    elif path.suffix == ".b2nd":
        data = _array(path)
    elif path.suffix == ".dcm" and not path.relative_to(run).as_posix().startswith("cohort/"):  # the run's own
        data = _dicom(path)
    else:
        data = path.read_bytes()
    return hashlib.sha256(data).hexdigest()


def run_digest(run: Path) -> dict[str, str]:
    """Every file of the run folder (relative path, ``/``-separated) with its digest, skipped ones aside."""
    found = {}
    for path in sorted(p for p in run.rglob("*") if p.is_file()):
        relative = path.relative_to(run).as_posix()
        if relative.startswith((".stages/", "run_config.json")) or any(
            fnmatch.fnmatch(relative, pattern) for pattern in SKIPPED
        ):
            continue
        found[relative] = file_digest(path, run)
    return found


def differences(ours: dict[str, str], theirs: dict[str, str]) -> list[str]:
    """What differs: files only in one run, and files whose digests differ."""
    lines = [f"only here: {p}" for p in sorted(set(ours) - set(theirs))]
    lines += [f"only there: {p}" for p in sorted(set(theirs) - set(ours))]
    lines += [f"differs: {p}" for p in sorted(set(ours) & set(theirs)) if ours[p] != theirs[p]]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, help="write the digest here (JSON)")
    parser.add_argument("--compare", type=Path, help="a digest written by --out: report what differs")
    args = parser.parse_args()
    digest = run_digest(args.run)
    if args.out:
        args.out.write_text(json.dumps(digest, indent=1))
    print(f"{len(digest)} files digested in {args.run}")
    if args.compare:
        found = differences(digest, json.loads(args.compare.read_text()))
        print("\n".join(found) or "the same files, the same contents")
        return 1 if found else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
