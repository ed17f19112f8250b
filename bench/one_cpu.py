"""The nnU-Net stages of a pod with one CPU, on the CPU device: ``tsretrain predict`` and ``tsretrain train``
against what they did before (the baselines), on the small run of ``bench/cpu_predict.py``.

- predict: nnU-Net's ``predict_from_files`` with one preprocessing and one export process (the baseline, tsretrain's
  earlier predict on one CPU) against ``tsretrain predict`` (everything in its own process);
- train: ``tsretrain train`` with one data-augmentation process (``nnUNet_n_proc_DA=1``, the earlier default on one
  CPU) against its default there (none: batches made in the training process);
- progress.png: one drawing of nnU-Net's progress figure (after every epoch in nnU-Net, only with checkpoints and
  after the last epoch in the tiny trainer) against the time of a tiny epoch.

Every variant runs in a child process pinned to one CPU (as a pod with a one-CPU limit), alternating; the measure
is its process tree's CPU seconds.

``python bench/one_cpu.py --out docs/benchmarks.md``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import benchlib
from cpu_predict import MODEL, nnunet_predict, ours, small_run, test_cases

MODEL_FOLDER = "nnUNetTrainerTsrTiny__nnUNetPlans__3d_tiny"
TRAIN = ["--fold", "1", "--epochs", "2", "--iterations", "10", "--no-validate", "--device", "cpu"]
VARIANTS = {
    "predict-baseline": "nnU-Net's predictor, one preprocessing and one export process (baseline)",
    "predict-ours": "`tsretrain predict`",
    "train-baseline": "`tsretrain train`, `nnUNet_n_proc_DA=1` (baseline)",
    "train-ours": "`tsretrain train`, its default on one CPU (no augmentation process)",
}


def train(work: Path) -> None:
    """``tsretrain train`` of fold 1 from scratch; print JSON."""
    from tsretrain.cli import main as cli

    shutil.rmtree(work / "nnUNet_results" / "Dataset366_TotalSegmentator" / MODEL_FOLDER / "fold_1", True)
    started = time.time()
    sys.argv = ["tsretrain", "train", "--work", str(work), *TRAIN, *MODEL[:-2]]  # MODEL less its --folds
    try:
        cli()
    except SystemExit as done:
        if done.code:
            raise
    print(json.dumps({"seconds": time.time() - started}))


def drawing(work: Path, out: Path) -> None:
    """nnU-Net's progress.png of the trained fold 1, drawn once; print JSON (the drawing's seconds, the epochs')."""
    import torch
    from nnunetv2.training.logging.nnunet_logger import LocalLogger

    fold = work / "nnUNet_results" / "Dataset366_TotalSegmentator" / MODEL_FOLDER / "fold_1"
    logger = LocalLogger()
    logger.load_checkpoint(torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["logging"])
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    logger.plot_progress_png(str(out))
    epochs = json.loads((fold / "progress.json").read_text())["epoch_seconds"]
    print(json.dumps({"seconds": time.time() - started, "epoch_seconds": statistics.median(epochs)}))


def child(variant: str, work: Path, out: Path) -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one CPU, before torch starts its threads
    if variant == "drawing":
        drawing(work, out)
    elif variant == "predict-baseline":
        nnunet_predict(work, out, 1)
    elif variant == "predict-ours":
        ours(work, out)
    else:
        train(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tsretrain-bench-cpu-predict"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", choices=[*VARIANTS, "drawing"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workdir / "run" / "nnunet", args.workdir / f"out-{args.child}")
        return

    work = small_run(args.workdir)
    results: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    for _ in range(args.repeat):
        for variant in results:  # alternating: a load that comes and goes hits all alike
            env = {k: v for k, v in os.environ.items() if k != "nnUNet_n_proc_DA"}
            if variant == "train-baseline":
                env["nnUNet_n_proc_DA"] = "1"
            command = [sys.executable, __file__, "--workdir", str(args.workdir), "--child", variant]
            results[variant].append(benchlib.measure(command, env))
    command = [sys.executable, __file__, "--workdir", str(args.workdir), "--child", "drawing"]
    drawn = [benchlib.measure(command) for _ in range(args.repeat)]
    draw = statistics.median(d["seconds"] for d in drawn)
    epoch = statistics.median(d["epoch_seconds"] for d in drawn)
    cpu, wall = benchlib.medians(results, "cpu_seconds"), benchlib.medians(results, "seconds")
    cases = test_cases(work)
    rows = [f"| {VARIANTS[v]} | {cpu[v]:.1f} | {wall[v]:.1f} |" for v in VARIANTS]
    section = "\n".join(
        [
            "## The nnU-Net stages on one CPU (`bench/one_cpu.py`)",
            "",
            f"`python bench/one_cpu.py --out docs/benchmarks.md` ({args.repeat} alternating runs each, medians;"
            f" {benchlib.machine_line()}). Each variant pinned to one CPU, the CPU device; the small run of"
            f" `bench/cpu_predict.py`: prediction of {cases} test cases of 72 x 72 x 20 voxels by one fold, training"
            " of a fold for 2 epochs of 10 iterations without validation.",
            "",
            "| | CPU s (process tree) | wall s |",
            "|---|---|---|",
            *rows,
            "",
            f"Ratio baseline / tsretrain: predict {cpu['predict-baseline'] / cpu['predict-ours']:.2f}x CPU"
            f" ({wall['predict-baseline'] / wall['predict-ours']:.2f}x wall), train"
            f" {cpu['train-baseline'] / cpu['train-ours']:.2f}x CPU"
            f" ({wall['train-baseline'] / wall['train-ours']:.2f}x wall). Each process nnU-Net spawns imports torch"
            " and nnU-Net before it does any work.",
            "",
            f"nnU-Net's progress.png (3000 x 5400 pixels) takes {draw:.2f} s to draw, a tiny epoch of 10 iterations"
            f" {epoch:.2f} s (median of the runs above, drawing included where the epoch drew it): nnU-Net draws it"
            " after every epoch, the tiny trainer only with a checkpoint and after the last epoch.",
        ]
    )
    benchlib.update_section(args.out, "bench/one_cpu.py", section)


if __name__ == "__main__":
    main()
