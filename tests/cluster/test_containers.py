"""Pods inside their images (``argo_sim.containers``): what a container runtime and the kubelet give a pod, checked
from inside the CPU image built from ``images/cpu.Dockerfile`` (the whole workflow in its images:
tests/e2e/test_cluster_run.py)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argo_sim import images
from argo_sim.containers import PREFIX, Containers
from argo_sim.engine import Run, Simulation
from test_argo_sim import container, output, template

pytestmark = pytest.mark.slow

IMAGE = f"tsretrain-cpu:{images.HARNESS_TAG}"
SECURITY = {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001, "runAsNonRoot": True}
PROBE = """
import json, os, sys
from pathlib import Path
import tsretrain
facts = {"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()), "pid": os.getpid(),
         "home": os.environ["HOME"], "cwd": os.getcwd(), "hostname": open("/etc/hostname").read().strip(),
         "tsretrain": tsretrain.__file__, "python": sys.executable}
def attempt(path):
    try:
        Path(path).write_text("x")
        return "written"
    except OSError as exc:
        return exc.strerror
for path in sys.argv[2:]:
    facts[path] = attempt(path)
facts["work_group"] = os.stat("/work/probe").st_gid if Path("/work/probe").exists() else None
Path(sys.argv[1]).write_text(json.dumps(facts))
"""


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containers]:
    reason = images.not_ready(images.HARNESS_TAG, ("cpu",), tmp_path_factory.mktemp("build") / "build.log")
    if reason is not None:
        pytest.skip(f"pods in images: {reason}")
    containers = Containers()
    yield containers
    containers.close()


def probe_pod(name: str, *paths: str, security: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    outputs = {"parameters": [output("facts", "/work/facts.json")]}
    probe = container(name, PROBE, "/work/facts.json", *paths, outputs=outputs)
    probe["container"]["image"] = IMAGE
    probe["container"]["volumeMounts"] = [{"name": "work", "mountPath": "/work"}, *more.pop("mounts", [])]
    probe["volumes"] = [{"name": "work", "emptyDir": {}}, *more.pop("volumes", [])]
    if security is not None:
        probe["securityContext"] = security
    return probe | more


def run(root: Path, runtime: Containers, pods: list[dict[str, Any]], claims: dict[str, Path] | None = None) -> Run:
    workflow = template([{"name": p["name"], "template": p["name"]} for p in pods], pods)
    simulation = Simulation(workflow, [], root, runtime, {}, claims=claims, backoff_scale=0.001, timeout_s=300)
    with simulation.session():
        done = simulation.run({})
    assert done.phase == "Succeeded", {n.display: (n.phase, n.message, done.log_of(n)[-1500:]) for n in done.pods()}
    return done


def facts(run: Run, name: str) -> dict[str, Any]:
    return dict(json.loads(run.task(name).outputs["facts"]))


def test_a_pod_runs_the_images_code_as_its_security_contexts_user_in_its_own_namespaces(
    tmp_path: Path, runtime: Containers
) -> None:
    claim = tmp_path / "claim"
    claim.mkdir()
    (claim / "weights.txt").write_text("w")
    mounts = [{"name": "weights", "mountPath": "/weights", "readOnly": True}]
    mounts.append({"name": "scratch", "mountPath": "/var/run/tsretrain-probe"})  # /var/run -> /run in the image
    volumes = [{"name": "weights", "persistentVolumeClaim": {"claimName": "weights", "readOnly": True}}]
    volumes.append({"name": "scratch", "emptyDir": {}})
    scratch = "/var/run/tsretrain-probe/x"
    paths = ("/work/probe", "/weights/weights.txt", "/home/tsretrain/notes", "/opt/python/x", "/etc/x", scratch)
    done = run(tmp_path / "pods", runtime, [probe_pod("p", *paths, security=SECURITY, mounts=mounts, volumes=volumes)],
               claims={"weights": claim})  # fmt: skip
    got = facts(done, "p")
    assert (got["uid"], got["gid"], got["groups"]) == (10001, 10001, [10001])
    assert got["pid"] == 1  # the container's command is its PID namespace's first process
    assert got["home"] == "/home/tsretrain" and got["cwd"] == "/home/tsretrain"  # the image's HOME and WORKDIR
    assert got["hostname"] == done.task("p").pod_name
    assert got["tsretrain"].startswith("/opt/python/lib/python3.11/site-packages/")  # the image's wheel
    assert got["python"].startswith("/opt/python/")
    assert got["/work/probe"] == "written" and got["work_group"] == 10001  # an emptyDir, set-group-ID to fsGroup
    assert got["/weights/weights.txt"] == "Read-only file system"  # readOnly: refused by the kernel
    assert got["/home/tsretrain/notes"] == "written"  # the container's own writable layer
    assert got["/opt/python/x"] == got["/etc/x"] == "Permission denied"  # the image's files are root's
    assert (claim / "weights.txt").read_text() == "w"
    assert got[scratch] == "written"  # through the image's symbolic link, inside the container
    assert not Path("/run/tsretrain-probe").exists()  # never the host's /run


def test_a_read_only_root_refuses_writes_outside_the_volumes_and_a_pods_writes_stay_its_own(
    tmp_path: Path, runtime: Containers
) -> None:
    root_user = {"runAsUser": 0}
    first = run(tmp_path / "a", runtime, [probe_pod("root", "/opt/python/x", security=root_user)])
    assert facts(first, "root")["/opt/python/x"] == "written"  # root may: into its own layer only
    locked = probe_pod("locked", "/home/tsretrain/notes", "/work/probe", security=SECURITY)
    locked["container"]["securityContext"] = {"readOnlyRootFilesystem": True}  # a container's field
    second = run(tmp_path / "b", runtime, [locked])
    got = facts(second, "locked")
    assert got["/home/tsretrain/notes"] == "Read-only file system" and got["/work/probe"] == "written"
    check = probe_pod("fresh", "/opt/python/x", security=root_user)
    check["container"]["args"][1] = "import os, sys; open(sys.argv[1], 'w').write(str(os.path.exists('/opt/python/x')))"
    third = run(tmp_path / "c", runtime, [check])
    assert third.task("fresh").outputs["facts"] == "False"  # the first pod's write never reached the image


def test_a_pod_past_its_deadline_is_killed_with_every_process_it_started(tmp_path: Path, runtime: Containers) -> None:
    marker = "harness-deadline-marker"
    code = f"import subprocess, time; subprocess.Popen(['sleep', '313']); time.sleep(300)  # {marker}"
    sleeper = container("sleeper", code)
    sleeper["container"]["image"] = IMAGE
    sleeper["activeDeadlineSeconds"] = 3
    workflow = template([{"name": "sleeper", "template": "sleeper"}], [sleeper])
    simulation = Simulation(workflow, [], tmp_path, runtime, {}, backoff_scale=0.001, timeout_s=120)
    done = simulation.run({})
    node = done.task("sleeper")
    assert node.phase == "Failed" and "deadline" in node.message
    for pattern in (marker, "sleep 313"):  # the command and the process it started
        left = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
        assert not left, (pattern, left)


def test_a_build_that_fails_offline_is_a_skip_and_online_an_error(
    tmp_path: Path, runtime: Containers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A family without a Dockerfile fails to build: with the package indexes out of reach that reads as offline
    (the tests then skip, saying so), with them in reach as the error it is."""
    monkeypatch.setattr(images, "INDEXES", ("http://127.0.0.1:9/simple/",))  # the discard port: nothing answers
    with pytest.raises(images.Offline, match=r"127\.0\.0\.1:9"):
        images.build(images.HARNESS_TAG, ("no-such-family",), tmp_path / "offline.log")
    monkeypatch.setattr(images, "unreachable", lambda: [])
    with pytest.raises(RuntimeError, match=r"build-local\.sh") as error:
        images.build(images.HARNESS_TAG, ("no-such-family",), tmp_path / "online.log")
    assert not isinstance(error.value, images.Offline)


def test_working_containers_of_a_killed_session_are_removed_at_the_next(runtime: Containers) -> None:
    runtime.image(IMAGE)  # this session's working container, its process alive
    ended = subprocess.Popen(["true"])
    ended.wait()
    abandoned = f"{PREFIX}{ended.pid}-0"
    create = ["buildah", "from", "--pull-never", "--quiet", "--name", abandoned, f"localhost/{IMAGE}"]
    subprocess.run(create, check=True, capture_output=True)
    Containers()
    names = subprocess.run(
        ["buildah", "containers", "--format", "{{.ContainerName}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert abandoned not in names
    assert any(name.startswith(f"{PREFIX}{os.getpid()}-") for name in names)  # a live session's stays
