"""Helpers shared by several test modules."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tsretrain.conversion.headers import iter_files


def manifest(converted: Path, case_id: str) -> dict[str, Any]:
    """The manifest of a converted case."""
    data: dict[str, Any] = json.loads((converted / "cases" / case_id / "manifest.json").read_text())
    return data


def tree_digest(root: Path) -> str:
    """A hash of every file name and byte below root."""
    digest = hashlib.sha256()
    for path in iter_files(root):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
