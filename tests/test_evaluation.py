"""Metrics on shapes with known answers, the absent-label policy, GTVp statistics, and agreement with nnU-Net."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from tsretrain.evaluation.evaluate import EvaluateConfig, evaluate
from tsretrain.evaluation.metrics import case_metrics
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


def write(array: np.ndarray, path: Path, spacing: tuple[float, float, float]) -> None:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing[::-1])
    sitk.WriteImage(image, str(path))


def test_dice_equals_nnunets_compute_metrics_on_folder(tmp_path: Path) -> None:
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    rng = np.random.default_rng(0)
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
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
    dictionary = tmp_path / "d.yaml"
    dictionary.write_text(
        "name: t\nversion: '1'\nlabels:\n"
        + "".join(f"  - {{id: {i}, name: L{i}, sources: [rtstruct: [l{i}]]}}\n" for i in range(1, 8))
    )
    evaluate(
        EvaluateConfig(
            reference=ref_dir, prediction=pred_dir, out=tmp_path / "ours", dictionary=str(dictionary), workers=1
        )
    )
    theirs = compute_metrics_on_folder(
        str(ref_dir),
        str(pred_dir),
        str(tmp_path / "theirs.json"),
        SimpleITKIO(),
        ".nii.gz",
        list(range(1, 8)),
        num_processes=1,
    )
    ours = {
        (r.split(",")[0], int(r.split(",")[1])): r.split(",")[4]
        for r in (tmp_path / "ours" / "per_case.csv").read_text().splitlines()[1:]
    }
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
    assert summary["absent_label_policy"] and len(summary["labels"]) == 7
