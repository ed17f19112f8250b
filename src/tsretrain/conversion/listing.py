"""The case listing (``cases.csv``): one row per patient, with status, reason and what was found."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tsretrain.run_files import write_csv

COLUMNS = [
    "case_id",
    "patient_id",
    "status",
    "reason",
    "detail",
    "advice",
    "ct_series_uid",
    "rtstruct_sop_uid",
    "frame_of_reference_uid",
    "n_slices",
    "rows",
    "columns",
    "spacing_x",
    "spacing_y",
    "spacing_z",
    "roi_names",
    "unmapped_rois",
    "missing_labels",
    "gtvp_volume_ml",
    "n_warnings",
    "warnings",
]


def write_listing(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write the case listing, sorted by case id."""
    write_csv(path, sorted(rows, key=lambda r: str(r["case_id"])), COLUMNS)
