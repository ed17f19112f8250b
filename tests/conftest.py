"""Shared fixtures: one synthetic cohort with every edge case, scanned and converted once per session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tsretrain.conversion.convert import ConvertConfig, convert
from tsretrain.synth.cohort import SynthConfig, generate


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cohort of 3 regular patients plus all edge cases, on a 128 x 128 x 40 grid of 1.5 x 1.5 x 3 mm."""
    out = tmp_path_factory.mktemp("cohort")
    generate(
        SynthConfig(
            out=out,
            cases=3,
            seed=7,
            edge_cases=True,
            rows=128,
            columns=128,
            slices=40,
            pixel_spacing=1.5,
            slice_thickness=3.0,
        )
    )
    return out


@pytest.fixture(scope="session")
def expected(cohort: Path) -> dict[str, dict[str, Any]]:
    return {p["patient_id"]: p for p in json.loads((cohort / "cohort.json").read_text())["patients"]}


@pytest.fixture(scope="session")
def converted(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("converted")
    convert(ConvertConfig(input=cohort / "dicom", out=out, workers=2))
    return out
