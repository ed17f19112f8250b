"""Transparent huge pages for torch's CPU tensors (``THP_MEM_ALLOC_ENABLE``, which the CLI sets): a training step
of the demo's trainer with and without them, on the demo's run (22 outputs) and the 90-label demo's (91 outputs).

Each variant is ``bench/demo.py``'s child (the run's trainer, its augmented batches, training steps timed in
CPU and wall seconds; two torch threads, channels-last, the forward in the CPU's default arithmetic), in its
own process, alternating, three times each; medians. The baseline is torch's default allocator (huge pages off).

``python bench/huge_pages.py --runs demo-run demo-run-ts90 --out docs/benchmarks.md`` (after ``make demo`` and
``make demo-ts90``; the child builds the trainer in each run's nnU-Net folders).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import benchlib

from tsretrain.resources import HUGE_PAGES_VARIABLE

DEMO = Path(__file__).with_name("demo.py")
VARIANTS = {"0": "off (torch's default)", "1": "on"}


def outputs(run: Path) -> int:
    (dataset,) = (run / "nnunet" / "nnUNet_preprocessed").glob("Dataset*/dataset.json")
    return len(json.loads(dataset.read_text())["labels"])


def measure(run: Path, steps: int, repeats: int) -> dict[str, dict[str, float]]:
    results: dict[str, list[dict[str, float]]] = {value: [] for value in VARIANTS}
    command = [sys.executable, str(DEMO), "--child", "--run", str(run), "--threads", "2", "--channels-last"]
    command += ["--steps", str(steps)]
    for _ in range(repeats):
        for value in VARIANTS:
            env = os.environ | {HUGE_PAGES_VARIABLE: value, "OMP_WAIT_POLICY": "PASSIVE"}
            results[value].append(benchlib.measure(command, env))
    keys = ("step_cpu_s", "step_wall_s")
    return {value: {k: statistics.median(r[k] for r in runs) for k in keys} for value, runs in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", default=[Path("demo-run"), Path("demo-run-ts90")])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = [
        "| run | outputs | huge pages | step CPU (s) | step wall (s) | CPU against off |",
        "|---|---|---|---|---|---|",
    ]
    for run in args.runs:
        found = measure(run, args.steps, args.repeats)
        for value, label in VARIANTS.items():
            ratio = found[value]["step_cpu_s"] / found["0"]["step_cpu_s"]
            rows.append(
                f"| `{run.name}` | {outputs(run)} | {label} | {found[value]['step_cpu_s']:.2f} "
                f"| {found[value]['step_wall_s']:.2f} | {ratio:.2f} |"
            )
    section = [
        "## Huge pages for CPU tensors (`bench/huge_pages.py`)",
        "",
        f"{benchlib.machine_line()}. A training step of `nnUNetTrainerTsrTiny` (`3d_tiny`, batch of two 32 x 64 x 64"
        f" patches) on each run's data, mean of {args.steps} steps, median of {args.repeats} alternating runs per "
        "variant, each in its own process:",
        "",
        *rows,
        "",
        "Without huge pages each fresh tensor of a few megabytes is faulted in 4 KiB at a time; with 91 outputs the "
        "logits of a batch and the loss's softmax, one-hot target and gradients are about 100 MB each, allocated "
        "afresh every step. A profile of the 90-label demo's training (cProfile, one epoch of 40 steps, one CPU) "
        "found the time there, not in the network: the backward 0.56 s a step, the loss's softmax and cross-"
        "entropy 0.1 s each per call, the convolutions' forward 0.1 s a step; the kernel's share of the process's "
        "CPU time fell from 42 % to 27 % with huge pages. The CLI sets `THP_MEM_ALLOC_ENABLE=1` before any stage "
        "imports torch (a value the user set is kept); torch then advises huge pages on every allocation of 2 MiB "
        "or more, which the kernel honours when `/sys/kernel/mm/transparent_hugepage/enabled` is `madvise` or "
        "`always`.",
        "",
        f"Command: `python bench/huge_pages.py --runs {' '.join(str(r) for r in args.runs)} --out docs/benchmarks.md`",
    ]
    benchlib.update_section(args.out, "bench/huge_pages.py", "\n".join(section))


if __name__ == "__main__":
    main()
