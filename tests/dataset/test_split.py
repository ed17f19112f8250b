"""The split: seeded, reproducible, patient-disjoint, stratified, test set held out."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tsretrain.dataset.split import SplitConfig, make_split, nnunet_splits, report, volume_band


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
