"""Read the contours of an RTSTRUCT and burn them into one label map on the CT grid."""

from __future__ import annotations

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
from tsretrain.conversion.rasterize import rasterize_xor, xor_area

CLOSED_TYPES = {"CLOSED_PLANAR", "CLOSED_PLANAR_XOR"}
CONTOUR_DATA = 0x30060050
PLANARITY_TOL = 0.5
"""Largest spread of a contour's points along the normal, in slices, before it is refused."""


@dataclass
class RoiContours:
    """The closed planar contours of one ROI, grouped by CT slice, in continuous (i, j) pixel indices."""

    number: int
    name: str
    by_slice: dict[int, list[NDArray[np.float64]]] = field(default_factory=lambda: defaultdict(list))
    n_contours: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def warnings(self) -> list[str]:
        notes = {
            "not_closed": "POINT/OPEN contour(s) skipped",
            "too_few_points": "contour(s) with fewer than 3 points skipped",
            "outside_scan": "contour(s) beyond the first/last slice dropped (clipped along z)",
            "in_plane_clipped": "contour(s) extend outside the field of view (clipped)",
            "not_planar": "contour(s) not parallel to the CT slices skipped",
        }
        return [f"ROI {self.name!r}: {n} {notes[k]}" for k, n in sorted(self.skipped.items()) if n]


def _points(contour: Dataset) -> NDArray[np.float64]:
    """ContourData as an (N, 3) array, parsed straight from the raw bytes when possible."""
    raw = contour.get_item(CONTOUR_DATA)
    if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes):
        values = np.array(raw.value.split(b"\\"), dtype=np.float64) if raw.value.strip() else np.zeros(0)
    else:
        values = np.asarray(contour.get("ContourData", []), dtype=np.float64)
    return values[: len(values) // 3 * 3].reshape(-1, 3)


def read_structure_set(path: Path) -> Dataset:
    return pydicom.dcmread(path, force=True)


def roi_contours(ds: Dataset, geometry: VolumeGeometry, wanted: set[str]) -> dict[str, RoiContours]:
    """Contours of the wanted ROIs (by raw name), assigned to the nearest slice within half a spacing."""
    names = {int(r.ROINumber): str(r.get("ROIName", "")) for r in ds.get("StructureSetROISequence", [])}
    n_slices, rows, columns = geometry.shape
    result: dict[str, RoiContours] = {}
    for item in ds.get("ROIContourSequence", []):
        number = int(item.ReferencedROINumber)
        name = names.get(number, "")
        if name not in wanted:
            continue
        roi = result.setdefault(name, RoiContours(number, name))
        for contour in item.get("ContourSequence", []):
            roi.n_contours += 1
            if str(contour.get("ContourGeometricType", "")).upper() not in CLOSED_TYPES:
                roi.skipped["not_closed"] += 1
                continue
            points = _points(contour)
            if len(points) < 3:
                roi.skipped["too_few_points"] += 1
                continue
            index = geometry.patient_to_index(points)
            k_mean = float(index[:, 2].mean())
            if float(np.abs(index[:, 2] - k_mean).max()) > PLANARITY_TOL:
                roi.skipped["not_planar"] += 1
                continue
            k = round(k_mean)
            if not 0 <= k < n_slices:
                roi.skipped["outside_scan"] += 1
                continue
            ij = index[:, :2]
            if (
                ij[:, 0].min() < -0.5
                or ij[:, 1].min() < -0.5
                or ij[:, 0].max() > columns - 0.5
                or (ij[:, 1].max() > rows - 0.5)
            ):
                roi.skipped["in_plane_clipped"] += 1
            roi.by_slice[k].append(ij)
    return result


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


def burn_label_map(
    ds: Dataset,
    geometry: VolumeGeometry,
    label_of_roi: dict[str, str],
    label_ids: dict[str, int],
    precedence: tuple[str, ...],
) -> tuple[NDArray[np.uint8], BurnResult]:
    """One uint8 label map: ROIs written one at a time in precedence order (last wins, GTVp last).

    Overlapping voxels are counted for every (earlier label, later label) pair.
    """
    labels = np.zeros(geometry.shape, dtype=np.uint8)
    contours = roi_contours(ds, geometry, set(label_of_roi))
    sx, sy, sz = geometry.spacing
    pixel_area = sx * sy
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
        for k, mask in slice_masks(roi, geometry.shape[1], geometry.shape[2]):
            polygon_area += xor_area(roi.by_slice[k]) * pixel_area
            hits = int(mask.sum())
            if not hits:
                continue
            voxels += hits
            previous = np.bincount(labels[k][mask], minlength=256)
            for other in np.nonzero(previous)[0]:
                if other not in (0, value):
                    overlaps[(int(other), value)] += int(previous[other])
            labels[k][mask] = value
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
                "skipped": dict(roi.skipped),
                "voxels": voxels,
                "volume_ml_mask": round(mask_ml, 4),
                "volume_ml_polygon": round(polygon_ml, 4),
                "volume_rel_diff": round((mask_ml - polygon_ml) / polygon_ml, 4) if polygon_ml > 0 else None,
            }
        )
    names = {v: k for k, v in label_ids.items()}
    overlap_list = [{"first": names[a], "then": names[b], "voxels": n} for (a, b), n in sorted(overlaps.items())]
    return labels, BurnResult(rois, overlap_list, warnings)
