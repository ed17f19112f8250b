"""Benchmark: what one case costs each nnU-Net step of a cluster run, per voxel, for the scan's sizing of the pods
(``tsretrain.sizing``): nnU-Net 2.8.1's own per-case functions on a synthetic CT and label map, each in a fresh
process, at two grid sizes so that the per-voxel cost is the slope (imports and fixed costs are the intercept).

- ``fingerprint``: ``DatasetFingerprintExtractor.analyze_case`` (a ``fingerprint`` pod, per case).
- ``preprocess``: ``DefaultPreprocessor.run_case`` to a 3d_fullres spacing the case does not have (2.0 x 0.98 x 0.98
  mm to 2.5 x 1.0 x 1.0 mm: image and segmentation resampled; a ``preprocess-cases`` pod, per case).
- ``export``: ``export_prediction_from_logits`` of half-precision logits at the network's spacing back to the case's
  grid (``validate``, ``predict``: nnU-Net's export processes, per case).

Each for 22 classes (radcure-oar21 and background) and 91 (radcure-ts90). CPU time is the process's user + system
time; peak memory its maximum resident set. Usage: ``python bench/case_costs.py [--out docs/benchmarks.md]``
(about 10 minutes on one CPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib

STEPS = ("fingerprint", "preprocess", "export")
CLASSES = (22, 91)
GRIDS = ((45, 256, 256), (90, 256, 256))  # z, y, x: the slope between them is the per-voxel cost
SPACING = (2.0, 0.98, 0.98)  # z, y, x (mm), RADCURE's usual CT
TARGET = (2.5, 1.0, 1.0)


def write_case(folder: Path, shape: tuple[int, int, int], classes: int) -> tuple[Path, Path]:
    """A CT (int16 HU, noise over a water cylinder) and a label map with ``classes - 1`` box-shaped organs."""
    import numpy as np
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    z, y, x = shape
    yy, xx = np.mgrid[:y, :x]
    body = (yy - y / 2) ** 2 + (xx - x / 2) ** 2 < (0.45 * min(y, x)) ** 2
    ct = np.where(body, 40, -1000)[None].repeat(z, 0) + rng.normal(0, 20, shape)
    labels = np.zeros(shape, np.uint8)
    for label in range(1, classes):
        size = rng.integers(4, 24, 3) * np.array([1, 2, 2])
        start = [int(rng.integers(0, s - w)) for s, w in zip(shape, size, strict=True)]
        labels[tuple(slice(a, a + w) for a, w in zip(start, size, strict=True))] = label
    paths = []
    for name, array in (("case_0000.nii.gz", ct.astype(np.int16)), ("case.nii.gz", labels)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(SPACING[::-1])
        paths.append(folder / name)
        sitk.WriteImage(image, str(paths[-1]))
    return paths[0], paths[1]


def plans(classes: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """nnU-Net plans with one 3d_fullres configuration at ``TARGET`` (its default resampling) and a dataset.json."""
    linear = {"order_z": 0, "force_separate_z": None}
    configuration = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": [64, 128, 128],
        "spacing": list(TARGET),
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, **linear},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, **linear},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, **linear},
        "batch_dice": True,
        "architecture": {"network_class_name": "unused", "arch_kwargs": {}, "_kw_requires_import": []},  # no network
    }
    intensities = {"max": 3000.0, "mean": 40.0, "median": 40.0, "min": -1000.0, "percentile_00_5": -1000.0}
    intensities |= {"percentile_99_5": 1500.0, "std": 20.0}
    plan = {
        "dataset_name": "Dataset999_Costs",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(SPACING),
        "original_median_shape_after_transp": list(GRIDS[-1]),
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": configuration},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": intensities},
    }
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{f"organ{n}": n for n in range(1, classes)}},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    return plan, dataset


def run_one(step: str, classes: int, shape: tuple[int, int, int]) -> dict[str, float]:
    """One step on one case in this process: its CPU seconds (case written beforehand, imports not counted)."""
    import numpy as np
    import torch
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.export_prediction import export_prediction_from_logits
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        ct, seg = write_case(Path(tmp), shape, classes)
        plan, dataset = plans(classes)
        manager = PlansManager(plan)
        configuration = manager.get_configuration("3d_fullres")
        started = resource.getrusage(resource.RUSAGE_SELF)
        if step == "fingerprint":
            DatasetFingerprintExtractor.analyze_case([str(ct)], str(seg), SimpleITKIO)
        elif step == "preprocess":
            DefaultPreprocessor(verbose=False).run_case([str(ct)], str(seg), manager, configuration, dataset)
        else:
            data, _, properties = DefaultPreprocessor(verbose=False).run_case(
                [str(ct)], None, manager, configuration, dataset
            )
            started = resource.getrusage(resource.RUSAGE_SELF)
            logits = torch.from_numpy(np.random.default_rng(0).random((classes, *data.shape[1:]), np.float32)).half()
            export_prediction_from_logits(logits, properties, configuration, manager, dataset, str(Path(tmp) / "p"))
        ended = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ended.ru_utime + ended.ru_stime - started.ru_utime - started.ru_stime
    return {"cpu_seconds": cpu}


def measure_all() -> list[dict[str, Any]]:
    rows = []
    for step in STEPS:
        for classes in CLASSES:
            points = []
            for shape in GRIDS:
                command = [sys.executable, __file__, "--one", step, "--classes", str(classes)]
                command += ["--shape", ",".join(map(str, shape))]
                result = benchlib.measure(command)
                voxels = shape[0] * shape[1] * shape[2]
                points.append((voxels, result["cpu_seconds"], result["peak_rss_mib"] * 2**20))
                print(step, classes, shape, result, flush=True)
            (v1, cpu1, mem1), (v2, cpu2, mem2) = points
            rows.append(
                {
                    "step": step,
                    "classes": classes,
                    "cpu_ns_per_voxel": (cpu2 - cpu1) / (v2 - v1) * 1e9,
                    "bytes_per_voxel": (mem2 - mem1) / (v2 - v1),
                    "fixed_mib": (mem1 - (mem2 - mem1) / (v2 - v1) * v1) / 2**20,
                    "points": points,
                }
            )
    return rows


def section(rows: list[dict[str, Any]], seconds: float) -> str:
    lines = [
        "## What a case costs the nnU-Net steps, per voxel (`bench/case_costs.py`)",
        "",
        f"`python bench/case_costs.py --out docs/benchmarks.md` ({benchlib.machine_line()}; {seconds / 60:.0f} min). "
        "nnU-Net 2.8.1's own per-case functions on a synthetic CT of "
        f"{' and '.join('x'.join(map(str, g)) for g in GRIDS)} voxels (z, y, x; {SPACING} mm) and a label map of "
        "box-shaped organs, each run in a fresh process; per voxel = the slope between the two grids (imports and "
        "fixed costs are the intercept). Preprocessing resamples to 2.5 x 1.0 x 1.0 mm; the export takes "
        "half-precision logits at that spacing back to the case's grid. `tsretrain.sizing` sizes the pods from "
        "these figures (`tests/cluster/test_scale.py` checks that they agree).",
        "",
        "| step | classes | CPU ns per voxel | peak bytes per voxel | fixed (MiB) | "
        "RADCURE case (47.4 M voxels): CPU s, GiB |",
        "|---|---|---|---|---|---|",
    ]
    radcure = 512 * 512 * 181
    for row in rows:
        cpu, memory = row["cpu_ns_per_voxel"] * radcure / 1e9, row["bytes_per_voxel"] * radcure / 2**30
        lines.append(
            f"| {row['step']} | {row['classes']} | {row['cpu_ns_per_voxel']:.0f} | {row['bytes_per_voxel']:.1f} | "
            f"{row['fixed_mib']:.0f} | {cpu:.0f} s, {memory:.1f} GiB |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", choices=STEPS)
    parser.add_argument("--classes", type=int)
    parser.add_argument("--shape")
    args = parser.parse_args()
    if args.one:
        shape = tuple(int(n) for n in args.shape.split(","))
        print(json.dumps(run_one(args.one, args.classes, (shape[0], shape[1], shape[2]))))
        return
    started = time.perf_counter()
    rows = measure_all()
    benchlib.update_section(args.out, "bench/case_costs.py", section(rows, time.perf_counter() - started))


if __name__ == "__main__":
    main()
