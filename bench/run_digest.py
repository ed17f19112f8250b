"""Digest of a run folder, timings aside: one sha256 per file, so that two runs of the same configuration (before
and after a change that must not change behaviour) can be compared file by file.

JSON files are digested without the fields that hold wall-clock times, dates, hosts or process ids (``VOLATILE``);
every other file by its bytes. Files that only record how a run went (logs, the stage records' timings) are left out
(``SKIPPED``).

    python bench/run_digest.py RUN_DIR --out digest.json
    python bench/run_digest.py RUN_DIR --compare digest.json   # exit 1 and the differing files when they differ
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
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
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def file_digest(path: Path) -> str:
    """The file's sha256; a JSON file's without its volatile fields."""
    data = path.read_bytes()
    if path.suffix == ".json":
        try:
            data = json.dumps(_strip(json.loads(data)), sort_keys=True).encode()
        except ValueError:
            pass
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
        found[relative] = file_digest(path)
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
