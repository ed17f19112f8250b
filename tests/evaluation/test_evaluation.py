"""Metrics on shapes with known answers, the absent-label policy, GTVp statistics and DSCagg by hand, no silent
drops, reference provenance with its tables, and agreement with nnU-Net."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from tsretrain.cli import app
from tsretrain.errors import UserError
from tsretrain.evaluation.evaluate import EvaluateConfig, evaluate
from tsretrain.evaluation.metrics import case_metrics
from tsretrain.evaluation.report.blocks import Paragraph, Subheading, Table
from tsretrain.evaluation.report.results import label_source_blocks
from tsretrain.evaluation.report.tables import label_tables
from tsretrain.evaluation.statistics import gtvp_analysis


def sphere(
    shape: tuple[int, int, int],
    centre: tuple[float, float, float],
    radius_mm: float,
    spacing: tuple[float, float, float],
) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    d2 = sum(((grid[a] - centre[a]) * spacing[a]) ** 2 for a in range(3))
    return d2 <= radius_mm**2


def test_identical_masks() -> None:
    ref = sphere((40, 40, 40), (20, 20, 20), 8, (1, 1, 1)).astype(np.uint8)
    (m,) = case_metrics(ref, ref.copy(), (1.0, 1.0, 1.0), [1])
    assert (m.status, m.dice, m.hd95, m.nsd) == ("both", 1.0, 0.0, 1.0)


def test_shifted_sphere_has_the_shift_as_hausdorff_distance() -> None:
    spacing = (2.0, 1.0, 1.0)  # anisotropic: a shift of 3 voxels along z is 6 mm
    ref = sphere((40, 60, 60), (20, 30, 30), 12, spacing).astype(np.uint8)
    pred = np.roll(ref, 3, axis=0)
    (m,) = case_metrics(ref, pred, spacing, [1], tolerance_mm=2.0)
    assert m.hd95 == pytest.approx(6.0, abs=0.5)
    assert 0.6 < m.dice < 0.9
    assert 0.0 < m.nsd < 1.0
    (loose,) = case_metrics(ref, pred, spacing, [1], tolerance_mm=6.5)
    assert loose.nsd == pytest.approx(1.0)
    # The same shift in-plane (1 mm voxels) is 3 mm.
    (inplane,) = case_metrics(ref, np.roll(ref, 3, axis=2), spacing, [1])
    assert inplane.hd95 == pytest.approx(3.0, abs=0.3)


def test_absent_label_policy_and_one_voxel_labels() -> None:
    ref = np.zeros((10, 10, 10), np.uint8)
    pred = np.zeros_like(ref)
    ref[5, 5, 5] = 1  # label 1: one voxel, found
    pred[5, 5, 5] = 1
    ref[2, 2, 2] = 2  # label 2: missed
    pred[8, 8, 8] = 3  # label 3: false positive; label 4: absent
    by_label = {m.label: m for m in case_metrics(ref, pred, (1.0, 1.0, 1.0), [1, 2, 3, 4])}
    assert (by_label[1].status, by_label[1].dice, by_label[1].hd95) == ("both", 1.0, 0.0)
    assert (by_label[2].status, by_label[2].dice, by_label[2].nsd) == ("missed", 0.0, 0.0)
    assert math.isnan(by_label[2].hd95)
    assert (by_label[3].status, by_label[3].dice) == ("false_pos", 0.0)
    assert by_label[4].status == "absent" and math.isnan(by_label[4].dice)
    with pytest.raises(ValueError, match="differ in shape"):
        case_metrics(ref, pred[:5], (1.0, 1.0, 1.0), [1])


def test_gtvp_statistics() -> None:
    rows = [
        {"case": f"c{i}", "status": "both", "dice": d, "tp": int(d * 100), "ref_voxels": 100, "pred_voxels": 100}
        for i, d in enumerate([0.0, 0.005, 0.5, 0.6, 0.7, 0.9])
    ]
    result = gtvp_analysis(rows, {f"c{i}": 0.001 for i in range(6)})
    assert result["mean"] == pytest.approx(np.mean([0.0, 0.005, 0.5, 0.6, 0.7, 0.9]), abs=1e-6)
    assert result["median"] == pytest.approx(0.55)
    assert result["quantiles"]["50%"] == pytest.approx(0.55)
    assert result["detection_rate"] == pytest.approx(4 / 6, abs=1e-6)  # tp = int(0.005 * 100) = 0
    assert result["dsc_agg"] == pytest.approx(2 * sum(r["tp"] for r in rows) / 1200, abs=1e-6)
    assert [c["case"] for c in result["below_0.01"]] == ["c0", "c1"]
    assert [c["case"] for c in result["above_0.84"]] == ["c5"]
    low, high = result["mean_ci95"]
    assert low <= result["mean"] <= high
    assert result["by_volume_band"]["GTVp 0-3 mL"]["n"] == 6
    assert (result["n_cases"], result["n_missed"], result["n_false_positive"]) == (6, 0, 0)


def test_volume_bands_in_numeric_order() -> None:
    rows = [
        {"case": f"c{i}", "status": "both", "dice": 0.5, "tp": 50, "ref_voxels": v, "pred_voxels": 100}
        for i, v in enumerate([40000, 2000, 15000, 5000])  # 40, 2, 15, 5 mL at 1 mm3
    ]
    result = gtvp_analysis(rows, {f"c{i}": 0.001 for i in range(4)})
    assert list(result["by_volume_band"]) == ["GTVp 0-3 mL", "GTVp 3-10 mL", "GTVp 10-30 mL", "GTVp >= 30 mL"]


def write(array: np.ndarray, path: Path, spacing: tuple[float, float, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing[::-1])
    sitk.WriteImage(image, str(path))


def dictionary(folder: Path, names: list[str]) -> str:
    path = folder / "dictionary.yaml"
    path.write_text(
        "name: t\nversion: '1'\nlabels:\n"
        + "".join(f"  - {{id: {i}, name: {n}, sources: [rtstruct: [{n.lower()}]]}}\n" for i, n in enumerate(names, 1))
    )
    return str(path)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def box(shape: tuple[int, int, int], z: slice, y: slice, x: slice, label: int = 1) -> np.ndarray:
    array = np.zeros(shape, np.uint8)
    array[z, y, x] = label
    return array


def test_dsc_agg_is_hecktors_physical_volume_over_all_cases_by_hand(tmp_path: Path) -> None:
    shape = (10, 20, 20)
    cases = {  # reference, prediction, spacing (z, y, x) mm
        "a": (box(shape, slice(0, 10), slice(0, 10), slice(0, 10)), box(shape, slice(0, 8), slice(0, 10), slice(2, 12)),
              (1.0, 1.0, 1.0)),  # ref 1000, pred 800, overlap 640 voxels of 1 mm3
        "b": (box(shape, slice(0, 5), slice(0, 10), slice(0, 10)), np.zeros(shape, np.uint8), (2.0, 1.0, 1.0)),
        "c": (np.zeros(shape, np.uint8), box(shape, slice(0, 4), slice(0, 10), slice(0, 10)), (3.0, 0.5, 0.5)),
    }  # fmt: skip
    for case, (ref, pred, spacing) in cases.items():
        write(ref, tmp_path / "ref" / f"{case}.nii.gz", spacing)
        write(pred, tmp_path / "pred" / f"{case}.nii.gz", spacing)
    evaluate(
        EvaluateConfig(
            reference=tmp_path / "ref",
            prediction=tmp_path / "pred",
            out=tmp_path / "out",
            dictionary=dictionary(tmp_path, ["GTVp"]),
        )
    )
    gtvp = json.loads((tmp_path / "out" / "summary.json").read_text())["gtvp"]
    # By hand, in mm3: a: 2 x 640 x 1 over (1000 + 800) x 1; b (missed): 500 x 2; c (false positive): 400 x 0.75.
    assert gtvp["dsc_agg"] == pytest.approx(1280 / (1800 + 1000 + 300), abs=1e-6)  # 0.4129, not 1280/2300
    assert (gtvp["dsc_agg_n"], gtvp["n_cases"], gtvp["n_missed"], gtvp["n_false_positive"]) == (3, 2, 1, 1)
    assert gtvp["mean"] == pytest.approx((1280 / 1800 + 0.0) / 2, abs=1e-6)


def small_test_set(tmp_path: Path, cases: list[str], predicted: list[str]) -> str:
    shape = (6, 12, 12)
    for case in cases:
        write(box(shape, slice(1, 4), slice(2, 8), slice(2, 8)), tmp_path / "ref" / f"{case}.nii.gz", (2.0, 1.0, 1.0))
    for case in predicted:
        write(box(shape, slice(1, 4), slice(3, 8), slice(2, 8)), tmp_path / "pred" / f"{case}.nii.gz", (2.0, 1.0, 1.0))
    return dictionary(tmp_path, ["GTVp"])


def test_a_missing_prediction_is_an_error_naming_the_cases_or_counted_as_missed(tmp_path: Path) -> None:
    names = small_test_set(tmp_path, ["p1", "p2", "p3", "p4"], ["p1", "p3"])
    config = EvaluateConfig(
        reference=tmp_path / "ref", prediction=tmp_path / "pred", out=tmp_path / "out", dictionary=names, workers=1
    )
    with pytest.raises(UserError, match=r"no prediction for 2 of 4 test case\(s\).*p2, p4") as refused:
        evaluate(config)
    assert "--missing-as-empty" in refused.value.advice
    assert not (tmp_path / "out").exists()
    result = evaluate(EvaluateConfig(**{**config.__dict__, "missing_as_empty": True}))
    assert result.counts["cases"] == 4 and result.counts["missing_predictions"] == 2
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["missing_predictions"] == ["p2", "p4"]
    assert (summary["gtvp"]["n_cases"], summary["gtvp"]["n_missed"]) == (4, 2)
    status = {r["case"]: r["status"] for r in rows(tmp_path / "out" / "per_case.csv")}
    assert status == {"p1": "both", "p2": "missed", "p3": "both", "p4": "missed"}


def test_cli_refuses_a_missing_prediction_unless_told(tmp_path: Path) -> None:
    names = small_test_set(tmp_path, ["p1", "p2"], ["p1"])
    command = ["evaluate", str(tmp_path / "ref"), str(tmp_path / "pred"), "--out", str(tmp_path / "out")]
    command += ["--dictionary", names, "--workers", "1"]
    refused = CliRunner().invoke(app, command)
    assert refused.exit_code == 2 and "p2" in refused.output and "--missing-as-empty" in refused.output
    accepted = CliRunner().invoke(app, [*command, "--missing-as-empty", "--nsd-voxels"])
    assert accepted.exit_code == 0, accepted.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["missing_predictions"] == ["p2"] and "nsd_voxel_count" in summary["conventions"]


def test_a_prediction_without_reference_is_an_error(tmp_path: Path) -> None:
    names = small_test_set(tmp_path, ["p1", "p2"], ["p1", "p2", "p9"])
    with pytest.raises(ValueError, match=r"1 prediction\(s\) without a reference.*p9"):
        evaluate(
            EvaluateConfig(
                reference=tmp_path / "ref",
                prediction=tmp_path / "pred",
                out=tmp_path / "out",
                dictionary=names,
                workers=1,
            )
        )


def test_voxel_count_nsd_only_on_request_and_labelled(tmp_path: Path) -> None:
    names = small_test_set(tmp_path, ["p1"], ["p1"])
    config = EvaluateConfig(
        reference=tmp_path / "ref", prediction=tmp_path / "pred", out=tmp_path / "out", dictionary=names, workers=1
    )
    evaluate(config)
    assert "nsd_voxel_count" not in rows(tmp_path / "out" / "per_case.csv")[0]
    evaluate(EvaluateConfig(**{**config.__dict__, "nsd_voxels": True}))
    (row,) = rows(tmp_path / "out" / "per_case.csv")
    assert 0 < float(row["nsd_voxel_count"]) <= 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "not comparable" in summary["conventions"]["nsd_voxel_count"]
    header = next(b for b in label_tables(summary) if isinstance(b, Table)).header
    assert "NSD by voxel count (not comparable)" in header


def provenance_run(tmp_path: Path, gtvp_source: str = "rtstruct") -> tuple[EvaluateConfig, dict[str, Any]]:
    """Two test cases of a run with pseudo-labels: Parotid manual in c1 and TotalSegmentator's in c2, Thyroid
    always TotalSegmentator's, Lens never present (predicted in c2), GTVp manual; and their records."""
    shape = (8, 16, 16)
    truth = {}
    for case in ("c1", "c2"):
        ref = box(shape, slice(1, 5), slice(1, 6), slice(1, 6), 1)  # Parotid
        ref[1:5, 8:14, 8:14] = 2  # Thyroid
        ref[5:7, 2:5, 9:13] = 4  # GTVp
        pred = np.roll(ref, 1, axis=2)
        if case == "c2":
            pred[0, 0:2, 0:2] = 3  # Lens, without any reference
        write(ref, tmp_path / "labelsTs" / f"{case}.nii.gz", (2.0, 1.0, 1.0))
        write(pred, tmp_path / "pred" / f"{case}.nii.gz", (2.0, 1.0, 1.0))
        voxels = {name: int((ref == i).sum()) for i, name in enumerate(["Parotid", "Thyroid", "Lens", "GTVp"], 1)}
        sources = {
            "Parotid": "rtstruct" if case == "c1" else "totalsegmentator:head_glands_cavities/parotid_gland_left",
            "Thyroid": "totalsegmentator:headneck_bones_vessels/thyroid",
            "Lens": None,
            "GTVp": gtvp_source,
        }
        record = tmp_path / "pseudolabels" / case / "pseudolabel.json"
        record.parent.mkdir(parents=True)
        record.write_text(json.dumps({"tasks": {}, "sources": sources, "missing_labels": ["Lens"], "voxels": voxels}))
        manifest = tmp_path / "converted" / "cases" / case / "manifest.json"
        manifest.parent.mkdir(parents=True)
        present = {"Parotid": case == "c1", "Thyroid": False, "Lens": False, "GTVp": True}
        labels = {n: {"present": p, "voxels": voxels[n] if p else 0} for n, p in present.items()}
        manifest.write_text(json.dumps({"case_id": case, "labels": labels}))
        truth[case] = voxels
    names = dictionary(tmp_path, ["Parotid", "Thyroid", "Lens", "GTVp"])
    config = EvaluateConfig(
        reference=tmp_path / "labelsTs",
        prediction=tmp_path / "pred",
        out=tmp_path / "out",
        dictionary=names,
        workers=1,
        pseudolabels=tmp_path / "pseudolabels",
    )
    return config, truth


def test_the_label_sources_over_the_whole_cohort(tmp_path: Path) -> None:
    """Where every label's reference came from in every pseudo-labelled case, training cases included (a record
    without a test prediction), in the summary and as the report's table of sources."""
    config, _ = provenance_run(tmp_path)
    training = tmp_path / "pseudolabels" / "c3" / "pseudolabel.json"  # a training case: no test prediction
    training.parent.mkdir()
    training.write_text(
        json.dumps({"sources": {"Parotid": "rtstruct", "Thyroid": None, "Lens": None, "GTVp": "rtstruct"}})
    )
    evaluate(config)
    sources = json.loads((tmp_path / "out" / "summary.json").read_text())["label_sources"]
    assert sources == {
        "cases": 3,
        "labels": {
            "Parotid": {"manual": 2, "totalsegmentator": 1},
            "Thyroid": {"totalsegmentator": 2, "none": 1},
            "Lens": {"none": 3},
            "GTVp": {"manual": 3},
        },
    }
    blocks = label_source_blocks(sources, stand_in=True)
    totals, per_label = [b for b in blocks if isinstance(b, Table)]
    assert totals.rows == [["manual contour", "2", "5"], ["TotalSegmentator", "2", "3"], ["body mask", "0", "0"],
                           ["no source", "2", "4"]]  # fmt: skip
    assert per_label.rows[0] == ["Parotid", "2", "1", "0", "0"] and [r[0] for r in per_label.rows] == [
        "Parotid", "Thyroid", "GTVp"
    ]  # fmt: skip
    assert blocks[-1].text == "No source in any case (1 labels): Lens."
    assert "STAND-IN" in blocks[1].text


def test_reference_provenance_per_label_and_separate_tables(tmp_path: Path) -> None:
    config, _ = provenance_run(tmp_path)
    evaluate(config)
    source = {(r["case"], r["name"]): r["reference"] for r in rows(tmp_path / "out" / "per_case.csv")}
    assert source[("c1", "Parotid")] == "manual" and source[("c2", "Parotid")] == "totalsegmentator"
    assert source[("c1", "Thyroid")] == source[("c2", "Thyroid")] == "totalsegmentator"
    assert source[("c1", "GTVp")] == source[("c2", "GTVp")] == "manual"
    assert source[("c2", "Lens")] == ""  # a false positive of a label with no reference anywhere
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    groups = {g: {r["name"]: r for r in v["labels"]} for g, v in summary["groups"].items()}
    assert set(groups["manual"]) == {"Parotid", "GTVp"} and set(groups["totalsegmentator"]) == {"Parotid", "Thyroid"}
    assert groups["manual"]["Parotid"]["n_reference"] == groups["totalsegmentator"]["Parotid"]["n_reference"] == 1
    assert summary["no_reference"] == [{"name": "Lens", "n_false_positive": 1}]
    per_label = rows(tmp_path / "out" / "per_label.csv")
    columns = list(per_label[0])
    for metric in ("dice", "hd95", "nsd"):  # every mean with its n beside it
        assert columns.index(f"{metric}_n") == columns.index(f"{metric}_mean") + 1
    assert {"n_reference", "n_missed", "n_false_positive"} <= set(columns)
    assert [(r["reference"], r["name"]) for r in per_label] == [
        ("manual", "Parotid"), ("manual", "GTVp"), ("totalsegmentator", "Parotid"),
        ("totalsegmentator", "Thyroid"), ("", "Lens"),
    ]  # fmt: skip
    blocks = label_tables(summary)
    titles = [b.text for b in blocks if isinstance(b, Subheading)]
    assert titles == ["Accuracy against manual contours", "Agreement with TotalSegmentator (pseudo-label references)"]
    tables = [b for b in blocks if isinstance(b, Table)]
    assert tables[0].header[:2] == ["label", "cases"] and "HD95 n" in tables[0].header and "missed" in tables[0].header
    assert [row[0] for row in tables[0].rows] == ["Parotid", "GTVp"]
    assert blocks[-1].text == (
        "No reference in any test case, so in no table: Lens; cases predicting them anyway (false positives): Lens 1."
    )
    assert "HD95" in summary["conventions"]["hd95"] and "Nikolov" in summary["conventions"]["nsd"]


def test_references_must_match_their_records_and_gtvp_must_be_manual(tmp_path: Path) -> None:
    config, _ = provenance_run(tmp_path)
    manifests = EvaluateConfig(**{**config.__dict__, "pseudolabels": None, "converted": tmp_path / "converted"})
    with pytest.raises(ValueError, match=r"differ from their records.*c1/Thyroid: reference 144, record 0"):
        evaluate(manifests)  # the merged maps scored as if they were the manual ones
    record = tmp_path / "pseudolabels" / "c2" / "pseudolabel.json"
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "sources": {**data["sources"], "GTVp": "totalsegmentator:x/y"}}))
    with pytest.raises(ValueError, match="c2: the GTVp reference comes from totalsegmentator"):
        evaluate(config)
    record.unlink()
    with pytest.raises(UserError, match="no record of the reference for 1 case"):
        evaluate(config)


def test_manual_only_run_puts_every_reference_in_the_manual_table(tmp_path: Path) -> None:
    config, truth = provenance_run(tmp_path)
    for case, voxels in truth.items():  # a run without pseudo-labels: the manual map is the reference
        manifest = tmp_path / "converted" / "cases" / case / "manifest.json"
        labels = {n: {"present": bool(v), "voxels": v} for n, v in voxels.items()}
        manifest.write_text(json.dumps({"case_id": case, "labels": labels}))
    evaluate(EvaluateConfig(**{**config.__dict__, "pseudolabels": None, "converted": tmp_path / "converted"}))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(summary["groups"]) == ["manual"]
    assert [r["name"] for r in summary["groups"]["manual"]["labels"]] == ["Parotid", "Thyroid", "GTVp"]
    assert "conversion manifests" in summary["reference_records"]


def test_dice_equals_nnunets_compute_metrics_on_folder(tmp_path: Path) -> None:
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    rng = np.random.default_rng(0)
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    for n in range(4):
        ref = np.zeros((24, 40, 40), np.uint8)
        for label in range(1, 6):
            ref |= (sphere(ref.shape, tuple(rng.uniform(8, 30, 3)), rng.uniform(2, 9), (2.0, 1.0, 1.0)) * label).astype(
                np.uint8
            )  # type: ignore[arg-type]
        pred = np.where(rng.random(ref.shape) < 0.05, rng.integers(0, 8, ref.shape), ref).astype(np.uint8)
        pred = np.roll(pred, n, axis=2)
        write(ref, ref_dir / f"case{n}.nii.gz", (2.0, 1.0, 1.0))
        write(pred, pred_dir / f"case{n}.nii.gz", (2.0, 1.0, 1.0))
    names = dictionary(tmp_path, [f"L{i}" for i in range(1, 8)])
    evaluate(EvaluateConfig(reference=ref_dir, prediction=pred_dir, out=tmp_path / "ours", dictionary=names, workers=1))
    theirs = compute_metrics_on_folder(
        str(ref_dir),
        str(pred_dir),
        str(tmp_path / "theirs.json"),
        SimpleITKIO(),
        ".nii.gz",
        list(range(1, 8)),
        num_processes=1,
    )
    ours = {(r["case"], int(r["label"])): r["dice"] for r in rows(tmp_path / "ours" / "per_case.csv")}
    compared = 0
    for case in theirs["metric_per_case"]:
        name = Path(case["prediction_file"]).name.removesuffix(".nii.gz")
        for label, values in case["metrics"].items():
            expected = values["Dice"]
            mine = ours[(name, int(label))]
            if isinstance(expected, float) and math.isnan(expected):
                assert mine == ""
            else:
                assert float(mine) == pytest.approx(expected, abs=1e-6)
                compared += 1
    assert compared >= 20
    summary = json.loads((tmp_path / "ours" / "summary.json").read_text())
    assert summary["absent_label_policy"] and summary["reference_records"] == "none given"
    assert sum(len(g["labels"]) for g in summary["groups"].values()) + len(summary["no_reference"]) == 7


def test_structures_never_predicted_are_told_apart_from_those_at_the_resolution_limit() -> None:
    def label(name: str, missed: int) -> dict[str, Any]:
        dice = 0.0 if missed else 0.9
        return {"name": name, "n_reference": 3, "n_missed": missed, "n_false_positive": 0, "dice_mean": dice}

    labels = [label("Plexus", 3), label("Lens", 3), label("Parotid", 0), label("Cord", 2)]
    for row in labels:
        row.update(dice_median=row["dice_mean"], dice_std=0.0, hd95_mean=None, hd95_n=0, nsd_mean=None)
    group = {"title": "Accuracy against manual contours", "average_dice": 0.2, "average_dice_n_labels": 4}
    summary = {"conventions": {}, "groups": {"manual": {**group, "labels": labels}}, "no_reference": []}
    sizes = {"Plexus": (2.0, 200.0), "Lens": (0.1, 12.0), "Parotid": (10.0, 800.0), "Cord": (7.0, 560.0)}
    blocks = label_tables(summary, sizes)
    (table,) = [b for b in blocks if isinstance(b, Table)]
    notes = {row[0]: row[-1] for row in table.rows}
    assert notes == {"Parotid": "", "Plexus": "never predicted", "Lens": "resolution limit", "Cord": ""}
    texts = [b.text for b in blocks if isinstance(b, Paragraph)]
    assert any(
        t.startswith("Never predicted in any test case although above the resolution limit (Plexus)") for t in texts
    )
    assert any("(Lens)" in t and "resolution limit" in t for t in texts)


def test_lesions_are_counted_one_by_one_beside_the_per_case_detection(tmp_path: Path) -> None:
    """A second primary missed and a far speck predicted: the case counts as detected, the lesions say 1 of 2
    found and one false-positive component; HD95 and NSD get their medians and interquartile ranges."""
    shape = (10, 30, 30)
    primary, second = (slice(1, 5), slice(2, 10), slice(2, 10)), (slice(5, 9), slice(18, 26), slice(18, 26))
    reference = box(shape, *primary) + box(shape, *second)
    prediction = box(shape, *primary)
    prediction[0, 29, 29] = 1  # a one-voxel speck far from both
    other = box(shape, slice(2, 6), slice(5, 15), slice(5, 15))
    for case, ref, pred in (("a", reference, prediction), ("b", other, other)):
        write(ref, tmp_path / "ref" / f"{case}.nii.gz", (2.0, 1.0, 1.0))
        write(pred, tmp_path / "pred" / f"{case}.nii.gz", (2.0, 1.0, 1.0))
    config = EvaluateConfig(reference=tmp_path / "ref", prediction=tmp_path / "pred", out=tmp_path / "out",
                            dictionary=dictionary(tmp_path, ["GTVp", "Larynx"]))  # fmt: skip
    evaluate(config)
    by_case = {(r["case"], r["name"]): r for r in rows(tmp_path / "out" / "per_case.csv")}
    a = by_case[("a", "GTVp")]
    assert (a["lesions"], a["lesions_found"], a["false_positive_components"], a["false_positive_ml"]) == (
        "2",
        "1",
        "1",
        "0.002",
    )
    assert by_case[("a", "Larynx")]["lesions"] == ""  # counted for the tumour only
    gtvp = json.loads((tmp_path / "out" / "summary.json").read_text())["gtvp"]
    assert gtvp["detection_rate"] == 1.0  # per case: both cases detected
    assert gtvp["lesion_detection"] == {
        "lesions": 3, "found": 2, "missed": 1, "rate": pytest.approx(2 / 3, abs=1e-6),
        "false_positive_components": 1, "false_positive_ml": 0.002, "cases_with_false_positive_components": 1,
    }  # fmt: skip
    assert gtvp["hd95"]["n"] == gtvp["nsd"]["n"] == 2
    low, high = gtvp["hd95"]["iqr"]
    assert low <= gtvp["hd95"]["median"] <= high and high > 10  # the missed second primary's distance
