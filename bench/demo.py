"""Where the demo's time goes: one training step of the demo's network against one augmented batch, and the
stages of a finished ``make demo`` run with its test Dice.

1. On the run's preprocessed data, the demo's trainer (``3d_tiny``, ``nnUNetTrainerTsrTiny``) builds its
   data loader and network; in a child process per variant it times augmented batches (one process, as one
   augmentation worker does), training steps and a prediction's forward of one tile, for torch with 1 or 2
   threads, OpenMP threads spinning or sleeping when idle (``OMP_WAIT_POLICY``), the network in nnU-Net's or
   channels-last memory format, and its forward in float32 or under bfloat16 autocast
   (``TSRETRAIN_CPU_PRECISION``).
   CPU seconds are the measure: on a shared machine wall time says more about the neighbours.
2. From the run folder: wall and CPU seconds of every stage (``.stages/``), the configuration trained, and the
   test Dice per structure (``evaluation/``).

``python bench/demo.py --run demo-run --out docs/benchmarks.md`` (after ``make demo``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import benchlib

VARIANTS = (  # (threads, OMP_WAIT_POLICY, channels-last, CPU precision)
    (1, "ACTIVE", False, "fp32"),
    (2, "ACTIVE", False, "fp32"),
    (2, "PASSIVE", False, "fp32"),
    (1, "PASSIVE", True, "fp32"),
    (2, "PASSIVE", True, "fp32"),
    (1, "PASSIVE", True, "bf16"),
    (2, "PASSIVE", True, "bf16"),
)
ARITHMETIC = {"fp32": "float32", "bf16": "bfloat16 autocast"}


def child(run: Path, threads: int, channels_last: bool, steps: int) -> None:
    """Time ``steps`` augmented batches and ``steps`` training steps of the demo's trainer; print JSON."""
    os.environ["nnUNet_n_proc_DA"] = "0"  # noqa: SIM112 (nnU-Net's name); batches made here, in this process
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    from tsretrain.training import discovery
    from tsretrain.training.nnunet_env import NnunetFolders

    NnunetFolders(run / "nnunet").activate()
    discovery.install()
    torch.set_num_threads(1)
    trainer = get_trainer_from_args("366", "3d_tiny", 0, "nnUNetTrainerTsrTiny", device=torch.device("cpu"))
    trainer.initialize()
    if not channels_last:
        trainer.network.to(memory_format=torch.contiguous_format)
    loader, _ = trainer.get_dataloaders()
    cpu = time.process_time()
    batches = [next(loader) for _ in range(steps + 1)]
    augmentation = (time.process_time() - cpu) / len(batches)
    torch.set_num_threads(threads)
    trainer.network.train()
    trainer.train_step(batches[0])  # warm-up
    cpu, wall = time.process_time(), time.perf_counter()
    for batch in batches[1:]:
        trainer.train_step(batch)
    result = {
        "augmentation_cpu_s": augmentation,
        "step_cpu_s": (time.process_time() - cpu) / steps,
        "step_wall_s": (time.perf_counter() - wall) / steps,
    }
    trainer.network.eval()  # a prediction's forward: one tile, no gradients
    tile = batches[0]["data"][:1]
    with torch.no_grad():
        trainer.network(tile)  # warm-up
        wall = time.perf_counter()
        for _ in range(steps):
            trainer.network(tile)
    result["tile_wall_s"] = (time.perf_counter() - wall) / steps
    print(json.dumps(result))


NOTES = """What decided the demo's configuration:

- The network is the cost, not the augmentation: an augmented batch takes a tenth to a fifth of a step's CPU
  time, so one augmentation worker keeps up and the rest of the CPU belongs to torch.
- With OpenMP's default (idle threads spin), two torch threads cost four times the CPU of one thread on this
  shared machine; with idle threads sleeping (`OMP_WAIT_POLICY=PASSIVE`, set by tsretrain before torch loads)
  two threads cost 15-20 % more CPU than one, which two free cores repay. Channels-last saves about a fifth of
  the small network's step.
- On a CPU computing bfloat16 natively (this one has AVX512-BF16), the forward under bfloat16 autocast
  (`--precision auto`, the default there) takes a training step to about 0.7 of its float32 time and a
  prediction's tile to a sixth: nnU-Net's float32 forward without gradients is slower per tile than half a
  training step here, the bfloat16 one is not. The demo's training took 7.3 min instead of 9.7-10.6, each of its
  two test-set predictions 20 s instead of 68-75, with the same test Dice (GTVp 0.90-0.92, targets 0.92-0.99 in
  two runs).
- nnU-Net's SGD (momentum 0.99) did not suit a thousand steps of this network: at 0.01 (and in one of two runs
  at 0.03) every structure's pseudo-Dice was still 0 after 200-275 steps and the network gave the same class
  probabilities at every voxel (the class frequencies). nnU-Net's AdamW variant learns: at 3e-3 the large organs
  only (no eyes, oesophagus, lips, tumour after 1000 steps), at 1e-2 all structures of more than about 100
  voxels, at 2e-2 less well than at 1e-2 (section "Demo configuration runs").
- One fold of 1200 steps instead of the two folds of 300 steps the demo once trained (which learned nothing):
  the demo shows a model that segments, not a cross-validated ensemble.
- Phantoms on a 96 x 96 grid of 2.1 mm (was 128 x 128 of 1.6 mm): the 64 x 64 patch covers two thirds of a
  slice instead of half, so each step sees more anatomy, and every stage but training gets cheaper; the cord
  and the oesophagus stay over 2 voxels across. 64 slices from the thoracic inlet to 10 slices above the eyes:
  with the eyes ending 0-4 slices below the scan's top edge they stayed under 0.75 Dice in 1000 and in 1200 steps.
  CSF around the cord and the brainstem and a fat plane around the oesophagus give them the contrast they
  have on real CT, since nnU-Net normalises with the foreground's statistics, which the mandible's bone
  dominates. Lens, cochlea, optic nerves and chiasm stay under 100 voxels: below what this resolution can learn.
- Prediction tiles overlap by three quarters (`step_size: 0.25`, nnU-Net's default is a half): the small
  network's output depends on where a structure sits in its patch, and averaging more tiles lifted the larynx
  from 0.73 to 0.93 and the tumour from 0.85 to 0.88 for the same model, at three times the prediction cost.
"""


def step_table(run: Path, steps: int) -> list[str]:
    from tsretrain.training.precision import PRECISION_VARIABLE

    header = "| torch threads | idle OpenMP threads | network memory format | arithmetic | step CPU (s) | step wall (s)"
    rows = [header + " | augmented batch CPU (s) | prediction tile wall (s) |", "|---|---|---|---|---|---|---|---|"]
    for threads, wait, channels_last, arithmetic in VARIANTS:
        command = [sys.executable, __file__, "--child", "--run", str(run), "--threads", str(threads)]
        command += ["--steps", str(steps)] + (["--channels-last"] if channels_last else [])
        os.environ["OMP_WAIT_POLICY"] = wait
        os.environ[PRECISION_VARIABLE] = arithmetic  # read by the trainer's initialize
        result = benchlib.measure(command)
        layout = "channels-last" if channels_last else "nnU-Net's (contiguous)"
        idle = "sleep (PASSIVE)" if wait == "PASSIVE" else "spin (default)"
        rows.append(
            f"| {threads} | {idle} | {layout} | {ARITHMETIC[arithmetic]} | {result['step_cpu_s']:.2f} "
            f"| {result['step_wall_s']:.2f} | {result['augmentation_cpu_s']:.3f} | {result['tile_wall_s']:.3f} |"
        )
    return rows


def stage_table(run: Path) -> list[str]:
    config = json.loads((run / "run_config.json").read_text())
    rows = ["| stage | wall (s) | CPU (s) |", "|---|---|---|"]
    wall = cpu = 0.0
    for stage in config["stages"]:
        path = run / ".stages" / f"{stage}.json"
        if not path.is_file():
            rows.append(f"| {stage} | not run | |")
            continue
        record = json.loads(path.read_text())
        wall, cpu = wall + record["seconds"], cpu + record["cpu_seconds"]
        rows.append(f"| {stage} | {record['seconds']:.0f} | {record['cpu_seconds']:.0f} |")
    rows.append(f"| all stages | {wall:.0f} | {cpu:.0f} |")
    rows += ["", f"On two free cores the stages need at least {cpu / 120:.0f} minutes (their CPU time over two cores)."]
    return rows


def dice_table(run: Path) -> list[str]:
    from tsretrain.evaluation.report.structures import RESOLUTION_VOXELS, structure_sizes
    from tsretrain.run_files import read_csv as read_listing

    per_case = read_listing(run / "evaluation" / "per_case.csv")
    sizes = structure_sizes(per_case)
    labels = [r for r in read_listing(run / "evaluation" / "per_label.csv") if r["dice_mean"]]
    labels.sort(key=lambda r: -float(r["dice_mean"]))
    rows = ["| structure | test cases | Dice mean | Dice median | mean size (voxels) | |", "|---|---|---|---|---|---|"]
    for r in labels:
        voxels = sizes[r["name"]][1]
        note = "resolution limit" if voxels < RESOLUTION_VOXELS else ""
        rows.append(
            f"| {r['name']} | {r['n_reference']} | {float(r['dice_mean']):.3f} | {float(r['dice_median']):.3f} "
            f"| {voxels:.0f} | {note} |"
        )
    return rows


def dice_section(run: Path) -> list[str]:
    gtvp = json.loads((run / "evaluation" / "summary.json").read_text())["gtvp"]
    head = (
        f"Test Dice (GTVp: mean {gtvp['mean']:.3f}, median {gtvp['median']:.3f}, "
        f"detection rate {gtvp['detection_rate']:.2f}):"
    )
    return [head, "", *dice_table(run), ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("demo-run"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.run, args.threads, args.channels_last, args.steps)
        return
    config = json.loads((args.run / "run_config.json").read_text())
    train, synth, model = config["train"], config["synth"], config["model"]
    evaluated = (args.run / "evaluation" / "summary.json").is_file()
    section = [
        "## The demo: where its time goes and what it learns (`bench/demo.py`)",
        "",
        f"Run: `make demo` defaults, {synth['cases']} regular + edge-case phantoms of {synth['rows']} x "
        f"{synth['columns']} x {synth['slices']}; {model['configuration']}, {model['trainer']}, folds "
        f"{model['folds']}, {train['epochs']} epochs x {train['iterations']} iterations. "
        f"Step measurements: {benchlib.machine_line()}.",
        "",
        "One training step (batch of two 32 x 64 x 64 patches) against one augmented batch, CPU seconds "
        f"(mean of {args.steps}; each variant in its own process):",
        "",
        *step_table(args.run, args.steps),
        "",
        "Stages of the run (wall and CPU seconds as the run recorded them; CPU time is the run's own):",
        "",
        *stage_table(args.run),
        "",
        *(dice_section(args.run) if evaluated else ["The run has no test evaluation yet.", ""]),
        NOTES,
        "Command: `python bench/demo.py --run demo-run --out docs/benchmarks.md`",
    ]
    benchlib.update_section(args.out, "bench/demo.py", "\n".join(section))


if __name__ == "__main__":
    main()
