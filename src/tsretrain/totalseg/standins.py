"""STAND-IN TotalSegmentator weights: small nnU-Net v2 models in TotalSegmentator's exact layout, trained briefly on
synthetic phantoms. They are NOT TotalSegmentator's weights and segment nothing but phantoms.

TotalSegmentator's weights cannot be downloaded where tsretrain is built and tested, yet its code must run there.
For every model a dictionary's tasks need (their crop model included) this writes, under ``OUT/nnunet/results``,
the folder TotalSegmentator looks up: ``Dataset<NNN>_<name>/<trainer>__nnUNetPlans__<configuration>/`` with
``dataset.json`` (the task's own class map from ``totalsegmentator.map_to_binary``), ``plans.json`` (the task's
resampling as the target spacing, CT normalisation from the training data's foreground, a small U-Net: 3 stages,
or 4 where the model must tell a left organ from a right one, :class:`Network`) and
``fold_0/checkpoint_final.pth`` (nnU-Net's checkpoint format, trainer name as TotalSegmentator's). Point
``TOTALSEG_HOME_DIR`` (or ``tsretrain pseudolabel --weights``) at ``OUT``.

Training data: seeded phantoms painted on the synthetic cohort's CT grid, taken through TotalSegmentator's own
input path (closest canonical orientation, its resampling to the task's spacing) and nnU-Net's preprocessor,
with the analytic truth of the classes the phantoms have: a dictionary label's phantom organ for the task class
it names (eyes, lenses, optic nerves, parotids, mandible), and the phantom's skull, brain, cord, oesophagus,
cervical vertebrae (15 mm bands) and laryngeal air. Other classes are learned as background. Every folder
carries ``STAND-IN.md`` and the root ``STAND-IN.json`` (what was trained, on what, for how long, and how well: each
class's Dice on the phantoms, :func:`fit`).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tsretrain.conversion.geometry import VolumeGeometry
from tsretrain.conversion.nifti import write_nifti
from tsretrain.labels.dictionary import OrganDictionary, PseudoLabelSource, load_dictionary
from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_text
from tsretrain.synth.phantom import (
    BRAIN_HU,
    SKULL_HU,
    VERTEBRAE_HU,
    Phantom,
    ScanSpec,
    make_phantom,
    tissue_mask,
    truth_mask,
)
from tsretrain.totalseg.models import TaskModel, models_for
from tsretrain.training import precision
from tsretrain.training.pretrained import HEAD
from tsretrain.ui import log, progress
from tsretrain.versions import installed

MARKER = "STAND-IN.json"  # at the root of a stand-in TotalSegmentator home
FOLDER_NOTE = "STAND-IN.md"  # in every model folder
NOTE = (
    "STAND-IN weights made by tsretrain on synthetic phantoms, in TotalSegmentator's layout so that its code runs "
    "offline. They are NOT TotalSegmentator's weights: they segment nothing but tsretrain's phantoms."
)
ABSENT_BIAS = -20.0  # logit of a class the phantoms lack: background always wins over it
VERTEBRA_BAND_MM = 15.0  # cervical vertebrae C1..C7: bands down from the top of the column
MARGIN_MM = 20.0  # training data around the classes a model learns
COLUMN_TOP_W = 45.0

Masks = dict[str, NDArray[np.bool_]]


@dataclass(frozen=True)
class Network:
    """The U-Net a training builds (nnU-Net's PlainConvUNet: features per stage, stride 2 between stages), the
    patch it sees (z, y, x voxels) and its Adam learning rate."""

    patch: tuple[int, int, int]
    features: tuple[int, ...]
    learning_rate: float

    def patch_size(self, median_shape: list[int]) -> list[int]:
        """``patch``, cut to the data where it is smaller (a multiple of the network's total stride)."""
        stride = 2 ** (len(self.features) - 1)
        return [max(stride, min(p, (m // stride) * stride)) for p, m in zip(self.patch, median_shape, strict=True)]


ORGANS = Network((32, 48, 48), (4, 8, 16), 1e-2)
"""For classes that look like nothing else in the phantom (skull, brain, mandible, cord...)."""
SIDES = Network((16, 64, 64), (8, 16, 32, 64), 3e-3)
"""For a group with left/right pairs: the phantom is symmetric, so what tells a left eye from a right one is context
(where the optic nerve runs, which way the skin curves) 20-30 mm away, which a fourth stage reaches (receptive field
~75 voxels, 56 mm at 0.75 mm). In 1000 steps it finds every structure of the 0.75 mm group and tells the optic
nerves' sides apart, but still calls most of both eyes, lenses or parotids by one side (each class's fit in
``STAND-IN.json``); the 3-stage network fitted them at 0-0.24 (``bench/standin_networks.py``). Tried once each (the
0.75 mm group, 1000 steps): a 32 x 64 x 64 or 16 x 64 x 128 patch, 2000 steps, a fifth stage, float32, CE alone,
mirrored patch pairs, SGD: none told those sides apart better, most cost more."""


@dataclass(frozen=True, kw_only=True)
class StandinConfig:
    """Configuration of ``tsretrain standin-weights``."""

    out: Path
    dictionary: str = "radcure-ts90"
    phantoms: int = 2
    iterations: int = 1000
    seed: int = 0


def is_standin(weights: Path) -> bool:
    """Whether a TotalSegmentator home (or its ``nnunet/results``) holds stand-in weights."""
    return (weights / MARKER).is_file() or (weights.parent.parent / MARKER).is_file()


def _vertebrae(phantom: Phantom, spec: ScanSpec) -> Masks:
    column = tissue_mask(phantom, spec, VERTEBRAE_HU)
    w = spec.w_axis()
    masks = {}
    for n in range(1, 8):
        top = COLUMN_TOP_W - (n - 1) * VERTEBRA_BAND_MM
        band = (w <= top) & (w > top - VERTEBRA_BAND_MM)
        masks[f"vertebrae_C{n}"] = column & band[:, None, None]
    return masks


def phantom_classes(phantom: Phantom, spec: ScanSpec, dictionary: OrganDictionary) -> Masks:
    """TotalSegmentator class name -> analytic truth on the scan grid, for the classes the phantom has."""
    organs = sorted({s.organ for s in phantom.structures if s.organ})
    masks: Masks = {}
    for label in dictionary.labels:
        matched = [organ for organ in organs if label.matches(organ)]
        names = [source.cls for source in label.sources if isinstance(source, PseudoLabelSource)]
        if matched and names:
            truth = truth_mask(phantom, spec, matched[0])
            masks |= dict.fromkeys(names, truth)
    masks |= {
        "skull": tissue_mask(phantom, spec, SKULL_HU),
        "brain": tissue_mask(phantom, spec, BRAIN_HU),
        "spinal_cord": truth_mask(phantom, spec, "SpinalCord"),
        "esophagus": truth_mask(phantom, spec, "Esophagus"),
        **_vertebrae(phantom, spec),
    }
    return masks


def _geometry(spec: ScanSpec) -> VolumeGeometry:
    rotation = spec.rotation()
    origin = spec.slice_position(0)
    return VolumeGeometry(
        (spec.slices, spec.rows, spec.columns),
        (float(origin[0]), float(origin[1]), float(origin[2])),
        (spec.pixel_spacing[1], spec.pixel_spacing[0], spec.slice_thickness),
        tuple(float(x) for x in rotation.reshape(-1)),
    )


@dataclass
class Sample:
    """One phantom on the CT grid: its HU volume and the truth of its classes."""

    ct: NDArray[np.float32]
    classes: Masks
    geometry: VolumeGeometry


def make_samples(config: StandinConfig, dictionary: OrganDictionary) -> list[Sample]:
    rng = np.random.default_rng(config.seed)
    spec = ScanSpec()
    samples = []
    for n in range(config.phantoms):
        phantom = make_phantom(f"STANDIN{n}", rng, spelling_variants=False)
        ct = np.stack([phantom.paint_slice(spec, k, rng) for k in range(spec.slices)]).astype(np.float32)
        samples.append(Sample(ct, phantom_classes(phantom, spec, dictionary), _geometry(spec)))
    return samples


def _plans(
    model: TaskModel, network: Network, intensities: dict[str, float], median_shape: list[int]
) -> dict[str, Any]:
    spacing = list(reversed(model.spacing_xyz))  # nnU-Net's plans are z, y, x
    stages = len(network.features)
    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": model.folder.rsplit("/", 1)[-1],
        "plans_name": model.plans,
        "original_median_spacing_after_transp": spacing,
        "original_median_shape_after_transp": median_shape,
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            model.configuration: {
                "data_identifier": f"{model.plans}_{model.configuration}",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": network.patch_size(median_shape),
                "median_image_size_in_voxels": median_shape,
                "spacing": spacing,
                "normalization_schemes": ["CTNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": resampling,
                "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
                "architecture": {
                    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                    "arch_kwargs": {
                        "n_stages": stages,
                        "features_per_stage": list(network.features),
                        "conv_op": "torch.nn.modules.conv.Conv3d",
                        "kernel_sizes": [[3, 3, 3]] * stages,
                        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (stages - 1),
                        "n_conv_per_stage": [2] * stages,
                        "n_conv_per_stage_decoder": [2] * (stages - 1),
                        "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                        "dropout_op": None,
                        "dropout_op_kwargs": None,
                        "nonlin": "torch.nn.LeakyReLU",
                        "nonlin_kwargs": {"inplace": True},
                    },
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                },
                "batch_dice": False,
            }
        },
        "experiment_planner_used": "tsretrain stand-in (ExperimentPlanner layout)",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": intensities},
    }


def _dataset_json(model: TaskModel, cases: int) -> dict[str, Any]:
    labels = {"background": 0} | {name: i for i, name in sorted(model.classes.items())}
    return {
        "name": model.folder.rsplit("/", 1)[-1],
        "description": NOTE,
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": cases,
        "file_ending": ".nii.gz",
    }


def _through_totalsegmentator_input(image: Path, spacing_xyz: tuple[float, ...], order: int, out: Path) -> None:
    """What TotalSegmentator hands nnU-Net: the closest canonical orientation, resampled to the task's spacing."""
    import nibabel as nib
    from totalsegmentator.resampling import change_spacing

    canonical = nib.as_closest_canonical(nib.load(image))
    resampled = change_spacing(canonical, list(spacing_xyz), order=order, dtype=np.int32 if order == 0 else None)
    nib.save(resampled, out)


def _intensities(values: NDArray[np.float32]) -> dict[str, float]:
    return {
        "max": float(values.max()),
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "min": float(values.min()),
        "percentile_00_5": float(np.percentile(values, 0.5)),
        "percentile_99_5": float(np.percentile(values, 99.5)),
        "std": float(values.std()),
    }


@dataclass
class Group:
    """Models trained together: one spacing, the union of their classes the phantoms have (``classes[0]`` is
    background)."""

    models: list[TaskModel]
    classes: list[str]
    network: Network = ORGANS

    @property
    def spacing_xyz(self) -> tuple[float, float, float]:
        return self.models[0].spacing_xyz

    @property
    def sided(self) -> bool:
        """Whether the group learns both classes of a left/right pair (TotalSegmentator's ``*_left``/``*_right``)."""
        return any(name.endswith("_left") and f"{name[: -len('_left')]}_right" in self.classes for name in self.classes)

    def rows(self, model: TaskModel) -> list[int | None]:
        """Per label of the model (background first): its row of the trained head, None for a class the phantoms
        lack."""
        names = [name for _, name in sorted(model.classes.items())]
        return [0] + [self.classes.index(name) if name in self.classes else None for name in names]


def groups(models: list[TaskModel], truth: set[str]) -> list[Group]:
    """Models by spacing; one training per spacing, on the classes that have phantom truth, with ``SIDES`` where
    they hold a left/right pair."""
    by_spacing: dict[tuple[float, float, float], Group] = {}
    for model in models:
        group = by_spacing.setdefault(model.spacing_xyz, Group([], ["background"]))
        group.models.append(model)
        names = [name for _, name in sorted(model.classes.items()) if name in truth]
        group.classes += [name for name in names if name not in group.classes]
    for group in by_spacing.values():
        group.network = SIDES if group.sided else ORGANS
    return list(by_spacing.values())


@dataclass
class Prepared:
    """A group's training data as nnU-Net's preprocessor gives it: normalised CT and union labels, (1, z, y, x)."""

    data: list[NDArray[np.float32]]
    seg: list[NDArray[np.int16]]
    voxels: list[dict[int, NDArray[np.int64]]]  # per case: class -> indices of its voxels (for oversampling)
    background: list[float]  # per case: the normalised value of air (patches are padded with it)
    intensities: dict[str, float]
    median_shape: list[int]
    plans: dict[str, Any]  # the group's first model's: the network every model of the group shares


def _around(sample: Sample, mask: NDArray[np.bool_]) -> Sample:
    """The sample cut to the box around ``mask`` plus ``MARGIN_MM`` (the whole sample when the mask is empty):
    the fine-spacing models train on their region only, as TotalSegmentator crops before they run."""
    if not mask.any():
        return sample
    spacing = np.asarray(sample.geometry.spacing)[::-1]  # slice, row, column
    margin = np.ceil(MARGIN_MM / spacing).astype(int)
    found = np.argwhere(mask)
    lo = np.maximum(found.min(axis=0) - margin, 0)
    hi = np.minimum(found.max(axis=0) + margin + 1, mask.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    geometry = sample.geometry
    origin = np.asarray(geometry.origin) + geometry.direction_matrix @ (np.asarray(geometry.spacing) * lo[::-1])
    size = hi - lo
    cut = VolumeGeometry(
        (int(size[0]), int(size[1]), int(size[2])),
        (float(origin[0]), float(origin[1]), float(origin[2])),
        geometry.spacing,
        geometry.direction,
    )
    return Sample(sample.ct[box], {name: mask_[box] for name, mask_ in sample.classes.items()}, cut)


def _union_labels(group: Group, sample: Sample) -> NDArray[np.uint8]:
    labels = np.zeros(sample.ct.shape, dtype=np.uint8)
    for i, name in enumerate(group.classes):
        if name in sample.classes:
            labels[sample.classes[name]] = i
    return labels


def prepare(group: Group, samples: list[Sample], scratch: Path) -> Prepared:
    """Resample the phantoms as TotalSegmentator would and preprocess them with nnU-Net's preprocessor."""
    import SimpleITK as sitk
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    images, labels, foreground, shapes = [], [], [], []
    for n, whole in enumerate(samples):
        sample = _around(whole, _union_labels(group, whole) > 0)
        ct, seg = scratch / f"ct{n}.nii.gz", scratch / f"seg{n}.nii.gz"
        write_nifti(sample.ct, sample.geometry, ct)
        write_nifti(_union_labels(group, sample), sample.geometry, seg)
        images.append(scratch / f"ct{n}_0000.nii.gz")
        labels.append(scratch / f"seg{n}_resampled.nii.gz")
        _through_totalsegmentator_input(ct, group.spacing_xyz, 1, images[-1])
        _through_totalsegmentator_input(seg, group.spacing_xyz, 0, labels[-1])
        hu = sitk.GetArrayFromImage(sitk.ReadImage(str(images[-1])))
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(labels[-1]))) > 0
        foreground.append(hu[mask] if mask.any() else hu[hu > -500])
        shapes.append(hu.shape)
    median_shape = [int(v) for v in np.median(np.asarray(shapes), axis=0)]
    intensities = _intensities(np.concatenate(foreground))
    model = group.models[0]
    plans = _plans(model, group.network, intensities, median_shape)
    manager = PlansManager(plans)
    configuration = manager.get_configuration(model.configuration)
    dataset = {"channel_names": {"0": "CT"}, "labels": {name: i for i, name in enumerate(group.classes)}}
    prepared = Prepared([], [], [], [], intensities, median_shape, plans)
    for image, label in zip(images, labels, strict=True):
        array, seg, _ = DefaultPreprocessor(verbose=False).run_case(
            [str(image)], str(label), manager, configuration, dataset
        )
        seg = np.maximum(seg, 0).astype(np.int16)
        flat = seg.reshape(-1)
        found = np.flatnonzero(flat)
        prepared.data.append(array.astype(np.float32))
        prepared.seg.append(seg)
        prepared.voxels.append({int(c): found[flat[found] == c] for c in np.unique(flat[found])})
        prepared.background.append(float(array.min()))
    return prepared


def _patch(
    prepared: Prepared, rng: np.random.Generator, patch: list[int]
) -> tuple[NDArray[np.float32], NDArray[np.int16]]:
    """A random patch; two in three are centred on a voxel of a random present class (as nnU-Net oversamples)."""
    n = int(rng.integers(len(prepared.data)))
    data, seg, voxels = prepared.data[n], prepared.seg[n], prepared.voxels[n]
    shape = np.asarray(data.shape[1:])
    size = np.asarray(patch)
    if voxels and rng.random() < 2 / 3:
        indices = voxels[list(voxels)[int(rng.integers(len(voxels)))]]
        centre = np.asarray(np.unravel_index(int(indices[int(rng.integers(len(indices)))]), tuple(shape)))
    else:
        centre = np.asarray([int(rng.integers(max(int(s), 1))) for s in shape])
    start = centre - size // 2
    out_data = np.full((1, *patch), prepared.background[n], dtype=np.float32)
    out_seg = np.zeros((1, *patch), dtype=np.int16)
    lo, hi = np.maximum(start, 0), np.minimum(start + size, shape)
    src = (0, *(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True)))
    dst = (0, *(slice(int(a - s), int(b - s)) for a, b, s in zip(lo, hi, start, strict=True)))
    out_data[dst] = data[src]  # type: ignore[index]
    out_seg[dst] = seg[src]  # type: ignore[index]
    return out_data, out_seg


def train(group: Group, prepared: Prepared, iterations: int, seed: int) -> tuple[Any, list[float]]:
    """Train the group's network briefly (nnU-Net's network from the plans, its Dice + CE loss, Adam at the
    network's constant rate: nnU-Net's polynomial decay left the tests' 150 steps without the skull): network,
    losses. A step whose loss or gradient is not finite is skipped, as a gradient scaler does, and its loss recorded
    as NaN: the 4-stage network's backward under bfloat16 autocast gave one in about 20 at 0.47 mm (cause not
    isolated). Clipping at nnU-Net's norm 12 as well cost the 0.5 mm mandible 0.93 -> 0.64 in one run."""
    import torch
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from tsretrain.training.discovery import find_trainer

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = group.models[0]
    manager = PlansManager(prepared.plans)
    configuration = manager.get_configuration(model.configuration)
    network = find_trainer(model.trainer).build_network_architecture(
        manager, configuration, 1, len(group.classes), enable_deep_supervision=False
    )
    loss = DC_and_CE_loss(
        {"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, 1, 1,
        dice_class=MemoryEfficientSoftDiceLoss,
    )  # fmt: skip
    precision.apply(network, torch.device("cpu"))  # bfloat16 autocast where the CPU computes it natively
    optimizer = torch.optim.Adam(network.parameters(), lr=group.network.learning_rate)
    network.train()
    losses = []
    for _ in range(iterations):
        batch = [_patch(prepared, rng, configuration.patch_size) for _ in range(2)]
        data = torch.from_numpy(np.stack([b[0] for b in batch]))
        target = torch.from_numpy(np.stack([b[1] for b in batch]).astype(np.int64))
        optimizer.zero_grad()
        value = loss(network(data), target)
        value.backward()
        norm = torch.nn.utils.get_total_norm([p.grad for p in network.parameters() if p.grad is not None])
        stepped = bool(torch.isfinite(value) and torch.isfinite(norm))
        if stepped:
            optimizer.step()
        losses.append(float(value.detach()) if stepped else float("nan"))
    return network, losses


def fit(network: Any, prepared: Prepared, group: Group) -> dict[str, float]:
    """Dice of the trained network on its own training volumes, per class the phantoms have, predicted by nnU-Net's
    sliding window: how far a stand-in's outputs mean something. Tiles without overlap (step 1, an eighth of the
    windows of TotalSegmentator's step 0.5, which at 0.5 mm cost minutes): a little under what it predicts."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    model, manager = group.models[0], PlansManager(prepared.plans)
    predictor = nnUNetPredictor(
        tile_step_size=1.0,
        use_mirroring=False,
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        verbose=False,
        allow_tqdm=False,
    )
    dataset = {"channel_names": {"0": "CT"}, "labels": {name: i for i, name in enumerate(group.classes)}}
    configuration = manager.get_configuration(model.configuration)
    weights = [network.state_dict()]
    predictor.manual_initialization(network, manager, configuration, weights, dataset, model.trainer, None)
    network.eval()
    both, predicted_voxels, true_voxels = (np.zeros(len(group.classes)) for _ in range(3))
    for data, seg in zip(prepared.data, prepared.seg, strict=True):
        predicted = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data)).argmax(0).numpy()
        for label in range(1, len(group.classes)):
            found, truth = predicted == label, seg[0] == label
            both[label] += np.count_nonzero(found & truth)
            predicted_voxels[label] += np.count_nonzero(found)
            true_voxels[label] += np.count_nonzero(truth)
    return {
        name: round(float(2 * both[label] / (predicted_voxels[label] + true_voxels[label])), 3)
        for label, name in enumerate(group.classes)
        if label and true_voxels[label]
    }


def _own_head(weights: dict[str, Any], rows: list[int | None]) -> dict[str, Any]:
    """The trained network's weights with each segmentation layer cut to the model's own labels; a class the
    phantoms lack gets a row that never wins (zero weights, bias ``ABSENT_BIAS``)."""
    import torch

    head = {}
    for key, value in weights.items():
        if HEAD not in key:
            head[key] = value
            continue
        absent = torch.zeros_like(value[0]) + (ABSENT_BIAS if key.endswith(".bias") else 0.0)
        head[key] = torch.stack([value[row] if row is not None else absent for row in rows])
    return head


def _write_model(
    out: Path, model: TaskModel, plans: dict[str, Any], weights: dict[str, Any], losses: list[float], phantoms: int
) -> None:
    import torch

    dataset = _dataset_json(model, phantoms)
    checkpoint = {
        "network_weights": weights,
        "optimizer_state": None,
        "grad_scaler_state": None,
        "logging": {"train_losses": losses},
        "_best_ema": None,
        "current_epoch": 1,
        "init_args": {
            "plans": plans,
            "configuration": model.configuration,
            "fold": 0,
            "dataset_json": dataset,
            "device": torch.device("cpu"),
        },
        "trainer_name": model.trainer,
        "inference_allowed_mirroring_axes": None,
    }
    folder = out / "nnunet" / "results" / model.model_folder
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "plans.json", json.dumps(plans, indent=1))
    atomic_write_text(folder / "dataset.json", json.dumps(dataset, indent=1))
    staged = folder / "fold_0" / "checkpoint_final.pth.partial"
    torch.save(checkpoint, staged)
    staged.replace(folder / "fold_0" / "checkpoint_final.pth")
    atomic_write_text(out / "nnunet" / "results" / model.folder / FOLDER_NOTE, f"# STAND-IN\n\n{NOTE}\n")


def _listed(dice: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.2f}" for name, value in sorted(dice.items(), key=lambda item: -item[1]))


def build_standins(config: StandinConfig) -> StageResult:
    """Stand-in weights for every model the dictionary's TotalSegmentator tasks need."""
    dictionary = load_dictionary(config.dictionary)
    models = models_for(dictionary.pseudolabel_tasks())
    log.warning("building STAND-IN TotalSegmentator weights (phantoms only, not TotalSegmentator's) in %s", config.out)
    samples = make_samples(config, dictionary)
    truth = {name for sample in samples for name in sample.classes}
    record: dict[str, Any] = {
        "stand_in": True,
        "note": NOTE,
        "dictionary": dictionary.name,
        "phantoms": config.phantoms,
        "iterations": config.iterations,
        "seed": config.seed,
        "versions": {name: installed(name) for name in ("TotalSegmentator", "nnunetv2", "torch")},
        "trainings": [],
        "models": {},
    }
    todo = groups(models, truth)
    with progress("stand-in weights: trainings", total=len(todo)) as advance, tempfile.TemporaryDirectory() as tmp:
        for group in todo:
            started = time.perf_counter()
            prepared = prepare(group, samples, Path(tmp))
            network, losses = train(group, prepared, config.iterations, config.seed)
            weights, dice = network.state_dict(), fit(network, prepared, group)
            log.info("stand-in fit at %s mm (Dice on its phantoms): %s", group.spacing_xyz, _listed(dice))
            for model in group.models:
                plans = _plans(model, group.network, prepared.intensities, prepared.median_shape)
                _write_model(config.out, model, plans, _own_head(weights, group.rows(model)), losses, config.phantoms)
                record["models"][model.folder] = {
                    "task": model.task,
                    "model_folder": model.model_folder.as_posix(),
                    "classes": len(model.classes),
                    "classes_with_phantom_truth": sorted(set(model.classes.values()) & truth),
                    "fit_dice": {name: dice[name] for name in sorted(model.classes.values()) if name in dice},
                }
            record["trainings"].append(
                {
                    "spacing_xyz": list(group.spacing_xyz),
                    "models": [m.folder for m in group.models],
                    "classes": len(group.classes) - 1,
                    "network": {
                        "patch": prepared.plans["configurations"][group.models[0].configuration]["patch_size"],
                        "features": list(group.network.features),
                        "learning_rate": group.network.learning_rate,
                    },
                    "loss_first_last10": [round(losses[0], 4), round(float(np.nanmean(losses[-10:])), 4)],
                    "skipped_steps": int(np.isnan(losses).sum()),
                    "fit_dice": dice,
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            advance(1)
    atomic_write_text(config.out / MARKER, json.dumps(record, indent=1))
    return StageResult("standin-weights", {"out": str(config.out)}, {"models": len(models), "trainings": len(todo)})
