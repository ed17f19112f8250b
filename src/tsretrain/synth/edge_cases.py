"""Broken and unusual patients, each with the status and reason a correct pipeline must report.

What tsretrain does with each (documented in the README):
- gantry-tilted series are excluded (``gantry_tilt``): nnU-Net needs an orthogonal grid;
- oblique and prone series are converted with their exact direction matrix;
- ``GTVp2``/``GTVp3`` (second primaries) are merged into GTVp; ``gtvp `` matches GTVp;
- POINT ROIs, contours outside the field of view and files that are not CT/RTSTRUCT are reported as
  warnings or ignored files, never as a failure; so are empty, 2-point, NaN and far-outside contours;
- a CT that lost slices the RTSTRUCT was drawn on is excluded (``referenced_slices_missing``), whether the
  RTSTRUCT names its images (ContourImageSequence) or only its contours lie beyond the series' end;
- Enhanced CT, CT images without usable geometry or without UIDs are excluded with their own reasons;
- a ROI drawn every 1 mm on a 3 mm CT keeps, per slice, the plane through the slice centre.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, JPEG2000Lossless

from tsretrain.conversion.headers import ENHANCED_CT_STORAGE
from tsretrain.decimal_strings import decimal_string
from tsretrain.synth import dicom_writer as dw
from tsretrain.synth.patient import PatientBuild
from tsretrain.synth.phantom import Phantom
from tsretrain.synth.shapes import Ellipsoid, Structure

RTPLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
RTDOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
DICOMDIR_STORAGE = "1.2.840.10008.1.3.10"


@dataclass(frozen=True)
class EdgeCase:
    """One edge case: how to break a regular patient and what the pipeline must say about it."""

    name: str
    status: str
    reason: str
    description: str
    apply_fn: Callable[[PatientBuild, np.random.Generator], None]

    def apply(self, build: PatientBuild, rng: np.random.Generator) -> PatientBuild:
        self.apply_fn(build, rng)
        return build


def _with_structures(phantom: Phantom, structures: list[Structure]) -> Phantom:
    return replace(phantom, structures=tuple(structures))


def _reversed(b: PatientBuild, _: np.random.Generator) -> None:
    b.reverse_file_order = True


def _layout(name: str) -> Callable[[PatientBuild, np.random.Generator], None]:
    def apply(b: PatientBuild, _: np.random.Generator) -> None:
        b.layout = name

    return apply


def _simple_dataset(b: PatientBuild, modality: str, sop_class: str, tag: str) -> Dataset:
    ds = dw.new_instance(sop_class, dw.seeded_uid(b.seed, b.phantom.patient_id, tag), modality, b.ids)
    ds.SeriesInstanceUID = dw.seeded_uid(b.seed, b.phantom.patient_id, tag, "series")
    ds.SeriesNumber = 7
    ds.SeriesDescription = modality or "DIRECTORY"
    return ds


def _junk(b: PatientBuild, _: np.random.Generator) -> None:
    b.layout = "classic"
    b.extra_series.append(lambda: [_simple_dataset(b, "RTPLAN", RTPLAN_STORAGE, "plan")])
    b.extra_series.append(lambda: [_simple_dataset(b, "RTDOSE", RTDOSE_STORAGE, "dose")])

    def localizer() -> list[Dataset]:
        scout = b.ct_series()[:2]
        for n, ds in enumerate(scout):
            ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
            ds.SeriesInstanceUID = dw.seeded_uid(b.seed, b.phantom.patient_id, "scout")
            ds.SeriesNumber = 1
            ds.SeriesDescription = "SCOUT"
            uid = dw.seeded_uid(b.seed, b.phantom.patient_id, "scout", n)
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID(uid)
        return scout

    b.extra_series.append(localizer)

    def write_junk(root: Path, written: list[Path]) -> None:
        folder = written[0].parent
        (folder / "README.txt").write_text("exported by PACS\n")
        (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
        (folder / "empty.dcm").write_bytes(b"")
        (folder / "garbage.dcm").write_bytes(bytes(128) + b"DICM" + bytes(range(256)) * 4)
        directory = _simple_dataset(b, "", DICOMDIR_STORAGE, "dicomdir")
        directory.DirectoryRecordSequence = []
        dw.save(directory, str(written[0].parents[2] / "DICOMDIR"))

    b.after_write.append(write_junk)


def _rt(**changes: object) -> Callable[[PatientBuild, np.random.Generator], None]:
    def apply(b: PatientBuild, _: np.random.Generator) -> None:
        b.rtstructs = [replace(b.rtstructs[0], **changes)]  # type: ignore[arg-type]

    return apply


def _foreign(b: PatientBuild, _: np.random.Generator) -> None:
    b.rtstructs = [
        replace(
            b.rtstructs[0],
            referenced_series_uid=dw.seeded_uid(b.seed, b.phantom.patient_id, "foreign-series"),
            frame_uid=dw.seeded_uid(b.seed, b.phantom.patient_id, "foreign-frame"),
        )
    ]
    b.truth_usable = False


def _two_rtstructs(b: PatientBuild, _: np.random.Generator) -> None:
    second = replace(b.rtstructs[0], label="RTSTRUCT_v2", sop_tag="rtstruct2", date_time=("20200105", "090000"))
    b.rtstructs.append(second)


def _drop_middle_slice(series: list[Dataset]) -> list[Dataset]:
    return series[: len(series) // 2] + series[len(series) // 2 + 1 :]


def _drop_last_half(series: list[Dataset]) -> list[Dataset]:
    return series[: len(series) // 2]


def _cut_without_references(b: PatientBuild, rng: np.random.Generator) -> None:
    _ct_edit(_drop_last_half)(b, rng)
    _rt(contour_image_sequence=False)(b, rng)


def _enhanced(series: list[Dataset]) -> list[Dataset]:
    for ds in series:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID(ENHANCED_CT_STORAGE[0])
    return series


def _zero_spacing(series: list[Dataset]) -> list[Dataset]:
    for ds in series:
        ds.PixelSpacing = ["0", "0"]
    return series


def _rewrite_ct(*keywords: str) -> Callable[[PatientBuild, np.random.Generator], None]:
    """Delete these attributes from the CT files once written (folder names still come from them)."""

    def apply(b: PatientBuild, _: np.random.Generator) -> None:
        def strip(root: Path, written: list[Path]) -> None:
            for path in written:
                ds = pydicom.dcmread(path)
                if ds.Modality == "CT":
                    for keyword in keywords:
                        delattr(ds, keyword)
                    dw.save(ds, str(path))

        b.after_write.append(strip)
        b.truth_usable = False

    return apply


def _truncate(b: PatientBuild, _: np.random.Generator) -> None:
    def cut(root: Path, written: list[Path]) -> None:
        victim = written[len(written) // 3]
        data = victim.read_bytes()
        victim.write_bytes(data[: int(len(data) * 0.6)])

    b.after_write.append(cut)


def _out_of_field(b: PatientBuild, _: np.random.Generator) -> None:
    half_width = (b.spec.columns - 1) / 2 * b.spec.pixel_spacing[1]
    node = Structure("GTVn_L2", "GTVn", (Ellipsoid((half_width - 4.0, 0.0, -20.0), (12.0, 10.0, 12.0)),), 80.0, "GTV")
    structures = [s for s in b.phantom.structures if s.organ != "GTVn"] + [node]
    b.phantom = _with_structures(b.phantom, structures)
    above = float(b.spec.w_axis()[-1]) + 1.5 * b.spec.slice_thickness  # off the slice grid: not a cut series
    b.rtstructs = [replace(b.rtstructs[0], extra_w=("Brainstem", above))]


def _add_structure(
    roi_name: str, organ: str, center: tuple[float, float, float], radius: float
) -> Callable[[PatientBuild, np.random.Generator], None]:
    def apply(b: PatientBuild, _: np.random.Generator) -> None:
        extra = Structure(roi_name, organ, (Ellipsoid(center, (radius, radius, radius)),), 95.0, "GTV")
        b.phantom = _with_structures(b.phantom, [*b.phantom.structures, extra])

    return apply


def _no_gtvp(b: PatientBuild, _: np.random.Generator) -> None:
    b.phantom = _with_structures(b.phantom, [s for s in b.phantom.structures if s.roi_name not in ("GTVp", "PTV70")])


def _no_rtstruct(b: PatientBuild, _: np.random.Generator) -> None:
    b.rtstructs = []


def _second_ct(b: PatientBuild, tag: str) -> None:
    def series() -> list[Dataset]:
        ids = dw.SeriesIds.for_patient(b.phantom.patient_id, b.seed, b.spec.slices, tag=tag)
        rng = np.random.default_rng(b.noise_seed + 1)
        return list(dw.ct_slices(b.phantom, b.spec, ids, b.encoding, rng, 3, "CT CONTRAST"))

    b.extra_series.append(series)


def _two_ct_unreferenced(b: PatientBuild, _: np.random.Generator) -> None:
    _second_ct(b, "ct-contrast")
    b.rtstructs = [replace(b.rtstructs[0], referenced_series=False)]


def _two_ct_referenced(b: PatientBuild, _: np.random.Generator) -> None:
    _second_ct(b, "ct-contrast")


def _nonuniform(series: list[Dataset]) -> list[Dataset]:
    for ds in series[len(series) // 2 :]:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [decimal_string(x), decimal_string(y), decimal_string(z + 0.8)]
    return series


def _mixed_orientation(series: list[Dataset]) -> list[Dataset]:
    c, s = math.cos(0.2), math.sin(0.2)
    series[3].ImageOrientationPatient = [decimal_string(v) for v in (c, s, 0.0, -s, c, 0.0)]
    return series


def _spec(**changes: object) -> Callable[[PatientBuild, np.random.Generator], None]:
    def apply(b: PatientBuild, _: np.random.Generator) -> None:
        b.spec = replace(b.spec, **changes)  # type: ignore[arg-type]
        b.ids = dw.SeriesIds.for_patient(b.phantom.patient_id, b.seed, b.spec.slices)

    return apply


def _jpeg2000(series: list[Dataset]) -> list[Dataset]:
    victim = series[len(series) // 2]
    victim.file_meta.TransferSyntaxUID = JPEG2000Lossless
    victim.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(200)])
    return series


def _tilt(b: PatientBuild, rng: np.random.Generator) -> None:
    _spec(tilt_shift=0.5)(b, rng)
    b.truth_usable = False


def _ct_edit(
    edit: Callable[[list[Dataset]], list[Dataset]], usable: bool = False
) -> Callable[[PatientBuild, np.random.Generator], None]:
    def apply(b: PatientBuild, _: np.random.Generator) -> None:
        b.ct_edits.append(edit)
        b.truth_usable = usable

    return apply


_OBLIQUE = 12 * math.pi / 180

EDGE_CASES: tuple[EdgeCase, ...] = (
    EdgeCase("reversed-order", "ok", "", "file numbers run against z", _reversed),
    EdgeCase("flat-layout", "ok", "", "all files of the patient in the root folder, hashed names", _layout("flat")),
    EdgeCase("uid-layout", "ok", "", "classic Study/Series UID folders", _layout("classic")),
    EdgeCase("junk-files", "ok", "", "text, empty, garbage, DICOMDIR, RTPLAN, RTDOSE, localizer", _junk),
    EdgeCase("contour-z-jitter", "ok", "", "contour z off the slice plane by 0.0007 mm", _rt(contour_offset=0.0007)),
    EdgeCase(
        "no-contour-image-sequence",
        "ok",
        "",
        "contours without ContourImageSequence",
        _rt(contour_image_sequence=False),
    ),
    EdgeCase(
        "foreign-series",
        "excluded",
        "rtstruct_references_missing_series",
        "RTSTRUCT references a series and frame of reference not in the input",
        _foreign,
    ),
    EdgeCase("two-rtstructs", "excluded", "multiple_rtstruct", "two RTSTRUCTs reference the CT", _two_rtstructs),
    EdgeCase("missing-slice", "excluded", "missing_slices", "one CT slice absent", _ct_edit(_drop_middle_slice)),
    EdgeCase("truncated-file", "excluded", "unreadable_dicom", "one CT file cut short", _truncate),
    EdgeCase("point-roi", "ok", "", "a POINT ROI (reference point) next to the contours", _rt(add_point_roi=True)),
    EdgeCase("out-of-field", "ok", "", "a node half outside the field, a contour above the scan", _out_of_field),
    EdgeCase("gtvp-trailing-space", "ok", "", "GTVp named 'gtvp '", _rt(rename=(("GTVp", "gtvp "),))),
    EdgeCase(
        "gtvp2",
        "ok",
        "",
        "a second primary GTVp2 (merged into GTVp) inside the right parotid",
        _add_structure("GTVp2", "GTVp", (-52.0, 20.0, 30.0), 7.0),
    ),
    EdgeCase("no-gtvp", "excluded", "no_gtvp", "no GTVp ROI (unknown primary)", _no_gtvp),
    EdgeCase("no-rtstruct", "excluded", "no_rtstruct", "CT only", _no_rtstruct),
    EdgeCase(
        "duplicate-gtvp",
        "excluded",
        "ambiguous_roi",
        "two ROIs named GTVp and GTVP",
        _add_structure("GTVP", "GTVp-duplicate", (-20.0, 30.0, 40.0), 7.0),
    ),
    EdgeCase(
        "two-ct-unreferenced",
        "excluded",
        "multiple_ct_series",
        "two CT series in one frame of reference, RTSTRUCT names neither",
        _two_ct_unreferenced,
    ),
    EdgeCase("two-ct-referenced", "ok", "", "two CT series, RTSTRUCT references one", _two_ct_referenced),
    EdgeCase(
        "nonuniform-spacing",
        "excluded",
        "nonuniform_spacing",
        "one slice gap of +0.8 mm",
        _ct_edit(_nonuniform),
    ),
    EdgeCase(
        "mixed-orientation",
        "excluded",
        "mixed_orientation",
        "one slice rotated",
        _ct_edit(_mixed_orientation),
    ),
    EdgeCase("gantry-tilt", "excluded", "gantry_tilt", "sheared grid from a tilted gantry", _tilt),
    EdgeCase(
        "oblique",
        "ok",
        "",
        "series rotated 12 degrees about the left-right axis",
        _spec(orientation=(1.0, 0.0, 0.0, 0.0, math.cos(_OBLIQUE), math.sin(_OBLIQUE))),
    ),
    EdgeCase("prone", "ok", "", "head-first prone orientation", _spec(orientation=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0))),
    EdgeCase(
        "non-square",
        "ok",
        "",
        "112 x 128 pixels of 1.5 x 1.7 mm",
        _spec(rows=112, columns=128, pixel_spacing=(1.5, 1.7)),
    ),
    EdgeCase(
        "cut-series",
        "excluded",
        "referenced_slices_missing",
        "the last half of the CT is missing (interrupted download); the RTSTRUCT names its images",
        _ct_edit(_drop_last_half),
    ),
    EdgeCase(
        "cut-series-no-references",
        "excluded",
        "referenced_slices_missing",
        "the last half of the CT is missing and the RTSTRUCT has no ContourImageSequence",
        _cut_without_references,
    ),
    EdgeCase("enhanced-ct", "excluded", "unsupported_ct", "the CT is Enhanced CT", _ct_edit(_enhanced)),
    EdgeCase("zero-pixel-spacing", "excluded", "invalid_geometry", "PixelSpacing 0\\0", _ct_edit(_zero_spacing)),
    EdgeCase(
        "ct-without-uids",
        "excluded",
        "missing_uids",
        "CT files without Series/SOPInstanceUID",
        _rewrite_ct("SeriesInstanceUID", "SOPInstanceUID"),
    ),
    EdgeCase(
        "ct-without-patient-id", "excluded", "missing_uids", "CT files without PatientID", _rewrite_ct("PatientID")
    ),
    EdgeCase(
        "duplicate-roi-number",
        "excluded",
        "ambiguous_roi",
        "two ROIs share one ROINumber",
        _rt(duplicate_roi_number=True),
    ),
    EdgeCase(
        "degenerate-contours",
        "ok",
        "",
        "GTVp also has an empty, a 2-point, a NaN and a far-outside contour",
        _rt(degenerate="GTVp"),
    ),
    EdgeCase("dense-planes", "ok", "", "GTVp drawn every 1 mm on the 3 mm CT", _rt(plane_step=("GTVp", 1.0))),
    EdgeCase(
        "jpeg2000-undecodable",
        "excluded",
        "undecodable_pixels",
        "one slice in a compressed syntax no decoder can read",
        _ct_edit(_jpeg2000),
    ),
)
