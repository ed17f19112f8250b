"""A seeded head-and-neck phantom: body, bone, airway, paired glands, cord, GTVp/GTVn and the RADCURE OARs.

All sizes are millimetres in the scan frame (u: patient left, v: posterior, w: superior for a head-first
supine scan). CT numbers give learnable but realistic contrast (tumour ~95 HU against ~35 HU muscle; eyes and
plexus in fat, cord and brainstem in CSF, a fat plane around the oesophagus, lumens of air), since nnU-Net
normalises CT with foreground statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tsretrain.synth.shapes import Cylinder, Ellipsoid, Primitive, Structure

AIR_HU = -1000.0
SKULL_HU = 700.0
BRAIN_HU = 30.0
VERTEBRAE_HU = 550.0
AIRWAY_HU = AIR_HU + 50


@dataclass(frozen=True)
class ScanSpec:
    """The CT grid of one synthetic series, and where its frame sits in patient space."""

    rows: int = 128
    columns: int = 128
    slices: int = 48
    pixel_spacing: tuple[float, float] = (1.6, 1.6)  # (row spacing, column spacing)
    slice_thickness: float = 3.0
    orientation: tuple[float, float, float, float, float, float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    frame_origin: tuple[float, float, float] = (0.0, -20.0, -400.0)  # patient position of frame (0, 0, 0)
    w_center: float = 12.0
    tilt_shift: float = 0.0  # in-plane shift along the column direction per slice (gantry tilt)

    def u_axis(self) -> NDArray[np.float64]:
        return np.asarray((np.arange(self.columns) - (self.columns - 1) / 2) * self.pixel_spacing[1], dtype=np.float64)

    def v_axis(self) -> NDArray[np.float64]:
        return np.asarray((np.arange(self.rows) - (self.rows - 1) / 2) * self.pixel_spacing[0], dtype=np.float64)

    def w_axis(self) -> NDArray[np.float64]:
        w = self.w_center + (np.arange(self.slices) - (self.slices - 1) / 2) * self.slice_thickness
        return np.asarray(w, dtype=np.float64)

    def rotation(self) -> NDArray[np.float64]:
        """Columns: row direction, column direction, slice normal (patient LPS)."""
        row = np.asarray(self.orientation[:3])
        col = np.asarray(self.orientation[3:])
        return np.stack([row, col, np.cross(row, col)], axis=1)

    def to_patient(
        self, u: float | NDArray[np.float64], v: float | NDArray[np.float64], w: float | NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Patient coordinates (..., 3) of frame points."""
        frame = np.stack(np.broadcast_arrays(u, v, w), axis=-1).astype(np.float64)
        return np.asarray(frame @ self.rotation().T + np.asarray(self.frame_origin))

    def slice_position(self, k: int) -> NDArray[np.float64]:
        """ImagePositionPatient of slice k (centre of its first pixel)."""
        u0, v0 = float(self.u_axis()[0]), float(self.v_axis()[0])
        return self.to_patient(u0, v0 + k * self.tilt_shift, float(self.w_axis()[k]))


@dataclass(frozen=True)
class Phantom:
    """The anatomy of one synthetic patient."""

    patient_id: str
    background: tuple[tuple[Primitive, float], ...]  # painted first, in order: (shape, HU)
    structures: tuple[Structure, ...]
    noise_hu: float = 12.0

    def structure(self, roi_name: str) -> Structure:
        for s in self.structures:
            if s.roi_name == roi_name:
                return s
        raise KeyError(roi_name)

    def paint_slice(self, spec: ScanSpec, k: int, rng: np.random.Generator) -> NDArray[np.float64]:
        """HU values of slice k at pixel centres, with noise."""
        u = spec.u_axis()[None, :]
        v = spec.v_axis()[:, None] + k * spec.tilt_shift
        w = float(spec.w_axis()[k])
        hu = np.full((spec.rows, spec.columns), AIR_HU)
        for shape, value in self.background:
            section = shape.section(w)
            if section is not None:
                hu[section.contains(u, v)] = value
        for structure in self.structures:
            if not structure.organ:  # planning volumes are not anatomy
                continue
            hu[structure.contains(u, v, w)] = structure.hu
        body = hu > AIR_HU + 1
        hu[body] += rng.normal(0.0, self.noise_hu, size=int(body.sum()))
        return hu


def make_phantom(
    patient_id: str,
    rng: np.random.Generator,
    gtvp_radius: float | None = None,
    n_nodes: int | None = None,
    spelling_variants: bool = True,
) -> Phantom:
    """A random but anatomically ordered head-and-neck phantom."""
    s = float(rng.uniform(0.92, 1.06))  # patient size
    var = (lambda p: bool(rng.random() < p)) if spelling_variants else (lambda p: False)
    background: list[tuple[Primitive, float]] = [
        (Cylinder((0.0, 0.0), (76 * s, 92 * s), -1e3, 1e3), -90.0),  # subcutaneous fat
        (Cylinder((0.0, 2.0), (68 * s, 84 * s), -1e3, 1e3), 35.0),  # muscle / soft tissue
        (Cylinder((0.0, 44 * s), (17.0, 15.0), -1e3, 45.0), VERTEBRAE_HU),  # vertebral column
        (Cylinder((0.0, 52 * s), (8.5, 7.5), -1e3, 45.0), 5.0),  # spinal canal (CSF)
        (Ellipsoid((0.0, 10.0, 95.0), (66 * s, 80 * s, 52.0)), SKULL_HU),
        (Ellipsoid((0.0, 12.0, 95.0), (60 * s, 74 * s, 47.0)), BRAIN_HU),
        (Ellipsoid((0.0, 42 * s, 62.0), (15.0, 14.0, 25.0)), 8.0),  # cisterns (CSF) around the brainstem
        (Cylinder((0.0, 20 * s), (11.0, 9.0), -1e3, -25.0), -90.0),  # fat plane around the oesophagus
        (Cylinder((0.0, -22 * s), (9.0, 7.0), -1e3, 22.0), AIRWAY_HU),
        (Cylinder((0.0, 20 * s), (3.0, 2.2), -1e3, -25.0), AIR_HU + 100),  # oesophageal lumen
    ]
    for sign in (1.0, -1.0):
        background += [
            (Ellipsoid((sign * 30.0, -56 * s, 79.0), (19.0, 24.0, 16.0)), -80.0),  # orbital fat
            (Ellipsoid((sign * 56 * s, 28 * s, -58.0), (12.0, 13.0, 22.0)), -70.0),  # fat around the plexus
        ]
    structures: list[Structure] = []

    def add(roi: str, organ: str, hu: float, *parts: Primitive, kind: str = "ORGAN") -> None:
        structures.append(Structure(roi, organ, tuple(parts), hu, kind))

    airway = Cylinder((0.0, -22 * s), (9.0, 7.0), -55.0, -15.0)
    add("SpinalCord", "SpinalCord", 45.0, Cylinder((0.0, 52 * s), (5.0, 4.5), -1e3, 40.0))
    add(
        "BrainStem" if var(0.3) else "Brainstem",
        "Brainstem",
        50.0,
        Ellipsoid((0.0, 42 * s, 62.0), (12.0, 11.0, 22.0)),
    )
    add(
        "Esophagus",
        "Esophagus",
        45.0,
        Cylinder((0.0, 20 * s), (8.0, 6.0), -1e3, -25.0),
        Cylinder((0.0, 20 * s), (3.0, 2.2), -1e3, -25.0),
    )
    add("Larynx", "Larynx", 80.0, Cylinder((0.0, -22 * s), (18.0, 15.0), -55.0, -15.0), airway)
    add(
        "Bone_Mandible" if var(0.4) else "Mandible_Bone",
        "Mandible_Bone",
        900.0,
        Cylinder((44 * s, -2 * s), (5.0, 10.0), 0.0, 40.0),
        Cylinder((-44 * s, -2 * s), (5.0, 10.0), 0.0, 40.0),
        Ellipsoid((0.0, -58 * s, 5.0), (30 * s, 8.0, 9.0)),
    )
    add("Lips", "Lips", 50.0, Ellipsoid((0.0, -80 * s, 15.0), (22.0, 6.0, 9.0)))
    add("OpticChiasm", "OpticChiasm", 36.0, Ellipsoid((0.0, -18 * s, 82.0), (9.0, 4.0, 3.0)))
    for side, sign in (("L", 1.0), ("R", -1.0)):
        add(
            f"PAROTID_{side}" if var(0.15) else f"Parotid_{side}",
            f"Parotid_{side}",
            -20.0,
            Ellipsoid((sign * 57 * s, 20 * s, 30.0), (10.0, 15.0, 18.0)),
        )
        add(f"Eye_{side}", f"Eye_{side}", 15.0, Ellipsoid((sign * 32.0, -62 * s, 78.0), (12.0, 12.0, 12.0)))
        add(f"Lens_{side}", f"Lens_{side}", 75.0, Ellipsoid((sign * 32.0, -72 * s, 78.0), (4.5, 2.4, 3.5)))
        add(
            f"OpticNrv_{side}" if var(0.4) else f"Nrv_Optic_{side}",
            f"Nrv_Optic_{side}",
            36.0,
            Ellipsoid((sign * 18.0, -40 * s, 79.0), (2.6, 15.0, 2.6), yaw=-sign * 0.35),
        )
        add(
            f"Cochlea_{side}",
            f"Cochlea_{side}",
            250.0,
            Ellipsoid((sign * 42 * s, 32 * s, 60.0), (3.0, 3.0, 3.0)),
        )
        add(
            f"BrachialPlex_{side}",
            f"BrachialPlex_{side}",
            30.0,
            Ellipsoid((sign * 56 * s, 28 * s, -58.0), (6.0, 7.0, 16.0)),
        )

    radius = gtvp_radius if gtvp_radius is not None else float(math.exp(rng.uniform(math.log(7.0), math.log(22.0))))
    gtvp_center = (float(rng.uniform(-12, 12)), float(rng.uniform(-12, 6)), float(rng.uniform(-8, 28)))
    gtvp_radii = tuple(radius * float(rng.uniform(0.8, 1.2)) for _ in range(3))
    gtvp = Ellipsoid(gtvp_center, gtvp_radii, yaw=float(rng.uniform(0, math.pi)))  # type: ignore[arg-type]
    add("GTVp", "GTVp", 95.0, gtvp, kind="GTV")
    nodes = int(rng.integers(0, 3)) if n_nodes is None else n_nodes
    for n in range(nodes):
        sign = 1.0 if n % 2 == 0 else -1.0
        side = "L" if sign > 0 else "R"
        r = float(rng.uniform(5.0, 13.0))
        center = (
            sign * float(rng.uniform(36, 46)) * s,
            float(rng.uniform(-4, 14)),
            float(rng.uniform(-40, 0)),
        )
        add(f"GTVn_{side}{n + 2}", "GTVn", 80.0, Ellipsoid(center, (r, r * 0.9, r * 1.1)), kind="GTV")
    ptv = Ellipsoid(gtvp_center, tuple(r + 5.0 for r in gtvp_radii), yaw=gtvp.yaw)  # type: ignore[arg-type]
    structures.append(Structure("PTV70", "", (ptv,), 0.0, "PTV"))
    return Phantom(patient_id, tuple(background), tuple(structures))


def truth_mask(phantom: Phantom, spec: ScanSpec, organ: str) -> NDArray[np.bool_]:
    """Analytic ground truth of an organ on the scan grid, indexed [slice, row, column].

    The union over the organ's structures of the XOR of each structure's sections at pixel centres.
    """
    u = spec.u_axis()[None, :]
    mask = np.zeros((spec.slices, spec.rows, spec.columns), dtype=bool)
    for k, w in enumerate(spec.w_axis()):
        v = spec.v_axis()[:, None] + k * spec.tilt_shift
        for structure in phantom.structures:
            if structure.organ == organ:
                mask[k] |= structure.contains(u, v, float(w))
    return mask


def tissue_mask(phantom: Phantom, spec: ScanSpec, hu: float) -> NDArray[np.bool_]:
    """Where a background tissue (named by its CT number, e.g. ``SKULL_HU``) shows on the scan grid: its shapes
    minus what is painted over them, as ``paint_slice`` paints, indexed [slice, row, column]."""
    u = spec.u_axis()[None, :]
    mask = np.zeros((spec.slices, spec.rows, spec.columns), dtype=bool)
    for k, w in enumerate(spec.w_axis()):
        v = spec.v_axis()[:, None] + k * spec.tilt_shift
        for shape, value in phantom.background:
            section = shape.section(float(w))
            if section is not None:
                inside = section.contains(u, v)
                mask[k] = mask[k] & ~inside | (inside if value == hu else False)
        for structure in phantom.structures:
            if structure.organ:
                mask[k] &= ~structure.contains(u, v, float(w))
    return mask


def planimetric_volume_ml(phantom: Phantom, spec: ScanSpec, organ: str) -> float:
    """Exact cross-section area of an organ summed over the slice planes, times the slice thickness."""
    area = sum(s.section_area(float(w)) for w in spec.w_axis() for s in phantom.structures if s.organ == organ)
    return area * spec.slice_thickness / 1000.0
