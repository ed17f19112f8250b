"""Atomic files and folders: a reader sees the old complete version or the new one, never a part."""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import tree_digest

from tsretrain.storage.atomic import (
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_temporaries,
    staged_dir,
    staged_file,
)


class Interrupted(BaseException):
    """Stands for a kill or a Ctrl-C in the middle of a write."""


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_replaces_a_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "new" / "a.json"
    atomic_write_text(target, "first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second" and names(target.parent) == ["a.json"]


def test_an_interrupted_atomic_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")

    def fail(*_: object) -> None:
        raise Interrupted

    monkeypatch.setattr("os.fsync", fail)
    with pytest.raises(Interrupted):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and names(tmp_path) == ["a.txt"]


def test_staged_file_keeps_the_suffixes_and_renames_on_success_only(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "image.nii.gz"
    with staged_file(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".nii.gz") and tmp.name.startswith(".image.")
        tmp.write_bytes(b"data")
        assert not target.exists()
    assert target.read_bytes() == b"data" and names(target.parent) == ["image.nii.gz"]
    with pytest.raises(Interrupted), staged_file(target) as tmp:
        tmp.write_bytes(b"half")
        raise Interrupted
    assert target.read_bytes() == b"data" and names(target.parent) == ["image.nii.gz"]


def test_staged_dir_replaces_a_folder_as_a_whole(tmp_path: Path) -> None:
    target = tmp_path / "cases" / "case1"
    with staged_dir(target) as tmp:
        (tmp / "a").write_text("1")
        (tmp / "b").write_text("1")
        assert not target.exists() and tmp.parent == target.parent and tmp.name.startswith(".case1.")
    assert names(target) == ["a", "b"]
    with staged_dir(target) as tmp:
        (tmp / "c").write_text("2")
        assert names(target) == ["a", "b"]  # the old folder stays whole until the new one is complete
    assert names(target) == ["c"] and names(target.parent) == ["case1"]


def test_an_interrupted_staged_dir_keeps_the_old_folder_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "case1"
    with staged_dir(target) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(Interrupted), staged_dir(target) as tmp:
        (tmp / "a").write_text("new")
        raise Interrupted
    assert (target / "a").read_text() == "old" and names(tmp_path) == ["case1"]


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path: Path) -> None:
    for name in (".case1.x1.tmp", ".a.json.x2.tmp", ".case2.ab12.old", ".img.x3.tmp.nii.gz"):
        (tmp_path / name).mkdir() if "case" in name else (tmp_path / name).write_text("")
    (tmp_path / ".case1.x1.tmp" / "partial").write_text("")
    for name in ("case1", ".hidden", "a.tmp", ".older"):
        (tmp_path / name).write_text("keep")
    assert remove_stale_temporaries(tmp_path) == 4
    assert names(tmp_path) == [".hidden", ".older", "a.tmp", "case1"]
    assert remove_stale_temporaries(tmp_path / "missing") == 0


def test_every_temporary_is_hidden_and_known_to_the_cleaner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write killed before its rename leaves its temporary; the next run's cleaner must recognise it."""
    import os

    renamed: list[str] = []
    replace = os.replace

    def spy(source: str | Path, target: str | Path) -> None:
        renamed.extend((Path(source).name, Path(target).name))
        replace(source, target)

    monkeypatch.setattr("os.replace", spy)
    atomic_write_text(tmp_path / "a" / "b" / "c.json", "{}")  # parents created
    with staged_file(tmp_path / "d" / "e" / "image.nii.gz") as tmp:
        tmp.write_bytes(b"")
    with staged_dir(tmp_path / "f" / "g" / "case") as tmp:
        (tmp / "x").write_text("")
    with staged_dir(tmp_path / "f" / "g" / "case") as tmp:  # the old folder is moved aside first
        (tmp / "y").write_text("")
    temporaries = set(renamed) - {"c.json", "image.nii.gz", "case"}
    assert len(temporaries) == 5  # four written, one old folder moved aside
    left = tmp_path / "left"
    left.mkdir()
    for name in temporaries:
        (left / name).mkdir()
    assert all(name.startswith(".") for name in temporaries)
    assert remove_stale_temporaries(left) == 5 and names(left) == []


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077])
def test_files_and_folders_get_the_modes_the_umask_allows_without_the_umask_being_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mask: int
) -> None:
    """Written as open() and mkdir() would write them, and the umask read from /proc, never set and reset: another
    thread creating a file in between would otherwise get the wrong mode."""
    previous = os.umask(mask)
    try:
        touched: list[int] = []
        real = os.umask
        monkeypatch.setattr(os, "umask", lambda value: touched.append(value) or real(value))
        renamed: list[tuple[str, str]] = []
        replace = os.replace
        monkeypatch.setattr(os, "replace", lambda a, b: renamed.append((str(a), str(b))) or replace(a, b))
        atomic_write_bytes(tmp_path / "f.bin", b"x")
        with staged_dir(tmp_path / "folder") as folder:
            (folder / "inner").write_text("y")
        assert touched == []
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "f.bin").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o777 & ~mask
    assert all(Path(source).parent == tmp_path for source, _ in renamed)  # renamed within the folder: atomic


def test_without_proc_the_umask_is_read_and_put_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read_text = Path.read_text

    def no_proc(self: Path, *args: Any, **kwargs: Any) -> str:
        if str(self) == "/proc/self/status":
            raise FileNotFoundError(self)  # a system without /proc
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", no_proc)
    previous = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "f.bin", b"x")
        assert os.umask(0o027) == 0o027  # still the process's umask
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "f.bin").stat().st_mode) == 0o640


def test_two_cleaners_at_once_never_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers resuming in one output folder both clear its leftovers; each entry goes under the other's feet."""
    (tmp_path / ".case.a1b2.tmp").mkdir()
    (tmp_path / ".case.a1b2.tmp" / "part.nii.gz").write_bytes(b"x")
    (tmp_path / ".cases.csv.x9.tmp").write_bytes(b"y")
    (tmp_path / "kept.csv").write_bytes(b"z")
    is_dir = Path.is_dir

    def racing(self: Path) -> bool:
        answer = is_dir(self)
        if self.parent == tmp_path and self.name.startswith("."):  # the other cleaner, right after this look
            if answer:
                shutil.rmtree(self)
            else:
                self.unlink(missing_ok=True)
        return answer

    monkeypatch.setattr(Path, "is_dir", racing)
    assert remove_stale_temporaries(tmp_path) == 2
    assert names(tmp_path) == ["kept.csv"]


# A case folder killed mid-write is never visible under its final name, and a rewrite keeps the old copy.


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
