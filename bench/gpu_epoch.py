"""GPU check: epoch time of plain nnU-Net training against ``tsretrain train`` on the same preprocessed data.

1. Generates a RADCURE-sized synthetic set (default 5 cases of 512 x 512 x 180) and preprocesses it once
   (``tsretrain run`` up to ``preprocess``, 3d_fullres plans).
2. Data augmentation alone: batches per second that nnU-Net's training data loader delivers with the worker
   counts of ``--da-workers`` (a GPU pod of the workflow has a limit of 12 CPUs), no network.
3. Plain nnU-Net: ``nnUNetTrainer`` built through nnU-Net's own ``get_trainer_from_args`` and run with its
   ``run_training`` loop for a few epochs (no final validation, so both sides time the same work).
4. tsretrain: ``tsretrain train`` with ``nnUNetTrainerTsr`` (mirroring off, atomic checkpoints, store hook),
   same data, same epochs, no final validation.
5. GPU utilisation is sampled with ``nvidia-smi`` every 0.5 s during 3 and 4. Writes the median epoch times
   (first epoch excluded: warm-up), their ratio, the utilisation and whether augmentation keeps up.

Run where tsretrain is installed with a CUDA torch (the GPU image): ``bash bench/gpu_epoch.sh``. On a CPU
(to check the script) use e.g. ``--rows 64 --slices 24 --configuration 3d_tiny --device cpu``.
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
import threading
import time
from pathlib import Path
from typing import Any

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
                "model": {"configuration": args.configuration, "folds": [0]},
                "split": {"cv_folds": 2},  # only fold 0 is trained: fewer cases suffice
                "stages": ["synth", "scan", "convert", "split", "assemble", "preprocess"],
            }
        )
    )
    subprocess.run(
        [sys.executable, "-m", "tsretrain.cli", "run", "--run-dir", str(work), "--config", str(config)], check=True
    )


def _nnunet_prelude(work: Path) -> str:
    return f"""
import json, os, sys, time, torch
os.environ.update(nnUNet_raw='{work}/nnunet/nnUNet_raw', nnUNet_preprocessed='{work}/nnunet/nnUNet_preprocessed',
                  nnUNet_results='{work}/plain_results')
from nnunetv2.run.run_training import get_trainer_from_args
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
import nnunetv2.run.run_training as rt
rt.recursive_find_trainer_class_by_name = lambda name: nnUNetTrainer
"""


def _run_json(code: str, env: dict[str, str] | None = None) -> Any:
    """Run ``code`` in a child Python; it writes its result as JSON to the file named by ``RESULT``.

    The result travels by file, not stdout: nnU-Net's augmentation workers inherit the child's stdout and may
    outlive it for a moment, which would keep a pipe open.
    """
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"
        subprocess.run(
            [sys.executable, "-c", code], check=True, env={**os.environ, **(env or {}), "RESULT": str(result)}
        )
        return json.loads(result.read_text())


def augmentation_rate(work: Path, args: argparse.Namespace, workers: int) -> float:
    """Batches per second of nnU-Net's training loader with ``workers`` processes (no network step)."""
    code = (
        _nnunet_prelude(work)
        + f"""
trainer = get_trainer_from_args('366', '{args.configuration}', 0, 'nnUNetTrainer', device=torch.device('{args.device}'))
trainer.on_train_start()
for _ in range(10):
    next(trainer.dataloader_train)
start = time.perf_counter()
for _ in range({args.da_batches}):
    next(trainer.dataloader_train)
rate = {args.da_batches} / (time.perf_counter() - start)
for loader in (trainer.dataloader_train, trainer.dataloader_val):
    getattr(loader, '_finish', lambda: None)()
open(os.environ['RESULT'], 'w').write(json.dumps(rate))
"""
    )
    return float(_run_json(code, {"nnUNet_n_proc_DA": str(workers)}))


def plain_nnunet(work: Path, args: argparse.Namespace) -> list[float]:
    """nnU-Net's own trainer and loop, nothing of tsretrain's trainers."""
    code = (
        _nnunet_prelude(work)
        + f"""
trainer = get_trainer_from_args('366', '{args.configuration}', 0, 'nnUNetTrainer', device=torch.device('{args.device}'))
trainer.num_epochs = {args.epochs}
trainer.run_training()
log = trainer.logger.get_checkpoint()
epochs = [e - s for s, e in zip(log['epoch_start_timestamps'], log['epoch_end_timestamps'])]
open(os.environ['RESULT'], 'w').write(json.dumps(epochs))
"""
    )
    return [float(v) for v in _run_json(code)]


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


class GpuSampler:
    """``nvidia-smi`` utilisation (%) and memory (MiB) every 0.5 s while the block runs; empty without a GPU."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._process: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
            self._process = subprocess.Popen([*query, "-lms", "500"], stdout=subprocess.PIPE, text=True)
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            util, memory = (float(v) for v in line.split(",")[:2])
            self.samples.append((util, memory))

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait()

    def summary(self) -> str:
        """Mean utilisation over the second half of the samples (steady state) and peak memory."""
        if not self.samples:
            return "n/a"
        steady = self.samples[len(self.samples) // 2 :]
        mean = statistics.fmean(u for u, _ in steady)
        return f"{mean:.0f} % (peak memory {max(m for _, m in self.samples) / 1024:.1f} GiB)"


def gpu_name(device: str) -> str:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return "CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tsretrain-gpu-bench"))
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--slices", type=int, default=180)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--configuration", default="3d_fullres")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--da-workers", default="4,11", help="worker counts for the augmentation-alone probe")
    parser.add_argument("--da-batches", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw figures here, phase by phase")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("nnUNet_compile", "f")  # both sides alike
    compiled = os.environ["nnUNet_compile"].lower() in ("t", "true", "1")  # noqa: SIM112
    figures: dict[str, Any] = {"device": gpu_name(args.device), "compile": compiled}

    def record(key: str, value: Any) -> None:
        figures[key] = value
        print(f"bench: {key} = {value}", flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps(figures, indent=1))

    started = time.time()
    prepare(args.work, args)
    record("prepare_s", round(time.time() - started, 1))
    rates = {w: augmentation_rate(args.work, args, int(w)) for w in args.da_workers.split(",")}
    record("augmentation_batches_per_s", rates)
    with GpuSampler() as plain_gpu:
        plain = plain_nnunet(args.work, args)
    record("plain_epochs_s", plain)
    record("plain_gpu", plain_gpu.summary())
    with GpuSampler() as ours_gpu:
        ours = tsretrain_train(args.work, args)
    record("tsretrain_epochs_s", ours)
    record("tsretrain_gpu", ours_gpu.summary())
    plain_median, ours_median = statistics.median(plain[1:] or plain), statistics.median(ours[1:] or ours)
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(str(next((args.work / "nnunet" / "nnUNet_preprocessed").glob("*/nnUNetPlans.json"))))
    configuration = plans.get_configuration(args.configuration)
    iterations_per_s = 250 / ours_median
    workers = os.environ.get("nnUNet_n_proc_DA") or "nnU-Net's default"  # noqa: SIM112
    rate_rows = []
    for count, rate in sorted(rates.items(), key=lambda item: int(item[0])):
        rate_rows.append(f"| {count} | {rate:.1f} | {'yes' if rate < iterations_per_s * 1.1 else 'no'} |")
    command = "python " + " ".join(shlex.quote(a) for a in ["bench/gpu_epoch.py", *sys.argv[1:]])
    section = "\n".join(
        [
            "## nnU-Net epoch time on a GPU, plain vs `tsretrain train` (`bench/gpu_epoch.py`)",
            "",
            f"{args.cases} synthetic cases of {args.rows} x {args.rows} x {args.slices} "
            f"({0.98 * 512 / args.rows:.2f} x {0.98 * 512 / args.rows:.2f} x 2 mm), "
            f"configuration {args.configuration} (patch {' x '.join(map(str, configuration.patch_size))}, "
            f"batch {configuration.batch_size}), {args.epochs} epochs of 250 iterations each (median without the "
            f"first), device {figures['device']}, torch.compile {'on' if compiled else 'off'}, "
            f"data-augmentation workers during training: {workers}; total wall time {time.time() - started:.0f} s "
            f"(preparation {figures['prepare_s']:.0f} s).",
            "",
            "| trainer | median epoch (s) | epochs (s) | GPU utilisation (steady state) |",
            "|---|---|---|---|",
            f"| nnU-Net `nnUNetTrainer` (baseline) | {plain_median:.2f} | {', '.join(f'{v:.1f}' for v in plain)} "
            f"| {plain_gpu.summary()} |",
            f"| tsretrain `nnUNetTrainerTsr` | {ours_median:.2f} | {', '.join(f'{v:.1f}' for v in ours)} "
            f"| {ours_gpu.summary()} |",
            "",
            f"Ratio tsretrain / plain: {ours_median / plain_median:.3f} (goal: within 5 %).",
            "",
            f"Data augmentation alone (nnU-Net's training loader, no network) against the {iterations_per_s:.2f} "
            "iterations/s that training reached:",
            "",
            "| augmentation workers | batches/s | bottleneck (< 1.1 x training's rate) |",
            "|---|---|---|",
            *rate_rows,
            "",
            f"Command: `{command}`",
        ]
    )
    benchlib.update_section(args.out, "bench/gpu_epoch.py", section)


if __name__ == "__main__":
    main()
