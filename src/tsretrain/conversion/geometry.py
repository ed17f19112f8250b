"""Geometry of a CT series: slice ordering, validity checks and the exact voxel-to-patient mapping.

Conventions (DICOM, patient coordinates LPS, millimetres):
- ``ImageOrientationPatient`` = row direction (towards increasing column index) then column direction.
- ``PixelSpacing`` = (spacing between rows, spacing between columns).
- Volumes are indexed ``[k, j, i]`` = (slice, row, column); slices are sorted by their position along the
  slice normal ``row_dir x col_dir``, ascending, so the third axis of the affine is the normal itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tsretrain.reasons import CaseError, Reason

ORIENTATION_TOL = 1e-4
"""Largest difference between direction cosines of two slices of one volume."""
SPACING_REL_TOL = 0.01
"""Largest deviation of a slice position from the uniform grid, as a fraction of the slice spacing."""
PIXEL_SPACING_TOL = 1e-4
"""Largest difference (mm) of pixel spacing between slices of one volume."""


@dataclass(frozen=True, slots=True)
class SliceHeader:
    """The geometry-relevant header fields of one image of a series."""

    path: str
    sop_instance_uid: str
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    instance_number: int | None = None


@dataclass(frozen=True)
class VolumeGeometry:
    """A regular 3-D grid in patient space (LPS)."""

    shape: tuple[int, int, int]  # (slices, rows, columns)
    origin: tuple[float, float, float]  # centre of voxel [0, 0, 0]
    spacing: tuple[float, float, float]  # (column spacing, row spacing, slice spacing): x, y, z of the index
    direction: tuple[float, ...]  # 3x3 row-major; columns = row_dir, col_dir, normal (SimpleITK convention)

    @property
    def direction_matrix(self) -> NDArray[np.float64]:
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    def index_to_patient_affine(self) -> NDArray[np.float64]:
        """4x4 matrix mapping (i, j, k, 1) to LPS patient coordinates."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction_matrix * np.asarray(self.spacing)[None, :]
        affine[:3, 3] = self.origin
        return affine

    def index_to_patient(self, indices: NDArray[np.float64]) -> NDArray[np.float64]:
        """LPS points of continuous (i, j, k) indices of shape (N, 3)."""
        affine = self.index_to_patient_affine()
        return np.asarray(np.asarray(indices, dtype=np.float64) @ affine[:3, :3].T + affine[:3, 3], dtype=np.float64)

    def patient_to_index(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        """Continuous (i, j, k) indices of LPS points of shape (N, 3)."""
        offset = np.asarray(points, dtype=np.float64) - np.asarray(self.origin)
        return np.asarray((offset @ self.direction_matrix) / np.asarray(self.spacing)[None, :], dtype=np.float64)

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VolumeGeometry:
        return cls(
            shape=tuple(data["shape_zyx"]),
            origin=tuple(data["origin"]),
            spacing=tuple(data["spacing_xyz"]),
            direction=tuple(data["direction"]),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "shape_zyx": list(self.shape),
            "origin": list(self.origin),
            "spacing_xyz": list(self.spacing),
            "direction": list(self.direction),
        }


def build_geometry(slices: list[SliceHeader]) -> tuple[VolumeGeometry, list[SliceHeader]]:
    """Sort the slices of one series along its normal and check that they form one regular volume.

    Returns the geometry and the slices in volume order. Raises :class:`CaseError` with the reason
    code of the first problem found (mixed orientation, inconsistent grid, gantry tilt, duplicate,
    missing or non-uniformly spaced slices).
    """
    if not slices:
        raise CaseError(Reason.NO_CT, "the CT series has no images")
    first = slices[0]
    orientations = np.asarray([s.orientation for s in slices], dtype=np.float64)
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOL:
        distinct = {tuple(round(v, 4) for v in s.orientation) for s in slices}
        raise CaseError(
            Reason.MIXED_ORIENTATION,
            f"{len(distinct)} different ImageOrientationPatient values among {len(slices)} slices",
        )
    if {(s.rows, s.columns) for s in slices} != {(first.rows, first.columns)}:
        raise CaseError(Reason.INCONSISTENT_GEOMETRY, "slices differ in Rows/Columns")
    spacings = np.asarray([s.pixel_spacing for s in slices], dtype=np.float64)
    if np.abs(spacings - spacings[0]).max() > PIXEL_SPACING_TOL:
        raise CaseError(Reason.INCONSISTENT_GEOMETRY, "slices differ in PixelSpacing")

    row_dir = orientations[0, :3] / np.linalg.norm(orientations[0, :3])
    col_dir = orientations[0, 3:] / np.linalg.norm(orientations[0, 3:])
    if abs(float(row_dir @ col_dir)) > 1e-3:
        raise CaseError(Reason.INCONSISTENT_GEOMETRY, "row and column directions are not orthogonal")
    normal = np.cross(row_dir, col_dir)
    positions = np.asarray([s.position for s in slices], dtype=np.float64)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    positions, along = positions[order], along[order]
    ordered = [slices[int(n)] for n in order]

    diffs = np.diff(along)
    if len(slices) > 1 and diffs.min() < 1e-3:
        dup = int(np.argmin(diffs))
        raise CaseError(
            Reason.DUPLICATE_SLICES,
            f"slices {ordered[dup].sop_instance_uid} and {ordered[dup + 1].sop_instance_uid} "
            f"share position {along[dup]:.3f} mm",
        )
    in_plane = (positions - positions[0]) - np.outer(along - along[0], normal)
    shear = float(np.abs(in_plane).max()) if len(slices) > 1 else 0.0
    if shear > 0.01 + SPACING_REL_TOL * float(np.median(diffs) if len(diffs) else 1.0):
        raise CaseError(
            Reason.GANTRY_TILT,
            f"slice origins drift {shear:.2f} mm off the slice normal (gantry tilt or sheared series)",
        )

    if len(slices) > 1:
        step = float(np.min(diffs))
        ratios = diffs / step
        if np.abs(diffs - step).max() > SPACING_REL_TOL * step:
            near_int = np.abs(ratios - np.round(ratios)) <= SPACING_REL_TOL * np.round(ratios)
            if near_int.all():
                missing = int(np.round(ratios).sum() - len(diffs))
                gap = int(np.argmax(ratios))
                raise CaseError(
                    Reason.MISSING_SLICES,
                    f"{missing} slice(s) missing (gap of {diffs[gap]:.3f} mm after position "
                    f"{along[gap]:.3f} mm, spacing {step:.3f} mm)",
                )
            raise CaseError(
                Reason.NONUNIFORM_SPACING,
                f"slice spacing varies from {diffs.min():.3f} to {diffs.max():.3f} mm",
            )
        slice_spacing = float((along[-1] - along[0]) / (len(slices) - 1))
    else:
        slice_spacing = 1.0

    direction = np.stack([row_dir, col_dir, normal], axis=1)
    geometry = VolumeGeometry(
        shape=(len(slices), first.rows, first.columns),
        origin=tuple(float(v) for v in positions[0]),  # type: ignore[arg-type]
        spacing=(float(spacings[0, 1]), float(spacings[0, 0]), slice_spacing),
        direction=tuple(float(v) for v in direction.reshape(-1)),
    )
    return geometry, ordered
