"""Transparent huge pages for torch's CPU tensors: asked for by the CLI before any stage, honoured by torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tsretrain.cli import app
from tsretrain.resources import HUGE_PAGES_VARIABLE

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
# a 64 MiB tensor written through, then the process's anonymous memory backed by huge pages (kB)
PROBE = """
import torch
t = torch.ones(16 * 2**20)
print([int(l.split()[1]) for l in open('/proc/self/smaps_rollup') if l.startswith('AnonHugePages:')][0], t.sum().item())
"""


@pytest.mark.parametrize(("set_before", "expected"), [(None, "1"), ("0", "0")])
def test_the_cli_asks_torch_for_huge_pages_and_keeps_a_users_choice(
    monkeypatch: pytest.MonkeyPatch, set_before: str | None, expected: str
) -> None:
    if set_before is None:
        monkeypatch.delenv(HUGE_PAGES_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(HUGE_PAGES_VARIABLE, set_before)
    result = CliRunner().invoke(app, ["dictionary", "show", "radcure-oar21"])
    assert result.exit_code == 0, result.output
    assert os.environ[HUGE_PAGES_VARIABLE] == expected


def huge_kib(value: str) -> int:
    env = {"PATH": "/usr/bin:/bin", HUGE_PAGES_VARIABLE: value}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return int(done.stdout.split()[0])


def test_torch_backs_large_tensors_with_huge_pages_when_asked() -> None:
    mode = THP.read_text() if THP.exists() else "[never]"
    if "[never]" in mode:
        pytest.skip(f"transparent huge pages are off in this kernel ({THP}: {mode.strip()})")
    assert huge_kib("1") >= 32 * 1024  # most of the 64 MiB
    if "[madvise]" in mode:  # only where asked for
        assert huge_kib("0") < 8 * 1024
