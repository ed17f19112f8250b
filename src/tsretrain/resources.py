"""What this process may use: CPUs from the cgroup quota (not the host's count) and the memory limit."""

from __future__ import annotations

import math
import os
from pathlib import Path

import psutil

CGROUP = Path("/sys/fs/cgroup")


def cpu_quota(cgroup: Path = CGROUP) -> int:
    """CPUs granted to this container: cgroup v2 ``cpu.max`` or v1 CFS quota, else the affinity mask."""
    available = len(os.sched_getaffinity(0))
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, min(available, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
        if quota_us > 0:
            return max(1, min(available, math.ceil(quota_us / period_us)))
    except (OSError, ValueError):
        pass
    return max(1, available)


def memory_limit_bytes(cgroup: Path = CGROUP) -> int:
    """Memory this container may use: cgroup v2 ``memory.max`` / v1 limit, else physical memory."""
    physical = int(psutil.virtual_memory().total)
    for path in (cgroup / "memory.max", cgroup / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text != "max" and int(text) < physical:
            return int(text)
    return physical
