"""The report's training section: each trained fold's curves, convergence and environment."""

from __future__ import annotations

from pathlib import Path

from tsretrain.evaluation.report.blocks import Block, Figure, Heading, Paragraph, Table, fmt
from tsretrain.layout import RunLayout
from tsretrain.run_files import PROGRESS, Progress, read_progress, second_stage_trainer


def model_title(folder: str, trainer: str) -> str:
    """How the report names a trained model: the first stage (the run's trainer), its second stage, or the
    trainer of another model in the results folder."""
    model_trainer = folder.split("__", 1)[0]
    if model_trainer == trainer:
        return "first stage"
    return (
        f"second stage ({model_trainer})"
        if model_trainer.startswith(second_stage_trainer(trainer, ""))
        else model_trainer
    )


def best_epoch(progress: Progress) -> int | None:
    """The epoch of the best EMA pseudo-Dice (where nnU-Net writes checkpoint_best)."""
    ema = progress["ema_fg_dice"]
    return max(range(len(ema)), key=ema.__getitem__) if ema else None


RISING = 0.005  # EMA pseudo-Dice gained over the last tenth of the epochs that says the training still learns


def convergence(progress: Progress) -> str:
    """What the curve says: still rising at the end (not converged), or flat / past its best."""
    ema = progress["ema_fg_dice"]
    if len(ema) < 2:
        return "too few epochs to tell"
    window = max(1, len(ema) // 10)
    gain = ema[-1] - ema[-1 - window]
    if gain > RISING:
        return f"not converged: EMA pseudo-Dice still rising (+{gain:.3f} over the last {window} epochs)"
    best = best_epoch(progress)
    return f"flat at the end (best epoch {best} of {len(ema) - 1}, {gain:+.3f} over the last {window} epochs)"


def training_section(run: Path, dataset: str, trainer: str, figure_dir: Path) -> tuple[list[Block], list[list[str]]]:
    from tsretrain.evaluation.report import figures  # matplotlib only when a report is written

    blocks: list[Block] = [Heading("4. Training")]
    rows, provenance = [], []
    for progress_path in PROGRESS.glob(RunLayout(run).results, dataset=dataset):
        progress = read_progress(progress_path)
        fold = progress_path.parent.name
        model = progress_path.parent.parent.name
        title = model_title(model, trainer)
        seconds = sum(progress["epoch_seconds"])
        gpu_hours = seconds / 3600 if progress.get("device", "cpu").startswith("cuda") else 0.0
        best = best_epoch(progress)
        rows.append(
            [
                title,
                fold,
                str(len(progress["train_losses"])),
                fmt(progress.get("iterations_per_epoch")),
                fmt(progress["train_losses"][-1]),
                fmt(progress["val_losses"][-1]),
                fmt(best),
                fmt(progress["ema_fg_dice"][best] if best is not None else None),
                fmt(seconds, 1),
                convergence(progress),
            ]
        )
        environment = progress.get("environment", {})
        provenance.append(
            [
                f"{model} {fold}",
                progress.get("device_name", "–"),
                f"torch {environment.get('torch', '–')}, CUDA {environment.get('cuda', '–')}",
                environment.get("nnunetv2", "–"),
                fmt(seconds, 1),
                fmt(gpu_hours, 3),
            ]
        )
        image = figure_dir / f"training_{model.split('__', 1)[0]}_{fold}.png"
        figures.training_curves(progress, f"{model} {fold}", best, image)
        blocks.append(Figure(image, f"Training curves, {title}, {fold}; best epoch {fmt(best)} marked"))
    header = ["model", "fold", "epochs", "iterations per epoch", "final train loss", "final val loss", "best epoch"]
    header += ["best EMA pseudo-Dice", "training time (s)", "convergence (from the curve)"]
    blocks.insert(1, Table(header, rows))
    blocks.insert(
        1,
        Paragraph(
            "Pseudo-Dice: nnU-Net's Dice on the validation patches of each epoch (mean over structures), "
            "smoothed as an exponential moving average (EMA); the best EMA epoch is where checkpoint_best is "
            "written. Prediction uses each fold's final checkpoint.",
        ),
    )
    return blocks, provenance
