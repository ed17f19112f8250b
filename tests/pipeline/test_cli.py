"""The command line runs each stage and reports bad input with a clear message."""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from pathlib import Path

from typer.testing import CliRunner

from tsretrain.cli import app
from tsretrain.layout import markdown_table
from tsretrain.pipeline.registry import STAGES
from tsretrain.pipeline.stage import ImageFamily
from tsretrain.run_files import read_csv as read_listing
from tsretrain.sizing import PodClassName

runner = CliRunner()


def test_synth_scan_convert_from_the_command_line(tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    args = [
        "synth",
        str(cohort),
        "--cases",
        "2",
        "--rows",
        "48",
        "--columns",
        "48",
        "--slices",
        "12",
        "--pixel-spacing",
        "4",
        "--layout",
        "flat",
    ]
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, ["scan", str(cohort / "dicom"), "--out", str(tmp_path / "scan"), "-j", "1"])
    assert result.exit_code == 0, result.output
    assert len(read_listing(tmp_path / "scan" / "cases.csv")) == 2
    result = runner.invoke(
        app,
        [
            "convert",
            str(cohort / "dicom"),
            "--out",
            str(tmp_path / "conv"),
            "-j",
            "1",
            "--inventory",
            str(tmp_path / "scan" / "inventory.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert {r["status"] for r in read_listing(tmp_path / "conv" / "cases.csv")} == {"ok"}
    assert (tmp_path / "conv" / "cases" / "RADCURE-0001" / "RADCURE-0001_0000.nii.gz").is_file()


def test_dictionary_commands(tmp_path: Path) -> None:
    shown = runner.invoke(app, ["dictionary", "show", "radcure-oar21"])
    assert shown.exit_code == 0 and "GTVp" in shown.output
    assert "radcure-oar21" in runner.invoke(app, ["dictionary", "list"]).output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nversion: '1'\nlabels:\n  - {id: 0, name: A, sources: [rtstruct: [a]]}\n")
    result = runner.invoke(app, ["dictionary", "validate", str(bad)])
    assert result.exit_code == 2 and "reserved for background" in result.output


README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_stage_table_matches_the_registry() -> None:
    """Each stage's row lists exactly its options (a new option or a renamed one must reach the README)."""
    rows = {
        match[1]: match[2]
        for match in re.finditer(r"^\| `tsretrain ([\w-]+) ([^`]*)` \|", README.read_text(), flags=re.MULTILINE)
    }
    for stage in STAGES:
        assert stage.name in rows, f"README has no row for the stage {stage.name}"
        shown = set(re.findall(r"--[a-z][a-z-]*", rows[stage.name]))
        options = {name: option.cli_flags(name) for name, option in stage.all_options().items()}
        aliases = {alias for flags in options.values() for flag in flags for alias in flag.split("/")}
        assert shown <= aliases, (stage.name, shown - aliases)
        for name, flags in options.items():
            option = stage.all_options()[name]
            assert option.argument or flags[0].split("/")[0] in shown, (stage.name, flags[0])


def test_readme_layout_is_the_run_layout() -> None:
    assert markdown_table() in README.read_text()


def test_every_configuration_field_is_declared_in_the_registry() -> None:
    """A configuration field is an option, the model, or left at its default on purpose: never forgotten."""
    for stage in STAGES:
        fields = {f.name for f in dataclasses.fields(stage.config)}
        declared = set(stage.options) | set(stage.internal) | ({"model"} if stage.model else set())
        assert fields == declared, stage.name
        assert stage.resources in typing.get_args(PodClassName) and stage.image in typing.get_args(ImageFamily)


def test_an_options_help_is_written_once_on_its_record() -> None:
    """A configuration field that is an option carries no comment beside it: its help is its ``Option``'s, which
    the command line, the README and the cluster's parameters show (two texts drift apart)."""
    commented = []
    for stage in STAGES:
        lines, _ = inspect.getsourcelines(stage.config)
        for name in stage.options:
            commented += [f"{stage.name}.{name}" for line in lines if re.match(rf"\s+{name}:.*#", line)]
    assert not commented, commented


def test_the_main_help_shows_user_commands_and_real_types() -> None:
    """Workflow internals (a pod's wrapper, the gathered listings, the claim and status steps) stay out of the
    main help but still run; a number given as text ("" for the default) is shown as a number."""
    runner = CliRunner()
    shown = runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    listed = set(re.findall(r"^│ +([a-z][a-z0-9-]*) ", shown, flags=re.MULTILINE))
    assert {"run", "train", "submit", "standin-weights"} <= listed
    assert not listed & {"pod", "listing", "infer-listing", "claim", "status"}
    assert runner.invoke(app, ["pod", "--help"]).exit_code == 0
    train = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert re.search(r"--epochs +<int>", train) and re.search(r"--warmup-epochs +<int>", train)
