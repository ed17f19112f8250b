"""The wheel holds everything a stage needs at run time: built, installed in a fresh virtual environment without
the source tree (as the images do), and run from there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(command: list[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_the_wheel_runs_without_the_source_tree(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: the build never writes into the working tree
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(tmp_path / "dist"), "."], source)
    (wheel,) = (tmp_path / "dist").glob("tsretrain-*.whl")

    env = tmp_path / "env"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    # The dependencies come from this environment's site-packages (a plain path: its editable tsretrain, a .pth
    # file there, is not processed), tsretrain itself only from the wheel.
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path).strip())
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)], tmp_path)

    where = _run([str(python), "-c", "import tsretrain; print(tsretrain.__file__)"], tmp_path)
    assert Path(where.strip()).is_relative_to(env)  # the installed wheel, not the source tree
    assert "Usage" in _run([str(env / "bin" / "tsretrain"), "--help"], tmp_path)
    assert _run([str(env / "bin" / "tsretrain"), "dictionary", "list"], tmp_path).split() == [
        "radcure-oar21",
        "radcure-ts90",
    ]
    loaded = _run(
        [
            str(python),
            "-c",
            "from tsretrain.pipeline.runner import load_config; c = load_config(None); "
            "print(c['model']['dataset'], ' '.join(c['stages']))",
        ],
        tmp_path,
    )
    assert loaded.split()[0] == "Dataset366_TotalSegmentator" and "report" in loaded.split()
