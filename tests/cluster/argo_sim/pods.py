"""Pods as local processes: a fresh folder per pod, the container's paths mapped into it, the code from the wheel.

A container's ``/work``, ``/tmp``, ``/dev/shm``, HOME and every volume mount become folders of the pod folder;
arguments and environment values that name those paths are rewritten (a path the mapping does not cover is an
error; a container path the code uses without naming it in an argument or the environment cannot be mapped,
so a template must name every path it relies on). Read-only mounts are made read-only, and a pod that changed one
anyway (root ignores permissions) fails. Services the pods reach by cluster
DNS (the dev S3 server) are reached through a per-pod counting proxy: the bytes each pod fetched are measured
on the wire.
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


class RunningPod:
    def __init__(self, plan: PodPlan, log: Path, services: dict[str, tuple[str, int]], podenv: Path) -> None:
        self.plan = plan
        self.log = log
        self.started = time.time()
        self.proxies = {name: CountingProxy(upstream) for name, upstream in services.items()}
        self.peak_bytes = 0
        self._checked = 0.0
        self._verdict: Outcome | None = None
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
        self.frozen = {m.path: snapshot(m.host) for m in plan.mounts if m.read_only}
        for mount in plan.mounts:
            if mount.read_only:
                make_read_only(mount.host)
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

    def rewrite(self, text: str) -> str:
        """Container paths (at the start of a value, after '=' or after a ':' that starts no URL) to their
        pod-folder paths; services to their proxies. A container path outside the mapping is an error."""
        for name, proxy in self.proxies.items():
            text = text.replace(f"http://{name}", f"http://127.0.0.1:{proxy.port}")
        mapped = sorted((p for p in self.paths if p.startswith("/")), key=len, reverse=True)

        def replace(match: re.Match[str]) -> str:
            path = match.group(0)
            for prefix in mapped:
                if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                    return str(self.paths[prefix]) + path[len(prefix) :]
            raise Unsupported(f"{path!r} is not a mount, /tmp, /dev/shm or the image's HOME/WORKDIR of this pod")

        return re.sub(r"(?:^|(?<==)|(?<=:)(?!//))/[^\s=:,]*", replace, text)

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
            host = Path(self.rewrite(path))
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
