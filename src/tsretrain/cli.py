"""The ``tsretrain`` command line: one subcommand per pipeline stage, the same in a terminal and in a pod."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tsretrain import __version__
from tsretrain.conversion.convert import ConvertConfig, convert
from tsretrain.conversion.scan import RTSTRUCT_CHOICES, ScanConfig, scan
from tsretrain.labels.dictionary import DictionaryError, builtin_names, load_dictionary
from tsretrain.steps import StepResult
from tsretrain.synth.cohort import SynthConfig, generate
from tsretrain.synth.layouts import LAYOUTS
from tsretrain.ui import console, setup_logging

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
dictionary_app = typer.Typer(no_args_is_help=True, help="Show or validate organ dictionaries.")
app.add_typer(dictionary_app, name="dictionary")

DictionaryOption = Annotated[str, typer.Option("--dictionary", "-d", help="Shipped dictionary name or YAML path.")]
InputArgument = Annotated[Path, typer.Argument(help="Folder holding the DICOM files, in any layout.")]
RtstructChoiceOption = Annotated[str, typer.Option(help=f"With several RTSTRUCTs: {RTSTRUCT_CHOICES}.")]
WorkersOption = Annotated[int, typer.Option("--workers", "-j", help="Worker processes (0: one per usable CPU).")]


def _done(result: StepResult) -> None:
    console.print(f"[green]done[/green] {result.summary()}")


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    setup_logging(verbose)


@app.command()
def version() -> None:
    """Print the tsretrain version."""
    print(__version__)


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Output folder (dicom/, truth/, cohort.json).")],
    cases: Annotated[int, typer.Option(help="Number of regular patients.")] = 8,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same cohort.")] = 0,
    edge_cases: Annotated[bool, typer.Option("--edge-cases", help="Add the broken and unusual patients.")] = False,
    layout: Annotated[str, typer.Option(help=f"Folder layout: {', '.join(LAYOUTS)}.")] = "nbia",
    rows: Annotated[int, typer.Option(help="Image rows.")] = 128,
    columns: Annotated[int, typer.Option(help="Image columns.")] = 128,
    slices: Annotated[int, typer.Option(help="Slices per CT.")] = 48,
    pixel_spacing: Annotated[float, typer.Option(help="Pixel spacing (mm).")] = 1.6,
    slice_thickness: Annotated[float, typer.Option(help="Slice spacing (mm).")] = 3.0,
) -> None:
    """Generate a synthetic head-and-neck DICOM-RT cohort with analytic ground truth."""
    config = SynthConfig(out, cases, seed, edge_cases, layout, rows, columns, slices, pixel_spacing, slice_thickness)
    _done(generate(config))


@app.command("scan")
def scan_command(
    input: InputArgument,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (inventory.json, cases.csv).")],
    dictionary: DictionaryOption = "radcure-oar21",
    workers: WorkersOption = 0,
    rtstruct_choice: RtstructChoiceOption = "fail",
) -> None:
    """Index a DICOM tree by its tags and list every case with its status and reason."""
    _done(scan(ScanConfig(input, out, dictionary, workers, rtstruct_choice)))


@app.command("convert")
def convert_command(
    input: InputArgument,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (cases/, cases.csv).")],
    dictionary: DictionaryOption = "radcure-oar21",
    workers: WorkersOption = 0,
    force: Annotated[bool, typer.Option("--force", help="Redo cases that are already converted.")] = False,
    inventory: Annotated[Path | None, typer.Option(help="Use this scan inventory instead of scanning.")] = None,
    case: Annotated[list[str] | None, typer.Option("--case", help="Convert only this case id (repeatable).")] = None,
    rtstruct_choice: RtstructChoiceOption = "fail",
) -> None:
    """Convert each case to an int16 HU CT and a uint8 label map in NIfTI (nnU-Net naming)."""
    config = ConvertConfig(input, out, dictionary, workers, force, inventory, tuple(case or ()), rtstruct_choice)
    _done(convert(config))


@dictionary_app.command("show")
def dictionary_show(
    name: Annotated[str, typer.Argument(help="Shipped name or YAML path.")] = "radcure-oar21",
) -> None:
    """Print the labels of a dictionary and where each comes from."""
    d = _load(name)
    table = Table(title=f"{d.name} {d.version}  (sha256 {d.sha256[:12]})")
    for column in ("id", "label", "required", "several ROIs", "RTSTRUCT patterns"):
        table.add_column(column)
    for label in sorted(d.labels, key=lambda x: x.id):
        patterns = ", ".join(p.pattern for p in label.rtstruct_patterns)
        table.add_row(
            str(label.id),
            label.name,
            "yes" if label.required else "",
            "union" if label.union else "ambiguous",
            patterns,
        )
    console.print(table)
    console.print(f"write order (last wins): {' > '.join(d.precedence)}")


@dictionary_app.command("validate")
def dictionary_validate(name: Annotated[str, typer.Argument(help="Shipped name or YAML path.")]) -> None:
    """Check a dictionary; exit 1 with the problem if it is invalid."""
    d = _load(name)
    console.print(f"[green]valid[/green]: {d.name} {d.version}, {len(d.labels)} labels")


@dictionary_app.command("list")
def dictionary_list() -> None:
    """Names of the dictionaries shipped with tsretrain."""
    for name in builtin_names():
        print(name)


def _load(name: str):  # type: ignore[no-untyped-def]
    try:
        return load_dictionary(name)
    except DictionaryError as exc:
        console.print(f"[red]invalid dictionary[/red]: {exc}")
        raise typer.Exit(1) from exc


def main() -> None:
    app()
