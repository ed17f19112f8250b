"""The folds themselves are dealt by the seeded shuffle (not only the test set)."""

from __future__ import annotations

from pathlib import Path

from tsretrain.dataset.split import SplitConfig, make_split


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
