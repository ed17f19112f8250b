"""Pods: what a resolved container template runs (:class:`PodPlan`), its process and its verdict (:class:`RunningPod`).

Where the process runs is a :class:`Runtime`'s business: ``argo_sim.local`` (the checkout's environment, container
paths mapped into a pod folder) or ``argo_sim.containers`` (inside the image the template names, built from
``images/``). Both share what the kubelet does around a container: read-only mounts checked, the deadline, emptyDir
``sizeLimit`` and ``ephemeral-storage`` evictions, output parameters read from the container's files, and services
the pods reach by cluster DNS (the dev S3 server) reached through a per-pod counting proxy: the bytes each pod
fetched are measured on the wire.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from argo_sim.expressions import Unsupported


class CountingProxy:
    """A TCP relay to ``upstream`` that counts the bytes each way (``received``: what the pod fetched)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.received = 0
        self.sent = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, server, "sent"), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "received"), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, counter: str) -> None:
        try:
            while chunk := source.recv(1 << 16):
                target.sendall(chunk)
                with self._lock:
                    setattr(self, counter, getattr(self, counter) + len(chunk))
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()


@dataclass(frozen=True)
class Image:
    """What a pod inherits from its image: ENV, USER and WORKDIR of the Dockerfile's last stage."""

    env: dict[str, str]
    user: int
    workdir: str
    root: Path | None = None  # the image's file system, where the image is built (argo_sim.containers)
    reference: str = ""  # the built image's name there

    @classmethod
    def from_dockerfile(cls, path: Path) -> Image:
        env: dict[str, str] = {}
        user, workdir = 0, "/"
        for line in path.read_text().replace("\\\n", " ").splitlines():
            words = line.split(None, 1)
            if not words or words[0].upper() == "FROM":
                if words:
                    env, user, workdir = {}, 0, "/"
                continue
            if words[0] == "ENV":
                env.update(dict(item.split("=", 1) for item in shlex.split(words[1])))
            elif words[0] == "USER":
                user = int(words[1].split(":")[0])
            elif words[0] == "WORKDIR":
                workdir = words[1].strip()
        return cls(env, user, workdir)


@dataclass
class Mount:
    path: str  # in the container
    host: Path
    read_only: bool
    size_limit: int | None = None  # emptyDir sizeLimit (bytes)
    kind: str = "emptyDir"  # the volume's kind: emptyDir, persistentVolumeClaim, configMap, projected


@dataclass
class PodPlan:
    """One resolved container template."""

    name: str
    image: Image
    command: list[str]
    args: list[str]
    env: dict[str, str]
    mounts: list[Mount]
    folder: Path
    working_dir: str | None = None
    read_only_root: bool = False
    user: int = 0  # the process's user: the securityContext's runAsUser, else the image's USER
    group: int | None = None  # runAsGroup (None: the user's group in the image)
    fs_group: int | None = None  # fsGroup: a supplementary group of the process, owner group of its volumes
    deadline_s: float | None = None
    ephemeral_limit: int | None = None
    output_paths: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    phase: str  # Succeeded, Failed, Error
    message: str
    exit_code: str | None
    outputs: dict[str, str]


_QUANTITY = re.compile(r"^([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_FACTORS = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity_bytes(text: str | int) -> int:
    match = _QUANTITY.match(str(text))
    if match is None:
        raise Unsupported(f"quantity {text!r}")
    return int(float(match.group(1)) * _FACTORS[match.group(2)])


def folder_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


class Runtime(Protocol):
    """Where a pod's process runs: :class:`argo_sim.local.LocalProcesses` (the checkout's environment, container
    paths mapped to folders) or :class:`argo_sim.containers.Containers` (inside the built image)."""

    def image(self, reference: str) -> Image: ...

    def launch(self, plan: PodPlan, log: Path, services: dict[str, int]) -> Launched: ...


class Launched(Protocol):
    """A started pod: its process (the leader of its own session) and where its container paths are on the host."""

    process: subprocess.Popen[bytes]

    def host_path(self, path: str) -> Path: ...


def services_rewritten(text: str, services: dict[str, int]) -> str:
    """Cluster DNS names of services (``http://NAME``) to the pod's counting proxies on loopback."""
    for name, port in services.items():
        text = text.replace(f"http://{name}", f"http://127.0.0.1:{port}")
    return text


class RunningPod:
    def __init__(self, plan: PodPlan, log: Path, services: dict[str, tuple[str, int]], runtime: Runtime) -> None:
        self.plan = plan
        self.log = log
        self.started = time.time()
        self.proxies = {name: CountingProxy(upstream) for name, upstream in services.items()}
        self.peak_bytes = 0
        self._checked = 0.0
        self._verdict: Outcome | None = None
        self.frozen = {m.path: snapshot(m.host) for m in plan.mounts if m.read_only}
        for mount in plan.mounts:
            if mount.read_only:
                make_read_only(mount.host)
        self.launched = runtime.launch(plan, log, {name: p.port for name, p in self.proxies.items()})
        self.process = self.launched.process

    def usage(self) -> int:
        return folder_bytes(self.plan.folder)

    def poll(self) -> Outcome | None:
        """The outcome once the pod ended (deadline and storage limits enforced like the kubelet does)."""
        if self._verdict is not None:
            return self._verdict
        plan = self.plan
        now = time.time()
        code = self.process.poll()
        if code is None and plan.deadline_s is not None and now - self.started > plan.deadline_s:
            self.kill()
            return self._end("Failed", "Pod was active on the node longer than the specified deadline", None)
        if code is not None or now - self._checked > 2:
            self._checked = now
            self.peak_bytes = max(self.peak_bytes, self.usage())
            for mount in plan.mounts:
                if mount.size_limit is not None and folder_bytes(mount.host) > mount.size_limit:
                    self.kill()
                    return self._end("Failed", f"Pod evicted: emptyDir {mount.path} exceeds its sizeLimit", "137")
            if plan.ephemeral_limit is not None and self.peak_bytes > plan.ephemeral_limit:
                self.kill()
                return self._end("Failed", "Pod evicted: ephemeral local storage exceeds the limit", "137")
        if code is None:
            return None
        for mount in plan.mounts:
            if mount.path in self.frozen and snapshot(mount.host) != self.frozen[mount.path]:
                return self._end("Error", f"read-only mount {mount.path} was written to", str(code))
        if code != 0:
            return self._end("Failed", f"Error (exit code {code})", str(code))
        outputs: dict[str, str] = {}
        for name, path in plan.output_paths.items():
            host = self.launched.host_path(path)
            if not host.is_file():
                return self._end("Error", f"open {path}: no such file or directory", "0")
            outputs[name] = host.read_text().strip()
        return self._end("Succeeded", "", "0", outputs)

    def _end(self, phase: str, message: str, exit_code: str | None, outputs: dict[str, str] | None = None) -> Outcome:
        for proxy in self.proxies.values():
            proxy.close()
        self._verdict = Outcome(phase, message, exit_code, outputs or {})
        return self._verdict

    def kill(self) -> None:
        """SIGKILL to every process of this pod (its own session), as a deleted pod's containers get."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def delete(self) -> Outcome:
        """The pod deleted (node lost, preempted): killed, and Argo marks the node Error 'pod deleted'."""
        self.kill()
        return self._end("Error", "pod deleted", None)

    @property
    def fetched(self) -> int:
        return sum(p.received for p in self.proxies.values())


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        os.path.join(path, name): (st.st_size, st.st_mtime_ns)
        for path, _, files in os.walk(folder)
        for name in files
        if (st := os.lstat(os.path.join(path, name)))
    }


def make_read_only(folder: Path) -> None:
    for path, dirs, files in os.walk(folder):
        for name in files:
            os.chmod(os.path.join(path, name), 0o444)
        for name in dirs:
            os.chmod(os.path.join(path, name), 0o555)
    os.chmod(folder, 0o555)


def make_writable(folder: Path) -> None:
    if not folder.exists():
        return
    os.chmod(folder, 0o755)
    for path, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(path, name), 0o755)
        for name in files:
            os.chmod(os.path.join(path, name), 0o644)
