"""A RADCURE-sized case (512 x 512 x 180) converts with no process of the conversion above 0.5 GiB."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
from support import manifest

from tsretrain.conversion.listing import read_listing
from tsretrain.synth.cohort import SynthConfig, generate

HALF_A_GIB_IN_KIB = 512 * 1024


@pytest.mark.slow
def test_a_radcure_sized_case_converts_in_under_half_a_gib(tmp_path: Path) -> None:
    """The peak resident memory of the largest process of ``tsretrain convert`` (the case's worker) stays under
    0.5 GiB: one int16 CT (90 MiB) and one uint8 label map (45 MiB), never one mask per ROI (21 x 45 MiB)."""
    generate(
        SynthConfig(
            out=tmp_path / "cohort",
            cases=1,
            seed=29,
            rows=512,
            columns=512,
            slices=180,
            pixel_spacing=0.98,
            slice_thickness=2.0,
        )
    )
    out = tmp_path / "out"
    command = [sys.executable, "-m", "tsretrain.cli", "convert", str(tmp_path / "cohort" / "dicom")]
    with (tmp_path / "convert.log").open("wb") as log:
        child = subprocess.Popen([*command, "--out", str(out), "-j", "1"], stdout=log, stderr=log)
        _, status, usage = os.wait4(child.pid, 0)  # usage: the child and its (waited-for) workers
    assert os.waitstatus_to_exitcode(status) == 0, (tmp_path / "convert.log").read_text()
    [row] = read_listing(out / "cases.csv")
    assert row["status"] == "ok"
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(out / "cases" / row["case_id"] / f"{row['case_id']}.nii.gz"))
    reader.ReadImageInformation()
    assert reader.GetSize() == (512, 512, 180)
    labels = manifest(out, row["case_id"])["labels"].values()
    assert sum(label["present"] for label in labels) == 21
    assert usage.ru_maxrss < HALF_A_GIB_IN_KIB, f"peak {usage.ru_maxrss / 1024:.0f} MiB"
