"""Why a case is excluded: one code per cause, each with the advice shown to the user.

Every case in a listing has a status (``ok``, ``excluded`` or ``failed``) and, unless it is ``ok``,
exactly one reason code from this module. When several problems apply, the one listed first here wins
and the others go into the detail text.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Exclusion reason codes, in order of precedence."""

    UNREADABLE_DICOM = "unreadable_dicom"
    MISSING_UIDS = "missing_uids"
    SHARED_UIDS = "shared_uids"
    UNSUPPORTED_CT = "unsupported_ct"
    NO_CT = "no_ct"
    NO_RTSTRUCT = "no_rtstruct"
    RTSTRUCT_REFERENCES_MISSING_SERIES = "rtstruct_references_missing_series"
    MULTIPLE_RTSTRUCT = "multiple_rtstruct"
    MULTIPLE_CT_SERIES = "multiple_ct_series"
    INVALID_GEOMETRY = "invalid_geometry"
    MIXED_ORIENTATION = "mixed_orientation"
    INCONSISTENT_GEOMETRY = "inconsistent_geometry"
    GANTRY_TILT = "gantry_tilt"
    DUPLICATE_SLICES = "duplicate_slices"
    MISSING_SLICES = "missing_slices"
    REFERENCED_SLICES_MISSING = "referenced_slices_missing"
    NONUNIFORM_SPACING = "nonuniform_spacing"
    AMBIGUOUS_ROI = "ambiguous_roi"
    NO_GTVP = "no_gtvp"
    MISSING_REQUIRED_LABEL = "missing_required_label"
    UNDECODABLE_PIXELS = "undecodable_pixels"
    WORKER_CRASHED = "worker_crashed"
    INTERNAL_ERROR = "internal_error"


ADVICE: dict[Reason, str] = {
    Reason.UNREADABLE_DICOM: (
        "a file of the case is truncated, corrupt or could not be read (permissions, vanished); "
        "check the file named in the detail, or download the series again"
    ),
    Reason.MISSING_UIDS: (
        "DICOM files of the patient lack PatientID, SeriesInstanceUID or SOPInstanceUID; "
        "re-export them from the PACS with complete identifiers"
    ),
    Reason.SHARED_UIDS: (
        "the same CT series or instances also appear under another PatientID (a copy or a double "
        "de-identification); keep one copy, otherwise one scan could land in training and test"
    ),
    Reason.UNSUPPORTED_CT: (
        "the CT is Enhanced (multi-frame) CT, which tsretrain does not read; export it as single-frame "
        "CT Image Storage (e.g. from the PACS or with DCMTK/dcm4che) and re-run"
    ),
    Reason.NO_CT: "no usable axial CT series was found for the patient; check that the CT was downloaded",
    Reason.NO_RTSTRUCT: "the patient has no RTSTRUCT; nothing to train on (RADCURE has ~10 % such patients)",
    Reason.RTSTRUCT_REFERENCES_MISSING_SERIES: (
        "the RTSTRUCT points to a CT series that is not in the input; download that series"
    ),
    Reason.REFERENCED_SLICES_MISSING: (
        "the CT series is incomplete (the RTSTRUCT was drawn on slices that are not in the input, e.g. an "
        "interrupted download); download the whole series again"
    ),
    Reason.MULTIPLE_RTSTRUCT: "several RTSTRUCTs reference the CT; keep one, or pass --rtstruct-choice newest",
    Reason.MULTIPLE_CT_SERIES: (
        "the RTSTRUCT does not say which of several CT series it was drawn on; remove the extra series"
    ),
    Reason.INVALID_GEOMETRY: (
        "PixelSpacing, ImagePositionPatient or ImageOrientationPatient is missing, zero or not finite; "
        "the image grid is unknown: fix or re-export the series"
    ),
    Reason.MIXED_ORIENTATION: "slices of the series have different orientations; it is not one volume",
    Reason.INCONSISTENT_GEOMETRY: "slices differ in size or pixel spacing; it is not one volume",
    Reason.GANTRY_TILT: "gantry-tilted series (sheared grid); resample it to an orthogonal grid and re-run",
    Reason.DUPLICATE_SLICES: "two slices share a position; remove the duplicate instances",
    Reason.MISSING_SLICES: "slices are missing from the series; download the series again",
    Reason.NONUNIFORM_SPACING: "slice spacing varies within the series; resample it to uniform spacing",
    Reason.AMBIGUOUS_ROI: "two ROIs compete for one label; rename one or add a pattern to the dictionary",
    Reason.NO_GTVP: "no usable GTVp contour (e.g. unknown primary, T0); nothing to learn the tumour from",
    Reason.MISSING_REQUIRED_LABEL: "a label the dictionary marks as required has no usable contour",
    Reason.UNDECODABLE_PIXELS: (
        "pixel data cannot be decoded; install a decoder (pip install pylibjpeg pylibjpeg-openjpeg)"
    ),
    Reason.WORKER_CRASHED: "the worker converting the case died (often out of memory); re-run with fewer --workers",
    Reason.INTERNAL_ERROR: "unexpected error in tsretrain; the detail holds the traceback, please report it",
}


class CaseError(Exception):
    """A case cannot be used, for a known reason."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def advice(reason: str) -> str:
    """What the user should do about a case with this reason code ("" for a usable case)."""
    return ADVICE[Reason(reason)] if reason else ""


def precedence(reason: Reason) -> int:
    """Position of a reason in the precedence order (lower wins)."""
    return list(Reason).index(reason)
