"""Benchmark: one RADCURE-sized case (512 x 512 x 180, 21+ ROIs), our converter against rt-utils.

Each measurement runs in its own process; peak RSS is that process tree's maximum resident set
(``wait4``), time is wall-clock. Modes:

- ``ours-labels``: read the RTSTRUCT and burn every mapped ROI into one label map (what rt-utils does);
- ``ours-case``:   the whole ``convert`` stage for the case: CT to HU NIfTI + label map NIfTI + manifest;
- ``rt-utils``:    ``RTStructBuilder.create_from`` then ``get_roi_mask_by_name`` for every ROI, merged into
  one label map (rt-utils 1.2.7, the baseline).

Usage: python bench/convert.py [--out docs/benchmarks.md] [--workdir /tmp/tsretrain-bench] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import benchlib
import numpy as np

from tsretrain.synth.layouts import series_folders


def prepare(workdir: Path) -> Path:
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
    return workdir


def run_mode(mode: str, workdir: Path) -> dict[str, float]:
    """Body of one measured process; prints nothing, returns what it measured."""
    from tsretrain.labels.dictionary import load_dictionary

    dictionary = load_dictionary("radcure-oar21")
    ct_dir, rs_path = series_folders(workdir / "dicom" / "RADCURE-0001")
    started = time.perf_counter()
    if mode == "ours-case":
        from tsretrain.conversion.convert import ConvertConfig, convert

        convert(ConvertConfig(input=workdir / "dicom", out=workdir / f"out-{os.getpid()}", workers=1))
        rois = float(len(dictionary.labels))
    elif mode == "ours-labels":
        from tsretrain.conversion.geometry import VolumeGeometry
        from tsretrain.conversion.plan import load_inventory
        from tsretrain.conversion.rtstruct import burn_label_map, read_structure_set
        from tsretrain.conversion.scan import ScanConfig, scan

        scan(ScanConfig(input=workdir / "dicom", out=workdir / f"scan-{os.getpid()}", workers=1))
        _, (plan,) = load_inventory(workdir / f"scan-{os.getpid()}" / "inventory.json")
        ids = {label.name: label.id for label in dictionary.labels}
        labels, _ = burn_label_map(
            read_structure_set(workdir / "dicom" / plan.rtstruct_file),
            VolumeGeometry.from_json(plan.geometry or {}),
            plan.label_of_roi,
            ids,
            dictionary.precedence,
        )
        rois = float(len(plan.label_of_roi))
    else:
        from rt_utils import RTStructBuilder

        rtstruct = RTStructBuilder.create_from(dicom_series_path=str(ct_dir), rt_struct_path=str(rs_path))
        names = [n for n in rtstruct.get_roi_names() if dictionary.map_rois([n]).label_of_roi]
        labels = None
        for name in names:
            mask = rtstruct.get_roi_mask_by_name(name)
            if labels is None:
                labels = np.zeros(mask.shape, dtype=np.uint8)
            labels[mask] = dictionary.by_name(dictionary.map_rois([name]).label_of_roi[name]).id
        rois = float(len(names))
    return {"seconds": time.perf_counter() - started, "rois": rois}


def measure(mode: str, workdir: Path) -> dict[str, float]:
    return benchlib.measure([sys.executable, __file__, "--child", mode, "--workdir", str(workdir)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="Markdown file to update (a marked section).")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tsretrain-bench-convert"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_mode(args.child, args.workdir)))
        return
    prepare(args.workdir)
    rows = {}
    for mode in ("rt-utils", "ours-labels", "ours-case"):
        runs = [measure(mode, args.workdir) for _ in range(args.repeat)]
        rows[mode] = {
            "seconds": statistics.median(r["seconds"] for r in runs),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "rois": runs[0]["rois"],
        }
        print(mode, rows[mode], flush=True)
    base = rows["rt-utils"]["seconds"]
    command = "python " + " ".join(shlex.quote(a) for a in ["bench/convert.py", *sys.argv[1:]])
    lines = [
        "## Conversion of one RADCURE-sized case (`bench/convert.py`)",
        "",
        f"Case: synthetic, 512 x 512 x 180 CT (0.98 x 0.98 x 2 mm), {int(rows['ours-labels']['rois'])} mapped ROIs. "
        f"Median of {args.repeat} runs, each in its own process; peak RSS of that process tree. "
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}.",
        "",
        "| what | time (s) | vs rt-utils | peak RSS (MiB) |",
        "|---|---|---|---|",
    ]
    labels = {
        "rt-utils": "rt-utils 1.2.7: masks of all ROIs into one label map (baseline)",
        "ours-labels": "tsretrain: RTSTRUCT to label map (same work as the baseline)",
        "ours-case": "tsretrain `convert`: scan + CT HU NIfTI + label NIfTI + manifest",
    }
    for mode, row in rows.items():
        ratio = "1.00x (baseline)" if mode == "rt-utils" else f"{base / row['seconds']:.2f}x faster"
        lines.append(f"| {labels[mode]} | {row['seconds']:.2f} | {ratio} | {row['peak_rss_mib']:.0f} |")
    lines += ["", f"Command: `{command}`"]
    section = "\n".join(lines)
    benchlib.update_section(args.out, "bench/convert.py", section)


if __name__ == "__main__":
    main()
