"""A case folder killed mid-write is never visible under its final name, and a rewrite keeps the old copy."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

from support import tree_digest

# Converts one case of the inventory into CASE_DIR, the process killing itself (SIGKILL) on its second
# NIfTI write: after the label map is on disk, before the CT is.
KILLED_MID_CASE = """
import os, signal, sys
from pathlib import Path
from tsretrain.conversion import convert
from tsretrain.conversion.plan import load_inventory
from tsretrain.labels.dictionary import load_dictionary

inventory, input_root, case_id, case_dir = sys.argv[1:]
header, plans = load_inventory(Path(inventory))
(plan,) = [p for p in plans if p.case_id == case_id]
write, calls = convert.write_nifti, []

def write_then_die(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    write(*args, **kwargs)

convert.write_nifti = write_then_die
convert.convert_case(plan, Path(input_root), Path(case_dir), load_dictionary(header["dictionary"]["name"]))
"""


def _ok_case(converted: Path) -> str:
    with (converted / "cases.csv").open(newline="") as handle:
        return next(row["case_id"] for row in csv.DictReader(handle) if row["status"] == "ok")


def _kill_mid_case(converted: Path, cohort: Path, case_id: str, cases: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLED_MID_CASE,
            str(converted / "scan" / "inventory.json"),
            str(cohort / "dicom"),
            case_id,
            str(cases / case_id),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -9, done.stderr[-2000:]


def test_a_case_killed_mid_write_leaves_no_folder_under_its_name(converted: Path, cohort: Path, tmp_path: Path) -> None:
    case_id = _ok_case(converted)
    cases = tmp_path / "cases"
    _kill_mid_case(converted, cohort, case_id, cases)
    visible = [p.name for p in cases.iterdir() if not p.name.startswith(".")]
    assert visible == []  # the label map written before the kill sits in a hidden temporary folder
    (partial,) = cases.iterdir()
    assert [p.name for p in partial.iterdir()] != []


def test_a_rewrite_killed_mid_write_keeps_the_previous_complete_case(
    converted: Path, cohort: Path, tmp_path: Path
) -> None:
    case_id = _ok_case(converted)
    cases = tmp_path / "cases"
    shutil.copytree(converted / "cases" / case_id, cases / case_id)
    before = tree_digest(cases / case_id)
    _kill_mid_case(converted, cohort, case_id, cases)
    assert tree_digest(cases / case_id) == before
    manifest = json.loads((cases / case_id / "manifest.json").read_text())
    assert all((cases / case_id / name).is_file() for name in manifest["outputs"].values())
