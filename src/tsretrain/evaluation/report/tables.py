"""The report's evaluation tables, from ``summary.json``: one table per reference source ("accuracy against
manual contours" apart from "agreement with TotalSegmentator"), every mean with its n and the missed and
false-positive counts beside it, the labels without any reference in one line under the tables, and the GTVp
statistics."""

from __future__ import annotations

from typing import Any

from tsretrain.evaluation.report.blocks import Block, Paragraph, Subheading, Table, fmt, interval
from tsretrain.evaluation.report.structures import RESOLUTION_NOTE, RESOLUTION_VOXELS
from tsretrain.labels.dictionary import TUMOUR_LABEL
from tsretrain.run_files import EvaluationSummary

NOTE = (
    "cases: test cases whose reference of the label comes from this source (the n of the Dice and NSD means, "
    "missed cases included with 0); HD95 n leaves out the missed cases, where HD95 is undefined; false positive: "
    "cases without a reference of the label where the prediction has it (in no mean)."
)


def conventions(summary: EvaluationSummary) -> Block:
    """The metric definitions the numbers follow, as one paragraph."""
    tolerances = sorted(set(summary["tolerance_mm"].values()))
    return Paragraph(
        f"Reference sources from {summary['reference_records']}. "
        + "; ".join(summary["conventions"].values())
        + f". NSD tolerance: {', '.join(fmt(t, 1) for t in tolerances)} mm.",
    )


def label_tables(summary: EvaluationSummary, sizes: dict[str, tuple[float, float]] | None = None) -> list[Block]:
    """One table per reference source, sorted by mean Dice, with its note and each structure's size (mL, voxels);
    the labels without any reference, and those at the resolution limit, in a line under the tables."""
    voxel_count = "nsd_voxel_count" in summary["conventions"]
    header = ["label", "cases", "Dice mean", "Dice median", "Dice std", "HD95 mean (mm)", "HD95 n", "NSD mean"]
    header += ["NSD by voxel count (not comparable)"] if voxel_count else []
    header += ["missed", "false positive", "size (mL)", "size (voxels)", "note"]
    sizes = sizes or {}
    small = {n for n, (_, voxels) in sizes.items() if voxels < RESOLUTION_VOXELS} - {
        TUMOUR_LABEL
    }  # the tumour: by band
    limited: list[str] = []
    unlearned: list[str] = []
    blocks: list[Block] = []
    for group in summary["groups"].values():
        rows = []
        for r in sorted(group["labels"], key=lambda r: -(r["dice_mean"] if r["dice_mean"] is not None else -1.0)):
            row = [r["name"], r["n_reference"], fmt(r["dice_mean"]), fmt(r["dice_median"]), fmt(r["dice_std"])]
            row += [fmt(r["hd95_mean"], 2), r["hd95_n"], fmt(r["nsd_mean"])]
            row += [fmt(r["nsd_voxel_count_mean"])] if voxel_count else []
            ml, voxels = sizes.get(r["name"], (None, None))
            note = "resolution limit" if r["name"] in small else ""
            limited += [r["name"]] if note else []
            if not note and r["n_reference"] and r["n_missed"] == r["n_reference"]:
                note = "never predicted"
                unlearned.append(r["name"])
            row += [r["n_missed"], r["n_false_positive"], fmt(ml, 2), fmt(None if voxels is None else round(voxels))]
            rows.append([*row, note])
        blocks += [
            Subheading(group["title"]),
            Paragraph(
                f"Average Dice over these {group['average_dice_n_labels']} labels: {fmt(group['average_dice'])}.",
            ),
            Table(header, rows),
            Paragraph(NOTE),
        ]
    absent = summary["no_reference"]
    predicted = [f"{a['name']} {a['n_false_positive']}" for a in absent if a["n_false_positive"]]
    blocks.append(
        Paragraph(
            (
                f"No reference in any test case, so in no table: {', '.join(a['name'] for a in absent)}; "
                f"cases predicting them anyway (false positives): {', '.join(predicted) or 'none'}."
            )
            if absent
            else "Every label has a reference in at least one test case.",
        )
    )
    if limited:
        blocks.append(
            Paragraph(
                f"Below {RESOLUTION_VOXELS} voxels on the evaluated grid ({', '.join(limited)}): {RESOLUTION_NOTE}. "
                "The model cannot learn these at this resolution; their numbers are shown, not hidden, and say little.",
            )
        )
    if unlearned:
        blocks.append(
            Paragraph(
                f"Never predicted in any test case although above the resolution limit ({', '.join(unlearned)}): "
                "the model did not learn these in this training.",
            )
        )
    return blocks


SMALL_SAMPLE = 20  # below this many cases, intervals and quantiles are rough guides


def _median_iqr(entry: dict[str, Any] | None, digits: int) -> list[str]:
    if not entry or not entry.get("n"):
        return ["–", "no case"]
    low, high = entry["iqr"]
    return [f"{fmt(entry['median'], digits)} ({fmt(low, digits)}-{fmt(high, digits)})", f"{entry['n']} cases"]


def _lesion_rows(lesions: dict[str, Any] | None) -> list[list[str]]:
    if not lesions:
        return []
    return [
        [
            "lesions found (per lesion)",
            f"{lesions['found']} of {lesions['lesions']} ({fmt(lesions['rate'])})",
            "every reference lesion (connected component) of the test cases",
        ],
        [
            "false-positive components",
            f"{lesions['false_positive_components']} ({fmt(lesions['false_positive_ml'], 2)} mL)",
            f"in {lesions['cases_with_false_positive_components']} cases: predicted components touching no tumour",
        ],
    ]


def small_sample(n: int, what: str) -> list[Block]:
    """A caution under statistics over fewer than ``SMALL_SAMPLE`` cases."""
    if n >= SMALL_SAMPLE:
        return []
    return [Paragraph(f"Only {n} {what}: intervals and quantiles over so few cases are rough guides, not evidence.")]


def gtvp_tables(gtvp: dict[str, Any]) -> list[Block]:
    """The GTVp statistics (each with the cases it is over), lesion-level detection, its quantiles and volume
    bands, with a caution when the cases are few."""
    cases = f"{gtvp['n_cases']} cases ({gtvp['n_missed']} missed)"
    return [
        Table(
            ["statistic", "value", "over"],
            [
                ["mean Dice", fmt(gtvp["mean"]), cases],
                ["median Dice", fmt(gtvp["median"]), cases],
                ["mean 95 % CI (bootstrap)", interval(gtvp["mean_ci95"]), cases],
                ["median 95 % CI (bootstrap)", interval(gtvp["median_ci95"]), cases],
                ["DSCagg", fmt(gtvp["dsc_agg"]), f"{gtvp['dsc_agg_n']} cases ({gtvp['n_false_positive']} false pos.)"],
                ["detection rate (per case)", fmt(gtvp["detection_rate"]), cases],
                *_lesion_rows(gtvp.get("lesion_detection")),
                ["HD95 median (IQR), mm", *_median_iqr(gtvp.get("hd95"), 1)],
                ["NSD median (IQR)", *_median_iqr(gtvp.get("nsd"), 3)],
            ],
        ),
        *small_sample(gtvp["n_cases"], "test cases with a tumour"),
        Table(["quantile", "Dice"], [[q, fmt(v)] for q, v in gtvp["quantiles"].items()]),
        Table(
            ["GTVp volume band", "cases", "mean Dice", "median Dice"],
            [[b, str(v["n"]), fmt(v["mean"]), fmt(v["median"])] for b, v in gtvp["by_volume_band"].items()],
        ),
    ]
