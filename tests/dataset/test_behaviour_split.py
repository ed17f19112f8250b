"""The folds themselves are dealt by the seeded shuffle (not only the test set); the test share rounded once;
folds dealt in turn; clinical sheets as spreadsheets export them; the report by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tsretrain.dataset.split import SplitConfig, make_split, nnunet_splits, report, run_split
from tsretrain.errors import UserError


def test_folds_depend_on_the_seed_when_the_test_set_is_fixed(tmp_path: Path) -> None:
    """With a fixed test set (the clinical sheet's column) only the fold shuffle can change with the seed."""
    sheet = tmp_path / "clinical.csv"
    sheet.write_text(
        "patient_id,challenge\n" + "".join(f"P{i:03d},{'test' if i < 6 else 'training'}\n" for i in range(36))
    )
    rows = [{"case_id": f"C{i:03d}", "patient_id": f"P{i:03d}", "gtvp_volume_ml": "5.0"} for i in range(36)]

    def folds(seed: int) -> tuple[frozenset[str], ...]:
        config = SplitConfig(
            converted=tmp_path, out=tmp_path, cv_folds=3, seed=seed, clinical_csv=sheet, fixed_split_column="challenge"
        )
        split = make_split(rows, config)
        assert split["test"] == [f"C{i:03d}" for i in range(6)]
        return tuple(frozenset(f) for f in split["folds"])

    by_seed = {seed: folds(seed) for seed in range(1, 6)}
    assert folds(3) == by_seed[3]  # reproducible
    assert len({frozenset(f) for f in by_seed.values()}) == 5  # five seeds, five different partitions
    for partition in by_seed.values():
        assert [len(f) for f in partition] == [10, 10, 10]
        listed = sorted(c for f in partition for c in f)
        assert not {tuple(sorted(f)) for f in partition} & {tuple(listed[n::3]) for n in range(3)}  # not dealt in order


def _cases(volumes: dict[str, float]) -> list[dict[str, str]]:
    return [{"case_id": f"C-{p}", "patient_id": p, "gtvp_volume_ml": str(v)} for p, v in volumes.items()]


def test_the_test_share_is_rounded_once_over_all_strata(tmp_path: Path) -> None:
    """3 strata of 3 patients at 20 %: 0.6 patients each; the remainder carried from stratum to stratum gives
    round(1.8) = 2 test patients (each stratum rounded alone would give 3)."""
    volumes = {f"P{n}": v for n, v in enumerate([1.0] * 3 + [5.0] * 3 + [15.0] * 3)}
    split = make_split(_cases(volumes), SplitConfig(converted=tmp_path, out=tmp_path, test_fraction=0.2, cv_folds=3))
    assert len(split["test"]) == 2
    assert set(split) == {"format", "seed", "test_fraction", "fixed_split_column", "test", "folds", "strata"}
    assert (split["format"], split["seed"], split["test_fraction"]) == ("tsretrain-split/1", 12345, 0.2)
    assert split["fixed_split_column"] is None


def test_patients_are_dealt_to_the_folds_in_turn_across_strata(tmp_path: Path) -> None:
    volumes = {f"P{n}": v for n, v in enumerate([1.0] * 3 + [5.0] * 5)}
    split = make_split(_cases(volumes), SplitConfig(converted=tmp_path, out=tmp_path, test_fraction=0.0, cv_folds=4))
    assert [len(fold) for fold in split["folds"]] == [2, 2, 2, 2]


@pytest.mark.parametrize("id_column", ["patient_id", "Patient ID", "PatientID"])
def test_a_spreadsheet_export_as_clinical_sheet(tmp_path: Path, id_column: str) -> None:
    """Byte-order mark, padded column names, a short row (no site) and a row with a trailing cell."""
    sheet = tmp_path / "clinical.csv"
    sheet.write_text(f"{id_column} , Ds Site \nP1,Larynx\nP2\nP3, Oropharynx ,\n", encoding="utf-8-sig")
    config = SplitConfig(converted=tmp_path, out=tmp_path, clinical_csv=sheet, test_fraction=0.0, cv_folds=2)
    split = make_split(_cases({"P1": 1.0, "P2": 1.0, "P3": 1.0}), config)
    assert split["strata"] == {
        "C-P1": "GTVp 0-3 mL | Larynx",
        "C-P2": "GTVp 0-3 mL",
        "C-P3": "GTVp 0-3 mL | Oropharynx",
    }


def test_clinical_sheet_errors_say_what_is_missing(tmp_path: Path) -> None:
    sheet = tmp_path / "clinical.csv"
    cases = _cases({f"P{n}": 1.0 for n in range(1, 5)})
    for text in ("name,Ds Site\nP1,Larynx\n", "patient_id,Ds Site\n"):
        sheet.write_text(text)
        with pytest.raises(ValueError, match="no patient id column"):
            make_split(cases, SplitConfig(converted=tmp_path, out=tmp_path, clinical_csv=sheet))
    sheet.write_text("patient_id\nP1\nP2\nP3\nP4\n")
    config = SplitConfig(converted=tmp_path, out=tmp_path, clinical_csv=sheet, fixed_split_column="RADCURE-challenge")
    with pytest.raises(
        ValueError, match=r"4 patient\(s\) lack column 'RADCURE-challenge', e\.g\. \['P1', 'P2', 'P3'\]$"
    ):
        make_split(cases, config)


def test_report_by_hand() -> None:
    split = {
        "seed": 7,
        "test": ["C-a", "C-e"],
        "folds": [["C-b", "C-c"], ["C-d"]],
        "strata": {
            "C-a": "GTVp 0-3 mL | Larynx",
            "C-e": "GTVp >= 30 mL",
            "C-b": "GTVp 0-3 mL | Larynx",
            "C-c": "GTVp >= 30 mL",
            "C-d": "GTVp 3-10 mL | Oral",
        },
    }
    assert report(split) == (
        "# Split\n"
        "\n"
        "Seed 7; 5 cases; test 2 (40.0 %), 2 cross-validation folds.\n"
        "\n"
        "| part | cases | GTVp 0-3 mL, Larynx | GTVp 3-10 mL, Oral | GTVp >= 30 mL |\n"
        "|---|---|---|---|---|\n"
        "| test | 2 | 1 | 0 | 1 |\n"
        "| fold 0 | 2 | 1 | 0 | 1 |\n"
        "| fold 1 | 1 | 0 | 1 | 0 |\n"
        "\n"
        "Test cases: C-a, C-e\n"
    )
    alone = {"seed": 1, "test": ["C-a"], "folds": [], "strata": {"C-a": "GTVp 0-3 mL"}}
    assert "; 1 cases; test 1 (100.0 %), 0 cross-validation folds." in report(alone)


def _converted(root: Path, volumes: dict[str, float], failed: tuple[str, ...] = ()) -> Path:
    """A conversion output with one (minimal) manifest per case."""
    for patient, volume in {**volumes, **dict.fromkeys(failed, 0.0)}.items():
        manifest = {
            "case_id": f"C-{patient}",
            "patient_id": patient,
            "status": "failed" if patient in failed else "ok",
            "reason": "no_rtstruct" if patient in failed else "",
            "detail": "",
            "input": {"ct_series_uid": "1.2", "rtstruct_sop_uid": "1.3", "frame_of_reference_uid": "1.4"},
            "roi_names": ["GTVp"],
            "unmapped_rois": [],
            "missing_labels": [],
            "warnings": [],
            "labels": {"GTVp": {"volume_ml": volume}},
        }
        (root / "cases" / f"C-{patient}").mkdir(parents=True)
        (root / "cases" / f"C-{patient}" / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_the_split_stage_writes_the_split_of_the_usable_cases(tmp_path: Path) -> None:
    volumes = {f"P{n}": v for n, v in enumerate([1.0, 5.0, 15.0, 40.0] * 2)}
    converted = _converted(tmp_path / "converted", volumes, failed=("PX",))
    out = tmp_path / "runs" / "split"
    config = SplitConfig(converted=converted, out=out, cv_folds=3, folds=(0, 2), test_fraction=0.25)
    run_split(config)
    result = run_split(config)  # again, into the same folder
    split = json.loads((out / "split.json").read_text())
    assert split == make_split(_cases(volumes), config)
    assert json.loads((out / "splits_final.json").read_text()) == nnunet_splits(split)
    assert (out / "split_report.md").read_text() == report(split)
    assert "C-PX" not in split["strata"]
    assert result.stage == "split"
    assert result.outputs == {"split": str(out / "split.json"), "splits_final": str(out / "splits_final.json")}
    assert result.counts == {"test": 2, "train": 6, "folds": 3}


def test_the_split_stage_refuses_missing_folds_and_too_few_cases(tmp_path: Path) -> None:
    converted = _converted(tmp_path / "converted", {f"P{n}": 1.0 for n in range(4)}, failed=("PX",))
    with pytest.raises(UserError, match=r"folds \[3\] do not exist in a 3-fold split"):
        run_split(SplitConfig(converted=converted, out=tmp_path / "a", cv_folds=3, folds=(2, 3)))
    with pytest.raises(UserError, match=r"^4 usable case\(s\) in \S+: a 4-fold split needs at least 5$"):
        run_split(SplitConfig(converted=converted, out=tmp_path / "b", cv_folds=4, test_fraction=0.0))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    run_split(SplitConfig(converted=converted, out=tmp_path / "c", cv_folds=3, test_fraction=0.0))
    assert [len(f) for f in json.loads((tmp_path / "c" / "split.json").read_text())["folds"]] == [2, 1, 1]
