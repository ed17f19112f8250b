"""TotalSegmentator's own code in the pseudolabel stage, on STAND-IN weights built in its exact layout.

The weights are built once per test run (``standins``: two phantoms, a short training) and shared by this module
and the Argo harness; the stage then runs TotalSegmentator's ``totalsegmentator()`` for every task of
radcure-ts90, crop model included, on a converted synthetic case.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from totalsegmentator.map_tasks_config import TASK_CONFIGS
from totalsegmentator.map_to_binary import class_map

from tsretrain.dataset.pseudolabel import PseudolabelConfig, PseudolabelError, pseudolabel
from tsretrain.errors import UserError
from tsretrain.labels.dictionary import load_dictionary
from tsretrain.run_files import CASE_MANIFEST, image_name, label_name
from tsretrain.synth.phantom import SKULL_HU, tissue_mask
from tsretrain.synth.truth import load_truth
from tsretrain.totalseg.models import CROP_TASK_ID, models_for, task_models
from tsretrain.totalseg.standins import FOLDER_NOTE, MARKER, is_standin
from tsretrain.training.precision import PRECISION_VARIABLE

TS90 = load_dictionary("radcure-ts90")
TASKS = TS90.pseudolabel_tasks()
SET_BY_THE_STAGE = ("TOTALSEG_WEIGHTS_PATH", "TOTALSEG_HOME_DIR", "nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


@contextlib.contextmanager
def own_environment(home: Path) -> Iterator[None]:
    """The stage points TotalSegmentator (and through it nnU-Net) at the weights through the environment, as
    in its pod: undone after, so that later tests in this process see their own; its config lives in ``home``."""
    saved = {name: os.environ.get(name) for name in (*SET_BY_THE_STAGE, "HOME")}
    os.environ["HOME"] = str(home)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(autouse=True)
def _environment(tmp_path: Path) -> Iterator[None]:
    with own_environment(tmp_path / "home"):
        yield


def test_the_catalogue_is_totalsegmentators_own() -> None:
    models = {m.task_id: m for m in models_for(TASKS)}
    assert set(models) == {775, 776, 777, 778, 779, 351, 115, CROP_TASK_ID}
    glands = models[775]
    assert glands.model_folder.as_posix() == (
        "Dataset775_head_glands_cavities_492subj/nnUNetTrainer_DASegOrd0_NoMirroring__nnUNetPlans__3d_fullres_high"
    )
    assert glands.spacing_xyz == (0.75, 0.75, 1.0) and glands.classes == class_map["head_glands_cavities"]
    assert models[CROP_TASK_ID].trainer == "nnUNetTrainer_4000epochs_NoMirroring"
    assert models[CROP_TASK_ID].spacing_xyz == (6.0, 6.0, 6.0)
    parts = [m.classes for m in task_models("headneck_muscles") if m.task_id in (778, 779)]
    assert sorted(n for p in parts for n in p.values()) == sorted(class_map["headneck_muscles"].values())
    for task in TASKS:  # every task crops with the 6 mm model
        assert TASK_CONFIGS[task].get("crop") and task_models(task)[-1].task_id == CROP_TASK_ID


def test_trainers_resolve_with_totalsegmentator_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """TotalSegmentator puts its lookup into nnU-Net's predictor when imported; tsretrain's resolver replaces it and
    knows TotalSegmentator's own trainers, nnU-Net's variants (without importing those that cannot load here) and
    refuses an unknown name in one error."""
    import nnunetv2.inference.predict_from_raw_data as predictor
    import totalsegmentator.nnunet as ts_nnunet
    from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerDAOrd0 import (
        nnUNetTrainer_DASegOrd0_NoMirroring,
    )

    from tsretrain.training import discovery

    discovery.install()
    lookup = predictor.recursive_find_trainer_class_by_name
    assert lookup("nnUNetTrainerSkeletonRecall") is ts_nnunet.custom_trainers["nnUNetTrainerSkeletonRecall"]
    assert lookup("nnUNetTrainer_DASegOrd0_NoMirroring") is nnUNetTrainer_DASegOrd0_NoMirroring
    walks = []
    walk = discovery._walk_nnunet_trainers
    monkeypatch.setattr(discovery, "_walk_nnunet_trainers", lambda name: walks.append(name) or walk(name))
    with pytest.raises(UserError, match="unknown trainer 'nnUNetTrainerNoSuchOne'"):
        lookup("nnUNetTrainerNoSuchOne")
    assert walks == ["nnUNetTrainerNoSuchOne"]  # one search, no lookup calling back into another


def test_standins_are_in_totalsegmentators_layout_and_marked(standins: Path) -> None:
    record = json.loads((standins / MARKER).read_text())
    assert record["stand_in"] is True and "NOT TotalSegmentator's weights" in record["note"]
    results = standins / "nnunet" / "results"
    assert is_standin(standins) and is_standin(results)
    for model in models_for(TASKS):
        folder = results / model.model_folder
        dataset = json.loads((folder / "dataset.json").read_text())
        assert {int(v): k for k, v in dataset["labels"].items() if v} == model.classes
        assert "STAND-IN" in dataset["description"]
        plans = json.loads((folder / "plans.json").read_text())
        assert plans["configurations"][model.configuration]["spacing"] == list(reversed(model.spacing_xyz))
        training = next(t for t in record["trainings"] if model.folder in t["models"])
        arch = plans["configurations"][model.configuration]["architecture"]["arch_kwargs"]
        assert arch["features_per_stage"] == training["network"]["features"]
        assert plans["configurations"][model.configuration]["patch_size"] == training["network"]["patch"]
        checkpoint = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        assert checkpoint["trainer_name"] == model.trainer
        assert checkpoint["init_args"]["configuration"] == model.configuration
        head = next(v for k, v in checkpoint["network_weights"].items() if k.endswith("seg_layers.0.weight"))
        assert head.shape[0] == len(model.classes) + 1
        assert (results / model.folder / FOLDER_NOTE).is_file()
        assert record["models"][model.folder]["model_folder"] == model.model_folder.as_posix()
    trained = record["models"]["Dataset775_head_glands_cavities_492subj"]["classes_with_phantom_truth"]
    assert {"eye_left", "parotid_gland_right", "optic_nerve_left"} <= set(trained)
    for model in record["models"].values():  # each model's fit: the classes it learned from phantom truth
        assert set(model["fit_dice"]) <= set(model["classes_with_phantom_truth"])
    skull = [training["fit_dice"]["skull"] for training in record["trainings"] if "skull" in training["fit_dice"]]
    assert len(skull) == 3 and max(skull) > 0.6  # the fine models' skull: 0.71 and 0.84 after 150 steps, measured
    networks = {round(t["spacing_xyz"][0], 2): t["network"]["features"] for t in record["trainings"]}
    sides, organs = [8, 16, 32, 64], [4, 8, 16]  # the models that learn left/right pairs see farther
    assert networks == {0.75: sides, 0.47: sides, 6.0: organs, 0.5: organs}


class Echo(torch.nn.Module):
    """A network whose logits name the label its input holds (the input is a label map), ``moved`` labels
    predicted as ``moved[label]``."""

    def __init__(self, classes: int, moved: dict[int, int]) -> None:
        super().__init__()
        self.classes, self.moved = classes, moved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        labels = x[:, 0].round().long()
        for old, new in self.moved.items():
            labels[labels == old] = new
        return 10.0 * torch.nn.functional.one_hot(labels, self.classes).permute(0, 4, 1, 2, 3).float()


@pytest.mark.parametrize(
    ("moved", "expected"),
    [({}, {"skull": 1.0, "brain": 1.0}), ({1: 2}, {"skull": 0.0, "brain": round(2 * 96 / (96 + 96 + 96), 3)})],
)
def test_the_fit_is_the_dice_of_what_nnunets_sliding_window_predicts(
    moved: dict[int, int], expected: dict[str, float]
) -> None:
    """On a phantom whose image is its label map: a network predicting what it sees fits every class; one calling
    the skull brain fits no skull, and brain at the Dice of brain against brain and skull."""
    from tsretrain.totalseg.standins import ORGANS, Group, Prepared, _plans, fit

    model = models_for(["craniofacial_structures"])[-1]
    seg = np.zeros((1, 16, 24, 24), dtype=np.int16)
    seg[0, 2:6, 4:10, 4:8] = 1  # skull: 96 voxels
    seg[0, 8:12, 10:16, 12:16] = 2  # brain: 96 voxels
    plans = _plans(model, ORGANS, {"mean": 0.0, "std": 1.0}, [16, 24, 24])
    prepared = Prepared([seg.astype(np.float32)], [seg], [{}], [0.0], {}, [16, 24, 24], plans)
    assert fit(Echo(3, moved), prepared, Group([model], ["background", "skull", "brain"])) == expected


@pytest.fixture(scope="module")
def pseudolabelled(standins: Path, cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One regular synthetic patient converted with radcure-ts90 and pseudo-labelled through TotalSegmentator."""
    from tsretrain.conversion.convert import ConvertConfig, convert

    root = tmp_path_factory.mktemp("ts90")
    patient = sorted((cohort / "dicom").glob("RADCURE-*"))[0]
    (root / "dicom").mkdir()
    shutil.copytree(patient, root / "dicom" / patient.name)
    convert(ConvertConfig(input=root / "dicom", out=root / "converted", dictionary="radcure-ts90", workers=1))
    with own_environment(root / "home"):
        pseudolabel(
            PseudolabelConfig(converted=root / "converted", out=root / "pseudo", device="cpu", weights=str(standins))
        )
    return root


def test_every_ts90_task_runs_through_totalsegmentator(pseudolabelled: Path, cohort: Path) -> None:
    (case_dir,) = [p.parent for p in (pseudolabelled / "converted" / "cases").glob(f"*/{CASE_MANIFEST.basename}")]
    case = case_dir.name
    ct = sitk.ReadImage(str(case_dir / image_name(case)))
    out = pseudolabelled / "pseudo" / case
    record = json.loads((out / "pseudolabel.json").read_text())
    assert record["stand_in"] is True
    assert set(record["tasks"]) == set(TASKS)
    for task in TASKS:
        assert record["tasks"][task]["seconds"] > 0 and record["tasks"][task]["peak_rss_mib"] > 0
        image = sitk.ReadImage(str(out / "tasks" / f"{task}.nii.gz"))
        assert image.GetSize() == ct.GetSize()
        assert np.allclose(image.GetOrigin(), ct.GetOrigin()) and np.allclose(image.GetSpacing(), ct.GetSpacing())
        assert set(np.unique(sitk.GetArrayFromImage(image))) <= {0, *class_map[task]}
    merged = sitk.GetArrayFromImage(sitk.ReadImage(str(out / label_name(case))))
    assert merged.shape == sitk.GetArrayFromImage(ct).shape
    sources = record["sources"]
    assert sources["GTVp"] == "rtstruct" and sources["parotid_gland_left"] == "rtstruct"  # manual wins
    assert sources["skull"].startswith("totalsegmentator:")  # no manual skull: TotalSegmentator's
    # the stand-ins learned the phantom's skull: what the merged map calls skull lies on it (TotalSegmentator's
    # crop, resampling and orientation handling all in the way); the short training finds only part of it
    phantom, spec = load_truth(cohort / "truth" / f"{case}.json")
    truth = tissue_mask(phantom, spec, SKULL_HU)
    skull = merged == TS90.by_name("skull").id
    assert skull.sum() > 500 and (skull & truth).sum() / skull.sum() > 0.6  # measured 0.79-0.97


def test_weights_of_another_class_map_fail_in_one_line(standins: Path, tmp_path: Path, converted: Path) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(standins, weights)
    dataset = next((weights / "nnunet" / "results").glob("Dataset775_*/*/dataset.json"))
    labels = json.loads(dataset.read_text())
    labels["labels"]["eye_left"], labels["labels"]["eye_right"] = labels["labels"]["eye_right"], 1
    dataset.write_text(json.dumps(labels))
    config = PseudolabelConfig(converted=converted, out=tmp_path / "out", device="cpu", weights=str(weights))
    with pytest.raises(PseudolabelError, match=r"Dataset775_head_glands_cavities_492subj label 1 as 'eye_right'"):
        pseudolabel(config)
    assert not (tmp_path / "out" / "RADCURE-0001").exists()


def test_a_class_totalsegmentator_lacks_fails_in_one_line(standins: Path, tmp_path: Path, converted: Path) -> None:
    text = (resources.files("tsretrain.labels") / "dictionaries" / "radcure-ts90.yaml").read_text()
    custom = tmp_path / "ts90-typo.yaml"
    custom.write_text(
        text.replace("{task: head_glands_cavities, class: eye_left}", "{task: head_glands_cavities, class: eye_lft}", 1)
    )
    config = PseudolabelConfig(
        converted=converted, out=tmp_path / "out", device="cpu", weights=str(standins), dictionary=str(custom)
    )
    with pytest.raises(UserError, match=r"head_glands_cavities/eye_lft.*did you mean eye_left\?") as caught:
        pseudolabel(config)
    assert "\n" not in str(caught.value)


def test_totalsegmentators_predictions_run_in_process_with_its_own_result(
    standins: Path, pseudolabelled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage runs TotalSegmentator's predictions as nnU-Net's own sequential prediction (no preprocessing
    process, manager or export pool started per prediction); in float32 the task's label map is the one
    TotalSegmentator's default path (its processes) makes of the same CT, under bfloat16 autocast nearly so."""
    import nnunetv2.inference.predict_from_raw_data as predictor_module
    from totalsegmentator.python_api import totalsegmentator

    from tsretrain.dataset import pseudolabel as stage

    (case_dir,) = [p.parent for p in (pseudolabelled / "converted" / "cases").glob(f"*/{CASE_MANIFEST.basename}")]
    started = []
    iterator = predictor_module.preprocessing_iterator_fromfiles
    monkeypatch.setattr(
        predictor_module,
        "preprocessing_iterator_fromfiles",
        lambda *args, **kwargs: started.append(1) or iterator(*args, **kwargs),
    )
    stage.use_weights(standins, tmp_path / "home" / ".totalsegmentator")
    task, ct = "craniofacial_structures", case_dir / image_name(case_dir.name)  # its skull is learned: not empty
    ours, theirs = tmp_path / "ours.nii.gz", tmp_path / "theirs.nii.gz"
    monkeypatch.setenv(PRECISION_VARIABLE, "fp32")
    stage.run_task(ct, task, ours, "cpu")
    assert not started  # no preprocessing iterator (its processes) in the stage
    totalsegmentator(ct, theirs, ml=True, task=task, device="cpu", quiet=True, nr_thr_saving=1)
    assert started  # TotalSegmentator's own path: one per prediction
    array, own = (sitk.GetArrayFromImage(sitk.ReadImage(str(path))) for path in (ours, theirs))
    assert array.any() and np.array_equal(array, own)
    monkeypatch.setenv(PRECISION_VARIABLE, "bf16")
    stage.run_task(ct, task, ours, "cpu")
    autocast = sitk.GetArrayFromImage(sitk.ReadImage(str(ours)))
    for label in np.unique(own)[1:]:  # each class TotalSegmentator finds, found again under bfloat16
        both = np.count_nonzero((autocast == label) & (own == label))
        assert 2 * both / (np.count_nonzero(autocast == label) + np.count_nonzero(own == label)) > 0.9
