"""Where the reference of each label of each test case came from, read from the records of the run.

With pseudo-labels, the test reference is the merged map: labels without a manual contour are
TotalSegmentator's own output, so scoring against them measures agreement with TotalSegmentator, not accuracy.
The sources are read (never recomputed) from the pseudo-label merge records (``PSEUDOLABELS/<case>/
pseudolabel.json``, key ``sources``) or, without pseudo-labels, from the conversion manifests (``CONVERTED/
cases/<case>/manifest.json``: every present label is a manual contour). The voxel counts in those records
must equal the reference's: a reference folder that is not the one the records describe is an error.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsretrain.errors import UserError
from tsretrain.labels.dictionary import TUMOUR_LABEL
from tsretrain.run_files import CASE_MANIFEST, MERGE_RECORD

MANUAL, TOTALSEGMENTATOR, BODY, UNRECORDED = "manual", "totalsegmentator", "body", "unrecorded"
TITLES = {
    MANUAL: "Accuracy against manual contours",
    TOTALSEGMENTATOR: "Agreement with TotalSegmentator (pseudo-label references)",
    BODY: "Agreement with the body-mask label (CT above -500 HU minus every other label)",
    UNRECORDED: "Against the given reference (no conversion or pseudo-label records given: provenance unknown)",
}
"""The groups, in the order of the report's tables."""


@dataclass(frozen=True)
class Source:
    """The reference of one label in one case: its group (None: no reference) and its recorded voxel count."""

    group: str | None
    voxels: int | None = None


def _group(source: str | None) -> str | None:
    if source is None:
        return None
    if source == "rtstruct":
        return MANUAL
    if source == "body":
        return BODY
    if source.startswith("totalsegmentator:"):
        return TOTALSEGMENTATOR
    raise ValueError(f"unknown reference source {source!r} in a pseudo-label record")


def _read(path: Path) -> dict[str, Any]:
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: unreadable record of the reference ({error})") from error
    return record


def read_sources(
    cases: list[str], names: list[str], converted: Path | None, pseudolabels: Path | None
) -> tuple[dict[str, dict[str, Source]], str]:
    """Per case and label name, the reference's source; and which records they came from."""
    if pseudolabels is None and converted is None:
        return {c: {n: Source(UNRECORDED) for n in names} for c in cases}, "none given"
    records = (
        {c: MERGE_RECORD.at(pseudolabels, case=c) for c in cases}
        if pseudolabels is not None
        else {c: CASE_MANIFEST.at(converted, case=c) for c in cases}  # type: ignore[arg-type]
    )
    absent = [c for c, path in records.items() if not path.is_file()]
    if absent:
        raise UserError(
            f"no record of the reference for {len(absent)} case(s): {', '.join(absent[:10])} "
            f"(looked for {records[absent[0]]})",
            "pass the run's conversion/pseudo-label folders",
        )
    sources: dict[str, dict[str, Source]] = {}
    stand_in = False
    for case, path in records.items():
        record = _read(path)
        stand_in |= bool(record.get("stand_in"))
        per_label: dict[str, Source] = {}
        for name in names:
            if pseudolabels is not None:
                if name not in record.get("sources", {}):
                    raise ValueError(f"{path}: no source recorded for label {name}; re-run the pseudolabel stage")
                voxels = record.get("voxels", {}).get(name)
                per_label[name] = Source(_group(record["sources"][name]), voxels)
            else:
                info = record.get("labels", {}).get(name)
                if info is None:
                    raise ValueError(f"{path}: label {name} is not in the manifest; convert with this dictionary")
                per_label[name] = Source(MANUAL if info["present"] else None, info.get("voxels"))
        sources[case] = per_label
    where = "pseudo-label merge records" if pseudolabels is not None else "conversion manifests"
    weights = "; TotalSegmentator ran on STAND-IN weights (phantoms only, not TotalSegmentator's)" if stand_in else ""
    return sources, f"{where} ({records[cases[0]].parent.parent}){weights}"


NONE = "none"  # a label without a source in a case


def cohort_sources(pseudolabels: Path, names: list[str]) -> dict[str, Any]:
    """Per label, in how many pseudo-labelled cases (every record of the folder, training and test) its reference
    came from each source group (``none``: no source), from the merge records."""
    records = MERGE_RECORD.glob(pseudolabels)
    counts: dict[str, Counter[str]] = {name: Counter() for name in names}
    for path in records:
        sources = _read(path).get("sources", {})
        for name in names:
            counts[name][_group(sources.get(name)) or NONE] += 1
    return {"cases": len(records), "labels": {name: dict(c) for name, c in counts.items()}}


def assign_groups(rows: list[dict[str, Any]], sources: dict[str, dict[str, Source]]) -> None:
    """Set ``reference`` of every row (one case, one label) to its group, after checking the records.

    A row without a reference (false positive or absent) joins the group that holds most of that label's
    references in this test set (manual on a tie); a label without any reference gets ``""``. GTVp must be a
    manual contour wherever it has a reference.
    """
    mismatches = []
    for row in rows:
        source = sources[row["case"]][row["name"]]
        recorded = 0 if source.group is None else source.voxels
        if source.group != UNRECORDED and recorded is not None and recorded != row["ref_voxels"]:
            mismatches.append(f"{row['case']}/{row['name']}: reference {row['ref_voxels']}, record {recorded} voxels")
        if row["name"] == TUMOUR_LABEL and row["ref_voxels"] and source.group not in (MANUAL, UNRECORDED):
            raise ValueError(f"{row['case']}: the GTVp reference comes from {source.group}, not a manual contour")
    if mismatches:
        raise ValueError(
            f"the reference label maps differ from their records in {len(mismatches)} label(s), e.g. "
            f"{'; '.join(mismatches[:5])}: evaluate against the labelsTs of the run those records belong to"
        )
    votes: dict[str, Counter[str]] = {}
    for row in rows:
        group = sources[row["case"]][row["name"]].group
        if row["ref_voxels"] and group is not None:
            votes.setdefault(row["name"], Counter())[group] += 1
    order = list(TITLES)
    for row in rows:
        group = sources[row["case"]][row["name"]].group
        if row["ref_voxels"] and group is not None:
            row["reference"] = group
        elif row["name"] in votes:
            row["reference"] = max(votes[row["name"]].items(), key=lambda v: (v[1], -order.index(v[0])))[0]
        else:
            row["reference"] = ""
