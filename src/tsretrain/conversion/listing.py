"""The case listing (``cases.csv``): one row per patient, with status, reason and what was found."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tsretrain.storage.atomic import staged_file

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


def write_csv(path: Path, rows: Iterable[dict[str, Any]], columns: list[str]) -> None:
    """Write rows atomically as CSV with these columns, a row at a time; list values are joined with ' | '."""
    with staged_file(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: " | ".join(map(str, v)) if isinstance(v, list) else v for k, v in row.items()})


def write_listing(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write the case listing, sorted by case id."""
    write_csv(path, sorted(rows, key=lambda r: str(r["case_id"])), COLUMNS)


def read_listing(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file written by tsretrain (listing, metrics) as dictionaries of strings."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
