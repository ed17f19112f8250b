"""Shared fixtures: one synthetic cohort with every edge case, scanned and converted once per session; one small
dataset prepared for nnU-Net; and a check at the end of the session that the tests left no process running."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock
from processes import RUN_MARKER, command_line, left_behind, wait_until
from xdist.scheduler import LoadScopeScheduling

from tsretrain.conversion.convert import ConvertConfig, convert
from tsretrain.dataset.assemble import AssembleConfig, assemble
from tsretrain.dataset.split import SplitConfig, run_split
from tsretrain.model import Model
from tsretrain.pipeline.runner import run
from tsretrain.synth.cohort import SynthConfig, generate
from tsretrain.training.nnunet_env import NnunetFolders
from tsretrain.training.preprocess import PreprocessConfig, preprocess


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist); workers inherit it
        os.environ[RUN_MARKER] = uuid.uuid4().hex
    else:
        cpus_of_its_own(config.workerinput)


def cpus_of_its_own(worker: dict[str, Any]) -> None:
    """Give this xdist worker, and every process it starts, a share of the machine's CPUs, as a container gets its
    CPU limit. tsretrain sizes torch's threads and nnU-Net's process pools by the CPUs it may use
    (``tsretrain.resources.cpu_quota``): unshared, each worker sized them for the whole machine, and spawned pool
    processes (each importing torch and nnU-Net) and threads competed for the same cores."""
    cpus = sorted(os.sched_getaffinity(0))
    index, count = int(worker["workerid"].removeprefix("gw")), int(worker["workercount"])
    if count <= len(cpus):
        os.sched_setaffinity(0, cpus[index::count])


# Modules whose tests share an expensive fixture (a whole run, a prepared nnU-Net dataset): under xdist each group
# runs on one worker, so that the fixture is built once; every other test is scheduled on its own.
SHARED_FIXTURES = {
    "tests/e2e/test_cluster_run.py": "cluster",
    "tests/cluster/test_containers.py": "cluster",  # the images the harness's pods run in, built once
    "tests/training/test_nnunet.py": "nnunet",
    "tests/training/test_train.py": "nnunet",
    "tests/training/test_batched_preprocessing.py": "nnunet",
    "tests/training/test_finetuning.py": "nnunet",
    "tests/training/test_second_stage.py": "nnunet",
    "tests/evaluation/test_report.py": "report",
    "tests/training/test_postprocessing.py": "report",
    "tests/delivery/test_model_package.py": "report",
    "tests/totalseg/test_totalsegmentator.py": "totalsegmentator",
}


class SharedFixtureScheduling(LoadScopeScheduling):  # type: ignore[misc]
    """xdist's ``load`` distribution, except that the modules of one :data:`SHARED_FIXTURES` group go to one worker
    together (the largest groups first)."""

    def _split_scope(self, nodeid: str) -> str:
        return SHARED_FIXTURES.get(nodeid.split("::", 1)[0], nodeid)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: absent when xdist is not loaded
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling | None:
    return SharedFixtureScheduling(config, log) if config.getvalue("dist") == "load" else None


@pytest.hookimpl(trylast=True)  # after xdist has stopped its workers
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run if a process it started (a server, a worker of a killed trainer) is still running."""
    if hasattr(session.config, "workerinput"):
        return
    marker = os.environ[RUN_MARKER]
    if wait_until(lambda: not left_behind(marker), 20.0):
        return
    left = "\n".join(f"  {pid}: {command_line(pid)}" for pid in left_behind(marker))
    session.config.get_terminal_writer().line(f"processes left running by the tests:\n{left}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """A folder that ``build`` fills once per test run, shared by every xdist worker (a session fixture is otherwise
    built by each worker); tests only read it."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name  # the workers' common base
    with FileLock(f"{folder}.lock"):
        if not (folder / ".built").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            build(folder)
            (folder / ".built").touch()
    return folder


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cohort of 3 regular patients plus all edge cases, on a 128 x 128 x 40 grid of 1.5 x 1.5 x 3 mm."""
    return built_once(
        tmp_path_factory,
        "cohort",
        lambda out: generate(
            SynthConfig(
                out=out,
                cases=3,
                seed=7,
                edge_cases=True,
                rows=128,
                columns=128,
                slices=40,
                pixel_spacing=1.5,
                slice_thickness=3.0,
            )
        ),
    )


@pytest.fixture(scope="session")
def standins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """STAND-IN TotalSegmentator weights for radcure-ts90's tasks (a shorter training than the command's default:
    enough for the skull and the crop regions, see docs/benchmarks.md)."""
    from tsretrain.totalseg.standins import StandinConfig, build_standins

    return built_once(tmp_path_factory, "standins", lambda out: build_standins(StandinConfig(out=out, iterations=150)))


@pytest.fixture(scope="session")
def expected(cohort: Path) -> dict[str, dict[str, Any]]:
    return {p["patient_id"]: p for p in json.loads((cohort / "cohort.json").read_text())["patients"]}


@pytest.fixture(scope="session")
def converted(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_once(
        tmp_path_factory, "converted", lambda out: convert(ConvertConfig(input=cohort / "dicom", out=out, workers=2))
    )


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole small run of the default stages (report, model package and one patient's contours included); the
    modules using it share an xdist group."""

    def build(folder: Path) -> None:
        folder.mkdir(parents=True)
        config = folder / "run.yaml"
        config.write_text(
            "synth: {cases: 9, seed: 4, edge_cases: false, rows: 72, columns: 72, slices: 20, pixel_spacing: 2.6,"
            " slice_thickness: 6.0}\n"
            "split: {cv_folds: 3}\n"
            "model: {folds: [0]}\n"
            "train: {epochs: 2, iterations: 2, device: cpu}\n"
            "second-stage: {epochs: 1, iterations: 2, device: cpu}\n"
            "infer: {device: cpu}\n"
        )
        run(folder / "run", config)

    return built_once(tmp_path_factory, "finished-run", build) / "run"


EXPORTED_BY_TRAIN = ("TSRETRAIN_SAVE_EVERY", "TSRETRAIN_EPOCHS", "TSRETRAIN_ITERATIONS", "TSRETRAIN_WARMUP_EPOCHS")
EXPORTED_BY_TRAIN += ("nnUNet_n_proc_DA", "nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_def_n_proc")


@pytest.fixture
def work(prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the prepared nnU-Net folders (no results); the settings train() exports are undone after."""
    for name in EXPORTED_BY_TRAIN:
        monkeypatch.setenv(name, "")  # restored (or removed) after the test, whatever train() sets
        monkeypatch.delenv(name)
    for folder in ("nnUNet_raw", "nnUNet_preprocessed"):
        shutil.copytree(prepared / "work" / folder, tmp_path / "work" / folder)
    return tmp_path / "work"


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic cohort -> converted -> split -> assembled -> preprocessed (with 3d_tiny); the modules using it share
    an xdist group, so that one worker builds it."""
    root = tmp_path_factory.mktemp("nnunet")
    generate(
        SynthConfig(
            out=root / "cohort", cases=9, seed=3, rows=80, columns=80, slices=24, pixel_spacing=2.4, slice_thickness=5.0
        )
    )
    convert(ConvertConfig(input=root / "cohort" / "dicom", out=root / "converted", workers=2))
    run_split(SplitConfig(converted=root / "converted", out=root / "split", test_fraction=0.2, cv_folds=3))
    NnunetFolders(root / "work").activate()
    assemble(AssembleConfig(converted=root / "converted", split=root / "split", out=root / "work" / "nnUNet_raw"))
    preprocess(PreprocessConfig(work=root / "work", split=root / "split", model=Model(configuration="3d_tiny")))
    return root
