"""Benchmark: writing a label map as RTSTRUCT and DICOM-SEG, tsretrain against TotalSegmentator's own writers, and
``tsretrain infer`` per case end to end on the CPU.

Case: one RADCURE-sized synthetic patient (512 x 512 x 180 CT, bench/convert.py's case), its converted label map
(radcure-oar21: the structures the phantom has) as the mask every writer gets. Each measurement runs in its own
process, modes interleaved; wall time of the write alone (imports, reading the CT headers and the mask not timed).
TotalSegmentator's writers get the mask as they do in TotalSegmentator: on the grid of dcm2niix's NIfTI of the CT
(``pip install dcm2niix``), as nibabel reads it.
Modes:

- ``ts-rtstruct``: ``totalsegmentator.dicom_io.save_mask_as_rtstruct`` (rt-utils; what
  ``TotalSegmentator --output_type dicom_rtstruct`` runs), the baseline;
- ``ours-rtstruct``: ``tsretrain.delivery.rtstruct_writer.write_rtstruct``;
- ``ts-seg``: ``totalsegmentator.dicom_io.save_mask_as_dicomseg`` (highdicom; ``--output_type dicom_seg``);
- ``ours-seg``: ``tsretrain.delivery.seg_writer.write_seg``.

Fidelity (not timed): each RTSTRUCT read back by tsretrain's reader (even-odd rule at pixel centres) onto the CT
grid, Dice per structure against the mask written; the smallest and the mean over structures.

With ``--package ZIP`` (e.g. ``demo-run/export/*.zip``): ``tsretrain infer`` on the case's DICOM with that model,
end to end (discovery, CT, prediction, RTSTRUCT, SEG, NIfTI) on the CPU, wall time per case.

Usage: python bench/dicom_export.py [--out docs/benchmarks.md] [--workdir /tmp/tsretrain-bench-convert]
       [--repeat 3] [--package demo-run/export/X.zip]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import benchlib
import numpy as np

MODES = ("ts-rtstruct", "ours-rtstruct", "ts-seg", "ours-seg")


def prepared(workdir: Path) -> tuple[Path, Path]:
    """The case's DICOM folder and its converted label map."""
    from convert import prepare_case

    from tsretrain.conversion.convert import ConvertConfig, convert

    case = prepare_case(workdir / "case")
    converted = workdir / "export-bench-converted"
    if not (converted / "cases.csv").is_file():
        convert(ConvertConfig(input=case / "dicom", out=converted, workers=2))
    return case / "dicom", next((converted / "cases").glob("*/*[0-9].nii.gz"))


def _inputs(workdir: Path) -> tuple[Any, Any, Path, Any]:
    """The mask on the CT grid, the CT's headers, the CT folder and the plan."""
    import SimpleITK as sitk

    from tsretrain.conversion.geometry import VolumeGeometry
    from tsretrain.conversion.plan import load_inventory
    from tsretrain.conversion.scan import ScanConfig, scan
    from tsretrain.delivery.source import SourceSeries

    dicom, label_path = prepared(workdir)
    scanned = workdir / "export-bench-scan"
    if not (scanned / "inventory.json").is_file():
        scan(ScanConfig(input=dicom, out=scanned, workers=2))
    plan = load_inventory(scanned / "inventory.json")[1][0]
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path)))
    source = SourceSeries.read(dicom, plan.ct_files, VolumeGeometry.from_json(plan.geometry or {}))
    return labels, source, dicom / Path(plan.ct_files[0]).parent, plan


def ts_mask(workdir: Path, ct_folder: Path, labels: Any, source: Any) -> Any:
    """The mask as TotalSegmentator holds it when it writes DICOM: on the grid of dcm2niix's NIfTI of the CT (its
    input), as nibabel reads it. The label map is placed there in patient space (nearest neighbour onto the same
    voxel centres, so nothing is lost)."""
    import nibabel
    import SimpleITK as sitk

    from tsretrain.conversion.nifti import to_image

    folder = workdir / "export-bench-dcm2niix"
    if not (folder / "ct.nii.gz").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        dcm2niix = Path(sys.executable).parent / "dcm2niix"
        subprocess.run(
            [str(dcm2niix), "-z", "y", "-f", "ct", "-o", str(folder), str(ct_folder)], check=True, capture_output=True
        )
    reference = sitk.ReadImage(str(folder / "ct.nii.gz"))
    placed = sitk.Resample(to_image(labels, source.geometry), reference, sitk.Transform(), sitk.sitkNearestNeighbor)
    sitk.WriteImage(placed, str(folder / "mask.nii.gz"))
    return np.asarray(nibabel.load(folder / "mask.nii.gz").dataobj).astype(np.uint8)


def run_mode(mode: str, workdir: Path) -> dict[str, float]:
    """Write the case's mask with one writer; the seconds of the write and the Dice of its read-back."""
    from tsretrain.delivery.source import Algorithm
    from tsretrain.labels.dictionary import load_dictionary

    labels, source, ct_folder, plan = _inputs(workdir)
    dictionary = load_dictionary("radcure-oar21")
    out = workdir / "export-bench-out" / f"{mode}.dcm"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    classes = {label.id: label.name for label in dictionary.labels}
    started = time.perf_counter()
    if mode == "ours-rtstruct":
        from tsretrain.delivery.rtstruct_writer import write_rtstruct

        write_rtstruct(labels, source, dictionary, Algorithm("bench", "1"), out)
    elif mode == "ours-seg":
        from tsretrain.delivery.seg_writer import write_seg

        write_seg(labels, source, dictionary, Algorithm("bench", "1"), out)
    else:
        from totalsegmentator import dicom_io

        volume = ts_mask(workdir, ct_folder, labels, source)
        started = time.perf_counter()
        if mode == "ts-rtstruct":
            dicom_io.save_mask_as_rtstruct(volume, classes, str(ct_folder), out)
        else:
            dicom_io.save_mask_as_dicomseg(volume, classes, str(ct_folder), out, np.eye(4))
    seconds = time.perf_counter() - started
    result = {"seconds": seconds, "bytes": float(out.stat().st_size)}
    if mode.endswith("rtstruct"):
        result.update(_read_back(out, labels, source, dictionary, plan))
    return result


def _read_back(path: Path, labels: Any, source: Any, dictionary: Any, plan: Any) -> dict[str, float]:
    import pydicom

    from tsretrain.conversion.rtstruct import burn_label_map

    ds = pydicom.dcmread(path)
    names = [roi.ROIName for roi in ds.StructureSetROISequence]
    dice = []
    for name in names:
        label = next(lb for lb in dictionary.labels if name in (lb.structure_id, lb.name))
        mask, _ = burn_label_map(
            ds,
            source.geometry,
            {name: label.name},
            {label.name: 1},
            (label.name,),
            {u: k for k, u in enumerate(plan.ct_sop_uids)},
        )
        truth = labels == label.id
        dice.append(2 * float((mask.astype(bool) & truth).sum()) / float(mask.astype(bool).sum() + truth.sum()))
    return {"dice_min": min(dice), "dice_mean": statistics.fmean(dice), "structures": float(len(dice))}


def run_infer(workdir: Path, package: Path) -> dict[str, float]:
    dicom, _ = prepared(workdir)
    out = workdir / "export-bench-infer"
    started = time.perf_counter()
    subprocess.run(
        [
            str(Path(sys.executable).parent / "tsretrain"),
            "infer",
            str(dicom),
            "--model",
            str(package),
            "-o",
            str(out),
            "--device",
            "cpu",
        ],
        check=True,
        capture_output=True,
    )
    return {"seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="Markdown file to update (marked sections).")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tsretrain-bench-convert"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--package", type=Path, default=None, help="A model package for the end-to-end infer time.")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = run_infer(args.workdir, args.package) if args.child == "infer" else run_mode(args.child, args.workdir)
        print(json.dumps(result))
        return
    machine = benchlib.machine_line()
    _inputs(args.workdir)  # the case, once, before any timing
    modes = MODES + (("infer",) if args.package else ())
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    for _ in range(args.repeat):
        for mode in modes:
            command = [sys.executable, __file__, "--child", mode, "--workdir", str(args.workdir)]
            command += ["--package", str(args.package)] if args.package else []
            runs[mode].append(benchlib.measure(command))
            print(mode, runs[mode][-1], flush=True)
    seconds = benchlib.medians(runs, "seconds")
    command = "python " + " ".join(shlex.quote(a) for a in ["bench/dicom_export.py", *sys.argv[1:]])
    lines = [
        "## Writing contours as RTSTRUCT and DICOM-SEG (`bench/dicom_export.py`)",
        "",
        "One RADCURE-sized synthetic case (512 x 512 x 180 CT, 0.98 x 0.98 x 2 mm), its radcure-oar21 label map "
        f"written by each writer; median wall time of the write of {args.repeat} runs, each in its own process, "
        "modes interleaved; read-back Dice: the RTSTRUCT through tsretrain's reader (even-odd rule at pixel "
        f"centres) against the mask written. Machine: {machine}. Command: `{command}`.",
        "",
        "| writer | seconds | vs TotalSegmentator's | file (MB) | peak RSS (MiB) | structures "
        "| read-back Dice min / mean |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {
        "ts-rtstruct": "TotalSegmentator 2.18 RTSTRUCT (rt-utils 1.2.7)",
        "ours-rtstruct": "tsretrain RTSTRUCT",
        "ts-seg": "TotalSegmentator 2.18 DICOM-SEG (highdicom)",
        "ours-seg": "tsretrain DICOM-SEG (highdicom)",
    }
    for mode in MODES:
        baseline = seconds["ts-rtstruct" if mode.endswith("rtstruct") else "ts-seg"]
        run = runs[mode][0]
        dice = f"{run['dice_min']:.4f} / {run['dice_mean']:.4f}" if "dice_min" in run else "–"
        lines.append(
            f"| {names[mode]} | {seconds[mode]:.2f} | {seconds[mode] / baseline:.2f}x | {run['bytes'] / 1e6:.1f} | "
            f"{max(r['peak_rss_mib'] for r in runs[mode]):.0f} | {int(run.get('structures', 0)) or '–'} | {dice} |"
        )
    if args.package:
        peak = max(r["peak_rss_mib"] for r in runs["infer"])
        lines += [
            "",
            f"`tsretrain infer` on the case end to end on the CPU ({args.package.name}): {seconds['infer']:.1f} s, "
            f"{benchlib.medians(runs, 'cpu_seconds')['infer']:.0f} CPU s, peak RSS {peak:.0f} MiB (discovery, CT, "
            "nnU-Net's prediction at the model's spacing and its resampling of every class's logits back to the "
            "CT grid, RTSTRUCT, SEG, NIfTI).",
        ]
    benchlib.update_section(args.out, "bench/dicom_export.py", "\n".join(lines))


if __name__ == "__main__":
    main()
