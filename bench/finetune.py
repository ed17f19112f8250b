"""Benchmark: training steps to the demo's Dice floors from scratch against fine-tuned from a model pretrained on
another cohort (with and without the learning-rate warm-up), and the tumour-focused second stage against the
first stage.

1. Pretraining: ``tsretrain run`` on a cohort of other patients (seed 101, no edge cases, the demo's grid) to a
   trained fold (10 epochs of 40 steps): the stand-in for a pretrained model (TotalSegmentator's weights cannot
   be used offline, and the demo's grid is not theirs).
2. The demo cohort (``make demo``'s configuration) through preprocessing; its plans also transferred from the
   pretrained model (``preprocess --plans-from``).
3. Three arms of ``tsretrain train`` on the demo's fold 0, two thirds of the demo's budget each (20 epochs x 40
   steps):
   ``scratch`` (the baseline: ``make demo``'s training), ``fine-tuned`` (``--init-from`` the pretrained fold,
   warm-up a tenth of the epochs: the default) and ``fine-tuned, no warm-up`` (``--warmup-epochs 0``). The
   checkpoint written every 10 epochs is kept and predicted on the 6 test cases as the demo predicts
   (step 0.25) and scored (``tsretrain evaluate --no-surface``).
4. The second stage from the scratch arm's fold (``tsretrain second-stage``, 5 epochs x 40 steps, focal loss),
   predicted and compared with the first stage (``compare-stages``).

The floors: test mean Dice 0.85 for GTVp and for each of the demo's nine target organs (README: the demo reaches
0.85-0.99 on them). Usage: ``python bench/finetune.py [--out docs/benchmarks.md] [--workdir /tmp/tsretrain-ft]``
(about an hour on 2 free CPU cores: each arm 12-15 minutes).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib

TSRETRAIN = str(Path(sys.executable).parent / "tsretrain")
DATASET = "Dataset366_TotalSegmentator"
TRAINER, CONFIGURATION = "nnUNetTrainerTsrTiny", "3d_tiny"
MODEL = f"{TRAINER}__nnUNetPlans__{CONFIGURATION}"
TARGETS = ("GTVp", "Mandible_Bone", "SpinalCord", "Brainstem", "Parotid_L", "Parotid_R", "Larynx", "Esophagus")
TARGETS += ("Eye_L", "Eye_R")
FLOOR = 0.85


@dataclass(frozen=True)
class Budget:
    """Epochs, steps per epoch and checkpoint interval of the arms; the pretraining's and second stage's epochs;
    the cohorts' synth settings (the demo's unless a smoke run)."""

    epochs: int = 20
    iterations: int = 40
    snapshot_every: int = 10
    pretrain_epochs: int = 10
    second_epochs: int = 5
    synth: str = ""


SMOKE = Budget(2, 2, 1, 1, 1, "rows: 64, columns: 64, slices: 24, pixel_spacing: 3.0, slice_thickness: 5.0, cases: 6")


@dataclass
class Arm:
    seconds: float
    scores: dict[int, dict[str, float]]


def tsretrain(*args: str) -> None:
    subprocess.run([TSRETRAIN, *args], check=True, stdout=subprocess.DEVNULL)


def run_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def pretrain(work: Path, budget: Budget) -> Path:
    """The pretrained model: the demo's pipeline on other patients; its fold-0 folder."""
    synth = f"{{seed: 101, edge_cases: false{', ' + budget.synth if budget.synth else ''}}}"
    config = run_config(
        work / "pretrain.yaml",
        f"synth: {synth}\ntrain: {{epochs: {budget.pretrain_epochs}, iterations: {budget.iterations}, device: cpu}}\n"
        "stages: [synth, scan, convert, split, assemble, preprocess, train]\n",
    )
    tsretrain("run", "--run-dir", str(work / "pretrain"), "--config", str(config))
    return work / "pretrain" / "nnunet" / "nnUNet_results" / DATASET / MODEL / "fold_0"


def prepare_demo(work: Path, pretrained: Path, budget: Budget) -> Path:
    """The demo cohort preprocessed with its own plans and with the pretrained model's (nnUNetPlansTransferred)."""
    synth = f"synth: {{{budget.synth}}}\n" if budget.synth else ""
    config = run_config(work / "demo.yaml", synth + "stages: [synth, scan, convert, split, assemble, preprocess]\n")
    tsretrain("run", "--run-dir", str(work / "demo"), "--config", str(config))
    nnunet = work / "demo" / "nnunet"
    tsretrain("preprocess", "--work", str(nnunet), "--split", str(work / "demo" / "split"), "--configuration",
              CONFIGURATION, "--plans-from", str(pretrained.parent))  # fmt: skip
    return nnunet


def arm_root(work: Path, nnunet: Path, name: str) -> Path:
    """A work root of its own (results) on the demo's raw and preprocessed data."""
    root = work / "arms" / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for folder in ("nnUNet_raw", "nnUNet_preprocessed"):
        (root / folder).symlink_to(nnunet / folder)
    return root


def keep_snapshots(fold: Path, out: Path, stop: threading.Event) -> None:
    """Copy each new checkpoint_latest.pth (written atomically every 10 epochs) as epoch_<n>.pth."""
    import torch

    seen = 0.0
    out.mkdir(parents=True, exist_ok=True)
    while not stop.is_set():
        latest = fold / "checkpoint_latest.pth"
        if latest.is_file() and latest.stat().st_mtime != seen:
            seen = latest.stat().st_mtime
            staged = out / "staged.pth"
            shutil.copyfile(latest, staged)
            epoch = int(torch.load(staged, map_location="cpu", weights_only=False)["current_epoch"])
            staged.replace(out / f"epoch_{epoch}.pth")
        time.sleep(1)


def train_arm(root: Path, plans: str, extra: list[str], snapshots: Path, budget: Budget) -> float:
    """One arm's training with its snapshots; its wall seconds."""
    fold = root / "nnUNet_results" / DATASET / f"{TRAINER}__{plans}__{CONFIGURATION}" / "fold_0"
    stop = threading.Event()
    watcher = threading.Thread(target=keep_snapshots, args=(fold, snapshots, stop))
    watcher.start()
    started = time.perf_counter()
    try:
        tsretrain("train", "--work", str(root), "--fold", "0", "--trainer", TRAINER, "--configuration", CONFIGURATION,
                  "--plans", plans, "--epochs", str(budget.epochs), "--iterations", str(budget.iterations),
                  "--save-every", str(budget.snapshot_every), "--no-validate", "--device", "cpu", *extra)  # fmt: skip
    finally:
        stop.set()
        watcher.join()
    shutil.copyfile(fold / "checkpoint_final.pth", snapshots / f"epoch_{budget.epochs}.pth")
    return time.perf_counter() - started


def score(root: Path, plans: str, checkpoint: Path, out: Path) -> dict[str, float]:
    """Test mean Dice per structure of one checkpoint, predicted as the demo predicts."""
    model = root / "nnUNet_results" / DATASET / f"{TRAINER}__{plans}__{CONFIGURATION}"
    scratch = out / "work"
    shutil.rmtree(out, ignore_errors=True)
    folder = scratch / "nnUNet_results" / DATASET / model.name
    (folder / "fold_0").mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copyfile(model / name, folder / name)
    shutil.copyfile(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    for name in ("nnUNet_raw", "nnUNet_preprocessed"):
        (scratch / name).symlink_to((root / name).resolve())
    tsretrain("predict", "--work", str(scratch), "--out", str(out / "pred"), "--folds", "0", "--trainer", TRAINER,
              "--plans", plans, "--configuration", CONFIGURATION, "--step-size", "0.25", "--device", "cpu")  # fmt: skip
    tsretrain("evaluate", str(scratch / "nnUNet_raw" / DATASET / "labelsTs"), str(out / "pred" / "test"), "--out",
              str(out / "eval"), "--no-surface")  # fmt: skip
    with (out / "eval" / "per_label.csv").open() as handle:
        return {r["name"]: float(r["dice_mean"]) for r in csv.DictReader(handle) if r["dice_mean"]}


def reached(dice: dict[str, float]) -> bool:
    return all(dice.get(name, 0.0) >= FLOOR for name in TARGETS)


def second_stage(work: Path, root: Path, budget: Budget) -> dict[str, Any]:
    """The second stage from the scratch arm's fold, predicted and compared with the first stage."""
    started = time.perf_counter()
    tsretrain("second-stage", "--work", str(root), "--fold", "0", "--trainer", TRAINER, "--configuration",
              CONFIGURATION, "--plans", "nnUNetPlans", "--epochs", str(budget.second_epochs), "--iterations",
              str(budget.iterations), "--device", "cpu")  # fmt: skip
    seconds = time.perf_counter() - started
    model = ["--trainer", TRAINER, "--plans", "nnUNetPlans", "--configuration", CONFIGURATION, "--folds", "0"]
    common = ["--work", str(root), "--step-size", "0.25", "--device", "cpu", *model]
    tsretrain("predict", "--out", str(work / "first"), *common)
    tsretrain("second-predict", "--out", str(work / "second"), *common)
    labels = root / "nnUNet_raw" / DATASET / "labelsTs"
    tsretrain("compare-stages", str(labels), "--first", str(work / "first" / "test"), "--second",
              str(work / "second" / "test"), "--out", str(work / "comparison"))  # fmt: skip
    comparison: dict[str, Any] = json.loads((work / "comparison" / "comparison.json").read_text())
    return {"seconds": seconds, **comparison}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="Markdown file to update (marked sections).")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tsretrain-ft"))
    parser.add_argument("--smoke", action="store_true", help="A few steps on small phantoms: the plumbing only.")
    args = parser.parse_args()
    budget = SMOKE if args.smoke else Budget()
    os.environ.setdefault("TQDM_DISABLE", "1")
    machine = benchlib.machine_line()
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    pretrained = pretrain(work, budget)
    nnunet = prepare_demo(work, pretrained, budget)
    scratch = "scratch (baseline: the demo's training)"
    arms = {
        scratch: ("nnUNetPlans", []),
        "fine-tuned, warm-up a tenth (default)": ("nnUNetPlansTransferred", ["--init-from", str(pretrained)]),
        "fine-tuned, no warm-up": ("nnUNetPlansTransferred", ["--init-from", str(pretrained), "--warmup-epochs", "0"]),
    }
    results: dict[str, Arm] = {}
    roots = {}
    for n, (name, (plans, extra)) in enumerate(arms.items()):
        roots[name] = root = arm_root(work, nnunet, f"arm{n}")
        seconds = train_arm(root, plans, extra, work / "snapshots" / f"arm{n}", budget)
        scores = {}
        for epoch in range(budget.snapshot_every, budget.epochs + 1, budget.snapshot_every):
            checkpoint = work / "snapshots" / f"arm{n}" / f"epoch_{epoch}.pth"
            scores[epoch] = score(root, plans, checkpoint, work / "scores" / f"arm{n}-{epoch}")
            print(name, epoch, json.dumps(scores[epoch]), flush=True)
        results[name] = Arm(seconds, scores)
    second = second_stage(work / "second-stage", roots[scratch], budget)
    command = "python " + " ".join(shlex.quote(a) for a in ["bench/finetune.py", *sys.argv[1:]])
    lines = table(results, results[scratch], budget) + second_table(second, budget)
    header = [
        "## Fine-tuning against training from scratch, and the second stage (`bench/finetune.py`)",
        "",
        f"`{command}`; {machine}. The demo cohort's fold 0 (`{CONFIGURATION}`, `{TRAINER}`, {budget.epochs} epochs "
        f"x {budget.iterations} steps per arm); the pretrained model: the same pipeline trained on another synthetic "
        f"cohort (seed 101, {budget.pretrain_epochs} epochs x {budget.iterations} steps), its plans transferred. "
        f"Test mean Dice of the checkpoint every {budget.snapshot_every} epochs (the test cases, step 0.25); floor: "
        f"{FLOOR} for GTVp and each of {', '.join(TARGETS[1:])}.",
        "",
    ]
    benchlib.update_section(args.out, "bench/finetune.py", "\n".join(header + lines))


def table(results: dict[str, Arm], baseline: Arm, budget: Budget) -> list[str]:
    lines = [
        "| arm | steps | GTVp | lowest target organ | all at the floor | training wall s (x scratch) |",
        "|---|---|---|---|---|---|",
    ]
    for name, arm in results.items():
        for epoch, dice in arm.scores.items():
            lowest = min(TARGETS[1:], key=lambda organ: dice.get(organ, 0.0))
            wall = f"{arm.seconds:.0f} ({arm.seconds / baseline.seconds:.2f})" if epoch == budget.epochs else ""
            lines.append(
                f"| {name} | {epoch * budget.iterations} | {dice.get('GTVp', 0.0):.3f} | {lowest} "
                f"{dice.get(lowest, 0.0):.3f} | {'yes' if reached(dice) else 'no'} | {wall} |"
            )
    first = {
        name: next((e * budget.iterations for e, d in arm.scores.items() if reached(d)), None)
        for name, arm in results.items()
    }
    within = f"not within {budget.epochs * budget.iterations}"
    return [
        *lines,
        "",
        f"Steps to the floors (checkpoints every {budget.snapshot_every * budget.iterations} steps): "
        + "; ".join(f"{name}: {steps or within}" for name, steps in first.items())
        + ".",
        "",
    ]


def second_table(second: dict[str, Any], budget: Budget) -> list[str]:
    lines = [
        f"The second stage from the scratch arm's model ({budget.second_epochs} epochs x {budget.iterations} steps, "
        f"focal loss, {second['seconds']:.0f} s), paired over the {second['n_cases']} test cases (second minus "
        "first):",
        "",
        "| metric | pairs | first stage | second stage | mean difference | 95 % bootstrap interval |",
        "|---|---|---|---|---|---|",
    ]
    for pair in second["paired"]:
        bounds = pair["difference_ci95"]
        interval = f"{bounds[0]:.3f} to {bounds[1]:.3f}" if bounds else "–"
        means = " | ".join(
            f"{pair[k]:.3f}" if pair[k] is not None else "–" for k in ("first_mean", "second_mean", "difference_mean")
        )
        lines.append(f"| {pair['metric']} | {pair['n_pairs']} | {means} | {interval} |")
    found = second["lesions_found"]
    return [
        *lines,
        "",
        f"Lesions: {second['lesions']}, found by the first stage {found['first']}, by the second {found['second']}; "
        f"false-positive components {second['false_positive_components']['first']} and "
        f"{second['false_positive_components']['second']}. {second['n_cases']} test cases: the intervals are a rough "
        "guide.",
    ]


if __name__ == "__main__":
    main()
