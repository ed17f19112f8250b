"""nnU-Net's preprocessing shared out in batches (a cluster run's fingerprint, plan and preprocess-cases) gives what
the one-pod ``preprocess`` stage gives: the same fingerprint, plans, split and preprocessed cases."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import blosc2
import numpy as np
import pytest

from tsretrain.errors import UserError
from tsretrain.model import Model
from tsretrain.training.batched import BatchConfig, FingerprintConfig, PlanConfig, fingerprint, plan, preprocess_cases

DATASET = Model().dataset
TINY = Model(configuration="3d_tiny")


def test_batches_preprocess_exactly_as_one_preprocess(prepared: Path, tmp_path: Path) -> None:
    work, records = tmp_path / "work", tmp_path / "fingerprints"
    shutil.copytree(prepared / "work" / "nnUNet_raw", work / "nnUNet_raw")  # what assemble made, nothing more
    raw = work / "nnUNet_raw" / DATASET
    training = sorted(p.name.removesuffix("_0000.nii.gz") for p in (raw / "imagesTr").glob("*_0000.nii.gz"))
    test_case = sorted(p.name.removesuffix("_0000.nii.gz") for p in (raw / "imagesTs").glob("*_0000.nii.gz"))[0]
    # batches as the scan makes them: training, test and excluded cases mixed, in any order
    batches = [(training[3], test_case, "RADCURE-excluded"), tuple(training[:3]), tuple(training[4:])]
    with pytest.raises(UserError, match="0 fingerprint records"):
        plan(PlanConfig(work=work, split=prepared / "split", fingerprints=records, model=TINY))
    for n, batch in enumerate(batches):  # the last in a pool of spawned processes, as nnU-Net runs them
        workers = 2 if n == len(batches) - 1 else 1
        done = fingerprint(FingerprintConfig(work=work, fingerprints=records, model=TINY, cases=batch, workers=workers))
        assert done.counts["cases"] == len([c for c in batch if c in training])
    with pytest.raises(UserError, match=r"planning_summary\.json does not exist"):
        preprocess_cases(BatchConfig(work=work, model=TINY, cases=batches[0]))
    plan(PlanConfig(work=work, split=prepared / "split", fingerprints=records, model=TINY))
    for n, batch in enumerate(batches):
        preprocess_cases(BatchConfig(work=work, model=TINY, cases=batch, workers=2 if n == len(batches) - 1 else 1))

    whole, shared = prepared / "work" / "nnUNet_preprocessed" / DATASET, work / "nnUNet_preprocessed" / DATASET
    for name in ("dataset_fingerprint.json", "nnUNetPlans.json", "dataset.json", "splits_final.json"):
        assert json.loads((shared / name).read_text()) == json.loads((whole / name).read_text()), name
    summary = json.loads((shared / "planning_summary.json").read_text())
    expected = json.loads((whole / "planning_summary.json").read_text())
    assert summary == {k: v for k, v in expected.items() if k not in ("preprocessing_workers", "raw_training_cases")}
    files = sorted(p.relative_to(whole).as_posix() for p in whole.rglob("*") if p.is_file())
    assert sorted(p.relative_to(shared).as_posix() for p in shared.rglob("*") if p.is_file()) == files
    data = [f for f in files if f.startswith("nnUNetPlans_3d_fullres/")]
    assert len(data) == 3 * len(training)  # image, segmentation, properties per case
    for rel in data:
        if rel.endswith(".b2nd"):
            assert np.array_equal(blosc2.open(str(shared / rel))[:], blosc2.open(str(whole / rel))[:]), rel
        elif rel.endswith(".pkl"):
            assert repr(_load(shared / rel)) == repr(_load(whole / rel)), rel
    for case in training:
        reference = f"gt_segmentations/{case}.nii.gz"
        assert (shared / reference).read_bytes() == (whole / reference).read_bytes()


def _load(path: Path) -> object:
    with path.open("rb") as handle:
        return pickle.load(handle)  # nnU-Net's own properties files, written by this test


def test_a_batch_without_training_cases_does_nothing(prepared: Path, tmp_path: Path) -> None:
    """A batch of test and excluded cases fetches no training image: its pods have nothing to do, and say so."""
    raw = tmp_path / "work" / "nnUNet_raw" / DATASET
    raw.mkdir(parents=True)
    shutil.copyfile(prepared / "work" / "nnUNet_raw" / DATASET / "dataset.json", raw / "dataset.json")
    batch = ("RADCURE-test-only", "RADCURE-excluded")
    config = FingerprintConfig(work=tmp_path / "work", fingerprints=tmp_path / "fp", model=TINY, cases=batch)
    assert fingerprint(config).counts["cases"] == 0
    assert not list((tmp_path / "fp").rglob("*.npz"))
