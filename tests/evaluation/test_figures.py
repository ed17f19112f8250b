"""The report's figures cannot be misread: n per organ, never-predicted apart from no data, integer count axes,
quantile labels outside the bars, the review slice where the tumour's error is largest, with orientation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
import SimpleITK as sitk

from tsretrain.evaluation.report import figures
from tsretrain.evaluation.report.training import convergence


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures a call drew (kept instead of closed)."""
    kept: list[Any] = []
    monkeypatch.setattr(plt, "close", kept.append)
    return kept


def _texts(figure: Any) -> list[str]:
    return [t.get_text() for t in figure.findobj(plt.Text)]


def test_per_organ_dice_names_n_and_tells_never_predicted_from_no_reference(drawn: list[Any], tmp_path: Path) -> None:
    rows = [{"name": "Larynx", "status": "both", "dice": "0.9"}, {"name": "Larynx", "status": "both", "dice": "0.8"}]
    rows += [{"name": "Lips", "status": "missed", "dice": "0.0"}, {"name": "Lips", "status": "missed", "dice": "0.0"}]
    rows += [{"name": "Cochlea_L", "status": "absent", "dice": ""}]
    figures.per_organ_dice(rows, tmp_path / "organs.png")
    texts = _texts(drawn[0])
    assert "Larynx (n=2)" in texts and "Lips (n=2)" in texts
    assert "never predicted" in texts and "No reference in any test case: Cochlea_L" in texts


def test_gtvp_histogram_counts_in_whole_cases_and_labels_quantiles_above_the_bars(
    drawn: list[Any], tmp_path: Path
) -> None:
    figures.gtvp_distribution([0.5, 0.9, 0.92], {"25%": 0.7, "50%": 0.9, "75%": 0.91}, tmp_path / "gtvp.png")
    (ax,) = drawn[0].axes
    assert all(float(t).is_integer() for t in ax.get_yticks())
    labels = [t for t in ax.texts if t.get_text() in ("25%", "50%", "75%")]
    assert len(labels) == 3 and all(t.get_position()[1] > 1 for t in labels)  # above the plot area
    assert "count" in ax.get_ylabel()


def _volume(array: np.ndarray, path: Path, direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 2.5))
    image.SetOrigin((0.0, 0.0, -40.0))
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


def test_the_review_shows_the_slice_of_largest_error_with_orientation_scale_and_height(
    drawn: list[Any], tmp_path: Path
) -> None:
    ct = np.full((10, 40, 40), 40, np.int16)
    reference = np.zeros(ct.shape, np.uint8)
    reference[2:5, 10:20, 10:20] = 1  # the most tumour: slices 2-4
    prediction = reference.copy()
    prediction[7, 25:35, 25:35] = 1  # a false positive far away: the largest error on slice 7
    paths = [_volume(a, tmp_path / f"{n}.nii.gz") for n, a in (("ct", ct), ("ref", reference), ("pred", prediction))]
    figures.case_review(*paths, 1, "case", tmp_path / "review.png")
    texts = _texts(drawn[0])
    assert "reference, axial z = -22.5 mm" in texts  # slice 7: -40 + 7 x 2.5
    assert {"R", "L", "A", "P", "10 mm", "missed (reference only)", "false positive (prediction only)"} <= set(texts)
    flipped = _volume(ct, tmp_path / "flipped.nii.gz", (-1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert figures._orientation(sitk.ReadImage(str(flipped)))[:2] == ("L", "R")


def test_convergence_is_read_from_the_curve() -> None:
    rising = {"ema_fg_dice": [0.1 * e for e in range(10)]}
    assert convergence(rising).startswith("not converged")
    flat = {"ema_fg_dice": [0.5, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]}
    assert convergence(flat).startswith("flat at the end (best epoch 2 of 9")
