"""The test cases a report shows: the two with the lowest and the two with the highest GTVp Dice.

``evaluate`` chooses them and writes ``review.json`` beside its metrics, so that the report reads the choice
instead of making it, and a cluster's report pod fetches the images of these cases only (``--cases-from``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tsretrain.errors import UserError
from tsretrain.labels.dictionary import TUMOUR_LABEL
from tsretrain.run_files import REVIEW

STRUCTURE = TUMOUR_LABEL
PER_END = 2  # cases from each end of the Dice ranking


def choose(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The review cases from per-case metric rows (native values or the strings of ``per_case.csv``).

    GTVp rows with a reference (found or missed) are ranked by Dice, ties by case; a case is shown once.
    """
    scored = sorted(
        (r for r in rows if r["name"] == STRUCTURE and r["status"] in ("both", "missed")),
        key=lambda r: (float(r["dice"]), str(r["case"])),
    )
    ends = [("lowest", r) for r in scored[:PER_END]] + [("highest", r) for r in scored[::-1][:PER_END]]
    chosen: list[dict[str, Any]] = []
    for kind, row in ends:
        if all(c["case"] != row["case"] for c in chosen):
            chosen.append(
                {"case": str(row["case"]), "kind": kind, "label": int(row["label"]), "dice": float(row["dice"])}
            )
    return chosen


def review_document(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The content of ``review.json``."""
    return {"structure": STRUCTURE, "cases": choose(rows)}


def read_review(evaluation: Path) -> list[dict[str, Any]]:
    """The review cases that ``evaluate`` wrote into its output folder."""
    path = REVIEW.at(evaluation)
    if not path.is_file():
        raise UserError(f"{path} is missing: run `tsretrain evaluate` again (it writes the cases a report shows)")
    cases: list[dict[str, Any]] = json.loads(path.read_text())["cases"]
    return cases
