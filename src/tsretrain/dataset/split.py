"""The ``split`` stage: a patient-level, seeded, stratified split into a held-out test set and CV folds.

The test set is drawn first and never enters ``imagesTr``: nnU-Net's fingerprint, planning and
normalisation see only training cases. The remaining cases are dealt into folds, stratum by stratum, so each
fold holds a similar mix of GTVp volume bands (and sites, when a clinical sheet is given).

Outputs (``OUT/``): ``split.json`` (test ids, folds, strata, seed), ``splits_final.json`` (nnU-Net's format,
one ``{"train": [...], "val": [...]}`` per fold) and ``split_report.md``.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tsretrain.errors import UserError
from tsretrain.labels.volume_bands import VOLUME_BANDS, volume_band
from tsretrain.layout import batch_id
from tsretrain.run_files import NNUNET_SPLITS, SPLIT, SPLIT_BATCH, listing_rows
from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_text


@dataclass(frozen=True, kw_only=True)
class SplitConfig:
    """Configuration of the ``split`` stage."""

    converted: Path
    out: Path
    test_fraction: float = 0.2
    cv_folds: int = 5
    folds: tuple[int, ...] = ()
    seed: int = 12345
    clinical_csv: Path | None = None
    site_column: str = "Ds Site"
    fixed_split_column: str | None = None
    batches_out: Path | None = None
    batch_size: int = 64


def stratum_order(stratum: str) -> tuple[int, str]:
    """Sort key of a stratum (``band`` or ``band | site``): bands in numeric order, then site."""
    band, _, site = stratum.partition(" | ")
    return VOLUME_BANDS.index(band), site


def _clinical(path: Path | None) -> dict[str, dict[str, str]]:
    """Clinical rows by patient id; column names are stripped (RADCURE's carry trailing spaces)."""
    if path is None:
        return {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        # cells beyond the header (a trailing comma) have no column name: left out
        reader = csv.DictReader(handle)
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    key = next((k for k in ("patient_id", "Patient ID", "PatientID") if rows and k in rows[0]), None)
    if key is None:
        raise ValueError(f"{path}: no patient id column (patient_id / Patient ID)")
    return {row[key]: row for row in rows}


def make_split(cases: list[dict[str, str]], config: SplitConfig) -> dict[str, Any]:
    """Assign each usable case to the test set or to one fold."""
    clinical = _clinical(config.clinical_csv)
    patients: dict[str, list[str]] = defaultdict(list)
    largest: dict[str, float] = defaultdict(float)
    for case in cases:
        patients[case["patient_id"]].append(case["case_id"])
        largest[case["patient_id"]] = max(largest[case["patient_id"]], float(case["gtvp_volume_ml"] or 0.0))
    # A patient's stratum uses all of its cases (the largest GTVp), whatever their order in the listing.
    patient_stratum = {}
    for patient in patients:
        band = volume_band(largest[patient])
        site = clinical.get(patient, {}).get(config.site_column.strip(), "")
        patient_stratum[patient] = f"{band} | {site}" if site else band
    strata = {c: patient_stratum[p] for p, members in patients.items() for c in members}
    rng = np.random.default_rng(config.seed)
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for patient in sorted(patients):
        by_stratum[patient_stratum[patient]].append(patient)

    test_patients: list[str] = []
    if config.fixed_split_column:
        column = config.fixed_split_column.strip()
        missing = [p for p in patients if column not in clinical.get(p, {})]
        if missing:
            raise ValueError(f"fixed split: {len(missing)} patient(s) lack column {column!r}, e.g. {missing[:3]}")
        test_patients = sorted(p for p in patients if clinical[p][column].lower().startswith("test"))
    else:
        owed = 0.0
        for stratum in sorted(by_stratum):
            members = list(by_stratum[stratum])
            rng.shuffle(members)
            owed += config.test_fraction * len(members)
            take = min(len(members), round(owed))
            owed -= take
            test_patients += members[:take]
    test = set(test_patients)
    folds: list[list[str]] = [[] for _ in range(config.cv_folds)]
    dealer = 0
    for stratum in sorted(by_stratum):
        members = [p for p in by_stratum[stratum] if p not in test]
        rng.shuffle(members)
        for patient in members:
            folds[dealer % config.cv_folds].extend(patients[patient])
            dealer += 1
    test_cases = sorted(c for p in test for c in patients[p])
    return {
        "format": "tsretrain-split/1",
        "seed": config.seed,
        "test_fraction": config.test_fraction,
        "fixed_split_column": config.fixed_split_column,
        "test": test_cases,
        "folds": [sorted(f) for f in folds],
        "strata": dict(sorted(strata.items())),
    }


def nnunet_splits(split: dict[str, Any]) -> list[dict[str, list[str]]]:
    """``splits_final.json``: per fold, validation = that fold, training = the other folds."""
    folds: list[list[str]] = split["folds"]
    return [
        {"train": sorted(c for m, other in enumerate(folds) if m != n for c in other), "val": sorted(fold)}
        for n, fold in enumerate(folds)
    ]


def report(split: dict[str, Any]) -> str:
    """A Markdown summary: sizes, strata per part, test ids."""
    parts = {"test": split["test"], **{f"fold {n}": f for n, f in enumerate(split["folds"])}}
    strata = sorted(set(split["strata"].values()), key=stratum_order)
    total = sum(len(p) for p in parts.values())
    lines = [
        "# Split",
        "",
        f"Seed {split['seed']}; {total} cases; test {len(split['test'])} "
        f"({100 * len(split['test']) / max(total, 1):.1f} %), {len(split['folds'])} cross-validation folds.",
        "",
        "| part | cases | " + " | ".join(s.replace(" | ", ", ") for s in strata) + " |",  # one cell per stratum
        "|---|---|" + "---|" * len(strata),
    ]
    for name, members in parts.items():
        counts = Counter(split["strata"][c] for c in members)
        lines.append(f"| {name} | {len(members)} | " + " | ".join(str(counts[s]) for s in strata) + " |")
    lines += ["", "Test cases: " + ", ".join(split["test"]), ""]
    return "\n".join(lines)


def write_test_batches(out: Path, test: list[str], batch_size: int) -> list[str]:
    """The test cases in batches for a prediction fan-out (``out/batches/<batch id>.json``); returns the ids."""
    shutil.rmtree(SPLIT_BATCH.folder(out), ignore_errors=True)  # an earlier split's batches
    ids = []
    for start in range(0, len(test), max(1, batch_size)):
        cases = sorted(test)[start : start + max(1, batch_size)]
        ids.append(batch_id(tuple(cases)))
        atomic_write_text(SPLIT_BATCH.at(out, batch=ids[-1]), json.dumps({"cases": cases}, indent=1))
    return ids


def run_split(config: SplitConfig) -> StageResult:
    """Split the cases with status ok in the conversion listing."""
    missing = [f for f in config.folds if f >= config.cv_folds]
    if missing:
        raise UserError(f"folds {missing} do not exist in a {config.cv_folds}-fold split: raise cv_folds or drop them")
    rows = [r for r in listing_rows(config.converted) if r["status"] == "ok"]
    if len(rows) < config.cv_folds + 1:
        raise UserError(
            f"{len(rows)} usable case(s) in {config.converted}: a {config.cv_folds}-fold split needs at least "
            f"{config.cv_folds + 1}",
            "convert more cases (the listing's reasons say why cases were excluded), or lower --cv-folds",
        )
    split = make_split(rows, config)
    config.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(SPLIT.at(config.out), json.dumps(split, indent=1))
    atomic_write_text(NNUNET_SPLITS.at(config.out), json.dumps(nnunet_splits(split), indent=1))
    atomic_write_text(config.out / "split_report.md", report(split))
    if config.batches_out is not None:
        atomic_write_text(
            config.batches_out, json.dumps(write_test_batches(config.out, split["test"], config.batch_size))
        )
    return StageResult(
        stage="split",
        outputs={"split": str(SPLIT.at(config.out)), "splits_final": str(NNUNET_SPLITS.at(config.out))},
        counts={"test": len(split["test"]), "train": sum(len(f) for f in split["folds"]), "folds": config.cv_folds},
    )
