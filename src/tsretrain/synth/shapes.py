"""Analytic shapes of the phantom, defined in the frame of the scan grid (u, v, w in mm).

u runs along the image rows (increasing column index), v along the columns (increasing row index) and w
along the slice normal. Every structure cuts a slice plane w = const in a set of ellipses that combine
with XOR, exactly like the CLOSED_PLANAR contours written for it, so the ground truth on any grid is the
XOR of the ellipses' pixel-centre containment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Ellipse:
    """An ellipse in a slice plane: centre (u, v), semi-axes (a, b), rotation yaw (radians)."""

    cu: float
    cv: float
    a: float
    b: float
    yaw: float = 0.0

    def contains(self, u: NDArray[np.float64], v: NDArray[np.float64]) -> NDArray[np.bool_]:
        du, dv = u - self.cu, v - self.cv
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        p, q = c * du + s * dv, -s * du + c * dv
        return np.asarray((p / self.a) ** 2 + (q / self.b) ** 2 <= 1.0)

    @property
    def area(self) -> float:
        return math.pi * self.a * self.b

    def polygon(self, vertex_spacing: float = 0.5) -> NDArray[np.float64]:
        """Vertices (u, v) of an area-preserving polygon, counter-clockwise."""
        perimeter = math.pi * (3 * (self.a + self.b) - math.sqrt((3 * self.a + self.b) * (self.a + 3 * self.b)))
        n = int(min(720, max(16, math.ceil(perimeter / vertex_spacing))))
        scale = math.sqrt((2 * math.pi / n) / math.sin(2 * math.pi / n))
        t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
        p, q = self.a * scale * np.cos(t), self.b * scale * np.sin(t)
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return np.stack([self.cu + c * p - s * q, self.cv + s * p + c * q], axis=1)


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid with axes along u, v, w (rotated by yaw in the slice plane)."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    yaw: float = 0.0

    def section(self, w: float) -> Ellipse | None:
        t = (w - self.center[2]) / self.radii[2]
        if abs(t) >= 1.0:
            return None
        scale = math.sqrt(1.0 - t * t)
        return Ellipse(self.center[0], self.center[1], self.radii[0] * scale, self.radii[1] * scale, self.yaw)

    @property
    def volume(self) -> float:
        return 4.0 / 3.0 * math.pi * self.radii[0] * self.radii[1] * self.radii[2]


@dataclass(frozen=True)
class Cylinder:
    """An elliptic cylinder along w between w_min and w_max (inclusive)."""

    center: tuple[float, float]
    radii: tuple[float, float]
    w_min: float
    w_max: float
    yaw: float = 0.0

    def section(self, w: float) -> Ellipse | None:
        if not self.w_min <= w <= self.w_max:
            return None
        return Ellipse(self.center[0], self.center[1], self.radii[0], self.radii[1], self.yaw)

    @property
    def volume(self) -> float:
        return math.pi * self.radii[0] * self.radii[1] * (self.w_max - self.w_min)


Primitive = Ellipsoid | Cylinder


@dataclass(frozen=True)
class Structure:
    """A contoured structure: its ROI name, the canonical organ it is, its parts and its CT value.

    Parts combine with XOR on every slice: a part nested in another cuts a hole, disjoint parts are islands.
    """

    roi_name: str
    organ: str
    parts: tuple[Primitive, ...]
    hu: float
    interpreted_type: str = "ORGAN"

    def section(self, w: float) -> list[Ellipse]:
        return [e for e in (p.section(w) for p in self.parts) if e is not None]

    def section_area(self, w: float) -> float:
        """Area of the XOR of the sections; an ellipse centred inside a larger one is a hole in it."""
        ellipses = self.section(w)
        total = 0.0
        for n, e in enumerate(ellipses):
            holes = sum(
                bool(o.contains(np.asarray(e.cu), np.asarray(e.cv)))
                for m, o in enumerate(ellipses)
                if m != n and o.area > e.area
            )
            total += -e.area if holes % 2 else e.area
        return total

    def contains(self, u: NDArray[np.float64], v: NDArray[np.float64], w: float) -> NDArray[np.bool_]:
        inside = np.zeros(np.broadcast(u, v).shape, dtype=bool)
        for ellipse in self.section(w):
            inside ^= ellipse.contains(u, v)
        return inside
