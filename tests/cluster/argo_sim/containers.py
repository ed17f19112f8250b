"""Pods inside the images their templates name: the images built from ``images/`` (``argo_sim.images``), each
pod a fresh overlay on its image's file system, run by ``argo_sim.container_init`` in its own mount and PID
namespaces as the user, group and fsGroup of the template's securityContext.

What the kubelet and the container runtime do around the process is done here: the image's ENV, USER and WORKDIR
from the built image's own configuration (``buildah inspect``), HOME from the image's ``/etc/passwd`` when the
image sets none, the pod's name as HOSTNAME, emptyDir volumes world-writable (``0777``) and owned by the fsGroup
(set-group-ID), writable claims given to the fsGroup, read-only mounts read-only in the kernel. Networking stays
the host's: services are reached through the pods' counting proxies on loopback (their cluster DNS names
rewritten in the environment and arguments, as :mod:`argo_sim.local` does); no GPU is visible (none is here).
Needs root, ``unshare`` (util-linux) and buildah.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from argo_sim.expressions import Unsupported
from argo_sim.pods import Image, Mount, PodPlan, services_rewritten

INIT = Path(__file__).with_name("container_init.py")
PREFIX = "tsretrain-harness-"  # the working containers' names: PREFIX, the test process's id, a number
REGISTRY = "localhost"  # where buildah keeps images built here, as kind keeps the images `kind load` gave it


def buildah(*args: str) -> str:
    done = subprocess.run(["buildah", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def _table(path: Path) -> list[list[str]]:
    return [line.split(":") for line in path.read_text().splitlines() if line and not line.startswith("#")]


class Containers:
    """The runtime of pods in built images; one mounted working container per image for the session."""

    def __init__(self) -> None:
        self._images: dict[str, Image] = {}
        self._containers: list[str] = []
        self.started: dict[str, Started] = {}  # pod name: what it ran in, as whom
        remove_abandoned()

    def image(self, reference: str) -> Image:
        if reference not in self._images:
            self._images[reference] = self._open(reference)
        return self._images[reference]

    def _open(self, reference: str) -> Image:
        local = f"{REGISTRY}/{reference}"
        try:
            info = json.loads(buildah("inspect", "--type", "image", local))
        except RuntimeError as exc:  # a pod that names an image nobody built or loaded never starts
            raise Unsupported(f"image {reference} is not built here ({local}): make images TAG=...") from exc
        config = info["OCIv1"]["config"]
        name = f"{PREFIX}{os.getpid()}-{len(self._containers)}"
        container = buildah("from", "--pull-never", "--quiet", "--name", name, local)
        self._containers.append(container)
        root = Path(buildah("mount", container))
        env = dict(item.split("=", 1) for item in config.get("Env") or [])
        user = config.get("User") or "0"
        return Image(env, _uid(root, user.split(":")[0]), config.get("WorkingDir") or "/", root, local)

    def launch(self, plan: PodPlan, log: Path, services: dict[str, int]) -> ContainerPod:
        pod = ContainerPod(plan, log, services)
        self.started[plan.name] = pod.started
        return pod

    def close(self) -> None:
        for container in self._containers:
            buildah("umount", container)
            buildah("rm", container)
        self._containers.clear()
        self._images.clear()


def remove_abandoned() -> None:
    """The working containers of harness sessions whose process is gone (a killed test run leaves them mounted)."""
    for name in buildah("containers", "--format", "{{.ContainerName}}").split():
        owner = name.removeprefix(PREFIX).split("-")[0]
        if name.startswith(PREFIX) and owner.isdigit() and not Path(f"/proc/{owner}").exists():
            buildah("rm", name)


def _uid(root: Path, user: str) -> int:
    if user.isdigit():
        return int(user)
    for entry in _table(root / "etc" / "passwd"):
        if entry[0] == user:
            return int(entry[2])
    raise Unsupported(f"image user {user!r} is not in the image's /etc/passwd")


@dataclass(frozen=True)
class Started:
    image: str
    uid: int
    gid: int
    groups: tuple[int, ...]


class ContainerPod:
    def __init__(self, plan: PodPlan, log: Path, services: dict[str, int]) -> None:
        self.plan = plan
        image = plan.image
        assert image.root is not None, "a pod in a container needs a built image"
        folder = plan.folder
        self.upper = folder / "upper"
        for name in ("upper", "work", "root", "etc"):
            (folder / name).mkdir(parents=True, exist_ok=True)
        passwd = {int(e[2]): e for e in _table(image.root / "etc" / "passwd")}
        uid = plan.user
        entry = passwd.get(uid)
        gid = plan.group if plan.group is not None else int(entry[3]) if entry else 0
        groups = {plan.fs_group} if plan.fs_group is not None else set()
        if entry:  # the groups that list the user in the image's /etc/group
            groups |= {int(g[2]) for g in _table(image.root / "etc" / "group") if entry[0] in g[3].split(",")}
        for mount in plan.mounts:
            prepare_volume(mount, plan.fs_group)
        env = dict(image.env)
        env.setdefault("HOME", entry[5] if entry else "/")
        env["HOSTNAME"] = plan.name
        env |= {k: services_rewritten(v, services) for k, v in plan.env.items()}
        etc = {
            "hosts": f"127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{plan.name}\n",
            "hostname": plan.name + "\n",
            "resolv.conf": "nameserver 127.0.0.53\n",  # no cluster DNS: services go through the proxies
        }
        for name, text in etc.items():
            (folder / "etc" / name).write_text(text)
        spec = {
            "lower": str(image.root),
            "upper": str(self.upper),
            "work": str(folder / "work"),
            "root": str(folder / "root"),
            "etc": {name: str(folder / "etc" / name) for name in etc},
            "volumes": [{"path": m.path, "host": str(m.host), "read_only": m.read_only} for m in plan.mounts],
            "read_only_root": plan.read_only_root,
            "workdir": plan.working_dir or image.workdir,
            "uid": uid,
            "gid": gid,
            "groups": sorted(groups),
            "env": env,
            "argv": [services_rewritten(a, services) for a in plan.command + plan.args],
        }
        (folder / "container.json").write_text(json.dumps(spec))
        self.started = Started(image.reference, uid, gid, tuple(sorted(groups)))
        namespaces = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private"]
        with log.open("ab") as sink:
            self.process = subprocess.Popen(
                [*namespaces, sys.executable, "-I", str(INIT), str(folder / "container.json")],
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def host_path(self, path: str) -> Path:
        """Where a container path is on the host: in its mount's folder, else in the pod's writable layer."""
        for mount in sorted(self.plan.mounts, key=lambda m: len(m.path), reverse=True):
            if path == mount.path or path.startswith(mount.path.rstrip("/") + "/"):
                return mount.host / path[len(mount.path) :].lstrip("/")
        return self.upper / path.lstrip("/")


def prepare_volume(mount: Mount, fs_group: int | None) -> None:
    """The kubelet's part: an emptyDir is ``0777``; with an fsGroup, emptyDirs and writable claims belong to it
    (group read-write, directories set-group-ID)."""
    if mount.kind == "emptyDir":
        os.chmod(mount.host, 0o777)
    if fs_group is None or mount.read_only or mount.kind not in ("emptyDir", "persistentVolumeClaim"):
        return
    for folder, _, files in os.walk(mount.host):
        os.chown(folder, -1, fs_group)
        os.chmod(folder, stat.S_IMODE(os.stat(folder).st_mode) | 0o2070)
        for name in files:
            path = os.path.join(folder, name)
            os.chown(path, -1, fs_group, follow_symlinks=False)
            if not os.path.islink(path):
                os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) | 0o060)
