"""The case plan: what the scan decided about one patient, and what conversion needs to act on it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tsretrain.reasons import Reason, precedence
from tsretrain.run_files import CaseStatus


@dataclass
class CasePlan:
    """One patient: its CT series (slices in volume order), its RTSTRUCT, the ROI mapping and status."""

    case_id: str
    patient_id: str
    status: CaseStatus = CaseStatus.OK
    reason: str = ""
    detail: str = ""
    warnings: list[str] = field(default_factory=list)
    ct_series_uid: str = ""
    frame_of_reference_uid: str = ""
    manufacturer: str = ""  # of the CT series (the synthetic cohort's generator marks its files)
    ct_files: list[str] = field(default_factory=list)
    ct_sop_uids: list[str] = field(default_factory=list)
    geometry: dict[str, Any] | None = None
    rtstruct_file: str = ""
    rtstruct_sop_uid: str = ""
    roi_names: list[str] = field(default_factory=list)
    label_of_roi: dict[str, str] = field(default_factory=dict)
    unmapped_rois: list[str] = field(default_factory=list)
    ignored_rois: list[str] = field(default_factory=list)
    missing_labels: list[str] = field(default_factory=list)
    other_series: list[dict[str, Any]] = field(default_factory=list)
    file_stats: list[tuple[str, int, int]] = field(default_factory=list)  # (path, size, mtime_ns)
    # the patient's other DICOM files (other CT series, unusable series, RTSTRUCTs not used): what contouring
    # every series of the patient (infer) stages besides file_stats; conversion never reads them
    other_files: list[tuple[str, int, int]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def add_problem(self, reason: Reason, detail: str) -> None:
        """Record a problem; the case takes the reason of highest precedence."""
        self.problems.append((reason.value, detail))
        worst = min((Reason(r) for r, _ in self.problems), key=precedence)
        self.status = CaseStatus.EXCLUDED
        self.reason = worst.value
        self.detail = "; ".join(d for r, d in sorted(self.problems, key=lambda p: precedence(Reason(p[0]))))

    def fingerprint(self, dictionary_sha: str, converter_version: str) -> str:
        """Hash of everything a conversion result depends on: input files, dictionary, code version."""
        payload = json.dumps([sorted(self.file_stats), dictionary_sha, converter_version])
        return hashlib.sha256(payload.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CasePlan:
        data = dict(data)
        data["file_stats"] = [tuple(s) for s in data.get("file_stats", [])]
        data["other_files"] = [tuple(s) for s in data.get("other_files", [])]
        data["problems"] = [tuple(p) for p in data.get("problems", [])]
        data["status"] = CaseStatus(data.get("status", CaseStatus.OK))
        return cls(**data)


def load_inventory(path: Path) -> tuple[dict[str, Any], list[CasePlan]]:
    """The inventory written by the scan: its header and one plan per case."""
    data = json.loads(path.read_text())
    return data, [CasePlan.from_json(c) for c in data["cases"]]
