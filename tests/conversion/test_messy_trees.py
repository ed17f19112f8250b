"""Scan and convert on messy trees: file-system oddities, copies, Ctrl-C, user errors, umask, dictionaries."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from support import manifest
from typer.testing import CliRunner

from tsretrain.cli import app
from tsretrain.conversion import headers
from tsretrain.conversion.convert import ConvertConfig, convert
from tsretrain.conversion.headers import read_record, walk_tree
from tsretrain.conversion.scan import ScanConfig, scan
from tsretrain.labels.dictionary import load_dictionary
from tsretrain.run_files import read_csv as read_listing
from tsretrain.synth.cohort import SynthConfig, generate

TSRETRAIN = [sys.executable, "-m", "tsretrain.cli"]


def small_cohort(out: Path, cases: int = 3, size: int = 40, slices: int = 12) -> Path:
    generate(
        SynthConfig(out=out, cases=cases, seed=3, rows=size, columns=size, slices=slices, pixel_spacing=200 / size)
    )
    return out / "dicom"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_cohort(tmp_path_factory.mktemp("messy"))


def ct_files(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.rglob("*.dcm")) if pydicom.dcmread(p, stop_before_pixels=True).Modality == "CT"]


def rows_by_case(listing: Path) -> dict[str, dict[str, str]]:
    return {r["case_id"]: r for r in read_listing(listing)}


def test_file_system_oddities_are_skipped_listed_and_never_hang(tree: Path, tmp_path: Path) -> None:
    root = tmp_path / "in"
    shutil.copytree(tree, root, symlinks=True)
    outside = tmp_path / "elsewhere"
    shutil.move(root / "RADCURE-0003", outside)
    (root / "RADCURE-0003").symlink_to(outside, target_is_directory=True)  # a symlinked patient folder
    patient = root / "RADCURE-0001"
    (patient / "stale.dcm").symlink_to(tmp_path / "gone.dcm")
    (patient / "loop").symlink_to(patient, target_is_directory=True)
    (outside / "back").symlink_to(outside, target_is_directory=True)
    os.mkfifo(patient / "pipe.dcm")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(patient / "sock"))
    try:
        done = subprocess.run(
            [*TSRETRAIN, "scan", str(root), "--out", str(tmp_path / "scan"), "-j", "1"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    inventory = json.loads((tmp_path / "scan" / "inventory.json").read_text())
    entries = inventory["file_system_problems"]["entries"]
    assert inventory["file_system_problems"]["count"] == 5
    expected = {
        "RADCURE-0001/stale.dcm": "dangling",
        "RADCURE-0001/loop": "loop",
        "RADCURE-0003/back": "loop",
        "RADCURE-0001/pipe.dcm": "FIFO",
        "RADCURE-0001/sock": "socket",
    }
    for path, word in expected.items():
        assert any(e.startswith(path) and word in e for e in entries), (path, entries)
    rows = rows_by_case(tmp_path / "scan" / "cases.csv")
    assert {r["status"] for r in rows.values()} == {"ok"}  # the symlinked patient is there, once
    assert "pipe.dcm: FIFO" in rows["RADCURE-0001"]["warnings"]
    assert "file_system_problems=5" in (done.stdout + done.stderr).replace("\n", "").replace(" ", "")


def _deny(monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
    """Make target unreadable: a real chmod, or, for root (whom permissions do not stop), a refusing open."""
    if os.geteuid() != 0:
        target.chmod(0)
        return
    real_open, real_scandir = os.open, os.scandir

    def refuse_open(path: object, *args: object, **kwargs: object) -> int:
        if Path(str(path)) == target:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    def refuse_scandir(path: object) -> object:
        if Path(str(path)) == target:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[call-overload]

    monkeypatch.setattr(headers.os, "open", refuse_open)
    monkeypatch.setattr(headers.os, "scandir", refuse_scandir)


def test_unreadable_files_and_folders_give_their_patient_a_reason(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "in"
    shutil.copytree(tree, root)
    rtstruct = next(p for p in (root / "RADCURE-0001").rglob("*.dcm") if "RTSTRUCT" in p.parent.name)
    study_of_2 = next((root / "RADCURE-0002").iterdir())
    series_of_2 = next(p for p in study_of_2.iterdir() if "CT_HEAD" in p.name)
    _deny(monkeypatch, rtstruct)
    _deny(monkeypatch, series_of_2)
    _deny(monkeypatch, root / "RADCURE-0003")
    try:
        scan(ScanConfig(input=root, out=tmp_path / "scan", workers=1))
    finally:
        for path in (rtstruct, series_of_2, root / "RADCURE-0003"):
            path.chmod(0o755)
    rows = rows_by_case(tmp_path / "scan" / "cases.csv")
    assert rows["RADCURE-0001"]["reason"] == "unreadable_dicom" and rtstruct.name in rows["RADCURE-0001"]["detail"]
    assert rows["RADCURE-0002"]["reason"] == "unreadable_dicom" and "cannot be listed" in rows["RADCURE-0002"]["detail"]
    # A patient folder that cannot even be listed has no PatientID to show: it gets a row of its own.
    assert rows["unidentified-RADCURE-0003"]["reason"] == "unreadable_dicom"
    assert rows["unidentified-RADCURE-0003"]["advice"]


def test_a_file_vanishing_during_the_scan_is_reported(tree: Path, tmp_path: Path) -> None:
    root = tmp_path / "in"
    shutil.copytree(tree, root)
    found = walk_tree(root)
    victim = ct_files(root / "RADCURE-0002")[3]
    victim.unlink()
    record = read_record(root, victim)
    assert (record.kind, record.why_ignored) == ("unreadable", "vanished during the scan")
    assert victim in found.files


def test_same_uids_under_two_patient_ids_and_exact_copies(tree: Path, tmp_path: Path) -> None:
    root = tmp_path / "in"
    shutil.copytree(tree, root)
    for path in ct_files(root / "RADCURE-0001"):  # the CT copied again under another PatientID
        ds = pydicom.dcmread(path)
        ds.PatientID = "COPY-0001"
        target = root / "COPY-0001" / path.name
        target.parent.mkdir(exist_ok=True)
        ds.save_as(target, enforce_file_format=True)
    copied = ct_files(root / "RADCURE-0002")[5]
    shutil.copy2(copied, copied.with_name("copy-of-" + copied.name))  # an exact duplicate file
    convert(ConvertConfig(input=root, out=tmp_path / "out", workers=1))
    rows = rows_by_case(tmp_path / "out" / "cases.csv")
    for case, other in (("RADCURE-0001", "COPY-0001"), ("COPY-0001", "RADCURE-0001")):
        assert rows[case]["reason"] == "shared_uids" and other in rows[case]["detail"]
    assert rows["RADCURE-0002"]["status"] == "ok"
    assert "exact copy" in rows["RADCURE-0002"]["warnings"] and int(rows["RADCURE-0002"]["n_warnings"]) >= 1


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TSRETRAIN, *args], capture_output=True, text=True, timeout=timeout)


def test_user_errors_are_two_lines_with_exit_code_2(tree: Path, tmp_path: Path) -> None:
    archive = tmp_path / "export.zip"
    archive.write_bytes(b"PK\x03\x04")
    single = ct_files(tree / "RADCURE-0001")[0]
    occupied = tmp_path / "a-file"
    occupied.write_text("x")
    cases = [
        (["convert", str(archive), "--out", str(tmp_path / "o1")], "unpack"),
        (["convert", str(single), "--out", str(tmp_path / "o2")], "give the folder"),
        (["convert", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o3")], "does not exist"),
        (["convert", str(tree), "--out", str(occupied)], "not a folder"),
        (["scan", str(tree), "--out", str(tmp_path / "o4"), "--dictionary", "nope"], "dictionary"),
        (["convert", str(tree), "--out", str(tmp_path / "o5"), "--case", "NOPE", "-j", "1"], "not in the inventory"),
    ]
    for args, words in cases:
        done = run_cli(*args)
        lines = done.stderr[done.stderr.find("error:") :].strip().splitlines()  # after any progress lines
        assert done.returncode == 2, (args, done.stderr)
        assert 1 <= len(lines) <= 2 and words in done.stderr and "Traceback" not in done.stderr, (args, lines)
    debug = run_cli("--debug", "convert", str(archive), "--out", str(tmp_path / "o6"))
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_ctrl_c_stops_at_once_lists_what_finished_and_a_rerun_resumes(tmp_path: Path) -> None:
    # cases of about a second each: the run is still converting when the first one is listed, on any machine
    dicom = small_cohort(tmp_path / "cohort", cases=12, size=200, slices=100)
    out = tmp_path / "out"
    args = [*TSRETRAIN, "convert", str(dicom), "--out", str(out), "-j", "2"]
    # as from a terminal: Ctrl-C's default action (a test runner's worker may ignore SIGINT, and children inherit it)
    process = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not list((out / "cases").glob("*/manifest.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # a second Ctrl-C changes nothing
    started = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - started < 15
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert "interrupted" in stderr and "again" in stderr
    finished = read_listing(out / "cases.csv")
    assert 1 <= len(finished) < 12
    assert not [p for p in (out / "cases").iterdir() if p.name.startswith(".")]  # no half-written case left
    again = convert(ConvertConfig(input=dicom, out=out, workers=2))
    assert again.counts["reused"] >= len(finished) and again.counts["cases"] == 12
    assert len(read_listing(out / "cases.csv")) == 12


def test_outputs_follow_the_umask(tree: Path, tmp_path: Path) -> None:
    previous = os.umask(0o002)
    try:
        convert(ConvertConfig(input=tree, out=tmp_path / "out", workers=1, cases=("RADCURE-0001",)))
    finally:
        os.umask(previous)
    out = tmp_path / "out"
    for path in (out / "cases.csv", out / "scan" / "inventory.json", out / "cases" / "RADCURE-0001" / "manifest.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o664, path
    assert stat.S_IMODE((out / "cases" / "RADCURE-0001").stat().st_mode) == 0o775
    assert stat.S_IMODE((out / "cases" / "RADCURE-0001" / "RADCURE-0001.nii.gz").stat().st_mode) == 0o664


def test_an_output_made_with_another_dictionary_is_refused_unless_forced(tree: Path, tmp_path: Path) -> None:
    """Converting into a folder of another dictionary exits with code 2 and says what to do, touching nothing;
    ``--force`` converts the case again with the new dictionary's ids and removes the other dictionary's cases."""
    out = tmp_path / "out"
    convert(ConvertConfig(input=tree, out=out, workers=1, cases=("RADCURE-0001", "RADCURE-0002")))
    label_map = out / "cases" / "RADCURE-0001" / "RADCURE-0001.nii.gz"
    before = sitk.GetArrayFromImage(sitk.ReadImage(str(label_map)))
    args = ["convert", str(tree), "--out", str(out), "--dictionary", "radcure-ts90", "-j", "1"]
    args += ["--cases", "RADCURE-0001"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2, refused.output
    assert "radcure-oar21" in refused.output and "--force" in refused.output
    assert manifest(out, "RADCURE-0001")["dictionary"]["name"] == "radcure-oar21"
    assert set(rows_by_case(out / "cases.csv")) == {"RADCURE-0001", "RADCURE-0002"}

    forced = CliRunner().invoke(app, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert set(rows_by_case(out / "cases.csv")) == {"RADCURE-0001"}
    assert not (out / "cases" / "RADCURE-0002").exists()
    assert manifest(out, "RADCURE-0001")["dictionary"]["name"] == "radcure-ts90"
    after = sitk.GetArrayFromImage(sitk.ReadImage(str(label_map)))
    old_id, new_id = (load_dictionary(name).by_name("GTVp").id for name in ("radcure-oar21", "radcure-ts90"))
    assert old_id != new_id and (before == old_id).any()
    np.testing.assert_array_equal(after == new_id, before == old_id)


def test_a_ct_paired_by_frame_of_reference_is_not_checked_against_another_series_images(
    tree: Path, tmp_path: Path
) -> None:
    """The RTSTRUCT names a series that is absent; the only CT of its frame stands in, with new instance UIDs."""
    root = tmp_path / "in"
    shutil.copytree(tree / "RADCURE-0001", root / "RADCURE-0001")
    for n, path in enumerate(ct_files(root)):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = "1.2.3.4.5"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.3.4.5.{n}"
        ds.save_as(path, enforce_file_format=True)
    scan(ScanConfig(input=root, out=tmp_path / "scan", workers=1))
    (row,) = read_listing(tmp_path / "scan" / "cases.csv")
    assert row["status"] == "ok" and "paired by frame of reference" in row["warnings"]
