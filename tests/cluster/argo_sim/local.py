"""Pods as local processes: a fresh folder per pod, the container's paths mapped into it, the code from the wheel.

A container's ``/work``, ``/tmp``, ``/dev/shm``, HOME and every volume mount become folders of the pod folder;
arguments and environment values that name those paths are rewritten (a path the mapping does not cover is an
error; a container path the code uses without naming it in an argument or the environment cannot be mapped,
so a template must name every path it relies on). Read-only mounts are made read-only, and a pod that changed one
anyway (root ignores permissions) fails. The process runs as the test's user: users, groups and the image's
file system are what :mod:`argo_sim.containers` adds.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from argo_sim.expressions import Unsupported
from argo_sim.pods import Image, PodPlan, make_read_only, services_rewritten


class LocalProcesses:
    """The runtime of pods in ``podenv`` (``argo_sim.wheel``), images described by their Dockerfiles."""

    def __init__(self, podenv: Path, dockerfiles: dict[str, Path], why: str = "") -> None:
        self.podenv, self.dockerfiles = podenv, dockerfiles
        self.why = why  # why not in images, where that was the choice

    def image(self, reference: str) -> Image:
        repository = reference.rsplit(":", 1)[0]
        if repository not in self.dockerfiles:
            raise Unsupported(f"image {reference}: no Dockerfile known for {repository}")
        return Image.from_dockerfile(self.dockerfiles[repository])

    def launch(self, plan: PodPlan, log: Path, services: dict[str, int]) -> LocalPod:
        return LocalPod(plan, log, services, self.podenv)


class LocalPod:
    def __init__(self, plan: PodPlan, log: Path, services: dict[str, int], podenv: Path) -> None:
        self.plan, self.services = plan, services
        root = plan.folder / "r"
        self.paths = self._path_map(root)
        home = self.paths["HOME"]
        for host in self.paths.values():
            host.mkdir(parents=True, exist_ok=True)
        env = {k: self.rewrite(v) for k, v in plan.image.env.items()}
        env |= {
            "PATH": f"{podenv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "TMPDIR": str(self.paths["/tmp"]),
            "LANG": "C.UTF-8",
        }
        env |= {k: self.rewrite(v) for k, v in plan.env.items()}
        env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU here: what a pod sees on a node without the NVIDIA runtime
        argv = [self.rewrite(a) for a in plan.command + plan.args]
        if not argv or "/" in argv[0]:
            raise Unsupported(f"command {argv[:1]} (the harness runs the image's console scripts only)")
        if plan.read_only_root:
            make_read_only(home)
        cwd = self.paths.get("WORKDIR", home)
        with log.open("ab") as sink:
            self.process = subprocess.Popen(
                [str(podenv / "bin" / argv[0]), *argv[1:]],
                cwd=cwd,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def _path_map(self, root: Path) -> dict[str, Path]:
        plan = self.plan
        paths = {m.path: m.host for m in plan.mounts}
        for own in ("/tmp", "/dev/shm"):
            paths.setdefault(own, root / own.strip("/"))
        paths["HOME"] = root / "home" / "user"
        paths.setdefault(plan.image.workdir, paths["HOME"])
        if plan.working_dir:
            paths["WORKDIR"] = paths.get(plan.working_dir) or root / plan.working_dir.strip("/")
        return paths

    def host_path(self, path: str) -> Path:
        return Path(self.rewrite(path))

    def rewrite(self, text: str) -> str:
        """Container paths (at the start of a value, after '=' or after a ':' that starts no URL) to their
        pod-folder paths; services to their proxies. A container path outside the mapping is an error."""
        text = services_rewritten(text, self.services)
        mapped = sorted((p for p in self.paths if p.startswith("/")), key=len, reverse=True)

        def replace(match: re.Match[str]) -> str:
            path = match.group(0)
            for prefix in mapped:
                if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                    return str(self.paths[prefix]) + path[len(prefix) :]
            raise Unsupported(f"{path!r} is not a mount, /tmp, /dev/shm or the image's HOME/WORKDIR of this pod")

        return re.sub(r"(?:^|(?<==)|(?<=:)(?!//))/[^\s=:,]*", replace, text)
