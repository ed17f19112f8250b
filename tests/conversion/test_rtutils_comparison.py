"""On the same synthetic case, our label maps are closer to the analytic truth than rt-utils' masks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tsretrain.conversion.geometry import VolumeGeometry
from tsretrain.conversion.rtstruct import roi_contours, slice_masks
from tsretrain.synth.cohort import SynthConfig, generate
from tsretrain.synth.layouts import series_folders
from tsretrain.synth.phantom import truth_mask
from tsretrain.synth.truth import load_truth

rt_utils = pytest.importorskip("rt_utils")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def test_our_dice_beats_rt_utils(tmp_path: Path) -> None:
    generate(
        SynthConfig(
            out=tmp_path,
            cases=1,
            seed=11,
            layout="classic",
            rows=128,
            columns=128,
            slices=40,
            pixel_spacing=1.5,
            roi_variants=False,
        )
    )
    phantom, spec = load_truth(tmp_path / "truth" / "RADCURE-0001.json")
    ct_dir, rs_path = series_folders(tmp_path / "dicom" / "RADCURE-0001")
    theirs = rt_utils.RTStructBuilder.create_from(dicom_series_path=str(ct_dir), rt_struct_path=str(rs_path))

    ds = pydicom.dcmread(rs_path)
    geometry = VolumeGeometry(
        (spec.slices, spec.rows, spec.columns),
        tuple(spec.slice_position(0)),  # type: ignore[arg-type]
        (spec.pixel_spacing[1], spec.pixel_spacing[0], spec.slice_thickness),
        tuple(spec.rotation().reshape(-1)),
    )
    names = [s.roi_name for s in phantom.structures if s.organ]
    contours = roi_contours(ds, geometry, set(names))
    ours_total, theirs_total = [], []
    for structure in phantom.structures:
        if not structure.organ:
            continue
        truth = truth_mask(replace(phantom, structures=(structure,)), spec, structure.organ)
        if not truth.any():
            continue  # outside the scanned slab
        ours = np.zeros(geometry.shape, dtype=bool)
        for k, mask in slice_masks(contours[structure.roi_name], spec.rows, spec.columns):
            ours[k] = mask
        their_mask = np.transpose(theirs.get_roi_mask_by_name(structure.roi_name), (2, 0, 1))
        ours_total.append(dice(ours, truth))
        theirs_total.append(dice(their_mask, truth))
    ours_mean, theirs_mean = float(np.mean(ours_total)), float(np.mean(theirs_total))
    assert ours_mean > theirs_mean
    assert ours_mean > 0.99
    assert len(ours_total) >= 15
    assert min(o - t for o, t in zip(ours_total, theirs_total, strict=True)) > -1e-9, (ours_total, theirs_total)
