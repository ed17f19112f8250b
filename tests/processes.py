"""Processes seen through /proc (Linux): children of a process, and the processes a test run started."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

RUN_MARKER = "TSRETRAIN_TEST_RUN"
"""Environment variable set by the test session; every process it starts inherits it."""


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the command in parentheses may contain blanks


def alive(pid: int) -> bool:
    """Running (a zombie is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def children(pid: int) -> list[int]:
    return [p for p in pids() if _parent_of(p) == pid and alive(p)]


def started_by_run(marker: str) -> list[int]:
    """Live processes other than this one whose environment carries ``RUN_MARKER=marker``."""
    needle = f"{RUN_MARKER}={marker}".encode()
    found = []
    for pid in pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if pid != os.getpid() and needle in environ.split(b"\0") and alive(pid):
            found.append(pid)
    return found


def left_behind(marker: str) -> list[int]:
    """Processes of the run still alive, but this process's own multiprocessing resource tracker (it ends when
    this process does)."""
    return [
        pid
        for pid in started_by_run(marker)
        if not (_parent_of(pid) == os.getpid() and "multiprocessing.resource_tracker" in command_line(pid))
    ]


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()
