"""Benchmark: TotalSegmentator's six radcure-ts90 tasks per case on the CPU, through the pseudolabel stage, on
STAND-IN weights (the network is small, so the time is TotalSegmentator's own work around it: the 6 mm crop model,
resampling to each task's spacing and back, its file handling; real weights add their networks' inference).

Case: one RADCURE-sized synthetic patient (512 x 512 x 180 CT, bench/convert.py's case; ``--case small``: the test
suite's phantom, 128 x 128 x 40 at 1.5 x 1.5 x 3 mm), converted with radcure-ts90. Baselines, in the same
command: ``tsretrain convert`` of that case, and TotalSegmentator's own python API running the same tasks on the
same CT as it runs them by default (a preprocessing process, a manager and an export pool per prediction), each
as one process. Measured: ``tsretrain pseudolabel --device cpu`` as a process (wall, CPU, peak RSS of the tree:
its predictions in process, nnU-Net's sequential path), and per task the time and peak memory the stage records
in ``pseudolabel.json``; the stand-ins' build time per training (their ``STAND-IN.json``).

Usage: python bench/totalsegmentator_cpu.py [--out docs/benchmarks.md] [--workdir /tmp/tsretrain-bench-convert]
       [--iterations 300] [--case radcure|small] [--weights DIR (stand-ins already built)]
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import benchlib

TSRETRAIN = str(Path(sys.executable).parent / "tsretrain")


def timed(command: list[str]) -> dict[str, float]:
    """A tsretrain command as a measured process (the JSON line benchlib expects is the wall time)."""
    script = (
        "import subprocess, sys, time, json; t = time.perf_counter(); "
        f"subprocess.run({command!r}, check=True, stdout=subprocess.DEVNULL); "
        "print(json.dumps({'seconds': time.perf_counter() - t}))"
    )
    return benchlib.measure([sys.executable, "-c", script])


def prepare(case: str, folder: Path) -> Path:
    """The benchmark's patient: bench/convert.py's RADCURE-sized case, or the test suite's phantom."""
    if case == "radcure":
        from convert import prepare_case

        return prepare_case(folder)
    from tsretrain.synth.cohort import SynthConfig, generate

    if not (folder / "cohort.json").is_file():
        generate(SynthConfig(out=folder, cases=1, seed=7, edge_cases=False, rows=128, columns=128, slices=40,
                             pixel_spacing=1.5, slice_thickness=3.0))  # fmt: skip
    return folder


def totalsegmentators_own_path(ct: Path, tasks: list[str], weights: Path, out: Path) -> dict[str, float]:
    """TotalSegmentator's python API on ``ct`` for each task, as it runs them by default, as one measured process."""
    shutil.rmtree(out, ignore_errors=True)
    script = (
        "import json, sys, time; from pathlib import Path; "
        "from tsretrain.dataset.pseudolabel import use_weights; from tsretrain.training import discovery; "
        "import totalsegmentator.nnunet; from totalsegmentator.python_api import totalsegmentator; "
        f"use_weights(Path({str(weights)!r}), Path({str(out / 'home')!r})); "
        "discovery.install(); "  # after TotalSegmentator's import, which puts its own trainer lookup in (as the stage)
        "t = time.perf_counter(); "
        f"[totalsegmentator(Path({str(ct)!r}), Path({str(out)!r}) / (task + '.nii.gz'), ml=True, task=task, "
        f"device='cpu', quiet=True, nr_thr_saving=1) for task in {tasks!r}]; "
        "print(json.dumps({'seconds': time.perf_counter() - t}))"
    )
    return benchlib.measure([sys.executable, "-c", script])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="Markdown file to update (marked sections).")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tsretrain-bench-convert"))
    parser.add_argument("--iterations", type=int, default=300, help="Stand-in training steps per spacing.")
    parser.add_argument("--case", choices=("radcure", "small"), default="radcure")
    parser.add_argument("--weights", type=Path, help="Stand-in weights already built (else built into the workdir).")
    args = parser.parse_args()
    case = prepare(args.case, args.workdir / f"case-{args.case}")
    weights = args.weights or args.workdir / f"standins-{args.iterations}"
    if not (weights / "STAND-IN.json").is_file():
        started = time.perf_counter()
        subprocess.run([TSRETRAIN, "standin-weights", "--out", str(weights), "--iterations", str(args.iterations)],
                       check=True)  # fmt: skip
        print(f"stand-ins built in {time.perf_counter() - started:.0f} s", flush=True)
    machine = benchlib.machine_line()
    converted, pseudo = args.workdir / f"ts90-converted-{args.case}", args.workdir / f"ts90-pseudo-{args.case}"
    for folder in (converted, pseudo):
        shutil.rmtree(folder, ignore_errors=True)
    convert = timed(
        [TSRETRAIN, "convert", str(case / "dicom"), "--out", str(converted), "--dictionary", "radcure-ts90"]
    )
    pseudolabel = timed([TSRETRAIN, "pseudolabel", str(converted), "--out", str(pseudo), "--device", "cpu",
                         "--weights", str(weights)])  # fmt: skip
    (record,) = [json.loads(p.read_text()) for p in pseudo.glob("*/pseudolabel.json")]
    (ct,) = converted.glob("cases/*/*_0000.nii.gz")
    own = totalsegmentators_own_path(ct, list(record["tasks"]), weights, args.workdir / "ts-own")
    built = json.loads((weights / "STAND-IN.json").read_text())
    command = "python " + " ".join(shlex.quote(a) for a in ["bench/totalsegmentator_cpu.py", *sys.argv[1:]])
    lines = [
        "## TotalSegmentator's head tasks per case on the CPU, STAND-IN weights (`bench/totalsegmentator_cpu.py`)",
        "",
        f"`{command}`; {machine}. One "
        + ("RADCURE-sized case (512 x 512 x 180)" if args.case == "radcure" else "test phantom (128 x 128 x 40)")
        + ", radcure-ts90.",
        "",
        "| step | wall s | CPU s | peak RSS MiB | x conversion (wall) |",
        "|---|---|---|---|---|",
        f"| `tsretrain convert` (baseline) | {convert['seconds']:.0f} | {convert['cpu_seconds']:.0f} | "
        f"{convert['peak_rss_mib']:.0f} | 1.0 |",
        f"| `tsretrain pseudolabel` (six tasks, each with TotalSegmentator's crop model) | "
        f"{pseudolabel['seconds']:.0f} | {pseudolabel['cpu_seconds']:.0f} | {pseudolabel['peak_rss_mib']:.0f} | "
        f"{pseudolabel['seconds'] / convert['seconds']:.1f} |",
        f"| TotalSegmentator's python API, the same tasks, its default processes (baseline of the stage) | "
        f"{own['seconds']:.0f} | {own['cpu_seconds']:.0f} | {own['peak_rss_mib']:.0f} | "
        f"{own['seconds'] / convert['seconds']:.1f} |",
        "",
        f"The stage against TotalSegmentator's own path: {own['seconds'] / pseudolabel['seconds']:.2f}x the wall "
        f"time, {own['cpu_seconds'] / pseudolabel['cpu_seconds']:.2f}x the CPU time (the stage also merges the maps).",
        "",
        "| task | s | peak RSS of the stage so far, MiB |",
        "|---|---|---|",
        *(f"| {task} | {t['seconds']:.0f} | {t['peak_rss_mib']:.0f} |" for task, t in record["tasks"].items()),
        "",
        f"Stand-in build ({built['iterations']} steps per spacing, {built['phantoms']} phantoms): "
        + ", ".join(f"{t['spacing_xyz']} mm {t['seconds']:.0f} s" for t in built["trainings"])
        + ". On a GPU the tasks' networks would run there; TotalSegmentator's resampling and file handling stay on "
        "the CPU.",
    ]
    benchlib.update_section(args.out, "bench/totalsegmentator_cpu.py", "\n".join(lines))


if __name__ == "__main__":
    main()
