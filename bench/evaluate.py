"""Benchmark: evaluation of 74 cases x 90 labels of RADCURE-like size, ours against nnU-Net's.

Baseline: ``nnunetv2.evaluation.evaluate_predictions.compute_metrics_on_folder`` (Dice/IoU, one mask
comparison per label). Ours is measured twice: Dice only (the same metrics as the baseline) and with the
surface metrics (HD95, NSD) as well. All three run in one command, one after the other, with the same number
of worker processes on the same files; peak RSS is each run's process tree maximum (``wait4``), and the load
average before and after each run is recorded (other work on the machine distorts wall-clock times).
``--profile`` adds a profile of one case (Dice + HD95 + NSD, all labels): the functions taking most time.

Usage: python bench/evaluate.py [--cases 74] [--labels 90] [--shape 180 512 512] [--workers 2] [--profile]
                                [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import shlex
import sys
import time
from pathlib import Path

import benchlib
import numpy as np

NOTES = (
    "Notes: the Dice-only run computes what the baseline computes and agrees with it to 1e-6 "
    "(`tests/evaluation/test_evaluation.py`). Every label is worked on inside its bounding box (all boxes from one "
    "`scipy.ndimage.find_objects` pass per label map); the full run adds per label HD95 (two distance transforms "
    "over boundary voxels) and the area-weighted NSD (two over the voxel-corner grid). Memory stays at one case "
    "per worker. CPU time is the process tree's user + system time: on a machine shared with other work it is the "
    "steadier comparison."
)


def make_case(shape: tuple[int, int, int], labels: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A label map of ``labels`` ellipsoids and a prediction that shifts and erodes some of them."""
    reference = np.zeros(shape, np.uint8)
    prediction = np.zeros(shape, np.uint8)
    for label in range(1, labels + 1):
        radii = rng.uniform(3, 25, 3) / np.array([2.0, 1.0, 1.0])
        centre = rng.uniform(radii + 1, np.array(shape) - radii - 1)
        box = tuple(
            slice(max(0, int(c - r - 4)), min(n, int(c + r + 5))) for c, r, n in zip(centre, radii, shape, strict=True)
        )
        grid = np.indices([s.stop - s.start for s in box]).astype(np.float32)
        offset = [s.start for s in box]
        inside = sum(((grid[a] + offset[a] - centre[a]) / radii[a]) ** 2 for a in range(3)) <= 1
        reference[box][inside] = label
        if rng.random() < 0.9:  # 10 % of labels missed
            shift = rng.integers(-2, 3, 3)
            prediction[box][np.roll(inside, tuple(shift), axis=(0, 1, 2))] = label
    return reference, prediction


def prepare(folder: Path, cases: int, labels: int, shape: tuple[int, int, int]) -> None:
    import SimpleITK as sitk

    marker = folder / "done.json"
    wanted = {"cases": cases, "labels": labels, "shape": list(shape)}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return
    rng = np.random.default_rng(0)
    for sub in ("ref", "pred"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.SetUseCompression(True)
    writer.SetCompressionLevel(1)
    for n in range(cases):
        for sub, array in zip(("ref", "pred"), make_case(shape, labels, rng), strict=True):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing((0.98, 0.98, 2.0))
            writer.SetFileName(str(folder / sub / f"case_{n:03d}.nii.gz"))
            writer.Execute(image)
    marker.write_text(json.dumps(wanted))


def child(mode: str, folder: Path, labels: int, workers: int) -> None:
    started = time.perf_counter()
    if mode == "nnunet":
        from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
        from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

        compute_metrics_on_folder(
            str(folder / "ref"),
            str(folder / "pred"),
            str(folder / "nnunet.json"),
            SimpleITKIO(),
            ".nii.gz",
            list(range(1, labels + 1)),
            num_processes=workers,
        )
    else:
        from tsretrain.evaluation.evaluate import EvaluateConfig, evaluate

        dictionary = folder / "dictionary.yaml"
        dictionary.write_text(
            "name: bench\nversion: '1'\nlabels:\n"
            + "".join(f"  - {{id: {i}, name: L{i}, sources: [rtstruct: [l{i}]]}}\n" for i in range(1, labels + 1))
        )
        evaluate(
            EvaluateConfig(
                reference=folder / "ref",
                prediction=folder / "pred",
                out=folder / f"out-{mode}",
                dictionary=str(dictionary),
                workers=workers,
                surface=(mode == "ours-full"),
            )
        )
    print(json.dumps({"seconds": time.perf_counter() - started}))


def measure(mode: str, args: argparse.Namespace) -> dict[str, float]:
    load_before = os.getloadavg()[0]
    result = benchlib.measure(
        [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--workdir",
            str(args.workdir),
            "--labels",
            str(args.labels),
            "--workers",
            str(args.workers),
        ]
    )
    return {**result, "load_before": load_before, "load_after": os.getloadavg()[0]}


def profile_one_case(folder: Path, labels: int, top: int = 6) -> list[str]:
    """Table rows: the functions with the most own time when one case is evaluated (Dice, HD95, NSD)."""
    from tsretrain.evaluation.evaluate import CaseJob, evaluate_case

    job = CaseJob(
        "case_000",
        folder / "ref" / "case_000.nii.gz",
        folder / "pred" / "case_000.nii.gz",
        list(range(1, labels + 1)),
        {},
        True,
        False,
    )
    profiler = cProfile.Profile()
    profiler.runcall(evaluate_case, job)
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    entries = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:top]  # type: ignore[attr-defined]
    rows = [
        f"| `{func[2]}`{'' if func[0] == '~' else f' ({Path(func[0]).name})'} | {own:.2f} | {100 * own / total:.0f} % |"
        for func, (_, _, own, _, _) in entries
    ]
    return [
        f"Profile of one case ({labels} labels, Dice + HD95 + NSD, {total:.2f} s in all):",
        "",
        "| function | own time (s) | share |",
        "|---|---|---|",
        *rows,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=74)
    parser.add_argument("--labels", type=int, default=90)
    parser.add_argument("--shape", type=int, nargs=3, default=[180, 512, 512])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tsretrain-bench-evaluate"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--profile", action="store_true", help="Add a profile of one case.")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workdir, args.labels, args.workers)
        return
    prepare(args.workdir, args.cases, args.labels, tuple(args.shape))
    rows = {mode: measure(mode, args) for mode in ("nnunet", "ours-dice", "ours-full")}
    for mode, row in rows.items():
        print(mode, row, flush=True)
    base, base_cpu = rows["nnunet"]["seconds"], rows["nnunet"]["cpu_seconds"]
    names = {
        "nnunet": "nnU-Net 2.8.1 `compute_metrics_on_folder` (Dice, IoU; baseline)",
        "ours-dice": "tsretrain `evaluate`, Dice only (same metrics as the baseline)",
        "ours-full": "tsretrain `evaluate`, Dice + HD95 + NSD",
    }
    command = "python " + " ".join(shlex.quote(a) for a in ["bench/evaluate.py", *sys.argv[1:]])
    lines = [
        "## Evaluation of a test set (`bench/evaluate.py`)",
        "",
        f"{args.cases} synthetic cases x {args.labels} labels, {' x '.join(map(str, args.shape))} voxels "
        f"(uint8 NIfTI), {args.workers} worker processes for every tool. Machine: {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}. The three runs ran one after the other in "
        "the same command; the load average (1 min) before and after each says how busy the machine was.",
        "",
        "| what | time (s) | vs nnU-Net | CPU time (s) | vs nnU-Net (CPU) | peak RSS (MiB) | load before / after |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, row in rows.items():
        baseline = mode == "nnunet"
        ratio = "1.00x (baseline)" if baseline else f"{base / row['seconds']:.2f}x faster"
        cpu_ratio = "1.00x (baseline)" if baseline else f"{base_cpu / row['cpu_seconds']:.2f}x less"
        load = f"{row['load_before']:.1f} / {row['load_after']:.1f}"
        lines.append(
            f"| {names[mode]} | {row['seconds']:.1f} | {ratio} | {row['cpu_seconds']:.1f} | {cpu_ratio} "
            f"| {row['peak_rss_mib']:.0f} | {load} |"
        )
    lines += ["", f"Command: `{command}`", "", NOTES]
    if args.profile:
        lines += ["", *profile_one_case(args.workdir, args.labels)]
    section = "\n".join(lines)
    benchlib.update_section(args.out, "bench/evaluate.py", section)


if __name__ == "__main__":
    main()
