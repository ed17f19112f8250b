"""GPU check: epoch time of plain nnU-Net training against ``tsretrain train`` on the same preprocessed data.

1. Generates a RADCURE-sized synthetic set (default 10 cases of 512 x 512 x 100) and preprocesses it once
   (``tsretrain run`` up to ``preprocess``).
2. Plain nnU-Net: ``nnUNetTrainer`` built through nnU-Net's own ``get_trainer_from_args`` and run with its
   ``run_training`` loop for a few epochs (no final validation, so both sides time the same work).
3. tsretrain: ``tsretrain train`` with ``nnUNetTrainerTsr`` (mirroring off, atomic checkpoints, store hook),
   same data, same epochs, no final validation.
4. Writes the median epoch times (first epoch excluded: warm-up), their ratio, the GPU model and the
   data-augmentation worker count to the benchmark file.

Run where tsretrain is installed with a CUDA torch (the GPU image): ``bash bench/gpu_epoch.sh``. On a CPU
(to check the script) use e.g. ``--rows 96 --slices 24 --configuration 3d_tiny --device cpu``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import benchlib


def prepare(work: Path, args: argparse.Namespace) -> None:
    config = work / "bench.yaml"
    config.write_text(
        json.dumps(
            {
                "synth": {
                    "cases": args.cases,
                    "seed": 1,
                    "edge_cases": False,
                    "rows": args.rows,
                    "columns": args.rows,
                    "slices": args.slices,
                    "pixel_spacing": 0.98 * 512 / args.rows,
                    "slice_thickness": 2.0,
                },
                "split": {"folds": 5},
                "preprocess": {"tiny": args.configuration == "3d_tiny"},
                "stages": ["synth", "scan", "convert", "split", "assemble", "preprocess"],
            }
        )
    )
    subprocess.run(
        [sys.executable, "-m", "tsretrain.cli", "run", "--run-dir", str(work), "--config", str(config)], check=True
    )


def plain_nnunet(work: Path, args: argparse.Namespace) -> list[float]:
    """nnU-Net's own trainer and loop, nothing of tsretrain's trainers."""
    code = f"""
import json, os, sys, torch
os.environ.update(nnUNet_raw='{work}/nnunet/nnUNet_raw', nnUNet_preprocessed='{work}/nnunet/nnUNet_preprocessed',
                  nnUNet_results='{work}/plain_results')
from nnunetv2.run.run_training import get_trainer_from_args
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
import nnunetv2.run.run_training as rt
rt.recursive_find_trainer_class_by_name = lambda name: nnUNetTrainer
trainer = get_trainer_from_args('366', '{args.configuration}', 0, 'nnUNetTrainer', device=torch.device('{args.device}'))
trainer.num_epochs = {args.epochs}
trainer.run_training()
log = trainer.logger.get_checkpoint()
print(json.dumps([e - s for s, e in zip(log['epoch_start_timestamps'], log['epoch_end_timestamps'])]))
"""
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return [float(v) for v in json.loads(done.stdout.strip().splitlines()[-1])]


def tsretrain_train(work: Path, args: argparse.Namespace) -> list[float]:
    command = [
        sys.executable,
        "-m",
        "tsretrain.cli",
        "train",
        "--work",
        str(work / "nnunet"),
        "--fold",
        "0",
        "--configuration",
        args.configuration,
        "--trainer",
        "nnUNetTrainerTsr",
        "--epochs",
        str(args.epochs),
        "--device",
        args.device,
        "--no-validate",
    ]
    subprocess.run(command, check=True)
    progress = next((work / "nnunet" / "nnUNet_results").rglob("nnUNetTrainerTsr__*/fold_0/progress.json"))
    return [float(v) for v in json.loads(progress.read_text())["epoch_seconds"]]


def gpu_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else "CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tsretrain-gpu-bench"))
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--configuration", default="3d_fullres")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    prepare(args.work, args)
    plain = plain_nnunet(args.work, args)
    ours = tsretrain_train(args.work, args)
    plain_median, ours_median = statistics.median(plain[1:] or plain), statistics.median(ours[1:] or ours)
    from tsretrain.training.nnunet_env import augmentation_workers

    workers = os.environ.get("nnUNet_n_proc_DA") or str(augmentation_workers())  # noqa: SIM112
    command = "python " + " ".join(shlex.quote(a) for a in ["bench/gpu_epoch.py", *sys.argv[1:]])
    section = "\n".join(
        [
            "## nnU-Net epoch time, plain vs `tsretrain train` (`bench/gpu_epoch.py`)",
            "",
            f"{args.cases} synthetic cases of {args.rows} x {args.rows} x {args.slices}, configuration "
            f"{args.configuration}, {args.epochs} epochs each (median without the first), "
            f"device {gpu_name(args.device)}, "
            f"data-augmentation workers {workers}; total wall time {time.time() - started:.0f} s.",
            "",
            "| trainer | median epoch (s) | epochs (s) |",
            "|---|---|---|",
            f"| nnU-Net `nnUNetTrainer` (baseline) | {plain_median:.2f} | {', '.join(f'{v:.1f}' for v in plain)} |",
            f"| tsretrain `nnUNetTrainerTsr` | {ours_median:.2f} | {', '.join(f'{v:.1f}' for v in ours)} |",
            "",
            f"Ratio tsretrain / plain: {ours_median / plain_median:.3f} (goal: within 5 %).",
            "",
            f"Command: `{command}`",
        ]
    )
    benchlib.update_section(args.out, "bench/gpu_epoch.py", section)


if __name__ == "__main__":
    main()
