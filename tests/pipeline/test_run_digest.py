"""``bench/run_digest.py``, the check that a change left a run's outputs as they were: two runs that differ only in
when and where they ran digest alike, a changed value does not."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digest() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_digest", ROOT / "bench" / "run_digest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _dicom(path: Path, value: str) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # a new one every export
    ds.StructureSetDate = "20261207"
    ds.StructureSetLabel = value
    ds.save_as(path, enforce_file_format=True)


def _run(folder: Path, seconds: float, mtime: int, label: str = "contours", loss: float = 0.5) -> Path:
    (folder / "scan").mkdir(parents=True)
    (folder / "evaluation").mkdir()
    (folder / "inference").mkdir()
    (folder / "scan" / "inventory.json").write_text(
        json.dumps({"input": str(folder / "cohort"), "cases": [{"file_stats": [["a.dcm", 10, mtime]]}]})
    )
    (folder / "evaluation" / "summary.json").write_text(json.dumps({"seconds": seconds, "dice": loss}))
    (folder / "evaluation" / "per_case.csv").write_text(f"case,dice,seconds\nA,{loss},{seconds}\n")
    _dicom(folder / "inference" / "rtstruct.dcm", label)
    (folder / "run.log").write_text(f"took {seconds} s\n")
    return folder


def test_runs_apart_in_time_and_place_digest_alike(digest: ModuleType, tmp_path: Path) -> None:
    first = digest.run_digest(_run(tmp_path / "a", 1.5, 111))
    second = digest.run_digest(_run(tmp_path / "b", 2.5, 222))
    outputs = ("scan/inventory.json", "evaluation/summary.json", "evaluation/per_case.csv", "inference/rtstruct.dcm")
    assert set(first) == set(outputs)  # the log left out
    assert digest.differences(first, second) == []


@pytest.mark.parametrize("changed", ["label", "loss", "file"])
def test_a_changed_output_is_found(digest: ModuleType, tmp_path: Path, changed: str) -> None:
    first = digest.run_digest(_run(tmp_path / "a", 1.5, 111))
    run = _run(tmp_path / "b", 1.5, 111, **({"label": "other"} if changed == "label" else {}))
    if changed == "loss":
        (run / "evaluation" / "summary.json").write_text(json.dumps({"seconds": 1.5, "dice": 0.6}))
    if changed == "file":
        shutil.copy(run / "evaluation" / "summary.json", run / "evaluation" / "extra.json")
    found = digest.differences(digest.run_digest(run), first)
    expected = {
        "label": ["differs: inference/rtstruct.dcm"],
        "loss": ["differs: evaluation/summary.json"],
        "file": ["only here: evaluation/extra.json"],
    }
    assert found == expected[changed]


def test_preprocessed_arrays_compare_by_value(digest: ModuleType, tmp_path: Path) -> None:
    import blosc2

    values = np.arange(1000, dtype=np.int16).reshape(10, 10, 10)
    for name, codec in (("a", blosc2.Codec.ZSTD), ("b", blosc2.Codec.LZ4)):
        blosc2.asarray(values, urlpath=str(tmp_path / f"{name}.b2nd"), mode="w", cparams={"codec": codec})
    assert (tmp_path / "a.b2nd").read_bytes() != (tmp_path / "b.b2nd").read_bytes()
    assert digest.file_digest(tmp_path / "a.b2nd", tmp_path) == digest.file_digest(tmp_path / "b.b2nd", tmp_path)
