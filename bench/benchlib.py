"""What the benchmark scripts share: timing a child process tree and updating their section of a results file."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from pathlib import Path


def measure(command: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run a child that prints a JSON object as its last line; add its process tree's peak RSS (MiB) and, unless
    the child measured its own, CPU time (user + system, s: less distorted than wall time by other work)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)
    assert process.stdout is not None
    lines = process.stdout.read().decode().strip().splitlines()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"{command} failed with status {status}")
    result: dict[str, float] = json.loads(lines[-1])
    result["peak_rss_mib"] = usage.ru_maxrss / 1024
    result.setdefault("cpu_seconds", usage.ru_utime + usage.ru_stime)
    return result


def medians(results: dict[str, list[dict[str, float]]], key: str) -> dict[str, float]:
    """Each variant's median of ``key`` over its runs."""
    return {variant: statistics.median(run[key] for run in runs) for variant, runs in results.items()}


def update_section(path: Path | None, name: str, section: str) -> None:
    """Print a section and put it into ``path`` between this script's markers (replacing an older one)."""
    begin, end = f"<!-- {name} begin -->", f"<!-- {name} end -->"
    text = f"{begin}\n{section}\n{end}"
    print(text)
    if path is None:
        return
    current = path.read_text() if path.is_file() else "# Benchmarks\n"
    if begin in current:
        head, rest = current.split(begin, 1)
        current = head + text + rest.split(end, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(current)


def machine_line() -> str:
    """The machine as the results were measured on it, with its load when the run began."""
    load = os.getloadavg()[0]
    busy = " (other work running: wall times are inflated, CPU times less so)" if load >= 0.5 else ""
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, 1-minute load average {load:.1f} when the run began{busy}, "
        f"Python {platform.python_version()}"
    )
