"""Shared fixtures: one synthetic cohort with every edge case, scanned and converted once per session; and a
check at the end of the session that the tests left no process running."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from processes import RUN_MARKER, command_line, left_behind, wait_until

from tsretrain.conversion.convert import ConvertConfig, convert
from tsretrain.synth.cohort import SynthConfig, generate


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist); workers inherit it
        os.environ[RUN_MARKER] = uuid.uuid4().hex


@pytest.hookimpl(trylast=True)  # after xdist has stopped its workers
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run if a process it started (a server, a worker of a killed trainer) is still running."""
    if hasattr(session.config, "workerinput"):
        return
    marker = os.environ[RUN_MARKER]
    if wait_until(lambda: not left_behind(marker), 20.0):
        return
    left = "\n".join(f"  {pid}: {command_line(pid)}" for pid in left_behind(marker))
    session.config.get_terminal_writer().line(f"processes left running by the tests:\n{left}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
