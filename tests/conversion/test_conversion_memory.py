"""A RADCURE-sized case (512 x 512 x 180) converts with no process of the conversion above 0.5 GiB."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
from support import manifest

from tsretrain.run_files import read_csv as read_listing
from tsretrain.synth.cohort import SynthConfig, generate

HALF_A_GIB_IN_KIB = 512 * 1024
# Runs a command and prints the peak RSS (KiB) of its process tree. Linux carries a process's peak across exec,
# so a command started straight from this (large) test process would report the test process's own peak.
PEAK_OF_CHILDREN = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


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
        measured = subprocess.run(
            [sys.executable, "-c", PEAK_OF_CHILDREN, *command, "--out", str(out), "-j", "1"],
            stdout=subprocess.PIPE,
            stderr=log,
        )
    assert measured.returncode == 0, (tmp_path / "convert.log").read_text()
    peak_kib = int(measured.stdout.split()[-1])
    [row] = read_listing(out / "cases.csv")
    assert row["status"] == "ok"
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(out / "cases" / row["case_id"] / f"{row['case_id']}.nii.gz"))
    reader.ReadImageInformation()
    assert reader.GetSize() == (512, 512, 180)
    labels = manifest(out, row["case_id"])["labels"].values()
    assert sum(label["present"] for label in labels) == 21
    assert peak_kib < HALF_A_GIB_IN_KIB, f"peak {peak_kib / 1024:.0f} MiB"
