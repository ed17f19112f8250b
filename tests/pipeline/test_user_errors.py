"""Ordinary mistakes end in one or two lines on stderr and exit 2 (never retried by the workflow; a run's
stage banner may precede them), run through the installed console script as a user runs it: a stage before the
one it needs, an empty input or one without DICOM, a fold the split did not make, a misspelt trainer, a run
configuration that is missing or not YAML."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TSRETRAIN = str(Path(sys.executable).parent / "tsretrain")
DATASET = "Dataset366_TotalSegmentator"


def _preprocessed(work: Path, folds: int) -> Path:
    """An nnU-Net work root as far as the split and the planning summary: no plans, no training."""
    folder = work / "nnUNet_preprocessed" / DATASET
    folder.mkdir(parents=True)
    (folder / "splits_final.json").write_text(json.dumps([{"train": ["a"], "val": ["b"]}] * folds))
    (folder / "planning_summary.json").write_text(json.dumps({"plans_identifier": "nnUNetPlans"}))
    return work


def _mistakes(root: Path) -> dict[str, tuple[list[str], str]]:
    """Each mistake: its command line and what its one line must say."""
    empty = root / "empty"
    empty.mkdir()
    (root / "bad.yaml").write_text("model: [\n")
    (root / "empty-input.yaml").write_text(f"input: {empty}\nstages: [scan, convert]\n")
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("the scans follow")
    work = _preprocessed(root / "work", folds=5)
    references = root / "references"
    references.mkdir()
    (references / "c1.nii.gz").write_bytes(b"")
    predictions = root / "predictions"
    predictions.mkdir()
    (predictions / "c9.nii.gz").write_bytes(b"")
    return {
        "split with no usable case": (["split", str(empty), "-o", str(root / "split")], "0 usable case(s)"),
        "run with a missing configuration": (
            ["run", "--run-dir", str(root / "run"), "--config", str(root / "absent.yaml")],
            "does not exist",
        ),
        "run with a configuration that is not YAML": (
            ["run", "--run-dir", str(root / "run"), "--config", str(root / "bad.yaml")],
            "is not valid YAML",
        ),
        "run on an empty input": (
            ["run", "--run-dir", str(root / "run"), "--config", str(root / "empty-input.yaml")],
            "it holds no file",
        ),
        "train before preprocess": (
            ["train", "--work", str(empty), "--fold", "0", "--device", "cpu"],
            "splits_final.json is missing",
        ),
        "train a fold the split did not make": (
            ["train", "--work", str(work), "--fold", "7", "--device", "cpu"],
            "fold 7 is not one of the split's 5 folds",
        ),
        "train with a misspelt trainer": (
            ["train", "--work", str(work), "--fold", "0", "--device", "cpu", "--trainer", "nnUNetTrainerTsrTypo"],
            "nnUNetTrainerTsrTypo",
        ),
        "predict before training": (
            ["predict", "--work", str(work), "-o", str(root / "pred"), "--device", "cpu", "--folds", "0"],
            "train them first",
        ),
        "evaluate without references": (
            ["evaluate", str(empty), str(predictions), "-o", str(root / "eval")],
            "no reference label maps",
        ),
        "evaluate predictions of another test set": (
            ["evaluate", str(references), str(predictions), "-o", str(root / "eval")],
            "without a reference",
        ),
        "scan of a folder without DICOM": (["scan", str(root / "notes"), "-o", str(root / "scan")], "not_dicom 1"),
        "infer with no package": (
            ["infer", str(empty), "--model", str(root / "absent.zip"), "-o", str(root / "inf"), "--device", "cpu"],
            "does not exist",
        ),
    }


def test_every_ordinary_mistake_is_one_short_message_and_exit_2(tmp_path: Path) -> None:
    failures = []
    for name, (args, said) in _mistakes(tmp_path).items():
        done = subprocess.run([TSRETRAIN, *args], capture_output=True, text=True, timeout=300)
        lines = done.stderr.strip().splitlines()
        error = next((n for n, line in enumerate(lines) if "error: " in line), None)  # after a run's stage banner
        short = error is not None and len(lines) - error <= 2 and said in "\n".join(lines[error:])
        if done.returncode != 2 or "Traceback" in done.stderr or not short:
            failures.append(f"{name}: exit {done.returncode}, stderr {done.stderr[-600:]!r}")
    assert failures == []


def test_output_without_a_terminal_is_never_wrapped(tmp_path: Path) -> None:
    """A pod's log or a pipe: a long path stays on one line, whole, so it can be copied."""
    deep = tmp_path.joinpath(*[f"folder-{n:02d}-of-a-long-hospital-export" for n in range(8)])
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    command = [TSRETRAIN, "synth", str(deep), "--cases", "1", "--rows", "24", "--columns", "24"]
    done = subprocess.run([*command, "--slices", "6"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and len(str(deep)) > 300, done.stderr
    assert any(str(deep) in line for line in done.stderr.splitlines()), done.stderr  # "done ... out=<path>"
