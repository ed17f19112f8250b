"""The hashed locks (requirements/*.txt, `make lock`): current with pyproject.toml and their pins, complete, and
the ones every install uses. No network: the lock's header records a digest of what it was resolved from."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"


def _lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tsretrain_lock", REQUIREMENTS / "lock.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


lock = _lock_module()
ENTRY = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})+)", re.MULTILINE)


def pins(name: str) -> dict[str, str]:
    """package -> pinned version, each entry checked to carry at least one hash."""
    text = (REQUIREMENTS / f"{name}.txt").read_text()
    requirements = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    found = {lock.normalize(m[1]): m[2] for m in ENTRY.finditer(text)}
    assert len(found) == len(requirements), f"{name}.txt: entries without a pin and a hash"
    return found


@pytest.mark.parametrize("name", sorted(lock.LOCKS))
def test_each_lock_is_current_with_pyproject_and_its_pins(name: str) -> None:
    assert lock.recorded(name) == lock.digest(name), (
        f"requirements/{name}.txt was resolved from another pyproject.toml or requirements/{name}.in: run `make lock`"
    )


def test_a_changed_dependency_makes_the_lock_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    real = lock.inputs

    def changed(name: str) -> dict[str, object]:
        found = real(name)
        found["dependencies"] = [*found["dependencies"], "six"]  # type: ignore[list-item]
        return found

    before = {name: lock.digest(name) for name in lock.LOCKS if name != "build"}
    monkeypatch.setattr(lock, "inputs", changed)
    assert all(lock.digest(name) != digest for name, digest in before.items())


@pytest.mark.parametrize("name", sorted(lock.LOCKS))
def test_each_lock_pins_every_package_with_hashes(name: str) -> None:
    found = pins(name)
    assert found and "tsretrain" not in found


def test_the_torch_builds() -> None:
    """CPU torch (no nvidia-* package: the CPU image carries no CUDA toolkit) locally and in the CPU image; torch
    2.8.0 with CUDA 12.8 in the GPU images."""
    for name in ("dev", "cpu"):
        found = pins(name)
        assert found["torch"] == "2.13.0+cpu" and found["torchvision"] == "0.28.0", name
        assert not [p for p in found if p.startswith(("nvidia-", "triton"))], name
    for name in ("gpu", "pseudolabel"):
        found = pins(name)
        assert found["torch"] == "2.8.0" and found["torchvision"] == "0.23.0", name
        assert "nvidia-cudnn-cu12" in found and "triton" in found, name
    assert "totalsegmentator" in pins("pseudolabel") and "totalsegmentator" not in pins("gpu")
    assert "totalsegmentator" in pins("dev") and "pytest" in pins("dev") and "pytest" not in pins("cpu")


def test_the_locks_agree_where_they_share_a_package() -> None:
    """One version of numpy, nnU-Net, ... across the local install and the images, torch aside."""
    locks = {name: pins(name) for name in ("dev", "cpu", "gpu", "pseudolabel")}
    nvidia = {p for found in locks.values() for p in found if p.startswith("nvidia-")}
    torch_stack = {"torch", "torchvision", "setuptools", *nvidia}
    for package in set(locks["cpu"]) - torch_stack:
        versions = {name: found[package] for name, found in locks.items() if package in found}
        assert len(set(versions.values())) == 1, (package, versions)


@pytest.mark.parametrize("family", ["cpu", "gpu", "pseudolabel"])
def test_each_image_installs_its_lock_with_hashes(family: str) -> None:
    text = (ROOT / "images" / f"{family}.Dockerfile").read_text()
    assert f"COPY requirements/{family}.txt " in text
    assert re.search(rf"pip install --no-cache-dir --require-hashes -r /tmp/(lock/)?{family}\.txt", text)
    assert "pip install --no-cache-dir --no-deps /wheels/*.whl" in text
    assert "pip install --no-cache-dir --require-hashes -r /tmp/build.txt" in text
    # nothing else is installed by name (an unhashed, unpinned package)
    installs = re.findall(r"pip install ([^\n&]*)", text)
    assert all("--require-hashes" in args or "--no-deps /wheels/" in args for args in installs), installs
    # every stage reads the base image and the indexes from build arguments
    assert text.count("FROM ${BASE_IMAGE}") == 2 and text.startswith("#")
    assert text.split("\nFROM ")[0].rstrip().endswith("ARG BASE_IMAGE=python:3.11.10-slim-bookworm")
    for stage in text.split("\nFROM ")[1:]:
        assert "ARG PIP_INDEX_URL=https://pypi.org/simple\n" in stage and "ARG PIP_EXTRA_INDEX_URL=\n" in stage


def test_the_gpu_family_images_share_their_cuda_stack_as_one_layer() -> None:
    """requirements/cuda.txt is the CUDA stack both GPU-family locks pin, and both images install it first with the
    same instructions (so a layer cache builds it once and a registry stores it once)."""
    assert (REQUIREMENTS / "cuda.txt").read_text() == lock.cuda_stack()
    stack = pins("cuda")
    assert stack["torch"] == pins("gpu")["torch"] and "triton" in stack and "nvidia-cudnn-cu12" in stack
    assert not {p for p in stack if not p.startswith(("torch", "triton", "nvidia-"))}
    heads = set()
    for family in lock.CUDA_FAMILIES:
        final = (ROOT / "images" / f"{family}.Dockerfile").read_text().split("\nFROM ")[-1]
        instructions = [line for line in final.splitlines() if line and not line.startswith("#")]
        install = next(i for i, line in enumerate(instructions) if "-r /tmp/cuda.txt" in line)
        heads.add(tuple(instructions[: install + 1]))
        assert "--require-hashes --no-deps -r /tmp/cuda.txt" in instructions[install]
    assert len(heads) == 1, heads


def test_make_images_passes_the_build_arguments() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for argument in ("BASE_IMAGE", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "TORCH_INDEX_URL"):
        assert f'--build-arg "{argument}=$({argument})"' in makefile
    cpu = (ROOT / "images" / "cpu.Dockerfile").read_text()
    assert '--index-url "$TORCH_INDEX_URL"' in cpu


def test_the_local_install_is_the_dev_lock() -> None:
    """`make install` installed exactly the dev lock's releases (the torch build included) into this environment."""
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet --require-hashes -r requirements/dev.txt" in makefile
    wrong = {}
    for package, version in pins("dev").items():
        try:
            installed = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[package] = (version, installed)
    assert not wrong, f"installed releases differ from requirements/dev.txt (run `make install`): {wrong}"


def test_only_gives_a_packages_entry_with_its_hashes(tmp_path: Path) -> None:
    entry = lock.entries(REQUIREMENTS / "cpu.txt", ["torch"])
    assert entry.startswith("torch==2.13.0+cpu \\\n") and "--hash=sha256:" in entry and "# via" not in entry
    with pytest.raises(SystemExit):
        lock.entries(REQUIREMENTS / "cpu.txt", ["no-such-package"])
