"""The ``preprocess`` stage: nnU-Net's fingerprint, planner and preprocessing, on training cases only.

- planner: nnU-Net's default, or the ResEnc M/L presets;
- configuration: the model's; ``3d_tiny`` (patch 32 x 64 x 64, 4 stages of 8-64 features) is added to the plans
  and reuses the 3d_fullres data, for the demo and CI on a CPU;
- overrides (batch size, patch size, target spacing) are written as a plans variant named by the model's plans,
  never over nnU-Net's own plans; the plans name goes into the planning summary, where training and prediction
  read it;
- preprocessing processes are sized from the memory limit as well as the CPUs;
- ``splits_final.json`` of the split stage is put where nnU-Net reads it (patients never cross folds);
- a planning summary (spacing, median shape, patch and batch size, network) for the report.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tsretrain.errors import UserError
from tsretrain.model import Model
from tsretrain.resources import cpu_quota, memory_limit_bytes
from tsretrain.run_files import NNUNET_SPLITS, PLANNING_SUMMARY
from tsretrain.sizing import FIXED, preprocess_bytes
from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_text
from tsretrain.training.nnunet_env import NnunetFolders, planner_threads
from tsretrain.training.pretrained import open_pretrained, transferred_plans

Planner = Literal["default", "resenc-m", "resenc-l"]
PLANNERS: dict[Planner, str] = {
    "default": "ExperimentPlanner",
    "resenc-m": "nnUNetPlannerResEncM",
    "resenc-l": "nnUNetPlannerResEncL",
}
TINY = "3d_tiny"


@dataclass(frozen=True, kw_only=True)
class PreprocessConfig:
    """Configuration of the ``preprocess`` stage."""

    work: Path
    split: Path
    model: Model = field(
        default_factory=Model
    )  # dataset, configuration, plans (the name of a variant holding overrides)
    planner: Planner = "default"
    batch_size: int | None = None
    patch_size: tuple[int, int, int] | None = None
    target_spacing: tuple[float, float, float] | None = None
    workers: int = 0
    plans_from: str | None = None


def preprocessing_workers(planned: dict[str, Any], classes: int, requested: int = 0) -> int:
    """Processes that fit: nnU-Net's preprocessing of the planning summary's median case (a RADCURE-sized case when
    the summary has none) per process, as measured (``tsretrain.sizing``), within four fifths of the limit."""
    median = planned.get("original_median_shape") or [200, 512, 512]
    cpus = requested or cpu_quota()
    per_process = preprocess_bytes(classes) * float(median[0] * median[1] * median[2]) + FIXED
    return max(1, min(cpus, int(memory_limit_bytes() * 0.8 // per_process)))


TRANSFERRED = "nnUNetPlansTransferred"  # plans taken from a pretrained model (never over nnU-Net's own)


def tiny_configuration(fullres: dict[str, Any]) -> dict[str, Any]:
    """A CPU-sized configuration on the 3d_fullres data: 4 stages, 8-64 features, patch 32 x 64 x 64."""
    arch = json.loads(json.dumps(fullres["architecture"]))
    kwargs = arch["arch_kwargs"]
    stages = 4
    kwargs["n_stages"] = stages
    kwargs["features_per_stage"] = [8, 16, 32, 64]
    for key in ("kernel_sizes", "strides", "n_conv_per_stage", "n_blocks_per_stage"):
        if key in kwargs:
            kwargs[key] = kwargs[key][:stages]
    if "n_conv_per_stage_decoder" in kwargs:
        kwargs["n_conv_per_stage_decoder"] = kwargs["n_conv_per_stage_decoder"][: stages - 1]
    patch = [min(32, fullres["patch_size"][0]), 64, 64]
    return {"inherits_from": "3d_fullres", "patch_size": patch, "batch_size": 2, "architecture": arch}


def apply_overrides(plans: dict[str, Any], config: PreprocessConfig) -> dict[str, Any]:
    """The plans variant: overrides on 3d_fullres, a data folder of its own when the spacing changes."""
    plans = json.loads(json.dumps(plans))
    fullres = plans["configurations"]["3d_fullres"]
    if config.batch_size:
        fullres["batch_size"] = config.batch_size
    if config.patch_size:
        fullres["patch_size"] = list(config.patch_size)
    if config.target_spacing:
        fullres["spacing"] = list(config.target_spacing)
        fullres["data_identifier"] = f"{config.model.plans}_3d_fullres"
    return plans


def summary(plans: dict[str, Any], fingerprint: dict[str, Any], configurations: tuple[str, ...]) -> dict[str, Any]:
    """What the report shows of planning."""
    out: dict[str, Any] = {
        "plans_name": plans["plans_name"],
        "original_median_spacing": fingerprint.get("spacings") and _median(fingerprint["spacings"]),
        "original_median_shape": fingerprint.get("shapes_after_crop") and _median(fingerprint["shapes_after_crop"]),
        "n_training_cases": len(fingerprint.get("spacings", [])),
        "configurations": {},
    }
    for name in configurations:
        c = dict(plans["configurations"][name])
        if "inherits_from" in c:
            c = {**plans["configurations"][c["inherits_from"]], **c}
        arch = c["architecture"]
        out["configurations"][name] = {
            "spacing": c["spacing"],
            "median_image_size_in_voxels": c.get("median_image_size_in_voxels"),
            "patch_size": c["patch_size"],
            "batch_size": c["batch_size"],
            "network": arch["network_class_name"].rsplit(".", 1)[-1],
            "features_per_stage": arch["arch_kwargs"].get("features_per_stage"),
            "normalization": c.get("normalization_schemes"),
        }
    return out


def _median(values: list[list[float]]) -> list[float]:
    import numpy as np

    return [float(v) for v in np.median(np.asarray(values, dtype=float), axis=0)]


def check(config: PreprocessConfig) -> None:
    """Refuse a planner or overrides that cannot be planned."""
    if config.planner not in PLANNERS:
        raise UserError(f"planner must be one of {sorted(PLANNERS)}")
    overrides = config.batch_size or config.patch_size or config.target_spacing
    if overrides and not config.model.plans:
        raise UserError("plan overrides need --plans (a named variant; nnU-Net's own plans stay untouched)")
    if overrides and config.plans_from:
        raise UserError("--plans-from transfers a pretrained model's plans: no overrides beside it")


def make_plans(config: PreprocessConfig, folders: NnunetFolders) -> dict[str, Any]:
    """Plan from the dataset fingerprint already extracted (nnU-Net's planner, then the overrides and the tiny
    configuration as a plans variant), put the split where nnU-Net reads it and write the planning summary;
    returns the summary (``plans_identifier``, ``preprocessed_configurations``, ...)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments

    target = folders.preprocessed / config.model.dataset
    fingerprint = json.loads((target / "dataset_fingerprint.json").read_text())
    with planner_threads():
        plans_identifier = plan_experiments([config.model.dataset_id], PLANNERS[config.planner])
    plans = json.loads((target / f"{plans_identifier}.json").read_text())
    if config.batch_size or config.patch_size or config.target_spacing:
        plans = apply_overrides(plans, config)
    if config.plans_from:
        pretrained = open_pretrained(config.plans_from, config.work / ".pretrained")
        plans = transferred_plans(pretrained, plans, config.model.plans or TRANSFERRED)
    if config.model.plans or config.plans_from:
        plans_identifier = plans["plans_name"] = config.model.plans or TRANSFERRED
    configurations: tuple[str, ...] = (config.model.configuration,)
    tiny = config.model.configuration == TINY
    if tiny and not config.plans_from:
        plans["configurations"][TINY] = tiny_configuration(plans["configurations"]["3d_fullres"])
    if config.model.configuration not in plans["configurations"]:
        raise UserError(
            f"configuration {config.model.configuration} is not in the plans ({', '.join(plans['configurations'])})",
            "train one of the pretrained model's configurations (--configuration)",
        )
    inherited = plans["configurations"][config.model.configuration].get("inherits_from")
    if tiny and inherited:
        configurations = (inherited,)  # the tiny network trains on 3d_fullres's data
    atomic_write_text(target / f"{plans_identifier}.json", json.dumps(plans, indent=1))
    shutil.copyfile(NNUNET_SPLITS.at(config.split), target / NNUNET_SPLITS.basename)
    result = summary(plans, fingerprint, configurations + ((TINY,) if tiny else ()))
    result.update(plans_identifier=plans_identifier, planner=config.planner, preprocessed_configurations=configurations)
    atomic_write_text(target / PLANNING_SUMMARY.basename, json.dumps(result, indent=1))
    return result


def preprocess(config: PreprocessConfig) -> StageResult:
    """Fingerprint, plan and preprocess the assembled dataset."""
    check(config)
    folders = NnunetFolders(config.work)
    folders.activate()
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess as nnunet_preprocess

    name = config.model.dataset
    target = folders.preprocessed / name
    raw_cases = len(list((folders.raw / name / "imagesTr").glob("*.nii.gz")))
    described = json.loads((folders.raw / name / "dataset.json").read_text())
    checked = bool(described.get("tsretrain", {}).get("integrity_checked"))  # by assemble: every image read once
    extract_fingerprints(
        [config.model.dataset_id],
        num_processes=cpu_quota(),
        check_dataset_integrity=not checked,
        show_progress_bar=False,
    )
    result = make_plans(config, folders)
    configurations = tuple(result["preprocessed_configurations"])
    classes = len(json.loads((target / "dataset.json").read_text())["labels"])
    workers = preprocessing_workers(result, classes, config.workers)
    nnunet_preprocess(
        [config.model.dataset_id],
        result["plans_identifier"],
        configurations=configurations,
        num_processes=[workers] * len(configurations),
        show_progress_bar=False,
    )
    result.update(preprocessing_workers=workers, raw_training_cases=raw_cases)
    atomic_write_text(target / PLANNING_SUMMARY.basename, json.dumps(result, indent=1))
    return StageResult(
        stage="preprocess",
        outputs={
            "preprocessed": str(target),
            "plans": str(target / f"{result['plans_identifier']}.json"),
            "summary": str(target / PLANNING_SUMMARY.basename),
        },
        counts={"training_cases": raw_cases, "workers": workers},
    )
