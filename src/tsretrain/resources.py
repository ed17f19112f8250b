"""What this process may use: CPUs from the cgroup quota (not the host's count) and the memory limit; Kubernetes'
resource quantities."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Literal

import psutil

Device = Literal["auto", "cuda", "cpu"]
"""Where torch runs: ``auto`` (CUDA when present), ``cuda`` (refused without a GPU) or ``cpu``; every stage taking a
device speaks this vocabulary (TotalSegmentator's own ``gpu``/``cpu`` only inside the pseudo-label stage)."""

CGROUP = Path("/sys/fs/cgroup")
HUGE_PAGES_VARIABLE = "THP_MEM_ALLOC_ENABLE"  # torch's CPU allocator: madvise(MADV_HUGEPAGE) on tensors >= 2 MiB


def huge_pages_for_tensors() -> None:
    """Ask torch's CPU allocator for transparent huge pages on tensors of 2 MiB and more (Linux, where the kernel's
    ``transparent_hugepage`` is ``madvise`` or ``always``). Otherwise every fresh tensor of a few megabytes costs a
    page fault per 4 KiB: a 91-output model's training step on the CPU spent 42 % of its time in the kernel,
    faulting in the logits and the loss's tensors (docs/benchmarks.md). torch reads the variable once, at its first
    allocation, so the CLI sets it before any stage imports torch; a value the user set is kept."""
    os.environ.setdefault(HUGE_PAGES_VARIABLE, "1")


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


# Kubernetes' resource.Quantity syntax (k8s.io/apimachinery, the pattern of every quantity in the Argo CRDs).
QUANTITY = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?")
_FACTORS = {"": 1.0, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_FACTORS |= {f"{p}i": float(1024 ** (i + 1)) for i, p in enumerate("KMGTPE")}


def quantity_bytes(text: str) -> float:
    """A Kubernetes quantity (``20Gi``, ``500G``, ``1e9``) as a number; ValueError when Kubernetes would refuse it."""
    match = QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 20Gi, 500G)")
    number, suffix = match.group(1), match.group(2) or ""
    scale = _FACTORS[suffix] if suffix in _FACTORS else 10.0 ** int(suffix[1:])  # else an exponent: 1e9
    return float(number) * scale
