"""How the STAND-IN builder trains: the network a group gets, where its patches put the organs, and the steps it
refuses to take."""

from __future__ import annotations

import numpy as np
import pytest

from tsretrain.totalseg.models import models_for
from tsretrain.totalseg.standins import ORGANS, SIDES, Group, Prepared, _patch, _plans, groups, train

CRANIOFACIAL = next(m for m in models_for(["craniofacial_structures"]) if m.task == "craniofacial_structures")
GLANDS = next(m for m in models_for(["head_glands_cavities"]) if m.task == "head_glands_cavities")


def _architecture(group: Group) -> dict[str, object]:
    plans = _plans(group.models[0], group.network, {"mean": 0.0, "std": 1.0}, [200, 200, 200])
    configuration = plans["configurations"][group.models[0].configuration]
    arch: dict[str, object] = configuration["architecture"]["arch_kwargs"]
    return {"patch": configuration["patch_size"], **arch}


def test_a_group_that_tells_left_from_right_gets_the_network_that_sees_far_enough() -> None:
    (sided,) = groups([GLANDS], {"eye_left", "eye_right", "parotid_gland_left"})
    (one_side,) = groups([GLANDS], {"eye_left", "parotid_gland_right"})  # no pair: nothing to tell apart
    (organs,) = groups([CRANIOFACIAL], {"mandible", "skull"})
    assert sided.sided and sided.network == SIDES
    assert not one_side.sided and one_side.network == ORGANS
    assert not organs.sided and organs.network == ORGANS
    wide, small = _architecture(sided), _architecture(organs)
    assert wide["patch"] == list(SIDES.patch) and wide["features_per_stage"] == [8, 16, 32, 64]
    assert wide["n_stages"] == 4 and wide["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 3
    assert small["patch"] == list(ORGANS.patch) and small["n_stages"] == 3


def test_the_patch_is_cut_to_small_data_as_a_multiple_of_the_networks_stride() -> None:
    assert SIDES.patch_size([12, 300, 41]) == [8, 64, 40]
    assert ORGANS.patch_size([3, 300, 300]) == [4, 48, 48]


def _one_voxel_case(shape: tuple[int, int, int], voxel: tuple[int, int, int]) -> Prepared:
    seg = np.zeros((1, *shape), dtype=np.int16)
    seg[(0, *voxel)] = 1
    data = np.arange(seg.size, dtype=np.float32).reshape(seg.shape)  # every voxel its own value
    flat = np.flatnonzero(seg.reshape(-1))
    return Prepared([data], [seg], [{1: flat}], [-1.0], {}, list(shape), {})


def test_a_class_patch_is_centred_on_its_voxel_with_its_own_image_and_padded_with_air() -> None:
    """Two in three draws are for a class: the patch is centred on one of its voxels (nnU-Net's oversampling), with
    the image and labels of the same voxels; outside the data it holds the case's air value and background."""
    prepared = _one_voxel_case((40, 40, 40), (20, 17, 23))
    value = prepared.data[0][0, 20, 17, 23]
    rng = np.random.default_rng(0)
    drawn = [_patch(prepared, rng, [8, 8, 8]) for _ in range(300)]
    centred = [data for data, seg in drawn if seg[0, 4, 4, 4] == 1]
    assert len(centred) > 150 and all(data[0, 4, 4, 4] == value for data in centred)
    assert sum(int(seg.any()) for _, seg in drawn) - len(centred) < 10  # random draws seldom meet one voxel
    data, seg = _patch(_one_voxel_case((40, 40, 40), (0, 0, 0)), np.random.default_rng(3), [8, 8, 8])
    padded = data[0] == -1.0
    assert padded.any() and not seg[0][padded].any()


def test_a_step_whose_loss_is_not_finite_is_not_taken() -> None:
    """NaN in a batch gives a NaN loss and gradient: the step is skipped and recorded as NaN, the weights stay
    finite and the next finite batch trains."""
    import torch

    group = Group([CRANIOFACIAL], ["background", "skull"])
    shape = [16, 24, 24]
    seg = np.zeros((1, *shape), dtype=np.int16)
    seg[0, 4:12, 6:18, 6:18] = 1
    plans = _plans(CRANIOFACIAL, group.network, {"mean": 0.0, "std": 1.0}, shape)
    voxels = {1: np.flatnonzero(seg.reshape(-1))}
    poisoned = Prepared([np.full(seg.shape, np.nan, np.float32)], [seg], [voxels], [0.0], {}, shape, plans)
    network, losses = train(group, poisoned, 3, 0)
    assert np.isnan(losses).all()
    assert all(torch.isfinite(value).all() for value in network.state_dict().values())
    clean = Prepared([seg.astype(np.float32)], [seg], [voxels], [0.0], {}, shape, plans)
    _, losses = train(group, clean, 3, 0)
    assert np.isfinite(losses).all()


@pytest.mark.parametrize("names", [["eye_left", "eye_right"], ["optic_nerve_right", "optic_nerve_left", "skull"]])
def test_sidedness_needs_both_sides(names: list[str]) -> None:
    assert Group([GLANDS], ["background", *names]).sided
    assert not Group([GLANDS], ["background", *[n for n in names if not n.endswith("_right")]]).sided
