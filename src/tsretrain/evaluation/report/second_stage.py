"""The report's second-stage section: the tumour-focused second stage against the first, from ``compare-stages``'
``comparison.json`` and ``per_case.csv`` (nothing recomputed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tsretrain.errors import UserError
from tsretrain.evaluation.report.blocks import Block, Figure, Paragraph, Subheading, Table, fmt, interval
from tsretrain.evaluation.report.tables import small_sample
from tsretrain.run_files import COMPARISON, COMPARISON_PER_CASE, read_comparison, read_rows

NAMES = {"dice": "Dice", "hd95": "HD95 (mm)", "nsd": "NSD", "lesions_found": "lesions found"}


def paired_table(paired: list[dict[str, Any]], first: str, second: str, better: str) -> Block:
    """Paired comparisons (``compare.paired``'s) as one table: per metric the pairs, both means, the mean
    difference (second minus first) with its interval, and how often each was better."""
    rows = [
        [
            NAMES[p["metric"]],
            str(p["n_pairs"]),
            fmt(p["first_mean"]),
            fmt(p["second_mean"]),
            fmt(p["difference_mean"]),
            interval(p["difference_ci95"]),
            f"{p.get('second_better', 0)} / {p.get('first_better', 0)}",
        ]
        for p in paired
    ]
    return Table(["metric", "pairs", first, second, "mean difference", "95 % interval", f"better: {better}"], rows)


def second_stage_blocks(folder: Path, figure_dir: Path) -> list[Block]:
    """The comparison's tables and figure."""
    from tsretrain.evaluation.report import figures  # matplotlib only when a report is written

    if not COMPARISON.at(folder).is_file():
        raise UserError(f"{COMPARISON.at(folder)} is missing", "run the compare-stages stage first")
    comparison = read_comparison(folder)
    rows = read_rows(COMPARISON_PER_CASE, folder)
    with_tumour = [r for r in rows if int(r["lesions"])]
    figures.paired_stages(with_tumour, figure_dir / "second_stage_paired.png")
    cases = [
        [
            r["case"],
            fmt(float(r["ref_volume_ml"]), 2),
            *(fmt(_number(r[f"{stage}_dice"])) for stage in ("first", "second")),
            *(fmt(_number(r[f"{stage}_hd95"]), 1) for stage in ("first", "second")),
            *(fmt(_number(r[f"{stage}_nsd"])) for stage in ("first", "second")),
            *(f"{r[f'{stage}_lesions_found']} of {r['lesions']}" for stage in ("first", "second")),
            *(r[f"{stage}_false_positive_components"] for stage in ("first", "second")),
        ]
        for r in rows
    ]
    n = min((p["n_pairs"] for p in comparison["paired"]), default=0)
    found = comparison["lesions_found"]
    return [
        Subheading("Second stage: the tumour-focused model against the first stage"),
        Paragraph(
            f"Each fold's second-stage model starts from the first stage's model of that fold and is fine-tuned with "
            f"a tumour-focused loss on the whole volume; both predict the same {comparison['n_cases']} test cases "
            f"({comparison['n_cases_with_tumour']} with a tumour). Lesions (connected tumour components of the "
            f"reference): {comparison['lesions']}, found by the first stage {found['first']}, by the second "
            f"{found['second']}; false-positive components {comparison['false_positive_components']['first']} and "
            f"{comparison['false_positive_components']['second']}. Differences are second minus first, over the "
            "cases where both stages have the metric (HD95 is undefined for a missed tumour), with 95 % percentile "
            "bootstrap intervals over cases.",
        ),
        paired_table(comparison["paired"], "first stage", "second stage", "2nd / 1st"),
        *small_sample(n, "paired cases"),
        Table(
            [
                "case",
                "GTVp (mL)",
                "Dice 1st",
                "Dice 2nd",
                "HD95 1st",
                "HD95 2nd",
                "NSD 1st",
                "NSD 2nd",
                "lesions 1st",
                "lesions 2nd",
                "FP comp. 1st",
                "FP comp. 2nd",
            ],
            cases,
        ),
        Figure(figure_dir / "second_stage_paired.png", "GTVp Dice and HD95 of each test case, first and second stage"),
    ]


def _number(text: str) -> float | None:
    return float(text) if text not in ("", None) else None
