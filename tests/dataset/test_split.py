"""The split: seeded, reproducible, patient-disjoint, stratified, test set held out."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tsretrain.dataset.split import SplitConfig, make_split, nnunet_splits, report, run_split
from tsretrain.errors import UserError
from tsretrain.labels.volume_bands import volume_band


def cases(n: int) -> list[dict[str, str]]:
    volumes = [1.0, 5.0, 20.0, 60.0]
    rows = [
        {"case_id": f"C{i:03d}", "patient_id": f"P{i:03d}", "gtvp_volume_ml": str(volumes[i % 4])} for i in range(n)
    ]
    rows.append({"case_id": "C999b", "patient_id": "P000", "gtvp_volume_ml": "1.0"})  # a second case of P000
    return rows


def config(tmp_path: Path, **changes: object) -> SplitConfig:
    return SplitConfig(converted=tmp_path, out=tmp_path, **changes)  # type: ignore[arg-type]


def test_reproducible_and_seed_dependent(tmp_path: Path) -> None:
    a = make_split(cases(40), config(tmp_path, seed=1))
    assert a == make_split(cases(40), config(tmp_path, seed=1))
    assert a["test"] != make_split(cases(40), config(tmp_path, seed=2))["test"]


def test_patient_disjoint_complete_and_sized(tmp_path: Path) -> None:
    split = make_split(cases(50), config(tmp_path))
    parts = [set(split["test"]), *map(set, split["folds"])]
    everything = [c for p in parts for c in p]
    assert len(everything) == len(set(everything)) == 51
    patient_of = {c["case_id"]: c["patient_id"] for c in cases(50)}
    owners = [{patient_of[c] for c in part} for part in parts]
    for n, first in enumerate(owners):
        for second in owners[n + 1 :]:
            assert not first & second
    assert ("C000" in split["test"]) == ("C999b" in split["test"])  # one patient, one side
    assert 9 <= len(split["test"]) <= 11
    sizes = [len(f) for f in split["folds"]]
    assert max(sizes) - min(sizes) <= 2
    for fold in split["folds"]:  # every fold sees every volume band
        assert len(Counter(split["strata"][c] for c in fold)) == 4
    for n, entry in enumerate(nnunet_splits(split)):
        assert set(entry["val"]) == set(split["folds"][n])
        assert not set(entry["train"]) & set(entry["val"])
        assert not set(entry["train"]) & set(split["test"])


def test_fixed_split_and_site_strata_from_a_clinical_sheet(tmp_path: Path) -> None:
    sheet = tmp_path / "clinical.csv"
    rows = ["patient_id,Ds Site ,RADCURE-challenge "]
    rows += [f"P{i:03d},{'Larynx' if i % 2 else 'Oropharynx'},{'test' if i < 8 else 'training'}" for i in range(30)]
    sheet.write_text("\n".join(rows) + "\n")
    split = make_split(cases(30), config(tmp_path, clinical_csv=sheet, fixed_split_column="RADCURE-challenge"))
    assert set(split["test"]) == {f"C{i:03d}" for i in range(8)} | {"C999b"}
    assert any("Larynx" in s for s in split["strata"].values())
    sheet.write_text("patient_id,other\nP001,x\n")
    with pytest.raises(ValueError, match="lack column"):
        make_split(cases(5), config(tmp_path, clinical_csv=sheet, fixed_split_column="RADCURE-challenge"))


def test_volume_bands() -> None:
    assert volume_band(0.5) == "GTVp 0-3 mL"
    assert volume_band(3.0) == "GTVp 3-10 mL"
    assert volume_band(12.0) == "GTVp 10-30 mL"
    assert volume_band(30.0) == volume_band(45.0) == "GTVp >= 30 mL"


def test_a_patient_is_stratified_by_all_of_its_cases_whatever_their_order(tmp_path: Path) -> None:
    rows = cases(40)
    rows.append({"case_id": "C998b", "patient_id": "P001", "gtvp_volume_ml": "50.0"})  # P001: 5 mL and 50 mL
    split = make_split(rows, config(tmp_path))
    assert split["strata"]["C001"] == split["strata"]["C998b"] == "GTVp >= 30 mL"
    assert split["strata"]["C000"] == split["strata"]["C999b"] == "GTVp 0-3 mL"
    assert make_split(rows[::-1], config(tmp_path)) == split


def test_report_lists_volume_bands_in_numeric_order(tmp_path: Path) -> None:
    header = report(make_split(cases(40), config(tmp_path))).splitlines()[4]
    assert header == "| part | cases | GTVp 0-3 mL | GTVp 3-10 mL | GTVp 10-30 mL | GTVp >= 30 mL |"


# The folds themselves are dealt by the seeded shuffle (not only the test set); the test share rounded once;
# folds dealt in turn; clinical sheets as spreadsheets export them; the report by hand.


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
