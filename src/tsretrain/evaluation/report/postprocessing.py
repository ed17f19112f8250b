"""The report's post-processing section: what nnU-Net's ``determine_postprocessing`` chose on the validation folds
(``postprocess``' ``decision.json``) and what that does on the test set (``evaluate``'s summaries of the raw and the
post-processed predictions); nothing recomputed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tsretrain.errors import UserError
from tsretrain.evaluation.report.blocks import Block, Paragraph, Subheading, Table, fmt
from tsretrain.evaluation.report.second_stage import paired_table
from tsretrain.evaluation.report.tables import small_sample
from tsretrain.labels.dictionary import TUMOUR_LABEL
from tsretrain.run_files import (
    DECISION,
    EVALUATION_SUMMARY,
    POSTPROCESSED_SUMMARY,
    Decision,
    EvaluationSummary,
    RunFile,
    read_decision,
    read_evaluation_summary,
)

TITLE = "Post-processing (decided on the validation folds)"
DIGITS = 4  # of the validation Dice nnU-Net compared: its choice can turn on the fourth digit
TEST_HEADER = ["label", "reference", "cases", "Dice raw", "Dice post-processed", "HD95 raw (mm)"]
TEST_HEADER += ["HD95 post-processed (mm)", "false positive cases: raw / post-processed"]


def _needed(file: RunFile, folder: Path, advice: str) -> None:
    if not file.at(folder).is_file():
        raise UserError(f"{file.at(folder)} is missing", advice)


def _chosen(decision: Decision) -> str:
    groups = decision["keep_largest_component"]
    if not groups:
        return "nothing: no step raised the validation Dice, so the post-processed predictions are the raw ones"
    named = ["all foreground labels together" if len(g) > 1 else g[0] for g in groups]
    return "keep only the largest connected component of " + "; then of ".join(named)


def _labels(summary: EvaluationSummary) -> dict[tuple[str, str], dict[str, Any]]:
    """Each (reference group, label)'s statistics in an evaluation summary."""
    return {(group, r["name"]): r for group, entry in summary["groups"].items() for r in entry["labels"]}


def _lesions(gtvp: dict[str, Any] | None) -> str:
    """Lesions found and false-positive components of one evaluation (keeping one component per label can lose a
    second primary as well as a speck)."""
    lesions = (gtvp or {}).get("lesion_detection")
    if not lesions:
        return "–"
    return (
        f"{lesions['found']} of {lesions['lesions']} lesions found, {lesions['false_positive_components']} "
        f"false-positive components ({fmt(lesions['false_positive_ml'], 2)} mL)"
    )


def postprocessing_blocks(folder: Path, evaluation: Path) -> list[Block]:
    """The decision with the validation numbers behind it, then the test set before and after."""
    _needed(DECISION, folder, "run the postprocess stage first")
    decision = read_decision(folder)
    if not decision["searched"]:
        return [
            Subheading(TITLE),
            Paragraph(
                "Not searched (postprocess --search none; on a cluster postprocess-search=none): the test predictions "
                "were passed on unchanged, and every section gives the raw model's numbers.",
            ),
        ]
    _needed(EVALUATION_SUMMARY, evaluation, "run the evaluate stage first")
    postprocessed = POSTPROCESSED_SUMMARY.folder(evaluation)
    _needed(POSTPROCESSED_SUMMARY, evaluation, "run the evaluate stage with the post-processed predictions")
    raw, after = read_evaluation_summary(evaluation), read_evaluation_summary(postprocessed)
    folds, foreground = ", ".join(map(str, decision["folds"])), decision["foreground_dice"]
    steps = [
        [s["step"], s["measure"], fmt(s["before"], DIGITS), fmt(s["after"], DIGITS), "kept" if s["kept"] else "no"]
        for s in decision["steps"]
    ]
    shown = [*decision["labels"], *([] if TUMOUR_LABEL in decision["labels"] else [TUMOUR_LABEL])]
    before_labels, after_labels = _labels(raw), _labels(after)
    test = [
        [
            name,
            group,
            str(r["n_reference"]),
            fmt(r["dice_mean"]),
            fmt(after_labels[(group, name)]["dice_mean"]),
            fmt(r["hd95_mean"], 2),
            fmt(after_labels[(group, name)]["hd95_mean"], 2),
            f"{r['n_false_positive']} / {after_labels[(group, name)]['n_false_positive']}",
        ]
        for name in shown
        for (group, label), r in before_labels.items()
        if label == name
    ]
    tumour = after.get("against_raw") or {}
    n = min((p["n_pairs"] for p in tumour.get("paired", [])), default=0)
    return [
        Subheading(TITLE),
        Paragraph(
            f"nnU-Net's determine_postprocessing, as its find_best_configuration runs it: on the merged validation "
            f"predictions of fold(s) {folds} ({decision['validation_cases']} of {decision['training_cases']} training "
            "cases), against the preprocessed reference segmentations, it tries keeping only the largest connected "
            "component of all foreground labels together (kept when the foreground mean Dice rises and no label's "
            "falls), then of each label in turn (kept when that label's Dice rises). Chosen: "
            f"{_chosen(decision)}. Validation foreground mean Dice {fmt(foreground['before'], DIGITS)} before, "
            f"{fmt(foreground['after'], DIGITS)} after (nnU-Net's postprocessing.json).",
        ),
        Table(["step tried", "validation Dice compared", "before", "after", "kept"], steps),
        Paragraph(
            f"On the {after['n_cases']} test cases, the post-processed predictions (postprocessing/test/, evaluated "
            "alike: evaluation/postprocessed/) against the raw ones, which stay the model's result in every other "
            f"section; the labels post-processed and {TUMOUR_LABEL}:",
        ),
        Table(TEST_HEADER, test),
        Paragraph(
            f"{TUMOUR_LABEL} lesions (connected components of the reference) and false-positive components "
            f"(predicted components touching no tumour): raw {_lesions(raw['gtvp'])}; post-processed "
            f"{_lesions(after['gtvp'])}. Paired per test case with a tumour, post-processed minus raw, 95 % "
            "percentile bootstrap intervals over cases:",
        ),
        paired_table(tumour.get("paired", []), "raw", "post-processed", "post-processed / raw"),
        *small_sample(n, "paired cases"),
    ]
