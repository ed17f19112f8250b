"""The ``tsretrain`` command line: one subcommand per pipeline stage, the same in a terminal and in a pod."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tsretrain import __version__
from tsretrain.conversion.convert import ConvertConfig, convert
from tsretrain.conversion.scan import RTSTRUCT_CHOICES, ScanConfig, scan
from tsretrain.labels.dictionary import DictionaryError, builtin_names, describe_source, load_dictionary
from tsretrain.steps import StepResult
from tsretrain.storage.store import MANIFEST
from tsretrain.synth.cohort import SynthConfig, generate
from tsretrain.synth.layouts import LAYOUTS
from tsretrain.ui import console, setup_logging

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
dictionary_app = typer.Typer(no_args_is_help=True, help="Show or validate organ dictionaries.")
app.add_typer(dictionary_app, name="dictionary")

WorkOption = Annotated[Path, typer.Option("--work", help="nnU-Net work root (nnUNet_raw/_preprocessed/_results).")]
DatasetIdOption = Annotated[int, typer.Option(help="nnU-Net dataset id.")]
DatasetNameOption = Annotated[str, typer.Option(help="nnU-Net dataset name.")]
ConfigurationOption = Annotated[str, typer.Option(help="nnU-Net configuration.")]
TrainerOption = Annotated[str, typer.Option(help="Trainer class (tsretrain's or nnU-Net's).")]
PlansOption = Annotated[str, typer.Option(help="Plans identifier.")]
DeviceOption = Annotated[str, typer.Option(help="auto, cuda or cpu.")]
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
    input: Annotated[str, typer.Argument(help="Folder of DICOM files in any layout, or a store URI (s3://...).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (inventory.json, cases.csv).")],
    dictionary: DictionaryOption = "radcure-oar21",
    workers: WorkersOption = 0,
    rtstruct_choice: RtstructChoiceOption = "fail",
    batches_out: Annotated[Path | None, typer.Option(help="Write the usable cases in batches (JSON).")] = None,
    batch_size: Annotated[int, typer.Option(help="Cases per batch.")] = 8,
) -> None:
    """Index a DICOM tree by its tags and list every case with its status and reason."""
    _done(scan(ScanConfig(input, out, dictionary, workers, rtstruct_choice, batches_out, batch_size)))


@app.command("convert")
def convert_command(
    input: InputArgument,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (cases/, cases.csv).")],
    dictionary: DictionaryOption = "radcure-oar21",
    workers: WorkersOption = 0,
    force: Annotated[bool, typer.Option("--force", help="Redo cases that are already converted.")] = False,
    inventory: Annotated[Path | None, typer.Option(help="Use this scan inventory instead of scanning.")] = None,
    case: Annotated[list[str] | None, typer.Option("--case", help="Convert only this case id (repeatable).")] = None,
    cases: Annotated[str, typer.Option(help="Comma-separated case ids (a fan-out batch).")] = "",
    rtstruct_choice: RtstructChoiceOption = "fail",
    source: Annotated[
        str | None, typer.Option(help="Store URI of the DICOM tree; files are staged into INPUT.")
    ] = None,
) -> None:
    """Convert each case to an int16 HU CT and a uint8 label map in NIfTI (nnU-Net naming)."""
    selected = tuple(case or ()) + tuple(c for c in cases.split(",") if c)
    config = ConvertConfig(input, out, dictionary, workers, force, inventory, selected, rtstruct_choice, source)
    _done(convert(config))


@app.command("pseudolabel")
def pseudolabel_command(
    converted: Annotated[Path, typer.Argument(help="Output folder of convert (run with the same dictionary).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (per case: task maps, merged map).")],
    dictionary: DictionaryOption = "radcure-ts90",
    device: Annotated[str, typer.Option(help="TotalSegmentator device: gpu, cpu or mps.")] = "gpu",
    weights: Annotated[
        str | None, typer.Option(help="TotalSegmentator home: a folder or a store URI; default TOTALSEG_HOME_DIR.")
    ] = None,
    allow_download: Annotated[bool, typer.Option("--allow-download", help="Download missing weights.")] = False,
    prefer_pseudo: Annotated[
        bool, typer.Option("--prefer-pseudo", help="Pseudo-labels before manual contours.")
    ] = False,
    case: Annotated[list[str] | None, typer.Option("--case", help="Only this case (repeatable).")] = None,
) -> None:
    """TotalSegmentator pseudo-labels per task, merged with the manual contours into the final label map."""
    from tsretrain.labels.pseudolabel import PseudolabelConfig, PseudolabelError, pseudolabel

    config = PseudolabelConfig(
        converted, out, dictionary, device, weights, allow_download, not prefer_pseudo, tuple(case or ())
    )
    try:
        _done(pseudolabel(config))
    except PseudolabelError as exc:
        console.print(f"[red]pseudolabel[/red]: {exc}")
        raise typer.Exit(1) from exc


@app.command("split")
def split_command(
    converted: Annotated[Path, typer.Argument(help="Output folder of convert (cases.csv).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (split.json, splits_final.json).")],
    test_fraction: Annotated[float, typer.Option(help="Share of patients held out for testing.")] = 0.2,
    folds: Annotated[int, typer.Option(help="Cross-validation folds.")] = 5,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 12345,
    clinical_csv: Annotated[Path | None, typer.Option(help="Clinical sheet: stratify by site, fixed split.")] = None,
    fixed_split_column: Annotated[str | None, typer.Option(help="Column whose 'test' rows form the test set.")] = None,
) -> None:
    """Patient-level, stratified split: a held-out test set and cross-validation folds."""
    from tsretrain.dataset.split import SplitConfig, run_split

    config = SplitConfig(
        converted, out, test_fraction, folds, seed, clinical_csv, fixed_split_column=fixed_split_column
    )
    _done(run_split(config))


@app.command("assemble")
def assemble_command(
    converted: Annotated[Path, typer.Argument(help="Output folder of convert.")],
    split: Annotated[Path, typer.Option(help="Output folder of split.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="nnUNet_raw folder.")],
    dataset_id: DatasetIdOption = 366,
    dataset_name: DatasetNameOption = "TotalSegmentator",
    dictionary: DictionaryOption = "radcure-oar21",
    labels_from: Annotated[
        Path | None, typer.Option(help="Merged label maps of pseudolabel (<case>/<case>.nii.gz).")
    ] = None,
) -> None:
    """Write the nnU-Net raw dataset (test cases only in imagesTs) and verify it with nnU-Net."""
    from tsretrain.dataset.assemble import AssembleConfig, assemble

    config = AssembleConfig(converted, split, out, dataset_id, dataset_name, dictionary, labels_from=labels_from)
    _done(assemble(config))


@app.command("preprocess")
def preprocess_command(
    work: WorkOption,
    split: Annotated[Path, typer.Option(help="Output folder of split (splits_final.json).")],
    dataset_id: DatasetIdOption = 366,
    dataset_name: DatasetNameOption = "TotalSegmentator",
    planner: Annotated[str, typer.Option(help="default, resenc-m or resenc-l.")] = "default",
    configuration: Annotated[list[str] | None, typer.Option(help="Configurations (default 3d_fullres).")] = None,
    plans_name: Annotated[str | None, typer.Option(help="Name of the plans variant holding overrides.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Override the 3d_fullres batch size.")] = None,
    patch_size: Annotated[tuple[int, int, int] | None, typer.Option(help="Override the patch size (z y x).")] = None,
    target_spacing: Annotated[tuple[float, float, float] | None, typer.Option(help="Override spacing (z y x).")] = None,
    tiny: Annotated[bool, typer.Option("--tiny", help="Add the CPU-sized 3d_tiny configuration.")] = False,
) -> None:
    """nnU-Net fingerprint, planning and preprocessing on the training cases."""
    from tsretrain.training.preprocess import PreprocessConfig, preprocess

    config = PreprocessConfig(
        work,
        split,
        dataset_id,
        dataset_name,
        planner,
        tuple(configuration or ("3d_fullres",)),
        plans_name,
        batch_size,
        patch_size,
        target_spacing,
        tiny,
    )
    _done(preprocess(config))


@app.command("train")
def train_command(
    work: WorkOption,
    fold: Annotated[int, typer.Option(help="Fold to train.")],
    dataset_id: DatasetIdOption = 366,
    dataset_name: DatasetNameOption = "TotalSegmentator",
    configuration: ConfigurationOption = "3d_fullres",
    trainer: TrainerOption = "nnUNetTrainerTsr",
    plans: PlansOption = "nnUNetPlans",
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the trainer's).")] = None,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N epochs.")] = 5,
    device: DeviceOption = "auto",
    pretrained_weights: Annotated[Path | None, typer.Option(help="Initial weights (fine-tuning).")] = None,
    store: Annotated[str | None, typer.Option(help="URI mirroring checkpoints (resume from there).")] = None,
    validate: Annotated[bool, typer.Option(help="Predict the fold's validation cases at the end.")] = True,
) -> None:
    """Train one fold; a re-run resumes from the last checkpoint."""
    from tsretrain.training.train import TrainConfig, train

    config = TrainConfig(
        work,
        fold,
        dataset_id,
        dataset_name,
        configuration,
        trainer,
        plans,
        epochs,
        save_every,
        device,
        pretrained_weights,
        store,
        validate,
    )
    _done(train(config))


@app.command("predict")
def predict_command(
    work: WorkOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (test/, validation/).")],
    fold: Annotated[list[int] | None, typer.Option("--fold", help="Folds to ensemble (default 0-4).")] = None,
    dataset_id: DatasetIdOption = 366,
    dataset_name: DatasetNameOption = "TotalSegmentator",
    configuration: ConfigurationOption = "3d_fullres",
    trainer: TrainerOption = "nnUNetTrainerTsr",
    plans: PlansOption = "nnUNetPlans",
    device: DeviceOption = "auto",
    tta: Annotated[bool, typer.Option("--tta", help="Mirroring test-time augmentation.")] = False,
) -> None:
    """Predict the test set with the ensemble of folds; collect each fold's validation predictions."""
    from tsretrain.training.predict import PredictConfig, predict

    folds = tuple(fold) if fold else (0, 1, 2, 3, 4)
    _done(
        predict(PredictConfig(work, out, folds, dataset_id, dataset_name, configuration, trainer, plans, device, tta))
    )


@app.command("evaluate")
def evaluate_command(
    reference: Annotated[Path, typer.Argument(help="Folder of reference label maps (<case>.nii.gz).")],
    prediction: Annotated[Path, typer.Argument(help="Folder of predicted label maps (<case>.nii.gz).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (per_case.csv, summary.json).")],
    dictionary: DictionaryOption = "radcure-oar21",
    tolerance_mm: Annotated[float, typer.Option(help="NSD tolerance in mm.")] = 2.0,
    workers: WorkersOption = 0,
    surface: Annotated[bool, typer.Option(help="Compute HD95 and NSD (off: Dice only).")] = True,
    converted: Annotated[
        Path | None, typer.Option(help="Conversion output: its manifests mark the manual-contour references.")
    ] = None,
    pseudolabels: Annotated[
        Path | None, typer.Option(help="Pseudo-label output: its merge records give each reference's source.")
    ] = None,
    missing_as_empty: Annotated[
        bool, typer.Option("--missing-as-empty", help="Count a case without prediction as missed (all labels empty).")
    ] = False,
    nsd_voxels: Annotated[
        bool, typer.Option("--nsd-voxels", help="Also the voxel-count NSD variant (not comparable with published NSD).")
    ] = False,
) -> None:
    """Dice, HD95 and NSD per case and label, statistics per reference source and the GTVp analysis."""
    from tsretrain.evaluation.evaluate import EvaluateConfig, evaluate

    _done(
        evaluate(
            EvaluateConfig(
                reference,
                prediction,
                out,
                dictionary,
                tolerance_mm,
                workers=workers,
                surface=surface,
                nsd_voxels=nsd_voxels,
                missing_as_empty=missing_as_empty,
                converted=converted,
                pseudolabels=pseudolabels,
            )
        )
    )


@app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Folder of a finished run.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default RUN_DIR/report).")] = None,
    dataset: Annotated[str, typer.Option(help="nnU-Net dataset folder name.")] = "Dataset366_TotalSegmentator",
    synthetic: Annotated[bool, typer.Option("--synthetic", help="Mark the numbers as a synthetic demo.")] = False,
) -> None:
    """Write report.html (self-contained) and report.md from a run's outputs."""
    from tsretrain.evaluation.report import ReportConfig, report

    _done(report(ReportConfig(run_dir, out or run_dir / "report", dataset, synthetic)))


@app.command("run")
def run_command(
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Folder of the run.")] = Path("demo-run"),
    config: Annotated[Path | None, typer.Option(help="YAML overriding the embedded default run.")] = None,
    stage: Annotated[list[str] | None, typer.Option("--stage", help="Run only this stage (repeatable).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Re-run stages recorded as complete.")] = False,
) -> None:
    """Run the pipeline's stages in order on local storage, skipping those already complete."""
    from tsretrain.pipeline.runner import run

    run(run_dir, config, tuple(stage or ()), force)
    console.print(f"[green]run complete[/green]: {run_dir}")
    if (run_dir / "report" / "report.html").is_file():
        console.print(f"report: {run_dir / 'report' / 'report.html'}")


@app.command("pod", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def pod_command(
    context: typer.Context,
    get: Annotated[list[str] | None, typer.Option("--get", help="URI=PATH of a published folder.")] = None,
    get_raw: Annotated[list[str] | None, typer.Option("--get-raw", help="URI=PATH of raw input (no manifest).")] = None,
    put: Annotated[list[str] | None, typer.Option("--put", help="PATH=URI published after the stage.")] = None,
    manifest_name: Annotated[str, typer.Option(help="Manifest of this writer (one per fan-out batch).")] = MANIFEST,
) -> None:
    """Fetch inputs from the store, run one tsretrain subcommand (after --), publish its outputs."""
    from tsretrain.pipeline.pod import fetch, parse_pair, publish

    fetch([parse_pair(p, uri_first=True) for p in get_raw or []], raw=True)
    fetch([parse_pair(p, uri_first=True) for p in get or []])
    code = app(args=list(context.args), standalone_mode=False)
    if code not in (None, 0):  # the stage failed: publish nothing, fail the pod (Argo retries it)
        raise typer.Exit(int(code))
    publish([parse_pair(p, uri_first=False) for p in put or []], manifest_name)


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


@app.command("status")
def status_command(
    out: Annotated[str, typer.Option(help="Store URI (folder) receiving status.json.")],
    name: Annotated[str, typer.Option(help="Workflow name.")],
    status: Annotated[str, typer.Option(help="Workflow status (Succeeded, Failed, Error).")],
    failures: Annotated[str, typer.Option(help="Argo's JSON list of failed steps.")] = "",
) -> None:
    """Record how a run ended (the workflow's exit handler)."""
    import json
    from datetime import UTC, datetime

    from tsretrain.storage.store import open_store

    try:
        failed = json.loads(failures) if failures.strip() else []
    except json.JSONDecodeError:
        failed = [failures]
    record = {"workflow": name, "status": status, "failures": failed, "finished": datetime.now(UTC).isoformat()}
    open_store(out).put_bytes(json.dumps(record, indent=1).encode(), "status.json")
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
    from tsretrain.cluster.argo import ArgoClient, ArgoError

    values = dict(p.split("=", 1) for p in parameter or [] if "=" in p)
    try:
        client = ArgoClient.from_env(server, namespace)
        name = client.submit(template, values)["metadata"]["name"]
    except ArgoError as exc:
        console.print(f"[red]submit failed[/red]: {exc}")
        raise typer.Exit(1) from exc
    print(f"submitted {name}")
    print(f"watch it in the Argo UI: {client.ui_link(name)}")


@app.command("watch")
def watch_command(
    name: str,
    server: ServerOption = None,
    namespace: NamespaceOption = None,
    every: Annotated[float, typer.Option(help="Seconds between polls.")] = 10.0,
) -> None:
    """Follow a run until it finishes; exit 1 unless it succeeded."""
    from tsretrain.cluster.argo import ArgoClient

    if ArgoClient.from_env(server, namespace).watch(name, every) != "Succeeded":
        raise typer.Exit(1)


@app.command("logs")
def logs_command(
    name: str,
    server: ServerOption = None,
    namespace: NamespaceOption = None,
    follow: Annotated[bool, typer.Option(help="Keep streaming.")] = True,
) -> None:
    """Stream the log lines of a run's pods."""
    from tsretrain.cluster.argo import ArgoClient

    for line in ArgoClient.from_env(server, namespace).logs(name, follow):
        print(line)


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


if __name__ == "__main__":
    main()
