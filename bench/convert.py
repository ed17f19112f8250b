"""Benchmark: conversion against dcm2niix and plastimatch, and the scan of a 5,000-file tree against main.

Conversion case: one RADCURE-sized synthetic patient (512 x 512 x 180 CT, 21+ ROIs) with scanner noise
(20 HU on every pixel, air included) added to the CT files.
Each measurement runs in its own process, modes interleaved (run 1 of every mode, then run 2 ...), so that
load from other users of the machine hits all modes alike; time is wall-clock, peak RSS is the process
tree's maximum resident set (``wait4``). Modes:

- ``dcm2niix``:    ``dcm2niix -z y`` on the CT folder (baseline of the CT path);
- ``ours-ct``:     tsretrain's CT path: scan of the case's headers, HU volume, gzip-compressed NIfTI;
- ``plastimatch``: ``plastimatch convert --xor-contours --output-labelmap`` (baseline of the RTSTRUCT path);
- ``ours-labels``: tsretrain's RTSTRUCT path: scan of the case's headers, every mapped ROI into one label
  map, label NIfTI;
- ``ours-case``:   the whole ``convert`` stage for the case (scan, CT, labels, manifest, listing).

Fidelity (not timed): plastimatch's per-ROI masks (``--output-prefix``, ``--xor-contours``) against ours,
voxel by voxel.

Scan: a 5,000-file tree (50 patients x 99 slices + RTSTRUCT), ``scan`` with 2 workers, this checkout
against ``--baseline-src`` (the ``src`` folder of another checkout, e.g. ``git worktree add /tmp/base main``);
files per second, the Python heap per file (``tracemalloc`` peak of the whole scan / files) and per file added
(the peak's growth from a fifth of the tree to all of it).

Needs ``pip install dcm2niix`` and plastimatch (``apt-get install plastimatch``) on PATH.
Usage: python bench/convert.py [--out docs/benchmarks.md] [--workdir /tmp/tsretrain-bench] [--repeat 3]
       [--baseline-src /tmp/base/src] [--scan-only]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib
import numpy as np

from tsretrain.synth.layouts import series_folders

CASE_MODES = ("dcm2niix", "ours-ct", "plastimatch", "ours-labels", "ours-case")
SCAN_MODES = ("scan-baseline", "scan-ours")


def prepare_case(workdir: Path) -> Path:
    from tsretrain.synth.cohort import SynthConfig, generate

    if not (workdir / "cohort.json").is_file():
        generate(
            SynthConfig(
                out=workdir,
                cases=1,
                seed=29,
                layout="classic",
                rows=512,
                columns=512,
                slices=180,
                pixel_spacing=0.98,
                slice_thickness=2.0,
                roi_variants=False,
            )
        )
        add_scanner_noise(workdir / "dicom")
    return workdir


def add_scanner_noise(dicom: Path, sigma_hu: float = 20.0) -> None:
    """Gaussian noise on every pixel, air included, as real scans have (the phantom is noisy only inside the body).

    Noise decides how well a CT compresses, hence how long writing .nii.gz takes.
    """
    import pydicom

    rng = np.random.default_rng(1)
    for path in sorted(dicom.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        if ds.Modality != "CT":
            continue
        pixels = ds.pixel_array.astype(np.float64) + rng.normal(0.0, sigma_hu, size=(ds.Rows, ds.Columns))
        ds.PixelData = (
            np.clip(np.rint(pixels), 0, 65535 if ds.PixelRepresentation == 0 else 32767)
            .astype(ds.pixel_array.dtype)
            .tobytes()
        )
        ds.save_as(path)


def prepare_tree(workdir: Path) -> Path:
    from tsretrain.synth.cohort import SynthConfig, generate

    if not (workdir / "cohort.json").is_file():
        generate(SynthConfig(out=workdir, cases=50, seed=5, rows=32, columns=32, slices=99, pixel_spacing=8.0))
    return workdir / "dicom"


def _case_plan(dicom: Path, scratch: Path):  # type: ignore[no-untyped-def]
    from tsretrain.conversion.plan import load_inventory
    from tsretrain.conversion.scan import ScanConfig, scan

    scan(ScanConfig(input=dicom, out=scratch / "scan", workers=1))
    _, (plan,) = load_inventory(scratch / "scan" / "inventory.json")
    return plan


def cpu_since(cpu_started: float, children_started: Any) -> float:
    """CPU seconds (user + system) of this process and its finished children since the given readings."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = sum(getattr(children, f) - getattr(children_started, f) for f in ("ru_utime", "ru_stime"))
    return time.process_time() - cpu_started + spent


def run_mode(mode: str, workdir: Path) -> dict[str, float]:
    """Body of one measured process; prints nothing, returns its wall and CPU seconds (helpers included)."""
    import resource

    from tsretrain.conversion.convert import ConvertConfig, convert
    from tsretrain.conversion.ct import read_hu_volume
    from tsretrain.conversion.geometry import VolumeGeometry
    from tsretrain.conversion.nifti import write_nifti
    from tsretrain.conversion.rtstruct import burn_label_map, read_structure_set
    from tsretrain.labels.dictionary import load_dictionary

    dictionary = load_dictionary("radcure-oar21")
    dicom = workdir / "dicom"
    ct_dir, rs_path = series_folders(dicom / "RADCURE-0001")
    scratch = Path(tempfile.mkdtemp(dir=workdir))
    started, cpu_started = time.perf_counter(), time.process_time()
    children_started = resource.getrusage(resource.RUSAGE_CHILDREN)
    if mode == "dcm2niix":
        command = ["dcm2niix", "-z", "y", "-f", "ct", "-o", str(scratch), str(ct_dir)]
        subprocess.run(command, check=True, capture_output=True)
    elif mode == "plastimatch":
        command = ["plastimatch", "convert", "--input", str(rs_path), "--referenced-ct", str(ct_dir)]
        command += ["--xor-contours", "--output-labelmap", str(scratch / "labels.nii.gz")]
        subprocess.run(command, check=True, capture_output=True)
    elif mode == "ours-ct":
        plan = _case_plan(dicom, scratch)
        geometry = VolumeGeometry.from_json(plan.geometry or {})
        volume = read_hu_volume(dicom, plan.ct_files, plan.ct_sop_uids, geometry)
        write_nifti(volume, geometry, scratch / "ct.nii.gz")
    elif mode == "ours-labels":
        plan = _case_plan(dicom, scratch)
        geometry = VolumeGeometry.from_json(plan.geometry or {})
        ids = {label.name: label.id for label in dictionary.labels}
        labels, _ = burn_label_map(
            read_structure_set(dicom / plan.rtstruct_file), geometry, plan.label_of_roi, ids, dictionary.precedence
        )
        write_nifti(labels, geometry, scratch / "labels.nii.gz")
    elif mode == "ours-case":
        convert(ConvertConfig(input=dicom, out=scratch / "out", workers=1))
    else:
        raise ValueError(mode)
    seconds = time.perf_counter() - started
    cpu = cpu_since(cpu_started, children_started)
    shutil.rmtree(scratch, ignore_errors=True)
    return {"seconds": seconds, "cpu_seconds": cpu}


def run_scan(tree: Path) -> dict[str, float]:
    """Scan the tree in this process: once timed, then under tracemalloc the first fifth of its patients and the
    whole tree (heap per file, and per file added: what grows with the tree)."""
    import resource
    import tracemalloc

    from tsretrain.conversion.scan import ScanConfig, scan

    with tempfile.TemporaryDirectory() as scratch:
        started, cpu_started = time.perf_counter(), time.process_time()
        children_started = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = scan(ScanConfig(input=tree, out=Path(scratch) / "a", workers=2))
        seconds = time.perf_counter() - started
        cpu = cpu_since(cpu_started, children_started)
        fifth = Path(scratch) / "fifth"
        patients = sorted(p for p in tree.iterdir() if p.is_dir())
        fifth.mkdir()
        for patient in patients[: len(patients) // 5]:
            (fifth / patient.name).symlink_to(patient)
        peaks, files = [], []
        for root in (fifth, tree):
            tracemalloc.start()
            files.append(scan(ScanConfig(input=root, out=Path(scratch) / root.name, workers=2)).counts["files"])
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "files": float(result.counts["files"]),
        "heap_kib_per_file": peaks[1] / 1024 / files[1],
        "heap_kib_per_added_file": (peaks[1] - peaks[0]) / 1024 / (files[1] - files[0]),
    }


def fidelity(workdir: Path) -> tuple[int, int]:
    """(identical ROIs, compared ROIs): plastimatch's per-ROI masks (XOR) against ours."""
    import SimpleITK as sitk

    from tsretrain.conversion.geometry import VolumeGeometry
    from tsretrain.conversion.rtstruct import read_structure_set, roi_contours, slice_masks
    from tsretrain.labels.dictionary import load_dictionary

    dicom = workdir / "dicom"
    ct_dir, rs_path = series_folders(dicom / "RADCURE-0001")
    scratch = Path(tempfile.mkdtemp(dir=workdir))
    command = ["plastimatch", "convert", "--input", str(rs_path), "--referenced-ct", str(ct_dir)]
    command += ["--xor-contours", "--output-prefix", str(scratch / "rois"), "--prefix-format", "nii.gz"]
    subprocess.run(command, check=True, capture_output=True)
    plan = _case_plan(dicom, scratch)
    geometry = VolumeGeometry.from_json(plan.geometry or {})
    names = [n for n in plan.label_of_roi if load_dictionary("radcure-oar21").map_rois([n]).label_of_roi]
    contours = roi_contours(read_structure_set(dicom / plan.rtstruct_file), geometry, set(names))
    same = 0
    for name in names:
        theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(scratch / "rois" / f"{name}.nii.gz"))) > 0
        ours = np.zeros(geometry.shape, dtype=bool)
        for k, mask in slice_masks(contours[name], geometry.shape[1], geometry.shape[2]):
            ours[k] = mask
        same += int(np.array_equal(ours, theirs))
    shutil.rmtree(scratch, ignore_errors=True)
    return same, len(names)


def measure(mode: str, workdir: Path, baseline_src: Path | None) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", mode, "--workdir", str(workdir)]
    env = None
    if mode == "scan-baseline" and baseline_src is not None:
        env = {**os.environ, "PYTHONPATH": str(baseline_src)}
    return benchlib.measure(command, env=env)


def case_section(rows: dict[str, dict[str, float]], repeat: int, machine: str, command: str, case_dir: Path) -> str:
    """The Markdown section of the one-case comparison (and the fidelity check against plastimatch)."""
    same, compared = fidelity(case_dir)
    labels = {
        "dcm2niix": "dcm2niix `-z y`: CT to .nii.gz (baseline of the CT path)",
        "ours-ct": "tsretrain CT path: header scan, HU volume, .nii.gz",
        "plastimatch": "plastimatch `convert --xor-contours --output-labelmap` (baseline of the RTSTRUCT path)",
        "ours-labels": "tsretrain RTSTRUCT path: header scan, all mapped ROIs into one label map, .nii.gz",
        "ours-case": "tsretrain `convert` of the case: scan, CT, label map, manifest, listing",
    }
    baseline_of = {"ours-ct": "dcm2niix", "ours-labels": "plastimatch", "ours-case": "dcm2niix"}
    lines = [
        "## Conversion of one RADCURE-sized case (`bench/convert.py`)",
        "",
        "Case: synthetic, 512 x 512 x 180 CT (0.98 x 0.98 x 2 mm) with 20 HU noise on every pixel, 21 mapped ROIs. "
        f"Median of {repeat} runs, each in its own process, all modes interleaved in one command; CPU time = "
        "user + system of the process and its children (robust to the machine's load, unlike wall time); imports "
        f"are not timed; peak RSS of the process tree. Machine: {machine}.",
        "",
        "| what | wall time (s) | vs baseline | CPU time (s) | vs baseline | peak RSS (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for mode in CASE_MODES:
        row = rows[mode]
        base = baseline_of.get(mode)
        wall = "baseline" if base is None else f"{row['seconds'] / rows[base]['seconds']:.2f}x {base}"
        cpu = "baseline" if base is None else f"{row['cpu_seconds'] / rows[base]['cpu_seconds']:.2f}x {base}"
        lines.append(
            f"| {labels[mode]} | {row['seconds']:.2f} | {wall} | {row['cpu_seconds']:.2f} | {cpu} "
            f"| {row['peak_rss_mib']:.0f} |"
        )
    lines += [
        "",
        f"Fidelity: {same} of {compared} ROI masks voxel-identical to plastimatch's (`--xor-contours`).",
        "",
        f"Command: `{command}`",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="Markdown file to update (marked sections).")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tsretrain-bench-convert"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-src", type=Path, default=None, help="src/ of the checkout to compare the scan to")
    parser.add_argument("--scan-only", action="store_true", help="Only the scan comparison (needs --baseline-src).")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    case_dir, tree_dir = args.workdir / "case", args.workdir / "tree"
    if args.child:
        if args.child.startswith("scan-"):
            print(json.dumps(run_scan(prepare_tree(tree_dir))))
        else:
            print(json.dumps(run_mode(args.child, case_dir)))
        return
    if args.scan_only and args.baseline_src is None:
        parser.error("--scan-only compares with --baseline-src")
    machine = benchlib.machine_line()
    if not args.scan_only:
        prepare_case(case_dir)
    prepare_tree(tree_dir)
    modes = () if args.scan_only else CASE_MODES
    modes += SCAN_MODES if args.baseline_src else SCAN_MODES[1:]
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    for _ in range(args.repeat):  # interleaved: every mode once per round
        for mode in modes:
            runs[mode].append(measure(mode, args.workdir, args.baseline_src))
            print(mode, runs[mode][-1], flush=True)
    rows = {
        m: {
            "seconds": statistics.median(r["seconds"] for r in rs),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
            **{
                k: statistics.median(r[k] for r in rs)
                for k in ("files", "heap_kib_per_file", "heap_kib_per_added_file", "cpu_seconds")
                if k in rs[0]
            },
        }
        for m, rs in runs.items()
    }
    command = "python " + " ".join(shlex.quote(a) for a in ["bench/convert.py", *sys.argv[1:]])
    if not args.scan_only:
        benchlib.update_section(
            args.out, "bench/convert.py", case_section(rows, args.repeat, machine, command, case_dir)
        )
    scan_lines = [
        "## Scan of a 5,000-file tree (`bench/convert.py`)",
        "",
        f"50 patients x (99 CT slices + RTSTRUCT), `scan` with 2 workers; median of {args.repeat} runs, baseline and "
        "this checkout interleaved in one command. CPU time: user + system of the scan and its workers (imports not "
        "timed). Heap per file: `tracemalloc` peak of the main process over a second scan, divided by the file "
        "count; per added file: the peak's growth from a scan of the first 10 patients to the whole tree, divided by "
        "the files added (what grows with the tree; a chunk of records being read is the floor either way). "
        f"Machine: {machine}.",
        "",
        "| code | files/s (wall) | CPU ms per file | heap per file (KiB) | heap per added file (KiB) "
        "| peak RSS (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    names = {"scan-baseline": f"baseline (`{args.baseline_src}`)", "scan-ours": "this checkout"}
    for mode in modes:
        if mode in SCAN_MODES:
            row = rows[mode]
            scan_lines.append(
                f"| {names[mode]} | {row['files'] / row['seconds']:.0f} "
                f"| {1000 * row['cpu_seconds'] / row['files']:.2f} "
                f"| {row['heap_kib_per_file']:.2f} "
                f"| {row['heap_kib_per_added_file']:.2f} "
                f"| {row['peak_rss_mib']:.0f} |"
            )
    scan_lines += ["", f"Command: `{command}`"]
    benchlib.update_section(args.out, "bench/convert.py scan", "\n".join(scan_lines))


if __name__ == "__main__":
    main()
