"""The step images, built here for the harness's pods (``argo_sim.containers``) with ``images/build-local.sh``:
buildah on a local Debian base, layers cached between runs on the same machine.

Building needs root, buildah, mmdebstrap and unshare; as root with apt, missing Debian packages are installed
as ``make install`` installs the DICOM tools. Where that cannot be, :func:`unavailable` says why (the tests that
need the images then skip, saying so, and the Argo harness runs its pods as local processes). A build needs the
package indexes (PyPI, Debian's mirror) for whatever its layer cache lacks: offline, a build that fails with the
indexes out of reach raises :class:`Offline`, which the tests treat as the same kind of skip; with the indexes in
reach a failed build is an error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from filelock import FileLock

ROOT = Path(__file__).resolve().parents[3]
FAMILIES = ("cpu", "gpu", "pseudolabel")
HARNESS_TAG = "20261127"  # the tag the harness renders the chart with (a numeric one, as CI tags by date)
PACKAGES = {"buildah": "buildah", "mmdebstrap": "mmdebstrap", "unshare": "util-linux"}
FORCE_LOCAL = "TSRETRAIN_HARNESS_PODS"  # =local: pods as local processes even where images can be built


def unavailable() -> str | None:
    """Why the images cannot be built and run here, or None."""
    if os.environ.get(FORCE_LOCAL) == "local":
        return f"{FORCE_LOCAL}=local"
    if os.geteuid() != 0:
        return "not root (buildah's chroot isolation and the pods' namespaces need root)"
    missing = [tool for tool in PACKAGES if shutil.which(tool) is None]
    if missing and shutil.which("apt-get"):
        packages = sorted({PACKAGES[tool] for tool in missing})
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", *packages]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True)
        missing = [tool for tool in PACKAGES if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} missing (Debian: apt-get install {' '.join(PACKAGES[t] for t in missing)})"
    return None


INDEXES = ("https://pypi.org/simple/pip/", "http://deb.debian.org/debian/dists/bookworm/InRelease")


class Offline(RuntimeError):
    """The images could not be built: their layers are not cached and the package indexes are out of reach."""


def unreachable() -> list[str]:
    """The package indexes a build fetches from that do not answer (images/build-local.sh, the Makefile's
    default PIP_INDEX_URL)."""
    missing = []
    for url in INDEXES:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10).close()
        except OSError:
            missing.append(url)
    return missing


def build(tag: str, families: tuple[str, ...], log: Path) -> float:
    """The images ``tsretrain-FAMILY:TAG`` (``localhost/`` in buildah's store), built or brought up to date from
    the checkout; one build at a time on the machine. Returns the seconds it took; the output goes to ``log``."""
    started = time.time()
    with FileLock("/tmp/tsretrain-image-build.lock"), log.open("ab") as sink:
        done = subprocess.run(
            [str(ROOT / "images" / "build-local.sh"), tag, " ".join(families)],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        missing = unreachable()
        if missing:
            raise Offline(f"the images' layers are not all cached here and {', '.join(missing)} cannot be reached")
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"images/build-local.sh {tag} failed (exit {done.returncode}):\n{tail}")
    return time.time() - started


def not_ready(tag: str, families: tuple[str, ...], log: Path) -> str | None:
    """Builds the images where they can be built here (:func:`build`); returns why they cannot, or None."""
    reason = unavailable()
    if reason is None:
        try:
            build(tag, families, log)
        except Offline as exc:
            reason = str(exc)
    return reason
