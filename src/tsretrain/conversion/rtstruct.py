"""Read the contours of an RTSTRUCT and burn them into one label map on the CT grid."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from tsretrain.conversion.geometry import VolumeGeometry
from tsretrain.conversion.rasterize import rasterize_box, rasterize_xor, xor_area
from tsretrain.reasons import CaseError, Reason

CLOSED_TYPES = {"CLOSED_PLANAR", "CLOSED_PLANAR_XOR"}
CONTOUR_DATA = 0x30060050
PLANARITY_TOL = 0.5
"""Largest spread of a contour's points along the normal, in slices, before it is refused."""
PLANE_TOL = 0.02
"""Contours whose positions along the normal differ by less than this (in slices) lie in one plane."""
TIE_TOL = 1e-3
"""A plane within this (in slices) of the middle between two slices goes to the lower one."""
GRID_TOL = 0.05
"""A plane beyond the series that lies this close (in slices) to the slice grid marks a cut series."""
LISTED = 10
"""Slices named per warning; the rest are counted."""

NOTES = {
    "not_closed": "POINT/OPEN contour(s) skipped",
    "empty": "empty contour(s) (no ContourData) skipped",
    "too_few_points": "contour(s) with fewer than 3 points skipped",
    "not_finite": "contour(s) with NaN, infinite or unreadable coordinates skipped",
    "not_planar": "contour(s) not parallel to the CT slices skipped",
    "outside_field": "contour(s) entirely outside the image skipped",
    "outside_scan": "contour(s) beyond the first/last slice dropped (clipped along z)",
    "in_plane_clipped": "contour(s) extend outside the field of view (clipped)",
    "plane_dropped": (
        "contour plane(s) dropped: several planes map to one slice, the plane nearest the slice centre is used"
    ),
}


@dataclass
class RoiContours:
    """The closed planar contours of one ROI, one plane per CT slice, in continuous (i, j) pixel indices."""

    number: int
    name: str
    by_slice: dict[int, list[NDArray[np.float64]]] = field(default_factory=dict)
    n_contours: int = 0
    skipped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    beyond_grid: list[float] = field(default_factory=list)  # on-grid planes past the ends, in slices

    def warnings(self) -> list[str]:
        """One line per kind of skipped contour, naming the ROI and the slices (or contour numbers)."""
        lines = []
        for kind, where in sorted(self.skipped.items()):
            if where:
                shown = ", ".join(where[:LISTED]) + (f" and {len(where) - LISTED} more" if len(where) > LISTED else "")
                lines.append(f"ROI {self.name!r}: {len(where)} {NOTES[kind]} ({shown})")
        return lines


def _points(contour: Dataset) -> NDArray[np.float64]:
    """ContourData as an (N, 3) array (empty when absent), parsed straight from the raw bytes when possible."""
    raw = contour.get_item(CONTOUR_DATA)
    if raw is None or raw.value is None:
        return np.zeros((0, 3))
    if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes):
        text = raw.value.strip(b" \x00")
        values = np.array(text.split(b"\\"), dtype=np.float64) if text else np.zeros(0)
    else:
        values = np.asarray(contour.ContourData, dtype=np.float64).reshape(-1)
    return values[: len(values) // 3 * 3].reshape(-1, 3)


def read_structure_set(path: Path) -> Dataset:
    return pydicom.dcmread(path, force=True)


def _where(contour: Dataset, number: int, slice_of_sop: dict[str, int]) -> str:
    """Where an unplaceable contour is: its referenced slice, else its position in the ROI."""
    for ref in contour.get("ContourImageSequence", None) or []:
        k = slice_of_sop.get(str(ref.get("ReferencedSOPInstanceUID", "")))
        if k is not None:
            return f"slice {k}"
    return f"contour #{number + 1}"


def roi_contours(
    ds: Dataset, geometry: VolumeGeometry, wanted: set[str], slice_of_sop: dict[str, int] | None = None
) -> dict[str, RoiContours]:
    """Contours of the wanted ROIs (by raw name), one plane per slice.

    A contour's plane is its mean position along the normal, in slices; contours within ``PLANE_TOL`` of
    each other form one plane, and only contours of one plane are combined (XOR). Each plane goes to the
    nearest slice (a plane midway between two slices, within ``TIE_TOL``, to the lower one); when several
    planes go to one slice, the plane nearest the slice centre is kept (on a tie, the lower one) and the
    others are dropped with a warning.
    """
    names = {int(r.ROINumber): str(r.get("ROIName", "")) for r in ds.get("StructureSetROISequence", [])}
    result: dict[str, RoiContours] = {}
    for item in ds.get("ROIContourSequence", []):
        name = names.get(int(item.ReferencedROINumber), "")
        if name not in wanted:
            continue
        roi = result.setdefault(name, RoiContours(int(item.ReferencedROINumber), name))
        placed = _placed_contours(roi, item, geometry, slice_of_sop or {})
        _assign_planes(roi, placed, geometry.shape[0])
    return result


def _placed_contours(
    roi: RoiContours, item: Dataset, geometry: VolumeGeometry, slice_of_sop: dict[str, int]
) -> list[tuple[float, NDArray[np.float64]]]:
    """(position along the normal in slices, (i, j) vertices) of each usable contour; the rest are skipped."""
    _, rows, columns = geometry.shape
    placed = []
    for number, contour in enumerate(item.get("ContourSequence", None) or []):
        roi.n_contours += 1
        if str(contour.get("ContourGeometricType", "")).upper() not in CLOSED_TYPES:
            roi.skipped["not_closed"].append(_where(contour, number, slice_of_sop))
            continue
        try:
            points = _points(contour)
        except ValueError:  # text that is no number
            roi.skipped["not_finite"].append(_where(contour, number, slice_of_sop))
            continue
        if len(points) < 3:
            roi.skipped["empty" if len(points) == 0 else "too_few_points"].append(_where(contour, number, slice_of_sop))
            continue
        if not np.isfinite(points).all():
            roi.skipped["not_finite"].append(_where(contour, number, slice_of_sop))
            continue
        index = geometry.patient_to_index(points)
        k_mean = float(index[:, 2].mean())
        if float(np.abs(index[:, 2] - k_mean).max()) > PLANARITY_TOL:
            roi.skipped["not_planar"].append(_where(contour, number, slice_of_sop))
            continue
        ij = index[:, :2]
        low, high = ij.min(axis=0), ij.max(axis=0)
        if high[0] < -0.5 or high[1] < -0.5 or low[0] > columns - 0.5 or low[1] > rows - 0.5:
            roi.skipped["outside_field"].append(f"slice {_nearest_slice(k_mean)}")
            continue
        if low[0] < -0.5 or low[1] < -0.5 or high[0] > columns - 0.5 or high[1] > rows - 0.5:
            roi.skipped["in_plane_clipped"].append(f"slice {_nearest_slice(k_mean)}")
        placed.append((k_mean, ij))
    return placed


def _nearest_slice(k: float) -> int:
    """The slice of a plane at continuous index k: the nearest, ties (within TIE_TOL) to the lower slice."""
    return math.floor(k + 0.5 - TIE_TOL)


def _assign_planes(roi: RoiContours, placed: list[tuple[float, NDArray[np.float64]]], n_slices: int) -> None:
    planes: list[tuple[float, list[NDArray[np.float64]]]] = []
    for k, ij in sorted(placed, key=lambda p: p[0]):
        if planes and k - planes[-1][0] <= PLANE_TOL:
            planes[-1][1].append(ij)
        else:
            planes.append((k, [ij]))
    chosen: dict[int, tuple[float, list[NDArray[np.float64]]]] = {}
    for k, contours in planes:  # ascending k: on a tie the lower plane stays
        s = _nearest_slice(k)
        if not 0 <= s < n_slices:
            if abs(k - round(k)) <= GRID_TOL:
                roi.beyond_grid.append(k)
            else:
                roi.skipped["outside_scan"].extend(f"plane at slice index {k:.2f}" for _ in contours)
            continue
        if s in chosen:
            kept = chosen[s][0]
            if abs(k - s) < abs(kept - s) - TIE_TOL:
                roi.skipped["plane_dropped"].append(f"slice {s}: plane at {kept:.2f} replaced by {k:.2f}")
                chosen[s] = (k, contours)
            else:
                roi.skipped["plane_dropped"].append(f"slice {s}: plane at {k:.2f} dropped for {kept:.2f}")
            continue
        chosen[s] = (k, contours)
    roi.by_slice = {s: contours for s, (_, contours) in sorted(chosen.items())}


def slice_masks(roi: RoiContours, rows: int, columns: int) -> Iterator[tuple[int, NDArray[np.bool_]]]:
    """The ROI's mask on each slice that has contours (XOR of the slice's contours)."""
    for k, polygons in sorted(roi.by_slice.items()):
        yield k, rasterize_xor(polygons, rows, columns)


@dataclass
class BurnResult:
    """What burning the ROIs into the label map produced, for the manifest."""

    rois: list[dict[str, Any]]
    overlaps: list[dict[str, Any]]
    warnings: list[str]
    voxels: NDArray[np.int64]  # voxels per label value in the final map (index = value)


def burn_label_map(
    ds: Dataset,
    geometry: VolumeGeometry,
    label_of_roi: dict[str, str],
    label_ids: dict[str, int],
    precedence: tuple[str, ...],
    slice_of_sop: dict[str, int] | None = None,
) -> tuple[NDArray[np.uint8], BurnResult]:
    """One uint8 label map: ROIs written one at a time in precedence order (last wins, GTVp last).

    Overlapping voxels are counted for every (earlier label, later label) pair, and the voxels of each
    label are counted as they are written. Contours on the slice grid beyond the series' ends mean the
    series was cut: :class:`CaseError` (``referenced_slices_missing``).
    """
    labels = np.zeros(geometry.shape, dtype=np.uint8)
    contours = roi_contours(ds, geometry, set(label_of_roi), slice_of_sop)
    cut = {name: roi.beyond_grid for name, roi in contours.items() if roi.beyond_grid}
    if cut:
        name, planes = next(iter(sorted(cut.items())))
        raise CaseError(
            Reason.REFERENCED_SLICES_MISSING,
            f"ROI {name!r} has contours on {len(planes)} slice position(s) beyond the ends of the "
            f"{geometry.shape[0]}-slice series (slice index {planes[0]:.0f}): the series is cut",
        )
    _, rows, columns = geometry.shape
    sx, sy, sz = geometry.spacing
    pixel_area = sx * sy
    counts = np.zeros(256, dtype=np.int64)
    overlaps: dict[tuple[int, int], int] = defaultdict(int)
    rois: list[dict[str, Any]] = []
    warnings: list[str] = []
    order = {name: n for n, name in enumerate(precedence)}
    for raw_name in sorted(label_of_roi, key=lambda r: (order[label_of_roi[r]], r)):
        label = label_of_roi[raw_name]
        value = label_ids[label]
        roi = contours.get(raw_name, RoiContours(-1, raw_name))
        warnings.extend(roi.warnings())
        voxels = 0
        polygon_area = 0.0
        for k, polygons in roi.by_slice.items():
            polygon_area += xor_area(polygons) * pixel_area
            r0, c0, mask = rasterize_box(polygons, rows, columns)
            hits = int(np.count_nonzero(mask))
            if not hits:
                continue
            voxels += hits
            box = labels[k, r0 : r0 + mask.shape[0], c0 : c0 + mask.shape[1]]
            previous = np.bincount(box[mask], minlength=256)
            for other in np.nonzero(previous)[0]:
                if other not in (0, value):
                    overlaps[(int(other), value)] += int(previous[other])
            counts -= previous
            counts[value] += hits
            box[mask] = value
        mask_ml = voxels * pixel_area * sz / 1000.0
        polygon_ml = polygon_area * sz / 1000.0
        if roi.by_slice and voxels == 0:
            warnings.append(f"ROI {raw_name!r}: contours present but no voxel centre inside them (too small)")
        rois.append(
            {
                "raw_name": raw_name,
                "label": label,
                "label_id": value,
                "n_contours": roi.n_contours,
                "n_slices": len(roi.by_slice),
                "skipped": {kind: len(where) for kind, where in roi.skipped.items() if where},
                "voxels": voxels,
                "volume_ml_mask": round(mask_ml, 4),
                "volume_ml_polygon": round(polygon_ml, 4),
                "volume_rel_diff": round((mask_ml - polygon_ml) / polygon_ml, 4) if polygon_ml > 0 else None,
            }
        )
    counts[0] = labels.size - int(counts[1:].sum())
    names = {v: k for k, v in label_ids.items()}
    overlap_list = [{"first": names[a], "then": names[b], "voxels": n} for (a, b), n in sorted(overlaps.items())]
    return labels, BurnResult(rois, overlap_list, warnings, counts)
