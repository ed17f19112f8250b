"""The report's test-set sections: per-label and GTVp results, and the case review."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tsretrain.evaluation.report.blocks import Block, Figure, Heading, Paragraph, Subheading, Table, fmt
from tsretrain.evaluation.report.structures import structure_sizes
from tsretrain.evaluation.review import read_review
from tsretrain.labels.dictionary import TUMOUR_LABEL
from tsretrain.layout import RunLayout
from tsretrain.run_files import PER_CASE, EvaluationSummary, read_evaluation_summary, read_rows

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
    from tsretrain.evaluation.report import figures  # matplotlib only when a report is written
    from tsretrain.evaluation.report.tables import gtvp_tables

    if not gtvp.get("n_cases"):
        return []
    tumour = [r for r in per_case if r["name"] == TUMOUR_LABEL and r["status"] in ("both", "missed")]
    dice = [float(r["dice"]) for r in tumour]
    figures.gtvp_distribution(dice, gtvp["quantiles"], figure_dir / "gtvp_distribution.png")
    return [
        Subheading(TUMOUR_LABEL),
        *gtvp_tables(gtvp),
        Paragraph("Per test case with a tumour, worst Dice first:"),
        Table(GTVP_CASE_HEADER, [gtvp_case_row(r) for r in sorted(tumour, key=lambda r: float(r["dice"]))]),
        Paragraph(
            "Cases below 0.01: " + (", ".join(f"{c['case']} ({fmt(c['dice'])})" for c in gtvp["below_0.01"]) or "none"),
        ),
        Paragraph(
            "Cases above 0.84: " + (", ".join(f"{c['case']} ({fmt(c['dice'])})" for c in gtvp["above_0.84"]) or "none"),
        ),
        Figure(figure_dir / "gtvp_distribution.png", "GTVp Dice distribution, quantiles marked"),
    ]


SOURCES = {"manual": "manual contour", "totalsegmentator": "TotalSegmentator", "body": "body mask"}


def label_source_blocks(sources: dict[str, Any] | None, stand_in: bool) -> list[Block]:
    """Where the merged label maps' labels came from over the whole cohort (the pseudo-label merge records): per
    source the labels and label-cases, per label with a source its cases per source, the others in one line."""
    if not sources:
        return []
    labels: dict[str, dict[str, int]] = sources["labels"]
    groups = [*SOURCES, "none"]
    totals = [
        [
            SOURCES.get(g, "no source"),
            str(sum(1 for c in labels.values() if c.get(g))),
            str(sum(c.get(g, 0) for c in labels.values())),
        ]
        for g in groups
    ]
    found = [name for name, c in labels.items() if any(c.get(g) for g in SOURCES)]
    never = [name for name in labels if name not in found]
    weights = " TotalSegmentator ran on STAND-IN weights (phantoms only, not TotalSegmentator's)." if stand_in else ""
    return [
        Subheading("Where the references come from"),
        Paragraph(
            f"The merged label maps of all {sources['cases']} pseudo-labelled cases (training and test), from the "
            f"pseudo-label merge records: per source, the labels it gave in at least one case and its label-cases; "
            f"then every label that has a source, with its cases per source.{weights}"
        ),
        Table(["source", "labels", "label-cases"], totals),
        Table(
            ["label", *SOURCES.values(), "no source"], [[n, *(str(labels[n].get(g, 0)) for g in groups)] for n in found]
        ),
        Paragraph(f"No source in any case ({len(never)} labels): " + (", ".join(never) or "none") + "."),
    ]


def evaluation_section(run: Path, figure_dir: Path, synthetic: bool) -> tuple[list[Block], EvaluationSummary]:
    from tsretrain.evaluation.report import figures  # matplotlib only when a report is written
    from tsretrain.evaluation.report.tables import conventions, label_tables

    summary = read_evaluation_summary(RunLayout(run).evaluation)
    per_case = read_rows(PER_CASE, RunLayout(run).evaluation)
    figures.per_organ_dice(per_case, figure_dir / "per_organ_dice.png")
    blocks: list[Block] = [
        Heading("5. Test set evaluation"),
        Paragraph(
            f"{summary['n_cases']} test cases. Average Dice across all structures: "
            f"{fmt(summary['average_dice_all_structures'])} (pooled over reference sources, "
            f"{summary['average_dice_all_structures_n_labels']} labels). Labels absent from the reference are not "
            "averaged; missed and false-positive cases are counted in their own columns. Each table is sorted by "
            "mean Dice.",
        ),
        *label_source_blocks(summary.get("label_sources"), "STAND-IN" in summary.get("reference_records", "")),
        conventions(summary),
        *label_tables(summary, structure_sizes(per_case)),
        Figure(figure_dir / "per_organ_dice.png", "Per-organ Dice on the test set, sorted by median"),
        *gtvp_blocks(summary["gtvp"] or {}, per_case, figure_dir),
    ]
    if synthetic:
        blocks.append(
            Paragraph(
                "These cases are synthetic phantoms: the numbers show what the model learned in a short CPU "
                "training, they say nothing about clinical performance.",
            )
        )
    return blocks, summary


def review_section(run: Path, dataset: str, figure_dir: Path) -> list[Block]:
    from tsretrain.evaluation.report import figures  # matplotlib only when a report is written

    chosen = read_review(RunLayout(run).evaluation)
    blocks: list[Block] = [
        Heading("6. Case review"),
        Paragraph(
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
        blocks.append(Figure(image, f"{name}, GTVp Dice {dice} ({case['kind']})"))
    return blocks
