"""Figures of a run: training curves, per-organ Dice, the GTVp Dice distribution, case review slices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import SimpleITK as sitk
from matplotlib.ticker import MaxNLocator

CT_WINDOW = (40.0, 400.0)  # soft-tissue level / width (HU)


def _defaults() -> Any:
    """Matplotlib's default style (nnU-Net's plotting changes global seaborn settings in the same process)."""
    return plt.rc_context(matplotlib.rcParamsDefault)


def training_curves(progress: dict[str, Any], title: str, best: int | None, path: Path) -> None:
    """Train/val loss, pseudo-Dice (mean foreground and EMA), epoch time and learning rate per epoch, with the
    best EMA epoch marked."""
    with _defaults():
        fig, axes = plt.subplots(2, 2, figsize=(10, 6.5))
        epochs = np.arange(len(progress["train_losses"]))
        axes[0, 0].plot(epochs, progress["train_losses"], label="train")
        axes[0, 0].plot(epochs[: len(progress["val_losses"])], progress["val_losses"], label="validation")
        axes[0, 0].set_title("loss")
        pseudo = [float(np.nanmean(d)) if len(d) else np.nan for d in progress["pseudo_dice"]]
        axes[0, 1].plot(epochs[: len(pseudo)], pseudo, label="pseudo-Dice (mean)")
        axes[0, 1].plot(epochs[: len(progress["ema_fg_dice"])], progress["ema_fg_dice"], label="EMA")
        axes[0, 1].set_title("pseudo-Dice")
        axes[0, 1].set_ylim(0, 1)
        if best is not None:
            for ax in axes[0]:
                ax.axvline(best, color="#c0392b", linestyle="--", linewidth=1, label=f"best epoch {best}")
            axes[0, 1].plot([best], [progress["ema_fg_dice"][best]], "o", color="#c0392b")
        for ax in axes[0]:
            ax.legend(fontsize=8)
        axes[1, 0].plot(epochs[: len(progress["epoch_seconds"])], progress["epoch_seconds"])
        axes[1, 0].set_title("epoch time (s)")
        axes[1, 0].set_ylim(bottom=0)
        axes[1, 1].plot(epochs[: len(progress["learning_rates"])], progress["learning_rates"])
        axes[1, 1].set_title("learning rate")
        axes[1, 1].set_ylim(bottom=0)
        for ax in axes.flat:
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)


def per_organ_dice(per_case: list[dict[str, str]], path: Path) -> None:
    """Box plot of per-case Dice for every label with a reference, sorted by median."""
    with _defaults():
        values: dict[str, list[float]] = {}
        for row in per_case:
            if row["status"] in ("both", "missed"):
                values.setdefault(row["name"], []).append(float(row["dice"]))
        names = sorted(values, key=lambda n: float(np.median(values[n])))
        fig, ax = plt.subplots(figsize=(8, max(3.0, 0.28 * len(names) + 1)))
        if names:
            ax.boxplot([values[n] for n in names], orientation="horizontal", tick_labels=names)
        ax.set_xlim(0, 1)
        ax.set_xlabel("Dice")
        ax.set_title("Per-organ Dice on the test set")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)


def gtvp_distribution(dice: list[float], quantiles: dict[str, float | None], path: Path) -> None:
    """Histogram of per-case GTVp Dice with its quantiles marked."""
    with _defaults():
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.hist(dice, bins=[i / 20 for i in range(21)], color="#4a7ab5", edgecolor="white")
        top = ax.get_ylim()[1]
        marked = [(name, value) for name, value in quantiles.items() if value is not None]
        for n, (name, value) in enumerate(marked):
            ax.axvline(value, color="#c0392b", linestyle="--", linewidth=1)
            height = 0.95 if n % 2 == 0 else 0.6  # neighbouring quantiles are often close: labels at two heights
            ax.text(value, top * height, name, rotation=90, va="top", ha="right", fontsize=8, backgroundcolor="white")
        ax.set_xlabel("GTVp Dice per case")
        ax.set_ylabel("cases")
        ax.set_xlim(0, 1)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)


def case_review(ct: Path, reference: Path, prediction: Path, label: int, title: str, path: Path) -> None:
    """The axial slice with most reference tumour, reference and prediction side by side: CT in a soft-tissue
    window, every structure in its colour (the same in both panels), GTVp outlined (reference green,
    prediction red; the reference outline is repeated dashed over the prediction)."""
    with _defaults():
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(ct)))
        ref_map = sitk.GetArrayFromImage(sitk.ReadImage(str(reference)))
        pred_map = sitk.GetArrayFromImage(sitk.ReadImage(str(prediction)))
        ref = ref_map == label
        k = int(np.argmax(ref.sum(axis=(1, 2)))) if ref.any() else image.shape[0] // 2
        level, width = CT_WINDOW
        body = np.argwhere(image[k] > -500)
        (y0, x0), (y1, x1) = (body.min(axis=0), body.max(axis=0)) if len(body) else ((0, 0), image[k].shape)
        colours = plt.get_cmap("tab20")
        top = max(int(ref_map.max()), int(pred_map.max()), 1)
        fig, axes = plt.subplots(1, 2, figsize=(9, 4.8))
        for ax, labels, name in ((axes[0], ref_map, "reference"), (axes[1], pred_map, "prediction")):
            ax.imshow(image[k], cmap="gray", vmin=level - width / 2, vmax=level + width / 2)
            overlay = np.ma.masked_equal(labels[k], 0)
            ax.imshow(overlay, cmap=colours, vmin=1, vmax=max(top, 20), alpha=0.35, interpolation="nearest")
            outline = labels[k] == label
            if outline.any():
                colour = "#2ecc71" if name == "reference" else "#e74c3c"
                ax.contour(outline.astype(float), levels=[0.5], colors=colour, linewidths=1.6)
            if name == "prediction" and ref[k].any():
                ax.contour(ref[k].astype(float), levels=[0.5], colors="#2ecc71", linewidths=0.9, linestyles="--")
            ax.set_xlim(x0 - 3, x1 + 3)
            ax.set_ylim(y1 + 3, y0 - 3)
            ax.set_title(name, fontsize=9)
            ax.axis("off")
        fig.suptitle(f"{title}, slice {k}", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)


def paired_stages(rows: list[dict[str, str]], path: Path) -> None:
    """Per test case with a tumour, its Dice and HD95 in the first and in the second stage, joined by a line
    (missed tumours: Dice 0, no HD95)."""
    with _defaults():
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
        for ax, metric, unit in ((axes[0], "dice", "Dice"), (axes[1], "hd95", "HD95 (mm)")):
            for row in rows:
                values = [row[f"{stage}_{metric}"] for stage in ("first", "second")]
                if all(v not in ("", None) for v in values):
                    ax.plot([0, 1], [float(v) for v in values], "o-", color="#2c7fb8", alpha=0.7)
            ax.set_xticks([0, 1], ["first stage", "second stage"])
            ax.set_xlim(-0.3, 1.3)
            ax.set_ylabel(unit)
            ax.set_title(f"GTVp {unit}, paired per test case (n = {sum(1 for _ in rows)})", fontsize=9)
        axes[0].set_ylim(0, 1)
        axes[1].set_ylim(bottom=0)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
