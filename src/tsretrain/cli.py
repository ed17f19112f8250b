"""The ``tsretrain`` command line: one subcommand per pipeline stage, the same in a terminal and in a pod."""

from __future__ import annotations

import inspect
import json
import sys
import typing
from dataclasses import MISSING
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tsretrain import __version__
from tsretrain.errors import UserError, run_cli, set_debug
from tsretrain.errors import report as report_error
from tsretrain.labels.dictionary import DictionaryError, builtin_names, describe_source, load_dictionary
from tsretrain.pipeline.registry import BY_NAME, STAGES, run_stage
from tsretrain.pipeline.stage import AnyStage, Option, parse_list
from tsretrain.resources import huge_pages_for_tensors
from tsretrain.run_files import CASE_LISTING, INFERENCE_LISTING
from tsretrain.stages import StageResult
from tsretrain.totalseg.standins import StandinConfig
from tsretrain.ui import console, log, setup_logging

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
dictionary_app = typer.Typer(no_args_is_help=True, help="Show or validate organ dictionaries.")
app.add_typer(dictionary_app, name="dictionary")


def _done(result: StageResult) -> None:
    console.print(f"[green]done[/green] {result.summary()}")


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of user errors too.")] = False,
) -> None:
    setup_logging(verbose)
    huge_pages_for_tensors()
    set_debug(debug)


@app.command()
def version() -> None:
    """Print the tsretrain version."""
    print(__version__)


def _variadic(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple and typing.get_args(hint)[-1] is Ellipsis


def _optional_scalar(hint: Any) -> type | None:
    """``int`` or ``float`` for ``int | None`` and ``float | None`` (given on a command line, "" means None)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if type(None) in typing.get_args(hint) and len(args) == 1 and args[0] in (int, float):
        return typing.cast(type, args[0])
    return None


def _parameter(name: str, option: Option, hint: Any, default: Any) -> inspect.Parameter:
    """The typer parameter of one configuration field."""
    if _variadic(hint):
        cli_type: Any = list[str] | None
        default = None
    elif _optional_scalar(hint):
        cli_type = str | None
    elif set(typing.get_args(hint)) == {Path, str}:
        cli_type = str
    else:
        cli_type = hint
    scalar = _optional_scalar(hint)
    metavar = f"<{scalar.__name__}>" if scalar else None  # given as text ("" means None), shown as what it is
    info = (
        typer.Argument(help=option.help)
        if option.argument
        else typer.Option(*option.cli_flags(name), help=option.help, metavar=metavar)
    )
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        annotation=Annotated[cli_type, info],
        default=inspect.Parameter.empty if default is MISSING else default,
    )


def _value(name: str, hint: Any, raw: Any) -> Any:
    """A command-line value as the configuration field's type."""
    if raw is None or not isinstance(raw, (str, list)):
        return raw
    try:
        if _variadic(hint):
            item = typing.get_args(hint)[0]
            return tuple(item(v) for text in raw for v in parse_list(text))
        scalar = _optional_scalar(hint)
        if scalar is not None and isinstance(raw, str):
            return scalar(raw) if raw.strip() else None
    except ValueError as exc:
        raise UserError(f"--{name.replace('_', '-')}: {exc}") from exc
    return raw


def stage_config(stage: AnyStage, params: dict[str, Any]) -> Any:
    """The stage's configuration from parsed command-line values."""
    types = stage.types()
    values = {k: _value(k, types[k], v) for k, v in params.items()}
    return stage.configure({k: v for k, v in values.items() if v is not None or not _variadic(types[k])})


def _stage_command(stage: AnyStage) -> None:
    types, defaults = stage.types(), stage.defaults()

    def command(**params: Any) -> None:
        try:
            _done(run_stage(stage, stage_config(stage, params)))
        except UserError as exc:
            raise typer.Exit(report_error(exc, stage.name)) from exc

    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [_parameter(n, o, types[n], defaults[n]) for n, o in stage.all_options().items()]
    )
    command.__doc__ = stage.help
    app.command(stage.name)(command)


for _stage in STAGES:
    _stage_command(_stage)


def subcommand(name: str) -> Any:
    """The click command behind a ``tsretrain`` subcommand."""
    return typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]


def parse_stage(args: list[str]) -> tuple[AnyStage, Any]:
    """The stage and configuration a ``tsretrain STAGE ...`` command line asks for, without running it."""
    name, *rest = args
    context = subcommand(name).make_context(name, rest)
    return BY_NAME[name], stage_config(BY_NAME[name], context.params)


@app.command("run")
def run_command(
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Folder of the run.")] = Path("demo-run"),
    config: Annotated[Path | None, typer.Option(help="YAML overriding the embedded default run.")] = None,
    stage: Annotated[list[str] | None, typer.Option("--stage", help="Run only this stage (repeatable).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Re-run stages recorded as complete.")] = False,
) -> None:
    """Run the pipeline's stages in order on local storage, skipping those already complete."""
    from tsretrain.pipeline.runner import run

    try:
        run(run_dir, config, tuple(stage or ()), force)
    except UserError as exc:
        raise typer.Exit(report_error(exc, "run")) from exc


@app.command("pod", hidden=True, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def pod_command(
    context: typer.Context,
    get: Annotated[
        list[str] | None, typer.Option("--get", help="URI=PATH[=PATTERN,...] of a published folder (only matches).")
    ] = None,
    put: Annotated[
        list[str] | None, typer.Option("--put", help="PATH=URI[=PATTERN,...] published after the stage.")
    ] = None,
    batch: Annotated[
        str, typer.Option(help="The fan-out batch's id: {batch} in patterns, --cases-from and arguments.")
    ] = "",
    cases_from: Annotated[
        Path | None,
        typer.Option(help='A fetched JSON file whose "cases" are {case} in patterns, {cases} in arguments.'),
    ] = None,
    manifest_name: Annotated[
        str | None, typer.Option(help="Manifest of this writer (default: one per fan-out batch, else the folder's).")
    ] = None,
    record: Annotated[
        str | None, typer.Option(help="Store folder of completion records: skip a step done with the same inputs.")
    ] = None,
    inputs: Annotated[
        list[str] | None, typer.Option("--inputs", help="A raw input (store URI) whose listing the record keys on.")
    ] = None,
    output_file: Annotated[
        list[Path] | None, typer.Option("--output-file", help="A file the step leaves for the workflow (recorded).")
    ] = None,
) -> None:
    """Fetch inputs from the store, run one tsretrain subcommand (after --), publish its outputs. With --record,
    a step already done with the same inputs (command, fetched files' checksums, raw inputs' listing) whose outputs
    are all still published is skipped: its recorded output files are written back, nothing else happens."""
    from tsretrain.pipeline.pod import Completion, batch_manifest, fetch, parse_get, parse_put, placeholders, publish

    manifest = manifest_name or batch_manifest(batch)
    try:
        gets, puts = [parse_get(g) for g in get or []], [parse_put(p) for p in put or []]
        completion = Completion.of(record, list(context.args), gets, batch, inputs or []) if record else None
        if completion is not None and completion.skipped(puts, manifest, output_file or []):
            return
        listed = Path(placeholders(str(cases_from), batch)) if cases_from is not None else None
        _, cases = fetch(gets, batch, listed)
        stage = [placeholders(arg, batch, cases) for arg in context.args]
    except UserError as exc:
        raise typer.Exit(report_error(exc, "pod")) from exc
    try:
        app(args=stage)
        code: Any = 0
    except SystemExit as exc:  # the stage's exit code (2: a bad command line or a usage error)
        code = exc.code
    if code not in (None, 0):  # the stage failed: publish nothing, fail the pod with the stage's exit code
        raise typer.Exit(int(code))
    publish(puts, manifest)
    if completion is not None:
        completion.write(output_file or [], puts, manifest)


@app.command("listing", hidden=True)
def listing_command(
    converted: Annotated[Path, typer.Argument(help="Output folder of convert (cases/<case>/manifest.json).")],
) -> None:
    """Write a conversion's cases.csv from all its case manifests (a cluster run's batches gathered)."""
    from tsretrain.conversion.convert import write_case_listing

    rows = write_case_listing(converted)
    console.print(f"[green]done[/green] listing: {len(rows)} cases in {CASE_LISTING.at(converted)}")


@app.command("infer-listing", hidden=True)
def infer_listing_command(
    out: Annotated[Path, typer.Argument(help="Output folder of infer (CASE/contours.json).")],
) -> None:
    """Write an inference's cases.csv and inference.json from all its case records (a cluster run's batches)."""
    from tsretrain.delivery.infer import write_listing

    summary = write_listing(out)
    console.print(f"[green]done[/green] listing: {summary['listed']} rows in {INFERENCE_LISTING.at(out)}")


@app.command("store")
def store_command(
    action: Annotated[str, typer.Argument(help="ls, mb (make bucket), sync-up (PATH URI) or sync-down (URI PATH).")],
    first: Annotated[str, typer.Argument(help="URI for ls and sync-down, PATH for sync-up.")],
    second: Annotated[str | None, typer.Argument(help="URI for sync-up, PATH for sync-down.")] = None,
) -> None:
    """Move folders between local disk and the store (s3://bucket/prefix or a path)."""
    from tsretrain.storage.store import open_store

    if action == "ls":
        for key, size in sorted(open_store(first).list("").items()):
            print(f"{size:>12}  {key}")
    elif action == "mb":
        from tsretrain.storage.store import make_bucket

        make_bucket(first)
    elif action == "sync-up" and second:
        console.print(open_store(second).sync_up(Path(first), ""))
    elif action == "sync-down" and second:
        console.print(open_store(first).sync_down("", Path(second)))
    else:
        raise typer.BadParameter("use: ls URI | mb s3://BUCKET | sync-up PATH URI | sync-down URI PATH")


OutputPrefixOption = Annotated[str, typer.Option(help="The run's store prefix; empty: RUNS_PREFIX/WORKFLOW.")]
RunsPrefixOption = Annotated[str, typer.Option(help="Store URI under which each run gets its own prefix.")]
WorkflowOption = Annotated[str, typer.Option(help="Workflow name.")]


@app.command("claim", hidden=True)
def claim_command(
    output_prefix: OutputPrefixOption,
    runs_prefix: RunsPrefixOption,
    workflow: WorkflowOption,
    out_file: Annotated[Path, typer.Option(help="File receiving the claimed prefix (the step's output).")],
    resume: Annotated[str, typer.Option(help="true: continue the run that holds the prefix.")] = "false",
    disk: Annotated[
        list[str] | None,
        typer.Option(help="PARAMETER=SIZE: a disk size the run's pods will get, checked as a Kubernetes quantity."),
    ] = None,
) -> None:
    """Make a cluster run's store prefix this workflow's (the workflow's first step); refuse one holding another
    run unless resuming. The run's disk sizes are checked first, so that a wrong one stops the run here, before any
    pod asks for it."""
    from tsretrain.pipeline.pod import check_disks, claim, run_prefix

    prefix = run_prefix(output_prefix, runs_prefix, workflow)
    try:
        check_disks(disk or [])
        claim(prefix, workflow, resume.strip().lower() == "true")
    except UserError as exc:
        raise typer.Exit(report_error(exc, "claim")) from exc
    out_file.write_text(prefix)
    console.print(f"output prefix: {prefix}")


@app.command("status", hidden=True)
def status_command(
    output_prefix: OutputPrefixOption,
    runs_prefix: RunsPrefixOption,
    workflow: WorkflowOption,
    status: Annotated[str, typer.Option(help="Workflow status (Succeeded, Failed, Error).")],
    namespace: Annotated[str, typer.Option(help="The workflow's namespace; empty: the pod's own.")] = "",
) -> None:
    """Record how a run ended in its prefix's status.json (the workflow's exit handler), with the failed steps
    read from the workflow's record in the Kubernetes API; a prefix claimed by another run is left alone."""
    from datetime import UTC, datetime

    from tsretrain.cluster.incluster import ApiError, failures, read_workflow
    from tsretrain.layout import relative
    from tsretrain.pipeline.pod import owns, run_prefix
    from tsretrain.storage.store import open_store

    prefix = run_prefix(output_prefix, runs_prefix, workflow)
    record: dict[str, Any] = {"workflow": workflow, "status": status, "finished": datetime.now(UTC).isoformat()}
    try:
        record["failures"] = failures(read_workflow(workflow, namespace))
    except ApiError as exc:  # the status is recorded all the same; the failed steps stay in the Argo UI
        record["failures"] = None
        record["failures_unavailable"] = str(exc)
        log.warning("failed steps not recorded: %s", exc)
    if owns(prefix, workflow):
        open_store(prefix).put_bytes(json.dumps(record, indent=1).encode(), relative("status"))
    else:
        console.print(f"{prefix} is not this run's (refused at its claim): status not written there")
    console.print(record)


ServerOption = Annotated[str | None, typer.Option(help="Argo server URL (default $ARGO_SERVER).")]
NamespaceOption = Annotated[str | None, typer.Option(help="Namespace (default $ARGO_NAMESPACE or argo).")]


@app.command("submit")
def submit_command(
    parameter: Annotated[list[str] | None, typer.Option("--parameter", "-p", help="KEY=VALUE (repeatable).")] = None,
    template: Annotated[str, typer.Option(help="Installed WorkflowTemplate.")] = "tsretrain",
    server: ServerOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Submit a run from the installed WorkflowTemplate to Argo and print its UI link."""
    from tsretrain.cluster import commands

    try:
        values = commands.parse_parameters(parameter or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if code := commands.submit(values, template, server, namespace):
        raise typer.Exit(code)


@app.command("watch")
def watch_command(
    name: str,
    server: ServerOption = None,
    namespace: NamespaceOption = None,
    every: Annotated[float, typer.Option(help="Seconds between polls.")] = 10.0,
) -> None:
    """Follow a run until it finishes; exit 1 unless it succeeded."""
    from tsretrain.cluster import commands

    if code := commands.watch(name, server, namespace, every):
        raise typer.Exit(code)


@app.command("logs")
def logs_command(
    name: str,
    server: ServerOption = None,
    namespace: NamespaceOption = None,
    follow: Annotated[bool, typer.Option(help="Keep streaming.")] = True,
) -> None:
    """Stream the log lines of a run's pods."""
    from tsretrain.cluster import commands

    if code := commands.logs(name, server, namespace, follow):
        raise typer.Exit(code)


@app.command("standin-weights")
def standin_weights_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="TotalSegmentator home to write (TOTALSEG_HOME_DIR).")],
    dictionary: Annotated[str, typer.Option(help="Dictionary whose TotalSegmentator tasks get models.")] = (
        StandinConfig.dictionary
    ),
    phantoms: Annotated[int, typer.Option(help="Synthetic phantoms trained on.")] = StandinConfig.phantoms,
    iterations: Annotated[
        int, typer.Option(help="Training steps per spacing (two patches each).")
    ] = StandinConfig.iterations,
    seed: Annotated[int, typer.Option(help="Seed of the phantoms and the training.")] = StandinConfig.seed,
) -> None:
    """STAND-IN TotalSegmentator weights (not TotalSegmentator's): small models in its exact layout, trained on
    phantoms, so that its code runs offline (tests, demo-ts90, the Argo harness)."""
    from tsretrain.totalseg.standins import build_standins

    _done(
        build_standins(
            StandinConfig(out=out, dictionary=dictionary, phantoms=phantoms, iterations=iterations, seed=seed)
        )
    )


@app.command("nnunet-env")
def nnunet_env_command() -> None:
    """Print the environment that lets plain nnUNetv2_train find tsretrain's trainers."""
    from tsretrain.training.discovery import ext_trainer_path

    print(f"export nnUNet_extTrainer={ext_trainer_path()}")


@dictionary_app.command("show")
def dictionary_show(
    name: Annotated[str, typer.Argument(help="Shipped name or YAML path.")] = "radcure-oar21",
) -> None:
    """Print the labels of a dictionary and where each comes from."""
    d = _load(name)
    table = Table(title=f"{d.name} {d.version}  (sha256 {d.sha256[:12]})")
    for column in ("id", "label", "required", "several ROIs", "sources, in order of preference"):
        table.add_column(column)
    for label in sorted(d.labels, key=lambda x: x.id):
        table.add_row(
            str(label.id),
            label.name,
            "yes" if label.required else "",
            "union" if label.union else "ambiguous",
            "; ".join(describe_source(label, s) for s in label.sources),
        )
    console.print(table)
    console.print(f"write order (last wins): {' > '.join(d.precedence)}")


@dictionary_app.command("validate")
def dictionary_validate(name: Annotated[str, typer.Argument(help="Shipped name or YAML path.")]) -> None:
    """Check a dictionary; exit 2 with the problem if it is invalid (as every stage given it does)."""
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
        raise typer.Exit(report_error(exc, "dictionary")) from exc


def main() -> None:
    sys.exit(run_cli(app))


if __name__ == "__main__":
    main()
