"""Prediction on a CPU under the GPU image's environment (``nnUNet_compile=true``): nnU-Net's own predictor (the
baseline: what ``nnUNetv2_predict`` does there, compiling the network with torch.compile) against ``tsretrain
predict`` (which turns compiling off on a CPU, as nnU-Net's trainer does), on the same trained fold and test cases.

A small run (synthetic cohort, the demo's trainer and ``3d_tiny``, one fold of one short epoch) is made first; each
variant then runs in a child process, alternating, and its process tree's CPU seconds are the measure.

``python bench/cpu_predict.py --out docs/benchmarks.md``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import benchlib

CONFIG = (
    "synth: {cases: 9, seed: 4, edge_cases: false, rows: 72, columns: 72, slices: 20, pixel_spacing: 2.6,"
    " slice_thickness: 6.0}\n"
    "split: {cv_folds: 3}\n"
    "model: {folds: [0]}\n"
    "train: {epochs: 1, iterations: 2, device: cpu, validate: false}\n"
    "stages: [synth, scan, convert, split, assemble, preprocess, train]\n"
)
MODEL = ["--configuration", "3d_tiny", "--trainer", "nnUNetTrainerTsrTiny", "--plans", "nnUNetPlans", "--folds", "0"]


def baseline(work: Path, out: Path) -> None:
    """nnU-Net's predictor on the fold, as ``nnUNetv2_predict -device cpu`` runs it; print JSON."""
    nnunet_predict(work, out, min(2, test_cases(work)))


def nnunet_predict(work: Path, out: Path, workers: int) -> None:
    """nnU-Net's predictor on the fold with ``workers`` preprocessing and export processes; print JSON."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from tsretrain.training import discovery
    from tsretrain.training.nnunet_env import NnunetFolders

    folders = NnunetFolders(work)
    folders.activate()
    discovery.install()
    started = time.time()
    predictor = nnUNetPredictor(use_mirroring=False, device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    dataset = folders.results / "Dataset366_TotalSegmentator" / "nnUNetTrainerTsrTiny__nnUNetPlans__3d_tiny"
    predictor.initialize_from_trained_model_folder(str(dataset), use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    predictor.predict_from_files(
        str(test_images(work)),
        str(out),
        save_probabilities=False,
        overwrite=True,
        num_processes_preprocessing=workers,
        num_processes_segmentation_export=workers,
    )
    print(
        json.dumps(
            {"seconds": time.time() - started, "compiled": "OptimizedModule" in type(predictor.network).__name__}
        )
    )


def test_images(work: Path) -> Path:
    """The small run's held-out test images (``imagesTs``)."""
    return work / "nnUNet_raw" / "Dataset366_TotalSegmentator" / "imagesTs"


def test_cases(work: Path) -> int:
    return len(list(test_images(work).glob("*_0000.nii.gz")))


def small_run(workdir: Path) -> Path:
    """The small run's nnU-Net work root (made once: a later call reuses it)."""
    from tsretrain.pipeline.runner import run

    work = workdir / "run" / "nnunet"
    if not (work / "nnUNet_results").is_dir():
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        (workdir / "run.yaml").write_text(CONFIG)
        run(workdir / "run", workdir / "run.yaml")
    return work


def ours(work: Path, out: Path) -> None:
    """``tsretrain predict`` on the fold; print JSON."""
    from tsretrain.cli import main as cli

    started = time.time()
    sys.argv = ["tsretrain", "predict", "--work", str(work), "--out", str(out), *MODEL, "--device", "cpu"]
    try:
        cli()
    except SystemExit as done:
        if done.code:
            raise
    print(json.dumps({"seconds": time.time() - started, "compiled": False}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tsretrain-bench-cpu-predict"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", choices=("baseline", "ours"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.workdir / "run" / "nnunet"
    if args.child:
        {"baseline": baseline, "ours": ours}[args.child](work, args.workdir / f"out-{args.child}")
        return

    small_run(args.workdir)
    results: dict[str, list[dict[str, float]]] = {"baseline": [], "ours": []}
    for n in range(args.repeat):
        for variant in results:  # alternating: a load that comes and goes hits both alike
            # as the GPU image sets it; an empty compile cache, as in a fresh pod (a warm one skips most compiling)
            cache = args.workdir / f"inductor-{variant}-{n}"
            env = {**os.environ, "nnUNet_compile": "true", "TORCHINDUCTOR_CACHE_DIR": str(cache)}
            command = [sys.executable, __file__, "--workdir", str(args.workdir), "--child", variant]
            results[variant].append(benchlib.measure(command, env))
            shutil.rmtree(cache, ignore_errors=True)
    cpu, wall = benchlib.medians(results, "cpu_seconds"), benchlib.medians(results, "seconds")
    cases = test_cases(work)
    section = "\n".join(
        [
            "## Prediction on a CPU in the GPU image's environment (`bench/cpu_predict.py`)",
            "",
            f"`python bench/cpu_predict.py --out docs/benchmarks.md` ({args.repeat} alternating runs each, medians;"
            f" {benchlib.machine_line()}). One fold of the demo's trainer and `3d_tiny`, {cases} test cases of"
            " 72 x 72 x 20 voxels, `nnUNet_compile=true` as the GPU image sets it, an empty torch.compile cache as in a"
            " fresh pod.",
            "",
            "| | CPU s (process tree) | wall s | network compiled |",
            "|---|---|---|---|",
            f"| nnU-Net's predictor (baseline) | {cpu['baseline']:.1f} | {wall['baseline']:.1f} |"
            f" {'yes' if all(r['compiled'] for r in results['baseline']) else 'no'} |",
            f"| `tsretrain predict` | {cpu['ours']:.1f} | {wall['ours']:.1f} | no |",
            "",
            f"Ratio baseline / tsretrain: {cpu['baseline'] / cpu['ours']:.1f}x CPU,"
            f" {wall['baseline'] / wall['ours']:.1f}x wall. The same compile ran in every CPU training pod's"
            " validation before tsretrain turned it off.",
        ]
    )
    benchlib.update_section(args.out, "bench/cpu_predict.py", section)


if __name__ == "__main__":
    main()
