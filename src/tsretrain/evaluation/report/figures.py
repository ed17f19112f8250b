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

from tsretrain.run_files import Progress

CT_WINDOW = (40.0, 400.0)  # soft-tissue level / width (HU)


def _defaults() -> Any:
    """Matplotlib's default style (nnU-Net's plotting changes global seaborn settings in the same process)."""
    return plt.rc_context(matplotlib.rcParamsDefault)


def training_curves(progress: Progress, title: str, best: int | None, path: Path) -> None:
    """Train/val loss, pseudo-Dice (mean foreground and EMA), epoch time and learning rate per epoch, with the
    best EMA epoch marked."""
    with _defaults():
        fig, axes = plt.subplots(2, 2, figsize=(10, 6.5))
        epochs = np.arange(len(progress["train_losses"]))
        axes[0, 0].plot(epochs, progress["train_losses"], label="train")
        axes[0, 0].plot(epochs[: len(progress["val_losses"])], progress["val_losses"], label="validation")
        axes[0, 0].set_title("loss")
        axes[0, 0].set_ylabel("Dice + cross-entropy (unitless;\nbelow 0: the soft Dice term)")
        pseudo = [float(np.nanmean(d)) if len(d) else np.nan for d in progress["pseudo_dice"]]
        axes[0, 1].plot(epochs[: len(pseudo)], pseudo, label="pseudo-Dice (mean)")
        axes[0, 1].plot(epochs[: len(progress["ema_fg_dice"])], progress["ema_fg_dice"], label="EMA")
        axes[0, 1].set_title("pseudo-Dice")
        axes[0, 1].set_ylabel("Dice on validation patches")
        axes[0, 1].set_ylim(0, 1)
        if best is not None:
            for ax in axes[0]:
                ax.axvline(best, color="#c0392b", linestyle="--", linewidth=1, label=f"best epoch {best}")
            axes[0, 1].plot([best], [progress["ema_fg_dice"][best]], "o", color="#c0392b")
        for ax in axes[0]:
            ax.legend(fontsize=8)
        axes[1, 0].plot(epochs[: len(progress["epoch_seconds"])], progress["epoch_seconds"])
        axes[1, 0].set_title("epoch time")
        axes[1, 0].set_ylabel("seconds")
        axes[1, 0].set_ylim(bottom=0)
        axes[1, 1].plot(epochs[: len(progress["learning_rates"])], progress["learning_rates"])
        axes[1, 1].set_title("learning rate")
        axes[1, 1].set_ylabel("learning rate (per step)")
        axes[1, 1].set_ylim(bottom=0)
        for ax in axes.flat:
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)


def per_organ_dice(per_case: list[dict[str, str]], path: Path) -> None:
    """Box plot of per-case Dice for every label with a reference, sorted by median, n beside each name; a label
    the model never predicted is marked as such (not a box at 0 that reads like no data), labels without any
    reference are named under the axis."""
    with _defaults():
        values: dict[str, list[float]] = {}
        seen: set[str] = set()
        for row in per_case:
            seen.add(row["name"])
            if row["status"] in ("both", "missed"):
                values.setdefault(row["name"], []).append(float(row["dice"]))
        names = sorted(values, key=lambda n: float(np.median(values[n])))
        fig, ax = plt.subplots(figsize=(8, max(3.0, 0.28 * len(names) + 1.4)))
        if names:
            ax.boxplot([values[n] for n in names], orientation="horizontal",
                       tick_labels=[f"{n} (n={len(values[n])})" for n in names])  # fmt: skip
            for y, name in enumerate(names, 1):
                if not any(values[name]):
                    ax.plot([0], [y], "x", color="#c0392b")
                    ax.text(0.02, y, "never predicted", va="center", fontsize=7, color="#c0392b")
        ax.set_xlim(0, 1)
        ax.set_xlabel("Dice per test case (n: cases with a reference)")
        ax.set_title("Per-organ Dice on the test set")
        absent = sorted(seen - set(values))
        if absent:
            fig.text(0.01, 0.005, "No reference in any test case: " + ", ".join(absent), fontsize=7, wrap=True)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)


def gtvp_distribution(dice: list[float], quantiles: dict[str, float | None], path: Path) -> None:
    """Histogram of per-case GTVp Dice with its quantiles marked."""
    with _defaults():
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.hist(dice, bins=[i / 20 for i in range(21)], color="#4a7ab5", edgecolor="white")
        marked = [(name, value) for name, value in quantiles.items() if value is not None]
        for n, (name, value) in enumerate(marked):
            ax.axvline(value, color="#c0392b", linestyle="--", linewidth=1)
            # above the plot area, never over a bar; neighbouring quantiles are often close: two rows of labels
            ax.text(value, 1.02 + 0.09 * (n % 2), name, transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=7, color="#c0392b")  # fmt: skip
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("GTVp Dice per case")
        ax.set_ylabel("test cases (count)")
        ax.set_xlim(0, 1)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)


def _error_slice(ref: np.ndarray, pred: np.ndarray) -> int:
    """The axial slice where the tumour's reference and prediction disagree most (the most tumour when they
    agree everywhere, the middle without a tumour)."""
    error = (ref ^ pred).sum(axis=(1, 2))
    if error.any():
        return int(np.argmax(error))
    return int(np.argmax(ref.sum(axis=(1, 2)))) if ref.any() else ref.shape[0] // 2


def _orientation(image: sitk.Image) -> tuple[str, str, str, str]:
    """The patient sides at the left, right, top and bottom of an axial slice drawn with imshow (LPS axes)."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    column, row = direction[:, 0], direction[:, 1]  # patient directions of increasing column and row
    x_side = ("R", "L") if column[0] >= 0 else ("L", "R")  # +x is the patient's left (LPS)
    y_side = ("A", "P") if row[1] >= 0 else ("P", "A")  # +y is posterior
    return x_side[0], x_side[1], y_side[0], y_side[1]


def case_review(ct: Path, reference: Path, prediction: Path, label: int, title: str, path: Path) -> None:
    """The axial slice where the tumour's reference and prediction disagree most, reference and prediction side
    by side (CT in a soft-tissue window, every structure in its colour, GTVp outlined: reference green,
    prediction red, the reference repeated dashed over the prediction), with the patient's orientation, a 10 mm
    scale bar and the slice's height in mm; a third panel projects the whole volume from the front: where the
    missed tumour (reference only) and the false positives (prediction only) lie, the slice shown marked."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    with _defaults():
        ct_image = sitk.ReadImage(str(ct))
        image = sitk.GetArrayFromImage(ct_image)
        ref_map = sitk.GetArrayFromImage(sitk.ReadImage(str(reference)))
        pred_map = sitk.GetArrayFromImage(sitk.ReadImage(str(prediction)))
        ref, pred = ref_map == label, pred_map == label
        k = _error_slice(ref, pred)
        z_mm = ct_image.TransformIndexToPhysicalPoint((0, 0, k))[2]
        spacing_x, _, spacing_z = ct_image.GetSpacing()
        left, right, top_side, bottom_side = _orientation(ct_image)
        level, width = CT_WINDOW
        body = np.argwhere(image[k] > -500)
        (y0, x0), (y1, x1) = (body.min(axis=0), body.max(axis=0)) if len(body) else ((0, 0), image[k].shape)
        colours = plt.get_cmap("tab20")
        top = max(int(ref_map.max()), int(pred_map.max()), 1)
        fig, axes = plt.subplots(1, 3, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1, 1, 0.8]})
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
            ax.set_title(f"{name}, axial z = {z_mm:.1f} mm", fontsize=9)
            ax.axis("off")
            ax.text(0.01, 0.5, left, transform=ax.transAxes, color="yellow", fontsize=10, va="center")
            ax.text(0.97, 0.5, right, transform=ax.transAxes, color="yellow", fontsize=10, va="center")
            ax.text(0.5, 0.97, top_side, transform=ax.transAxes, color="yellow", fontsize=10, ha="center", va="top")
            ax.text(0.5, 0.01, bottom_side, transform=ax.transAxes, color="yellow", fontsize=10, ha="center")
            bar = 10.0 / spacing_x  # 10 mm in pixels
            ax.plot([x0, x0 + bar], [y1, y1], color="white", linewidth=2.5)
            ax.text(x0 + bar / 2, y1 - 2, "10 mm", color="white", fontsize=7, ha="center", va="bottom")
        # the whole volume from the front: reference only (missed), prediction only (false positive), both
        missed, extra, both = (ref & ~pred).any(axis=1), (pred & ~ref).any(axis=1), (ref & pred).any(axis=1)
        projection = np.zeros((*missed.shape, 3))
        projection[both] = (0.55, 0.55, 0.55)
        projection[missed] = (0.18, 0.8, 0.44)
        projection[extra] = (0.91, 0.3, 0.24)
        axes[2].imshow(projection, origin="lower", aspect=spacing_z / spacing_x, interpolation="nearest")
        axes[2].axhline(k, color="yellow", linewidth=0.8, linestyle=":")
        axes[2].set_title("GTVp errors, whole volume seen from the front", fontsize=9)
        axes[2].set_xlabel(f"{left} - {right} (voxels of {spacing_x:.1f} mm)")
        axes[2].set_ylabel(f"slice (of {spacing_z:.1f} mm), inferior to superior")
        handles = [
            Line2D([], [], color="#2ecc71", linewidth=1.6, label="GTVp reference"),
            Line2D([], [], color="#e74c3c", linewidth=1.6, label="GTVp prediction"),
            Patch(color=(0.18, 0.8, 0.44), label="missed (reference only)"),
            Patch(color=(0.91, 0.3, 0.24), label="false positive (prediction only)"),
            Patch(color=(0.55, 0.55, 0.55), label="both"),
            Line2D([], [], color="yellow", linestyle=":", label="slice shown"),
        ]
        fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=7, frameon=False)
        fig.suptitle(f"{title}; the axial slice of largest GTVp error", fontsize=10)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
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
