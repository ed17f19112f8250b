"""``tsretrain run``: stages in registry order, finished stages skipped, configuration checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tsretrain.errors import UserError
from tsretrain.pipeline.registry import BY_NAME, NAMES
from tsretrain.pipeline.runner import Run, default_config, load_config, run


def test_default_run_covers_every_stage_but_pseudolabels() -> None:
    local = [s for s in NAMES if BY_NAME[s].local]  # not the cluster run's shares of preprocess
    assert default_config()["stages"] == [s for s in local if s != "pseudolabel"]  # needs weights


def test_every_stage_of_the_default_run_gets_a_valid_configuration(tmp_path: Path) -> None:
    """Every stage's configuration builds from the default run: paths from the layout, model fields from the
    model, settings from its section."""
    the_run = Run(tmp_path, load_config(None))
    per_fold = {name for name in NAMES if BY_NAME[name].fan_out == "fold"}  # configured per fold: train below
    configs = {name: the_run.configure(BY_NAME[name]) for name in NAMES if name not in per_fold}
    train = the_run.configure(BY_NAME["train"], fold=1)
    assert train.fold == 1 and train.iterations == 40 and train.work == tmp_path / "nnunet"
    assert configs["convert"].inventory == tmp_path / "scan" / "inventory.json"
    assert configs["split"].folds == (0,) and configs["split"].cv_folds == 5
    assert configs["predict"].model.folds == (0,) and configs["predict"].model.configuration == "3d_tiny"
    assert configs["evaluate"].reference == tmp_path / "nnunet/nnUNet_raw/Dataset366_TotalSegmentator/labelsTs"
    assert configs["assemble"].labels_from is None  # no pseudolabel stage in the default run
    assert configs["report"].run_dir == tmp_path and configs["report"].synthetic


def test_every_stage_holding_a_model_sees_the_runs_whole_model(tmp_path: Path) -> None:
    """What preprocessing (or any stage holding a model) sees is the run's model, every field of it, not only the
    fields the stage takes as options: a run's trainer and folds reach preprocess too."""
    config = tmp_path / "run.yaml"
    config.write_text("model: {trainer: nnUNetTrainerTsrTinyGTVpFocal, folds: [1, 3], plans: myPlans}\n")
    the_run = Run(tmp_path, load_config(config))
    assert the_run.model.trainer == "nnUNetTrainerTsrTinyGTVpFocal" and the_run.model.folds == (1, 3)
    holding = [stage for stage in BY_NAME.values() if stage.model]
    assert {"preprocess", "fingerprint", "plan", "train", "predict", "export"} <= {s.name for s in holding}
    for stage in holding:
        seen = the_run.configure(stage, **({"fold": 1} if stage.fan_out == "fold" else {}))
        assert seen.model == the_run.model, stage.name


def test_a_choice_outside_its_vocabulary_is_refused_before_the_stage_runs(tmp_path: Path) -> None:
    """A ``Literal`` field (devices, planners, searches, losses, layouts) refuses any other word, from a run's
    configuration as from the command line, naming the choices."""
    config = tmp_path / "run.yaml"
    config.write_text("train: {device: gpu}\npostprocess: {search: some}\n")
    the_run = Run(tmp_path, load_config(config))
    with pytest.raises(UserError, match="train: device is 'gpu'") as refused:
        the_run.configure(BY_NAME["train"], fold=0)
    assert refused.value.advice == "choose one of auto, cuda, cpu"
    with pytest.raises(UserError, match="postprocess: search is 'some'"):
        the_run.configure(BY_NAME["postprocess"])


def test_the_ts90_demo_takes_its_labels_from_totalsegmentator(tmp_path: Path) -> None:
    """``make demo-ts90``'s configuration: the 90-label dictionary everywhere, pseudo-labels on the stand-ins."""
    the_run = Run(tmp_path, load_config(Path(__file__).parents[2] / "pipelines" / "demo-ts90.yaml"))
    configs = {name: the_run.configure(BY_NAME[name]) for name in the_run.config["stages"]
               if BY_NAME[name].fan_out != "fold"}  # fmt: skip
    assert configs["pseudolabel"].weights == "standin-weights" and configs["pseudolabel"].device == "auto"
    assert configs["assemble"].labels_from == configs["pseudolabel"].out
    assert configs["evaluate"].pseudolabels == configs["pseudolabel"].out
    assert {configs[s].dictionary for s in ("convert", "pseudolabel")} == {"radcure-ts90"}


def test_finished_stages_are_skipped_and_config_changes_redo_them(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        "synth: {cases: 3, rows: 48, columns: 48, slices: 12, edge_cases: false}\n"
        "split: {cv_folds: 2}\n"
        "stages: [synth, scan, convert, split]\n"
    )
    first = run(tmp_path / "run", config)
    assert [r.stage for r in first] == ["synth", "scan", "convert", "split"]
    assert (tmp_path / "run" / "split" / "splits_final.json").is_file()
    assert run(tmp_path / "run", config) == []
    config.write_text(config.read_text().replace("cv_folds: 2", "cv_folds: 2, seed: 7"))
    assert [r.stage for r in run(tmp_path / "run", config)] == ["split"]
    assert [r.stage for r in run(tmp_path / "run", config, only=("scan",), force=True)] == ["scan"]


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("trian: {}\n", "unknown keys"),
        ("stages: [synth, fly]\n", "unknown stage"),
        ("model: {dataset_id: 3}\n", "model: unknown setting"),
        ("split: {out: /elsewhere}\n", "cannot be set here"),
        ("train: {iteratons: 5}\n", "train: unknown setting 'iteratons'; did you mean 'iterations'\\?"),
    ],
)
def test_unknown_keys_stages_and_settings_are_refused(tmp_path: Path, yaml: str, message: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml)
    with pytest.raises(UserError, match=message) as refused:
        load_config(bad)
    if "did you mean" in message:
        assert "epochs" in refused.value.advice and "iterations" in refused.value.advice  # the stage's settings
