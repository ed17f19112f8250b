"""The pods' Python environment: tsretrain installed from its built wheel, as the images install it.

The images build the wheel and ``pip install`` it over pinned third-party packages. Here the wheel is built
from a copy of exactly what the Dockerfiles copy (``pyproject.toml``, ``README.md``, ``src``) and installed
into a fresh virtual environment; the third-party packages come from the development install through a
``.pth`` line, which adds that folder to ``sys.path`` without running its ``.pth`` files, so the editable
install of the source tree stays invisible. A step that needs a file the wheel lacks fails here as it would
in the image.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def pod_environment(target: Path) -> Path:
    """A virtual environment at ``target/env`` with tsretrain from its wheel; returns the environment."""
    source = target / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):  # what the Dockerfiles COPY
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = target / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    _run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source))
    (wheel,) = wheels.glob("tsretrain-*.whl")
    env = target / "env"
    _run(sys.executable, "-m", "venv", "--without-pip", str(env))
    python = str(env / "bin" / "python")
    _run(*pip, "--python", python, "install", "--no-deps", "--no-index", str(wheel))
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    (Path(site) / "_third_party.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = _run(python, "-c", "import tsretrain; print(tsretrain.__file__)")
    if not where.startswith(site):
        raise RuntimeError(f"tsretrain imported from {where}, not from the wheel in {site}")
    return env


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout.strip()
