"""The report's first sections, on the run's data: the synthetic banner and scope, dataset exploration, split
and planning."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tsretrain.evaluation.report.blocks import Banner, Block, Heading, Paragraph, Table, fmt
from tsretrain.layout import RunLayout
from tsretrain.run_files import (
    PROGRESS,
    CaseStatus,
    listing_rows,
    read_inventory,
    read_manifest,
    read_planning_summary,
    read_progress,
    read_split,
)
from tsretrain.synth import SYNTHETIC_MANUFACTURER

SYNTHETIC_WARNING = (
    "SYNTHETIC DATA: this run's patients are generated phantoms, not patients. Its numbers show that the pipeline "
    "learns, never how a model would do on patients; nothing here is comparable with a published result."
)


def synthetic_cases(run: Path) -> tuple[int, int]:
    """How many of the scanned patients carry the generator's mark (their CT's DICOM Manufacturer), of all."""
    plans = read_inventory(RunLayout(run).scan).get("cases", [])
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
    return [Banner(f"{SYNTHETIC_WARNING} ({found}.)")]


def scope_blocks(run: Path, dataset: str, trainer: str, pseudo_labelled: bool) -> list[Block]:
    """For a synthetic demo: what the run shows and what it does not."""
    split = read_split(RunLayout(run).split)
    progress = PROGRESS.glob(RunLayout(run).results, dataset=dataset, model=f"{trainer}__*")
    trained = [p.parent.name.removeprefix("fold_") for p in progress]
    iterations = [len(d["train_losses"]) * d.get("iterations_per_epoch", 0) for d in map(read_progress, progress)]
    folds = f"fold {', '.join(trained)} of {len(split['folds'])}" if trained else "no fold"
    return [
        Heading("About this run"),
        Paragraph(
            f"A CPU demo on a synthetic cohort. It shows every stage running for real on DICOM-RT input: "
            f"discovery and conversion with its exclusions, the leak-free split, nnU-Net's own planning, "
            f"preprocessing, training ({folds}, {', '.join(map(str, iterations)) or 0} iterations, a small "
            "network on small patches) and prediction, then evaluation on test patients the model has never "
            "seen: section 5 shows how far it learned the large structures and the tumour.",
        ),
        Paragraph(
            "It does not show clinical accuracy (phantoms are simpler than patients), a cross-validated "
            "ensemble (one fold trained well says more than several trained too briefly to learn), "
            + (
                "TotalSegmentator's 90-label map (its pseudo-labels here come from STAND-IN weights that know only "
                "phantoms: section 5 says where each label's reference came from), "
                if pseudo_labelled
                else "the 90-label map (TotalSegmentator pseudo-labels need their weights), "
            )
            + "the small structures at this resolution, or training speed on a GPU.",
        ),
    ]


def dataset_section(run: Path) -> list[Block]:
    rows = [
        {k: " | ".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in row.items()}
        for row in listing_rows(RunLayout(run).converted)
    ]
    by_status = Counter(r["status"] for r in rows)
    reasons = Counter(r["reason"] for r in rows if r["status"] != CaseStatus.OK)
    blocks: list[Block] = [
        Heading("1. Dataset exploration"),
        Paragraph(
            f"{len(rows)} patients found; {by_status['ok']} converted, {by_status['excluded']} excluded, "
            f"{by_status['failed']} failed. Every exclusion has a reason (listing: converted/cases.csv).",
        ),
    ]
    if reasons:
        blocks.append(
            Table(
                ["reason", "cases", "share of excluded"],
                [[r, str(n), f"{100 * n / sum(reasons.values()):.0f} %"] for r, n in reasons.most_common()],
            )
        )
    presence: Counter[str] = Counter()
    ok = [r for r in rows if r["status"] == CaseStatus.OK]
    for row in ok:
        manifest = read_manifest(RunLayout(run).converted, row["case_id"])
        presence.update(name for name, info in manifest["labels"].items() if info["present"])
    blocks.append(
        Table(
            ["label", "present in converted cases"],
            [[name, f"{n}/{len(ok)}"] for name, n in sorted(presence.items())],
        )
    )
    unmapped = Counter(n for r in rows for n in r["unmapped_rois"].split(" | ") if n)
    blocks.append(
        Paragraph("Unmapped ROI names: " + (", ".join(f"{n} ({c})" for n, c in unmapped.most_common(30)) or "none"))
    )
    return blocks


def split_section(run: Path) -> list[Block]:
    split = read_split(RunLayout(run).split)
    sizes = [["test", str(len(split["test"]))]] + [[f"fold {n}", str(len(f))] for n, f in enumerate(split["folds"])]
    return [
        Heading("2. Split"),
        Paragraph(
            f"Patient-level, seed {split['seed']}, stratified by GTVp volume band; test cases never enter "
            "nnU-Net's training folder, fingerprint or plans.",
        ),
        Table(["part", "cases"], sizes),
        Paragraph("Test cases: " + ", ".join(split["test"])),
    ]


def planning_section(run: Path, dataset: str) -> list[Block]:
    planning = read_planning_summary(RunLayout(run).preprocessed, dataset)
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
        Heading("3. Planning"),
        Paragraph(
            f"Planner {planning['planner']}, plans {planning['plans_identifier']}; "
            f"{planning['n_training_cases']} training cases; "
            f"median spacing {fmt(planning['original_median_spacing'])} mm, "
            f"median shape {fmt(planning['original_median_shape'])} (z, y, x); CT normalisation.",
        ),
        Table(["configuration", "spacing (mm)", "median shape", "patch", "batch", "network", "features"], rows),
    ]
