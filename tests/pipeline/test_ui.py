"""Progress: a bar in a terminal, a log line every tenth otherwise."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from tsretrain import ui


def test_a_terminal_gets_a_progress_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(ui, "console", Console(file=screen, force_terminal=True, width=100))
    with ui.progress("convert: cases", total=4) as advance:
        for _ in range(4):
            advance(1)
    shown = screen.getvalue()
    assert "\x1b[" in shown and "convert: cases" in shown and "4/4" in shown


def test_a_log_gets_a_line_per_tenth(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(ui, "console", Console(file=io.StringIO(), force_terminal=False))
    with caplog.at_level(logging.INFO, logger="tsretrain"), ui.progress("scan", total=100) as advance:
        for _ in range(100):
            advance(1)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("scan: ")]
    assert lines == [f"scan: {n}/100" for n in range(10, 101, 10)]
