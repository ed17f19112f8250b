"""A pod's container, set up as a container runtime does, then the container's command exec'd as its PID 1.

Run as root by :mod:`argo_sim.containers` under ``unshare --mount --pid --fork``, with the path of a JSON spec:
the image's file system as the lower layer of an overlay whose upper layer is the pod's (a fresh writable root
per pod, the image untouched), ``/proc`` of the pod's PID namespace, a ``/dev`` of the usual device nodes with a
64 MiB ``/dev/shm``, ``/sys`` read-only, ``/etc/hosts``, ``/etc/hostname`` and ``/etc/resolv.conf`` as the kubelet
writes them, the volumes bound at their mount paths (read-only ones remounted read-only, so a write fails as in
a pod), the root remounted read-only for ``readOnlyRootFilesystem``; then chroot, the working directory, the
supplementary groups, group and user, ``no_new_privs``, and exec. Standard library only: it runs before the chroot.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC = 32, 4096, 16384
PR_SET_NO_NEW_PRIVS = 38
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
LINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}
_libc = ctypes.CDLL(None, use_errno=True)


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    encoded = [None if v is None else v.encode() for v in (source, target, fstype, data)]
    if _libc.mount(encoded[0], encoded[1], encoded[2], flags, encoded[3]) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"mount {source} on {target} ({fstype or 'bind'}): {os.strerror(error)}")


def bind(source: str, target: str, read_only: bool) -> None:
    mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        mount("none", target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def inside(root: str, path: str) -> str:
    """``path`` of the container as a host path below ``root``, its symbolic links resolved inside the root (an
    image's ``/var/run -> /run`` must not lead to the host's ``/run``), as runc's secure join does."""
    resolved, parts, hops = "", [p for p in path.split("/") if p], 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            resolved = resolved.rsplit("/", 1)[0]
            continue
        if part == ".":
            continue
        candidate = f"{resolved}/{part}"
        if os.path.islink(root + candidate):
            hops += 1
            if hops > 40:
                raise OSError(40, f"too many symbolic links in {path}")
            target = os.readlink(root + candidate)
            parts = [p for p in target.split("/") if p] + parts
            if target.startswith("/"):
                resolved = ""
            continue
        resolved = candidate
    return root + resolved


def placeholder(path: str, directory: bool) -> None:
    """A mount point in the new root (a directory, or an empty file for a file bound onto it)."""
    if directory:
        os.makedirs(path, exist_ok=True)
    elif not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "a").close()


def setup(spec: dict) -> None:  # type: ignore[type-arg]
    root = spec["root"]
    mount("overlay", root, "overlay", 0, f"lowerdir={spec['lower']},upperdir={spec['upper']},workdir={spec['work']}")
    placeholder(f"{root}/proc", True)
    mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    placeholder(f"{root}/dev", True)
    mount("tmpfs", f"{root}/dev", "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    for name in DEVICES:
        placeholder(f"{root}/dev/{name}", False)
        bind(f"/dev/{name}", f"{root}/dev/{name}", False)
    for name, target in LINKS.items():
        os.symlink(target, f"{root}/dev/{name}")
    placeholder(f"{root}/dev/shm", True)
    mount("shm", f"{root}/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")
    placeholder(f"{root}/sys", True)
    bind("/sys", f"{root}/sys", True)
    for name, host in spec["etc"].items():  # hosts, hostname, resolv.conf
        target = inside(root, f"/etc/{name}")
        placeholder(target, False)
        bind(host, target, False)
    for volume in sorted(spec["volumes"], key=lambda v: v["path"].count("/")):  # parents before children
        target = inside(root, volume["path"])
        placeholder(target, os.path.isdir(volume["host"]))
        bind(volume["host"], target, volume["read_only"])
    placeholder(inside(root, spec["workdir"]), True)  # runc makes a missing working directory
    if spec["read_only_root"]:
        mount("none", root, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    os.chroot(root)
    os.chdir(spec["workdir"])


def become(spec: dict) -> None:  # type: ignore[type-arg]
    os.setgroups(spec["groups"])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    os.umask(0o022)


def main() -> None:
    with open(sys.argv[1]) as file:
        spec = json.load(file)
    try:
        setup(spec)
        become(spec)
    except OSError as exc:
        print(f"container runtime: {exc}", file=sys.stderr, flush=True)
        sys.exit(128)  # the runtime's own failure, as a StartError's exit code
    argv, env = spec["argv"], spec["env"]
    executable = lookup(argv[0], env.get("PATH", ""))
    if executable is None:
        print(f'exec: "{argv[0]}": executable file not found in $PATH', file=sys.stderr, flush=True)
        sys.exit(128)
    os.execve(executable, argv, env)


def lookup(command: str, path: str) -> str | None:
    """The command as the runtime finds it in the container's PATH (after the chroot: nothing imported here)."""
    if "/" in command:
        return command
    for folder in path.split(":"):
        candidate = os.path.join(folder or ".", command)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


if __name__ == "__main__":
    main()
