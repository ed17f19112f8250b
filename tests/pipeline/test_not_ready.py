"""Every stage of the registry in every not-ready state, through the installed console script: its inputs
missing, its inputs empty, an unknown dictionary or trainer. Each must end in exit 2 with a short message and no
traceback (a usage error the workflow never retries), never in an internal error. Generated from the registry:
a new stage is covered without editing this file."""

from __future__ import annotations

import subprocess
import sys
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import MISSING
from pathlib import Path
from typing import Any

import pytest

from tsretrain.pipeline.registry import STAGES
from tsretrain.pipeline.stage import Stage

TSRETRAIN = str(Path(sys.executable).parent / "tsretrain")
NO_INPUT = {"synth"}  # reads nothing: there is no state in which it is not ready
UNKNOWN = {"dictionary": "no-such-dictionary", "trainer": "nnUNetTrainerNoSuchTrainer"}
STATES = ("missing", "empty", "unknown")


def _is_path(hint: Any) -> bool:
    return hint is Path or Path in typing.get_args(hint)


def command(stage: Stage, state: str, root: Path) -> list[str] | None:
    """The stage's command line in ``state``: every path it takes below ``root`` (absent or empty folders),
    required values filled in, and for ``unknown`` its dictionary or trainer misspelt (None: the stage has none)."""
    if state == "unknown" and not set(UNKNOWN) & set(stage.all_options()):
        return None
    folder = root / ("absent" if state == "missing" else "empty")
    if state != "missing":
        folder.mkdir(parents=True, exist_ok=True)
    types, defaults = stage.types(), stage.defaults()
    positional, options = [], []
    for name, option in stage.all_options().items():
        value: str | None = None
        if state == "unknown" and name in UNKNOWN:
            value = UNKNOWN[name]
        elif (_is_path(types[name]) or option.at) and (defaults[name] is MISSING or option.at):
            value = str(folder / name)
            if state != "missing":
                (folder / name).mkdir(exist_ok=True)  # an existing, empty folder
        elif defaults[name] is MISSING:
            value = "0"  # a fold, a number
        if value is None:
            continue
        if option.argument:
            positional.append(value)
        else:
            options += [option.cli_flags(name)[0].split("/")[0], value]
    return [TSRETRAIN, stage.name, *positional, *options]


CASES = [(stage, state) for stage in STAGES if stage.name not in NO_INPUT for state in STATES]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_every_stage_in_every_not_ready_state_is_a_usage_error(tmp_path: Path) -> None:
    commands = {}
    for stage, state in CASES:
        args = command(stage, state, tmp_path / f"{stage.name}-{state}")
        if args is not None:
            commands[(stage.name, state)] = args
    assert len(commands) > 2 * (len(STAGES) - len(NO_INPUT))  # every stage in two states at least
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(commands, pool.map(_run, commands.values()), strict=True))
    failures = []
    for (stage, state), result in done.items():
        lines = result.stderr.strip().splitlines()
        error = next((n for n, line in enumerate(lines) if "error: " in line), None)
        short = error is not None and len(lines) - error <= 3
        if result.returncode != 2 or "Traceback" in result.stderr or "please report" in result.stderr or not short:
            failures.append(f"{stage} ({state}): exit {result.returncode}: {result.stderr[-500:]!r}")
    assert failures == [], "\n".join(failures)
