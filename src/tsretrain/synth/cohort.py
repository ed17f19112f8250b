"""The ``synth`` stage: write a seeded synthetic head-and-neck DICOM-RT cohort with its ground truth.

Output folder::

    dicom/            the DICOM tree (scan and convert read this)
    truth/<id>.json   the analytic phantom and scan grid of each patient
    cohort.json       every patient with its layout and the status/reason a correct pipeline must give
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_text
from tsretrain.synth import dicom_writer as dw
from tsretrain.synth.edge_cases import EDGE_CASES
from tsretrain.synth.layouts import LAYOUTS, Layout, relative_path
from tsretrain.synth.patient import PatientBuild
from tsretrain.synth.phantom import ScanSpec, make_phantom
from tsretrain.synth.truth import truth_json
from tsretrain.ui import progress


@dataclass(frozen=True, kw_only=True)
class SynthConfig:
    """Configuration of the ``synth`` stage."""

    out: Path
    cases: int = 8
    seed: int = 0
    edge_cases: bool = False
    layout: Layout = "nbia"
    rows: int = 128
    columns: int = 128
    slices: int = 48
    pixel_spacing: float = 1.6
    slice_thickness: float = 3.0
    scan_centre: float = 12.0
    id_prefix: str = "RADCURE"
    roi_variants: bool = True

    def spec(self) -> ScanSpec:
        return ScanSpec(
            rows=self.rows,
            columns=self.columns,
            slices=self.slices,
            pixel_spacing=(self.pixel_spacing, self.pixel_spacing),
            slice_thickness=self.slice_thickness,
            w_center=self.scan_centre,
        )


SMALL_GTVP_RADIUS = 6.0  # mm: 0.9 mL (volume band < 3 mL), about 70 voxels on the demo grid (2.1 x 2.1 x 3 mm)
ENCODINGS = (dw.PixelEncoding(1, -1024.0), dw.PixelEncoding(0, -1024.0), dw.PixelEncoding(1, 0.0))


def write_build(root: Path, build: PatientBuild) -> list[Path]:
    """Write every file of a patient build under root; returns the paths written."""
    written: list[Path] = []
    for series in build.all_series():
        count = len(series)
        for n, ds in enumerate(series):
            index = count - n if build.reverse_file_order else n + 1
            path = root / relative_path(ds, build.layout, index)
            path.parent.mkdir(parents=True, exist_ok=True)
            dw.save(ds, str(path))
            written.append(path)
    for hook in build.after_write:
        hook(root, written)
    return written


def regular_build(config: SynthConfig, patient_id: str, number: int, rng: np.random.Generator) -> PatientBuild:
    """A normal patient: one CT series and one RTSTRUCT with RADCURE's ROI names."""
    spec = replace(config.spec(), w_center=config.spec().w_center + float(rng.uniform(-6.0, 6.0)))  # scan extent
    small = SMALL_GTVP_RADIUS if number % 4 == 1 else None  # every fourth tumour is small
    phantom = make_phantom(patient_id, rng, gtvp_radius=small, spelling_variants=config.roi_variants)
    return PatientBuild.make(
        phantom,
        spec,
        seed=config.seed,
        encoding=ENCODINGS[number % len(ENCODINGS)],
        layout=config.layout,
        rng=rng,
    )


def generate(config: SynthConfig) -> StageResult:
    """Generate the cohort described by the configuration."""
    if config.layout not in LAYOUTS:
        raise ValueError(f"unknown layout {config.layout!r}; choose one of {LAYOUTS}")
    dicom_root = config.out / "dicom"
    truth_root = config.out / "truth"
    dicom_root.mkdir(parents=True, exist_ok=True)
    truth_root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    builds: list[tuple[PatientBuild, str, str, str]] = []
    for n in range(1, config.cases + 1):
        pid = f"{config.id_prefix}-{n:04d}"
        builds.append((regular_build(config, pid, n, rng), "ok", "", "regular patient"))
    if config.edge_cases:
        for n, edge in enumerate(EDGE_CASES, start=1):
            pid = f"EDGE-{n:02d}-{edge.name}"
            base = regular_build(replace(config, roi_variants=False), pid, 0, rng)
            builds.append((edge.apply(base, rng), edge.status, edge.reason, edge.description))
    patients = []
    with progress("synth: writing patients", total=len(builds)) as advance:
        for build, status, reason, description in builds:
            write_build(dicom_root, build)
            truth = truth_json(build.phantom, build.spec)
            atomic_write_text(truth_root / f"{build.phantom.patient_id}.json", json.dumps(truth))
            patients.append(
                {
                    "patient_id": build.phantom.patient_id,
                    "layout": build.layout,
                    "expected_status": status,
                    "expected_reason": reason,
                    "description": description,
                    "truth_usable": build.truth_usable,
                }
            )
            advance(1)
    cohort = {
        "seed": config.seed,
        "cases": config.cases,
        "edge_cases": config.edge_cases,
        "layout": config.layout,
        "grid": {"rows": config.rows, "columns": config.columns, "slices": config.slices},
        "patients": patients,
    }
    atomic_write_text(config.out / "cohort.json", json.dumps(cohort, indent=2))
    return StageResult(
        stage="synth",
        outputs={
            "dicom": str(dicom_root),
            "truth": str(truth_root),
            "cohort": str(config.out / "cohort.json"),
        },
        counts={"patients": len(patients), "edge_cases": len(patients) - config.cases},
    )
