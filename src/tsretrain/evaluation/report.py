"""The ``report`` stage: one self-contained HTML file and its Markdown twin, from a finished run's outputs.

Sections follow the seed report: dataset exploration, split, planning, training, test evaluation, case
review, comparison with published GTVp results, provenance. Every number is read from the run's CSV/JSON
outputs (nothing is recomputed here), so each can be traced to its file.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tsretrain.conversion.convert import listing_rows
from tsretrain.conversion.listing import read_listing
from tsretrain.dataset.split import read_split
from tsretrain.evaluation.review import read_review
from tsretrain.labels.dictionary import TUMOUR_LABEL
from tsretrain.layout import RunLayout
from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_text
from tsretrain.synth import SYNTHETIC_MANUFACTURER
from tsretrain.versions import commit, installed

# ("h2", text) | ("h3", text) | ("p", text) | ("banner", text) | ("pre", text) | ("table", header, rows)
# | ("img", path, caption)
Block = tuple[Any, ...]

LITERATURE = [  # (study, modality, GTVp result, comparable with this run, source)
    (
        "HECKTOR 2020, best team",
        "PET/CT",
        "Dice 0.759 (inter-observer 0.61)",
        "no: PET/CT",
        "Andrearczyk et al., Overview of the HECKTOR challenge at MICCAI 2020, LNCS 12603 (2021)",
    ),
    (
        "HECKTOR 2022, best team",
        "PET/CT",
        "DSCagg 0.788",
        "no: PET/CT",
        "Andrearczyk et al., Overview of the HECKTOR challenge at MICCAI 2022, LNCS 13626 (2023)",
    ),
    (
        "Unmodified nnU-Net v2 (HECKTOR 2025)",
        "PET/CT",
        "Dice 0.744 (validation leaderboard)",
        "no: PET/CT",
        "team sztu_bme2025, nnU-Net v2 for Head-and-Neck PET/CT Primary Tumor and Lymph Node Segmentation, "
        "HECKTOR 2025 (openreview.net/forum?id=krRGEWxfJY)",
    ),
    (
        "Moe et al. 2021",
        "CT only / PET/CT",
        "Dice 0.55 / 0.71; CT model detected 55 % of tumours",
        "CT-only value",
        "Moe et al., Eur J Nucl Med Mol Imaging 48:2782-2792 (2021)",
    ),
    (
        "Groendahl et al. 2021",
        "CT only / PET/CT",
        "Dice 0.66 / 0.74",
        "CT-only value",
        "Groendahl et al., Phys Med Biol 66:065012 (2021)",
    ),
    (
        "Seed manual retrain (volumes cropped to the GTVp slab)",
        "CT",
        "mean 0.519, median 0.582",
        "no: cropping leaked the tumour position into training and test",
        "the group's own report that tsretrain automates",
    ),
]
SYNTHETIC_WARNING = (
    "SYNTHETIC DATA: this run's patients are generated phantoms, not patients. Its numbers show that the pipeline "
    "learns, never how a model would do on patients; nothing here is comparable with a published result."
)
# Not a published result: an estimate from the two CT-only studies above (0.55 and 0.66) and full-volume input.
CT_ONLY_ESTIMATE = (0.60, 0.70)


def fmt(value: Any, digits: int = 3) -> str:
    """How numbers appear in the report (the tests read them back the same way)."""
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, list | tuple):
        return " x ".join(fmt(float(v), 2).removesuffix(".00") for v in value)
    return str(value)


def interval(bounds: list[float] | None) -> str:
    return "–" if not bounds else f"{bounds[0]:.3f} to {bounds[1]:.3f}"


LARGE_ML = 3.0  # a structure this big (mean reference volume) is one of the run's large structures
RESOLUTION_VOXELS = 100  # below this a structure is about 6 voxels across or less
RESOLUTION_NOTE = "at the resolution limit: a one-voxel error in its outline alone costs about 0.4 Dice"


def structure_sizes(per_case: list[dict[str, str]]) -> dict[str, tuple[float, float]]:
    """Mean reference volume (mL, voxels) of every label, over the test cases whose reference has it."""
    sizes: dict[str, list[tuple[float, float]]] = {}
    for row in per_case:
        if row["status"] in ("both", "missed"):
            sizes.setdefault(row["name"], []).append((float(row["ref_volume_ml"]), float(row["ref_voxels"])))
    return {name: (sum(m for m, _ in v) / len(v), sum(n for _, n in v) / len(v)) for name, v in sizes.items()}


def large_structures(per_case: list[dict[str, str]], limit: int = 10) -> list[tuple[str, float]]:
    """(name, mean Dice) of the largest structures other than GTVp of at least ``LARGE_ML``, by Dice."""
    sizes = structure_sizes(per_case)
    dice: dict[str, list[float]] = {}
    for row in per_case:
        if row["status"] in ("both", "missed"):
            dice.setdefault(row["name"], []).append(float(row["dice"]))
    large = sorted(
        (n for n, (ml, _) in sizes.items() if ml >= LARGE_ML and n != TUMOUR_LABEL), key=lambda n: -sizes[n][0]
    )
    return sorted(((n, sum(dice[n]) / len(dice[n])) for n in large[:limit]), key=lambda item: -item[1])


@dataclass(frozen=True)
class ReportConfig:
    """Configuration of the ``report`` stage."""

    run_dir: Path
    out: Path
    dataset: str = "Dataset366_TotalSegmentator"  # nnU-Net dataset folder
    trainer: str = "nnUNetTrainerTsr"  # the first stage's (a second stage's trainer is named after it)
    synthetic: bool = False
    comparison: Path | None = None  # compare-stages' output: the second stage's section
    postprocessing: Path | None = None  # postprocess' output: the post-processing section
    run_id: str = ""  # the run's name in the report (a cluster run's store prefix); empty: the run folder's name


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "–"


def model_title(folder: str, trainer: str) -> str:
    """How the report names a trained model: the first stage (the run's trainer), its second stage, or the
    trainer of another model in the results folder."""
    model_trainer = folder.split("__", 1)[0]
    if model_trainer == trainer:
        return "first stage"
    return f"second stage ({model_trainer})" if model_trainer.startswith(trainer + "GTVp") else model_trainer


def synthetic_cases(run: Path) -> tuple[int, int]:
    """How many of the scanned patients carry the generator's mark (their CT's DICOM Manufacturer), of all."""
    inventory = json.loads((RunLayout(run).scan / "inventory.json").read_text())
    plans = inventory.get("cases", [])
    return sum(p.get("manufacturer") == SYNTHETIC_MANUFACTURER for p in plans), len(plans)


def synthetic_banner(marked: int, cases: int, flagged: bool) -> list[Block]:
    """The banner at the top of a report on synthetic data: recognised from the data, whatever the flags."""
    if not marked and not flagged:
        return []
    found = (
        f"{marked} of {cases} patients carry the synthetic generator's mark (DICOM Manufacturer "
        f"'{SYNTHETIC_MANUFACTURER}')"
        if marked
        else "the run was started on the synthetic cohort (no patient carries the generator's mark)"
    )
    return [("banner", f"{SYNTHETIC_WARNING} ({found}.)")]


def scope_blocks(run: Path, dataset: str, trainer: str) -> list[Block]:
    """For a synthetic demo: what the run shows and what it does not."""
    split = read_split(RunLayout(run).split)
    progress = sorted((RunLayout(run).results / dataset).glob(f"{trainer}__*/fold_*/progress.json"))
    trained = [p.parent.name.removeprefix("fold_") for p in progress]
    iterations = [
        len(d["train_losses"]) * d.get("iterations_per_epoch", 0) for d in (json.loads(p.read_text()) for p in progress)
    ]
    folds = f"fold {', '.join(trained)} of {len(split['folds'])}" if trained else "no fold"
    return [
        ("h2", "About this run"),
        (
            "p",
            f"A CPU demo on a synthetic cohort. It shows every stage running for real on DICOM-RT input: "
            f"discovery and conversion with its exclusions, the leak-free split, nnU-Net's own planning, "
            f"preprocessing, training ({folds}, {', '.join(map(str, iterations)) or 0} iterations, a small "
            "network on small patches) and prediction, then evaluation on test patients the model has never "
            "seen: section 5 shows how far it learned the large structures and the tumour.",
        ),
        (
            "p",
            "It does not show clinical accuracy (phantoms are simpler than patients), a cross-validated "
            "ensemble (one fold trained well says more than several trained too briefly to learn), the 90-label "
            "map (TotalSegmentator pseudo-labels need their weights), the small structures at this resolution, "
            "or training speed on a GPU.",
        ),
    ]


def dataset_section(run: Path) -> list[Block]:
    rows = [
        {k: " | ".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in row.items()}
        for row in listing_rows(RunLayout(run).converted)
    ]
    by_status = Counter(r["status"] for r in rows)
    reasons = Counter(r["reason"] for r in rows if r["status"] != "ok")
    blocks: list[Block] = [
        ("h2", "1. Dataset exploration"),
        (
            "p",
            f"{len(rows)} patients found; {by_status['ok']} converted, {by_status['excluded']} excluded, "
            f"{by_status['failed']} failed. Every exclusion has a reason (listing: converted/cases.csv).",
        ),
    ]
    if reasons:
        blocks.append(
            (
                "table",
                ["reason", "cases", "share of excluded"],
                [[r, str(n), f"{100 * n / sum(reasons.values()):.0f} %"] for r, n in reasons.most_common()],
            )
        )
    presence: Counter[str] = Counter()
    ok = [r for r in rows if r["status"] == "ok"]
    for row in ok:
        manifest = json.loads((RunLayout(run).converted / "cases" / row["case_id"] / "manifest.json").read_text())
        presence.update(name for name, info in manifest["labels"].items() if info["present"])
    blocks.append(
        (
            "table",
            ["label", "present in converted cases"],
            [[name, f"{n}/{len(ok)}"] for name, n in sorted(presence.items())],
        )
    )
    unmapped = Counter(n for r in rows for n in r["unmapped_rois"].split(" | ") if n)
    blocks.append(
        ("p", "Unmapped ROI names: " + (", ".join(f"{n} ({c})" for n, c in unmapped.most_common(30)) or "none"))
    )
    return blocks


def split_section(run: Path) -> list[Block]:
    split = read_split(RunLayout(run).split)
    sizes = [["test", str(len(split["test"]))]] + [[f"fold {n}", str(len(f))] for n, f in enumerate(split["folds"])]
    return [
        ("h2", "2. Split"),
        (
            "p",
            f"Patient-level, seed {split['seed']}, stratified by GTVp volume band; test cases never enter "
            "nnU-Net's training folder, fingerprint or plans.",
        ),
        ("table", ["part", "cases"], sizes),
        ("p", "Test cases: " + ", ".join(split["test"])),
    ]


def planning_section(run: Path, dataset: str) -> list[Block]:
    path = RunLayout(run).preprocessed / dataset / "planning_summary.json"
    planning = json.loads(path.read_text())
    rows = [
        [
            name,
            fmt(c["spacing"]),
            fmt(c["median_image_size_in_voxels"]),
            fmt(c["patch_size"]),
            str(c["batch_size"]),
            c["network"],
            fmt(c["features_per_stage"]),
        ]
        for name, c in planning["configurations"].items()
    ]
    return [
        ("h2", "3. Planning"),
        (
            "p",
            f"Planner {planning['planner']}, plans {planning['plans_identifier']}; "
            f"{planning['n_training_cases']} training cases; "
            f"median spacing {fmt(planning['original_median_spacing'])} mm, "
            f"median shape {fmt(planning['original_median_shape'])} (z, y, x); CT normalisation.",
        ),
        ("table", ["configuration", "spacing (mm)", "median shape", "patch", "batch", "network", "features"], rows),
    ]


def best_epoch(progress: dict[str, Any]) -> int | None:
    """The epoch of the best EMA pseudo-Dice (where nnU-Net writes checkpoint_best)."""
    ema = progress["ema_fg_dice"]
    return max(range(len(ema)), key=ema.__getitem__) if ema else None


RISING = 0.005  # EMA pseudo-Dice gained over the last tenth of the epochs that says the training still learns


def convergence(progress: dict[str, Any]) -> str:
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
    from tsretrain.evaluation import figures  # matplotlib only when a report is written

    blocks: list[Block] = [("h2", "4. Training")]
    rows, provenance = [], []
    results = RunLayout(run).results / dataset
    for progress_path in sorted(results.glob("*/fold_*/progress.json")):
        progress = json.loads(progress_path.read_text())
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
        blocks.append(("img", image, f"Training curves, {title}, {fold}; best epoch {fmt(best)} marked"))
    header = ["model", "fold", "epochs", "iterations per epoch", "final train loss", "final val loss", "best epoch"]
    header += ["best EMA pseudo-Dice", "training time (s)", "convergence (from the curve)"]
    blocks.insert(1, ("table", header, rows))
    blocks.insert(
        1,
        (
            "p",
            "Pseudo-Dice: nnU-Net's Dice on the validation patches of each epoch (mean over structures), "
            "smoothed as an exponential moving average (EMA); the best EMA epoch is where checkpoint_best is "
            "written. Prediction uses each fold's final checkpoint.",
        ),
    )
    return blocks, provenance


GTVP_CASE_HEADER = ["case", "GTVp (mL)", "Dice", "HD95 (mm)", "NSD", "lesions found", "false-positive components"]


def gtvp_case_row(row: dict[str, str]) -> list[str]:
    """One test case's tumour in the report: volume, metrics, lesions found and false-positive components (mL)."""
    lesions = f"{row['lesions_found']} of {row['lesions']}" if row.get("lesions") else "–"
    outside = row.get("false_positive_components") or ""
    if outside:
        outside = f"{outside} ({fmt(float(row['false_positive_ml']), 2)} mL)"
    number = {k: float(row[k]) if row.get(k) else None for k in ("ref_volume_ml", "dice", "hd95", "nsd")}
    return [
        row["case"],
        fmt(number["ref_volume_ml"], 2),
        fmt(number["dice"]),
        fmt(number["hd95"], 1),
        fmt(number["nsd"]),
        lesions,
        outside or "–",
    ]


def gtvp_blocks(gtvp: dict[str, Any], per_case: list[dict[str, str]], figure_dir: Path) -> list[Block]:
    """GTVp statistics, quantiles, volume bands, extreme cases and the distribution figure."""
    from tsretrain.evaluation import figures  # matplotlib only when a report is written
    from tsretrain.evaluation.tables import gtvp_tables

    if not gtvp.get("n_cases"):
        return []
    tumour = [r for r in per_case if r["name"] == TUMOUR_LABEL and r["status"] in ("both", "missed")]
    dice = [float(r["dice"]) for r in tumour]
    figures.gtvp_distribution(dice, gtvp["quantiles"], figure_dir / "gtvp_distribution.png")
    return [
        ("h3", TUMOUR_LABEL),
        *gtvp_tables(gtvp),
        ("p", "Per test case with a tumour, worst Dice first:"),
        ("table", GTVP_CASE_HEADER, [gtvp_case_row(r) for r in sorted(tumour, key=lambda r: float(r["dice"]))]),
        (
            "p",
            "Cases below 0.01: " + (", ".join(f"{c['case']} ({fmt(c['dice'])})" for c in gtvp["below_0.01"]) or "none"),
        ),
        (
            "p",
            "Cases above 0.84: " + (", ".join(f"{c['case']} ({fmt(c['dice'])})" for c in gtvp["above_0.84"]) or "none"),
        ),
        ("img", figure_dir / "gtvp_distribution.png", "GTVp Dice distribution, quantiles marked"),
    ]


def evaluation_section(run: Path, figure_dir: Path, synthetic: bool) -> tuple[list[Block], dict[str, Any]]:
    from tsretrain.evaluation import figures  # matplotlib only when a report is written
    from tsretrain.evaluation.tables import conventions, label_tables

    summary = json.loads((RunLayout(run).evaluation / "summary.json").read_text())
    per_case = read_listing(RunLayout(run).evaluation / "per_case.csv")
    figures.per_organ_dice(per_case, figure_dir / "per_organ_dice.png")
    blocks: list[Block] = [
        ("h2", "5. Test set evaluation"),
        (
            "p",
            f"{summary['n_cases']} test cases. Average Dice across all structures: "
            f"{fmt(summary['average_dice_all_structures'])} (pooled over reference sources, "
            f"{summary['average_dice_all_structures_n_labels']} labels). Labels absent from the reference are not "
            "averaged; missed and false-positive cases are counted in their own columns. Each table is sorted by "
            "mean Dice.",
        ),
        conventions(summary),
        *label_tables(summary, structure_sizes(per_case)),
        ("img", figure_dir / "per_organ_dice.png", "Per-organ Dice on the test set, sorted by median"),
        *gtvp_blocks(summary["gtvp"] or {}, per_case, figure_dir),
    ]
    if synthetic:
        blocks.append(
            (
                "p",
                "These cases are synthetic phantoms: the numbers show what the model learned in a short CPU "
                "training, they say nothing about clinical performance.",
            )
        )
    return blocks, summary


def review_section(run: Path, dataset: str, figure_dir: Path) -> list[Block]:
    from tsretrain.evaluation import figures  # matplotlib only when a report is written

    chosen = read_review(RunLayout(run).evaluation)
    blocks: list[Block] = [
        ("h2", "6. Case review"),
        (
            "p",
            "The two test cases with the lowest and the two with the highest GTVp Dice: the axial slice where "
            "reference and prediction of the GTVp disagree most, reference (left) and prediction (middle), every "
            "structure in its colour, GTVp outlined (reference green, prediction red, the reference outline "
            "repeated dashed in the middle), patient orientation, a 10 mm bar and the slice's height; right: the "
            "whole volume seen from the front, where the tumour was missed and where false positives lie.",
        ),
    ]
    raw = RunLayout(run).raw / dataset
    for case in chosen:
        name, dice = case["case"], fmt(case["dice"])
        image = figure_dir / f"review_{name}.png"
        figures.case_review(
            raw / "imagesTs" / f"{name}_0000.nii.gz",
            raw / "labelsTs" / f"{name}.nii.gz",
            RunLayout(run).predictions / "test" / f"{name}.nii.gz",
            case["label"],
            f"{name}: GTVp Dice {dice} ({case['kind']})",
            image,
        )
        blocks.append(("img", image, f"{name}, GTVp Dice {dice} ({case['kind']})"))
    return blocks


def literature_reading(gtvp: dict[str, Any], synthetic: bool) -> str:
    """One line: where this run's GTVp result stands against the comparable published range."""
    mean = gtvp.get("mean")
    if mean is None:
        return "Reading: the test set has no GTVp, so there is nothing to compare."
    low, high = CT_ONLY_ESTIMATE
    where = "below" if mean < low else "within" if mean <= high else "above"
    line = (
        f"Reading: mean GTVp Dice {mean:.2f} (median {gtvp['median']:.2f}) is {where} {low:.2f}-{high:.2f}, an "
        "estimate for CT-only models on full RADCURE volumes drawn from the two CT-only studies above (no "
        "published result on RADCURE itself)"
    )
    if synthetic and mean < 0.5:
        return line + "; on phantoms this low means the model has not learned the tumour (too short a training)."
    if synthetic:
        return line + (
            "; the synthetic tumours are brighter and more regular than real ones, so this shows that the "
            "pipeline learns the tumour, not how it would do on patients."
        )
    return line + "; PET/CT results (0.74-0.79) are out of reach of CT alone and are not a target."


def literature_section(summary: dict[str, Any], synthetic: bool) -> list[Block]:
    gtvp = summary.get("gtvp") or {}
    ours = f"mean {fmt(gtvp.get('mean'))}, median {fmt(gtvp.get('median'))}, DSCagg {fmt(gtvp.get('dsc_agg'))}"
    rows = [list(r) for r in LITERATURE]
    rows.append(["This run", "CT only, full volumes", ours, "synthetic data: no" if synthetic else "-", "this report"])
    return [
        ("h2", "7. Comparison with published GTVp results"),
        *([("p", SYNTHETIC_WARNING)] if synthetic else []),
        (
            "p",
            "PET/CT results are 0.10-0.16 Dice above CT-only ones on the same patients; they are listed for "
            "orientation, not comparison.",
        ),
        ("table", ["study", "modality", "GTVp result", "comparable with this run", "source"], rows),
        ("p", literature_reading(gtvp, synthetic)),
    ]


def provenance_section(run: Path, config: ReportConfig, fold_rows: list[list[str]]) -> list[Block]:
    packages = ("tsretrain", "nnunetv2", "torch", "pydicom", "SimpleITK", "numpy")
    versions = [f"{package} {installed(package) or '–'}" for package in packages]
    pre = RunLayout(run).preprocessed / config.dataset
    plans = sorted(pre.glob("*Plans*.json"))
    inventory = json.loads((RunLayout(run).scan / "inventory.json").read_text())
    run_config = RunLayout(run).at("run_config")
    return [
        ("h2", "8. Provenance"),
        (
            "table",
            ["item", "value"],
            [
                ["report written", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")],
                ["run", config.run_id or run.resolve().name],
                ["tsretrain", f"{installed('tsretrain') or '–'}, commit {commit()}"],
                ["input", inventory["input"]],
                ["input listing (scan/inventory.json) sha256", _sha(RunLayout(run).scan / "inventory.json")],
                [
                    "dictionary",
                    f"{inventory['dictionary']['name']} {inventory['dictionary'].get('version', '')} "
                    f"({inventory['dictionary']['sha256'][:16]})",
                ],
                ["split file (split/split.json) sha256", _sha(RunLayout(run).split / "split.json")],
                *[[f"plans {p.name} sha256", _sha(p)] for p in plans],
                ["packages of the report step", ", ".join(versions)],
                [f"run configuration ({run_config.name}) sha256", _sha(run_config)],
            ],
        ),
        *(
            [("p", f"The run's configuration ({run_config.name}):"), ("pre", run_config.read_text())]
            if run_config.is_file()
            else [("p", f"No {run_config.name}: a cluster run's configuration is its workflow's parameters in Argo.")]
        ),
        ("p", "Each fold's environment as its training process recorded it:"),
        ("table", ["fold", "device", "torch, CUDA", "nnU-Net", "wall time (s)", "GPU hours"], fold_rows),
    ]


def to_markdown(blocks: list[Block], base: Path) -> str:
    lines = ["# tsretrain run report", ""]
    for block in blocks:
        kind = block[0]
        if kind in ("h2", "h3"):
            lines += [("## " if kind == "h2" else "### ") + block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "banner":
            lines += [f"> **{block[1]}**", ""]
        elif kind == "pre":
            lines += ["```", block[1].rstrip("\n"), "```", ""]
        elif kind == "table":
            header, rows = block[1], block[2]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{block[2]}]({block[1].relative_to(base).as_posix()})", ""]
    return "\n".join(lines)


def to_html(blocks: list[Block]) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>tsretrain run report</title><style>",
        # nothing wider than the window at 800 px: cells wrap anywhere (a 64-digit digest too), figures scale
        "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 12px;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;max-width:100%}td,th{border:1px solid #ccc;padding:3px 6px;"
        "font-size:13px;overflow-wrap:anywhere}th{background:#eee}img{max-width:100%;height:auto}"
        "figcaption{font-size:13px;color:#555}pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:12px;"
        "background:#f6f6f6;padding:6px}@media (max-width:900px){td,th{font-size:11px;padding:2px 3px}}"
        ".banner{background:#fdecea;border:2px solid #c0392b;padding:8px 12px;font-weight:bold;margin:1em 0}",
        "</style></head><body><h1>tsretrain run report</h1>",
    ]
    for block in blocks:
        kind = block[0]
        if kind in ("h2", "h3"):
            parts.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "banner":
            parts.append(f"<div class='banner'>{html.escape(block[1])}</div>")
        elif kind == "pre":
            parts.append(f"<pre>{html.escape(block[1])}</pre>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in block[2]
            )
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        elif kind == "img":
            data = base64.b64encode(block[1].read_bytes()).decode()
            parts.append(
                f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(block[2])}'>"
                f"<figcaption>{html.escape(block[2])}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def report(config: ReportConfig) -> StageResult:
    run = config.run_dir
    figure_dir = config.out / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    from tsretrain.evaluation.postprocessing_report import postprocessing_blocks
    from tsretrain.evaluation.second_stage_report import second_stage_blocks

    marked, cases = synthetic_cases(run)
    synthetic = config.synthetic or marked > 0  # recognised from the data, whatever the flag says
    training, fold_rows = training_section(run, config.dataset, config.trainer, figure_dir)
    evaluation, summary = evaluation_section(run, figure_dir, synthetic)
    if config.postprocessing is not None:
        evaluation += postprocessing_blocks(config.postprocessing, RunLayout(run).evaluation)
    if config.comparison is not None:
        evaluation += second_stage_blocks(config.comparison, figure_dir)
    blocks = (
        synthetic_banner(marked, cases, config.synthetic)
        + (scope_blocks(run, config.dataset, config.trainer) if synthetic else [])
        + dataset_section(run)
        + split_section(run)
        + planning_section(run, config.dataset)
        + training
        + evaluation
        + review_section(run, config.dataset, figure_dir)
        + literature_section(summary, synthetic)
        + provenance_section(run, config, fold_rows)
    )
    atomic_write_text(config.out / "report.md", to_markdown(blocks, config.out))
    atomic_write_text(config.out / "report.html", to_html(blocks))
    return StageResult(
        "report",
        {"html": str(config.out / "report.html"), "markdown": str(config.out / "report.md")},
        {"sections": sum(1 for b in blocks if b[0] == "h2"), "figures": sum(1 for b in blocks if b[0] == "img")},
    )
