"""``tsretrain run``: stages in order, finished stages skipped, configuration checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tsretrain.pipeline.runner import STAGES, default_config, load_config, run


def test_default_run_covers_every_stage_but_pseudolabels() -> None:
    assert default_config()["stages"] == [s for s in STAGES if s != "pseudolabel"]  # needs weights


def test_finished_stages_are_skipped_and_config_changes_redo_them(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        "synth: {cases: 3, rows: 48, columns: 48, slices: 12, edge_cases: false}\n"
        "split: {folds: 2}\n"
        "stages: [synth, scan, convert, split]\n"
    )
    first = run(tmp_path / "run", config)
    assert [r.step for r in first] == ["synth", "scan", "convert", "split"]
    assert (tmp_path / "run" / "split" / "splits_final.json").is_file()
    assert run(tmp_path / "run", config) == []
    config.write_text(config.read_text().replace("folds: 2", "folds: 2, seed: 7"))
    assert [r.step for r in run(tmp_path / "run", config)] == ["split"]
    assert [r.step for r in run(tmp_path / "run", config, only=("scan",), force=True)] == ["scan"]


def test_unknown_keys_and_stages_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trian: {}\n")
    with pytest.raises(ValueError, match="unknown keys"):
        load_config(bad)
    bad.write_text("stages: [synth, fly]\n")
    with pytest.raises(ValueError, match="unknown stage"):
        run(tmp_path / "run", bad)
