"""Save and load the analytic ground truth of a synthetic patient (its phantom and scan grid)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from tsretrain.synth.phantom import Phantom, ScanSpec
from tsretrain.synth.shapes import Cylinder, Ellipsoid, Primitive, Structure

_PRIMITIVES: dict[str, type[Ellipsoid] | type[Cylinder]] = {"ellipsoid": Ellipsoid, "cylinder": Cylinder}


def _primitive_json(p: Primitive) -> dict[str, Any]:
    kind = "ellipsoid" if isinstance(p, Ellipsoid) else "cylinder"
    return {"type": kind, **dataclasses.asdict(p)}


def _tuples(data: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k != "type"}


def _primitive(data: dict[str, Any]) -> Primitive:
    return _PRIMITIVES[data["type"]](**_tuples(data))


def truth_json(phantom: Phantom, spec: ScanSpec) -> dict[str, Any]:
    return {
        "patient_id": phantom.patient_id,
        "spec": dataclasses.asdict(spec),
        "background": [[_primitive_json(p), hu] for p, hu in phantom.background],
        "structures": [
            {
                "roi_name": s.roi_name,
                "organ": s.organ,
                "hu": s.hu,
                "interpreted_type": s.interpreted_type,
                "parts": [_primitive_json(p) for p in s.parts],
            }
            for s in phantom.structures
        ],
    }


def load_truth(path: Path) -> tuple[Phantom, ScanSpec]:
    """The phantom and scan grid saved by the generator for one patient."""
    data = json.loads(path.read_text())
    spec = ScanSpec(**_tuples(data["spec"]))
    structures = tuple(
        Structure(
            s["roi_name"],
            s["organ"],
            tuple(_primitive(p) for p in s["parts"]),
            s["hu"],
            s["interpreted_type"],
        )
        for s in data["structures"]
    )
    background = tuple((_primitive(p), float(hu)) for p, hu in data["background"])
    return Phantom(data["patient_id"], background, structures), spec
