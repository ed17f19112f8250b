"""The files one stage writes and another reads: each has one owner (``tsretrain.run_files``), named there only,
written by the stage the owner names, and no stage module reaches into another stage's module for them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tsretrain import run_files
from tsretrain.layout import LOCATIONS
from tsretrain.pipeline.registry import BY_NAME, STAGES
from tsretrain.run_files import RunFile

SRC = Path(run_files.__file__).parent
FILES = {name: value for name, value in vars(run_files).items() if isinstance(value, RunFile)}

# Stages that run another stage's work as part of their own: convert scans when it is given no inventory, infer
# scans, converts and predicts new patients with a model package, the second stage trains and predicts as the first,
# and the cluster's shares of preprocess (fingerprint, plan, preprocess-cases) are preprocess's.
COMPOSED = {
    "tsretrain.conversion.convert": {"tsretrain.conversion.scan"},
    "tsretrain.delivery.infer": {
        "tsretrain.conversion.scan",
        "tsretrain.conversion.convert",
        "tsretrain.training.predict",
        "tsretrain.delivery.package",
    },
    "tsretrain.training.second_stage": {"tsretrain.training.train", "tsretrain.training.predict"},
    "tsretrain.training.batched": {"tsretrain.training.preprocess"},
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_file_is_written_by_the_stage_its_owner_names_into_its_location(name: str) -> None:
    file = FILES[name]
    assert file.location in LOCATIONS, name
    writer = BY_NAME[file.writer]
    assert file.location in {files.location for files in writer.writes}, f"{name}: {file.writer} writes elsewhere"


def test_a_files_name_is_spelled_in_its_owner_only() -> None:
    """No module but ``run_files`` holds a file's name as a string of its own (a help text may mention it)."""
    names = {file.basename for file in FILES.values() if "{" not in file.basename and "*" not in file.basename}
    spelled = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "run_files.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                spelled.append(f"{path.relative_to(SRC)}:{node.lineno} {node.value}")
    assert not spelled, spelled


def test_no_stage_module_imports_another_stages_module() -> None:
    """A stage reads what another stage wrote through the owner of that file, not through the writer's module;
    only a stage that runs another stage's work imports it (``COMPOSED``)."""
    stage_modules = {stage.run.__module__ for stage in STAGES}
    crossing = []
    for module in sorted(stage_modules):
        relative = module.removeprefix("tsretrain.").replace(".", "/")
        files = sorted((SRC / relative).rglob("*.py")) if (SRC / relative).is_dir() else [SRC / f"{relative}.py"]
        for path in files:
            imported = {
                node.module
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.ImportFrom) and node.module
            }
            others = {m for m in imported if m in stage_modules and m != module and not m.startswith(module + ".")}
            crossing += [f"{module} imports {m}" for m in sorted(others - COMPOSED.get(module, set()))]
    assert not crossing, crossing
