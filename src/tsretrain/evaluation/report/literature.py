"""Published GTVp results the report compares a run with, their sources, and where the run stands."""

from __future__ import annotations

from typing import Any

from tsretrain.evaluation.report.blocks import Block, Heading, Paragraph, Table, fmt
from tsretrain.evaluation.report.run import SYNTHETIC_WARNING
from tsretrain.run_files import EvaluationSummary

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
# Not a published result: an estimate from the two CT-only studies above (0.55 and 0.66) and full-volume input.
CT_ONLY_ESTIMATE = (0.60, 0.70)


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


def literature_section(summary: EvaluationSummary, synthetic: bool) -> list[Block]:
    gtvp = summary.get("gtvp") or {}
    ours = f"mean {fmt(gtvp.get('mean'))}, median {fmt(gtvp.get('median'))}, DSCagg {fmt(gtvp.get('dsc_agg'))}"
    rows = [list(r) for r in LITERATURE]
    rows.append(["This run", "CT only, full volumes", ours, "synthetic data: no" if synthetic else "-", "this report"])
    return [
        Heading("7. Comparison with published GTVp results"),
        *([Paragraph(SYNTHETIC_WARNING)] if synthetic else []),
        Paragraph(
            "PET/CT results are 0.10-0.16 Dice above CT-only ones on the same patients; they are listed for "
            "orientation, not comparison.",
        ),
        Table(["study", "modality", "GTVp result", "comparable with this run", "source"], rows),
        Paragraph(literature_reading(gtvp, synthetic)),
    ]
