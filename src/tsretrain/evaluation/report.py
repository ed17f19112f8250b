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
from importlib import metadata
from pathlib import Path
from typing import Any

from tsretrain.conversion.convert import listing_rows
from tsretrain.conversion.listing import read_listing
from tsretrain.layout import RunLayout
from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_text

Block = tuple[Any, ...]  # ("h2", text) | ("p", text) | ("table", header, rows) | ("img", path, caption)

LITERATURE = [
    ("HECKTOR 2020, best team", "PET/CT", "Dice 0.759 (inter-observer 0.61)", "no: PET/CT"),
    ("HECKTOR 2022, best team", "PET/CT", "DSCagg 0.788", "no: PET/CT"),
    ("Unmodified nnU-Net v2 (2025)", "PET/CT", "Dice 0.744", "no: PET/CT"),
    ("Moe et al. 2021", "CT only / PET/CT", "Dice 0.55 / 0.71; CT model detected 55 % of tumours", "CT-only value"),
    ("Groendahl et al. 2021", "CT only / PET/CT", "Dice 0.66 / 0.74", "CT-only value"),
    ("CT-only GTVp on full RADCURE volumes (expected)", "CT", "mean Dice about 0.60-0.70", "yes"),
    (
        "Seed manual retrain (volumes cropped to the GTVp slab)",
        "CT",
        "mean 0.519, median 0.582",
        "no: cropping leaked the tumour position into training and test",
    ),
]


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


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    """Configuration of the ``report`` stage."""

    run_dir: Path
    out: Path
    dataset: str = "Dataset366_TotalSegmentator"  # nnU-Net dataset folder
    synthetic: bool = False


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "–"


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
        (
            "table",
            ["reason", "cases", "share of excluded"],
            [[r, str(n), f"{100 * n / max(1, sum(reasons.values())):.0f} %"] for r, n in reasons.most_common()],
        ),
    ]
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
    split = json.loads((RunLayout(run).split / "split.json").read_text())
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


def training_section(run: Path, dataset: str, figure_dir: Path) -> tuple[list[Block], list[list[str]]]:
    from tsretrain.evaluation import figures  # matplotlib only when a report is written

    blocks: list[Block] = [("h2", "4. Training")]
    rows, provenance = [], []
    results = RunLayout(run).results / dataset
    for progress_path in sorted(results.glob("*/fold_*/progress.json")):
        progress = json.loads(progress_path.read_text())
        fold = progress_path.parent.name
        model = progress_path.parent.parent.name
        seconds = sum(progress["epoch_seconds"])
        gpu_hours = seconds / 3600 if progress.get("device", "cpu").startswith("cuda") else 0.0
        best = max(progress["ema_fg_dice"]) if progress["ema_fg_dice"] else None
        rows.append(
            [
                fold,
                str(len(progress["train_losses"])),
                fmt(progress["train_losses"][-1]),
                fmt(progress["val_losses"][-1]),
                fmt(best),
                fmt(seconds, 1),
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
        image = figure_dir / f"training_{fold}.png"
        figures.training_curves(progress, f"{model} {fold}", image)
        blocks.append(("img", image, f"Training curves, {fold}"))
    blocks.insert(
        1,
        (
            "table",
            ["fold", "epochs", "final train loss", "final val loss", "best EMA pseudo-Dice", "training time (s)"],
            rows,
        ),
    )
    return blocks, provenance


def evaluation_section(run: Path, figure_dir: Path, synthetic: bool) -> tuple[list[Block], dict[str, Any]]:
    from tsretrain.evaluation import figures  # matplotlib only when a report is written

    summary = json.loads((RunLayout(run).evaluation / "summary.json").read_text())
    per_label = read_listing(RunLayout(run).evaluation / "per_label.csv")
    per_case = read_listing(RunLayout(run).evaluation / "per_case.csv")
    gtvp = summary["gtvp"] or {}
    blocks: list[Block] = [
        ("h2", "5. Test set evaluation"),
        (
            "p",
            f"{summary['n_cases']} test cases. Average Dice across all structures: "
            f"{fmt(summary['average_dice_all_structures'])}. Surface metrics at "
            f"{fmt(next(iter(summary['tolerance_mm'].values()), 2.0), 1)} mm tolerance. Labels absent from the "
            "reference are not averaged; missed and false-positive cases are counted in their own columns.",
        ),
        (
            "table",
            [
                "label",
                "cases",
                "Dice mean",
                "Dice median",
                "Dice std",
                "HD95 mean (mm)",
                "NSD mean",
                "missed",
                "false positive",
            ],
            [
                [
                    r["name"],
                    r["n_reference"],
                    fmt(_f(r["dice_mean"])),
                    fmt(_f(r["dice_median"])),
                    fmt(_f(r["dice_std"])),
                    fmt(_f(r["hd95_mean"]), 2),
                    fmt(_f(r["nsd_mean"])),
                    r["n_missed"],
                    r["n_false_positive"],
                ]
                for r in per_label
            ],
        ),
    ]
    figures.per_organ_dice(per_case, figure_dir / "per_organ_dice.png")
    blocks.append(("img", figure_dir / "per_organ_dice.png", "Per-organ Dice"))
    if gtvp.get("n_cases"):
        blocks += [
            ("h3", "GTVp"),
            (
                "table",
                ["statistic", "value"],
                [
                    ["cases", str(gtvp["n_cases"])],
                    ["mean Dice", fmt(gtvp["mean"])],
                    ["median Dice", fmt(gtvp["median"])],
                    ["mean 95 % CI (bootstrap)", interval(gtvp["mean_ci95"])],
                    ["median 95 % CI (bootstrap)", interval(gtvp["median_ci95"])],
                    ["DSCagg", fmt(gtvp["dsc_agg"])],
                    ["detection rate", fmt(gtvp["detection_rate"])],
                ],
            ),
            ("table", ["quantile", "Dice"], [[q, fmt(v)] for q, v in gtvp["quantiles"].items()]),
            (
                "table",
                ["GTVp volume band", "cases", "mean Dice", "median Dice"],
                [[b, str(v["n"]), fmt(v["mean"]), fmt(v["median"])] for b, v in gtvp["by_volume_band"].items()],
            ),
            (
                "p",
                "Cases below 0.01: "
                + (", ".join(f"{c['case']} ({fmt(c['dice'])})" for c in gtvp["below_0.01"]) or "none"),
            ),
            (
                "p",
                "Cases above 0.84: "
                + (", ".join(f"{c['case']} ({fmt(c['dice'])})" for c in gtvp["above_0.84"]) or "none"),
            ),
        ]
        dice = [float(r["dice"]) for r in per_case if r["name"] == "GTVp" and r["status"] in ("both", "missed")]
        figures.gtvp_distribution(dice, gtvp["quantiles"], figure_dir / "gtvp_distribution.png")
        blocks.append(("img", figure_dir / "gtvp_distribution.png", "GTVp Dice distribution"))
    if synthetic:
        blocks.append(
            (
                "p",
                "These cases are synthetic phantoms from a CPU demo: the numbers test the pipeline, "
                "they say nothing about clinical performance.",
            )
        )
    return blocks, summary


def _f(text: str) -> float | None:
    return float(text) if text not in ("", "None") else None


def review_section(run: Path, summary: dict[str, Any], dataset: str, figure_dir: Path) -> list[Block]:
    from tsretrain.evaluation import figures  # matplotlib only when a report is written

    per_case = [
        r
        for r in read_listing(RunLayout(run).evaluation / "per_case.csv")
        if r["name"] == "GTVp" and r["status"] in ("both", "missed")
    ]
    per_case.sort(key=lambda r: float(r["dice"]))
    chosen = [("lowest", r) for r in per_case[:2]] + [("highest", r) for r in per_case[::-1][:2]]
    blocks: list[Block] = [
        ("h2", "6. Case review"),
        ("p", "Axial slice with the most reference GTVp; reference in green, prediction in red."),
    ]
    raw = RunLayout(run).raw / dataset
    seen = set()
    for kind, row in chosen:
        if row["case"] in seen:
            continue
        seen.add(row["case"])
        image = figure_dir / f"review_{row['case']}.png"
        figures.case_review(
            raw / "imagesTs" / f"{row['case']}_0000.nii.gz",
            raw / "labelsTs" / f"{row['case']}.nii.gz",
            RunLayout(run).predictions / "test" / f"{row['case']}.nii.gz",
            int(row["label"]),
            f"{row['case']}: GTVp Dice {fmt(float(row['dice']))} ({kind})",
            image,
        )
        blocks.append(("img", image, f"{row['case']}, GTVp Dice {fmt(float(row['dice']))} ({kind})"))
    return blocks


def literature_section(summary: dict[str, Any], synthetic: bool) -> list[Block]:
    gtvp = summary.get("gtvp") or {}
    ours = f"mean {fmt(gtvp.get('mean'))}, median {fmt(gtvp.get('median'))}, DSCagg {fmt(gtvp.get('dsc_agg'))}"
    rows = [list(r) for r in LITERATURE]
    rows.append(["This run", "CT only, full volumes", ours, "synthetic demo: no" if synthetic else "-"])
    return [
        ("h2", "7. Comparison with published GTVp results"),
        (
            "p",
            "PET/CT results are 0.10-0.16 Dice above CT-only ones on the same patients; they are listed for "
            "orientation, not comparison.",
        ),
        ("table", ["study", "modality", "GTVp result", "comparable with this run"], rows),
    ]


def provenance_section(run: Path, dataset: str, fold_rows: list[list[str]]) -> list[Block]:
    versions = []
    for package in ("tsretrain", "nnunetv2", "torch", "pydicom", "SimpleITK", "numpy"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} –")
    pre = RunLayout(run).preprocessed / dataset
    plans = sorted(pre.glob("*Plans*.json"))
    inventory = json.loads((RunLayout(run).scan / "inventory.json").read_text())
    return [
        ("h2", "8. Provenance"),
        (
            "table",
            ["item", "value"],
            [
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
            ],
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
        "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:14px}th{background:#eee}img{max-width:100%}figcaption{font-size:13px;color:#555}",
        "</style></head><body><h1>tsretrain run report</h1>",
    ]
    for block in blocks:
        kind = block[0]
        if kind in ("h2", "h3"):
            parts.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(block[1])}</p>")
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
    training, fold_rows = training_section(run, config.dataset, figure_dir)
    evaluation, summary = evaluation_section(run, figure_dir, config.synthetic)
    blocks = (
        dataset_section(run)
        + split_section(run)
        + planning_section(run, config.dataset)
        + training
        + evaluation
        + review_section(run, summary, config.dataset, figure_dir)
        + literature_section(summary, config.synthetic)
        + provenance_section(run, config.dataset, fold_rows)
    )
    atomic_write_text(config.out / "report.md", to_markdown(blocks, config.out))
    atomic_write_text(config.out / "report.html", to_html(blocks))
    return StageResult(
        "report",
        {"html": str(config.out / "report.html"), "markdown": str(config.out / "report.md")},
        {"sections": sum(1 for b in blocks if b[0] == "h2"), "figures": sum(1 for b in blocks if b[0] == "img")},
    )
