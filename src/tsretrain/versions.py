"""Versions of the installed packages a result depends on, as provenance records them."""

from __future__ import annotations

from importlib import metadata


def installed(distribution: str) -> str | None:
    """An installed distribution's version (in a pod: the image's); None when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
