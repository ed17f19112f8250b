"""Versions of the installed packages a result depends on, as provenance records them."""

from __future__ import annotations

import os
import subprocess
from importlib import metadata
from pathlib import Path


def installed(distribution: str) -> str | None:
    """An installed distribution's version (in a pod: the image's); None when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def commit() -> str:
    """The commit of the tsretrain source that runs (a checkout), else TSRETRAIN_COMMIT (images set it), else
    'unknown'."""
    source = str(Path(__file__).resolve().parents[2])
    try:
        found = _git(source, "rev-parse", "HEAD")
        if found and _git(source, "status", "--porcelain", "--untracked-files=no"):
            found += " (with local changes)"
    except (OSError, subprocess.SubprocessError):
        found = ""
    return found or os.environ.get("TSRETRAIN_COMMIT", "unknown")


def _git(folder: str, *arguments: str) -> str:
    command = ["git", "-C", folder, *arguments]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=10).stdout.strip()
