"""TotalSegmentator's model catalogue, read from its own configuration: which nnU-Net models a task runs, where
their weights live, and the classes each one predicts.

TotalSegmentator looks a model up as ``<weights>/<Dataset folder>/<trainer>__<plans>__<configuration>/fold_0/
checkpoint_final.pth`` (nnU-Net's ``get_output_folder``); a task with ``crop`` first runs the 6 mm ``total``
model (task 298) on the whole CT to find the region, unless the task names its own ``crop_model``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from tsretrain.errors import UserError

CROP_TASK_ID = 298  # TotalSegmentator's rough 6 mm "total" model, run first by every task that crops
CROP_TASK = "total"
CROP_TRAINER = "nnUNetTrainer_4000epochs_NoMirroring"
CROP_SPACING = 6.0


class TotalSegmentatorError(UserError):
    """TotalSegmentator is missing, or does not know what a dictionary asks of it."""


def _configs() -> Any:
    try:
        import totalsegmentator.map_tasks_config as configs
    except ImportError as exc:
        raise TotalSegmentatorError(
            "TotalSegmentator is not installed: pip install 'tsretrain[pseudolabel]' where this stage runs"
        ) from exc
    return configs


@dataclass(frozen=True)
class TaskModel:
    """One nnU-Net model of TotalSegmentator, in its layout."""

    task_id: int
    task: str  # the TotalSegmentator task it belongs to ("total" for the crop model)
    folder: str  # relative to the weights directory: Dataset<NNN>_<name>
    trainer: str
    plans: str
    configuration: str
    spacing_xyz: tuple[float, float, float]  # TotalSegmentator's resampling before nnU-Net (x, y, z of NIfTI)
    classes: dict[int, str]  # the model's own label ids (a part model of a multi-model task has its own)

    @property
    def model_folder(self) -> PurePosixPath:
        """Where nnU-Net's predictor finds plans.json, dataset.json and fold_0/."""
        return PurePosixPath(self.folder) / f"{self.trainer}__{self.plans}__{self.configuration}"


def _spacing(resample: float | list[float]) -> tuple[float, float, float]:
    values = [float(resample)] * 3 if isinstance(resample, int | float) else [float(v) for v in resample]
    return (values[0], values[1], values[2])


def _folder(task_id: int) -> str:
    info = _configs().TASK_ID_WEIGHTS_CONFIGS[task_id]
    return (PurePosixPath(info.get("rel_path") or "") / str(info["foldername"])).as_posix()


def _part_classes(task: str, task_id: int) -> dict[int, str]:
    import totalsegmentator.map_to_binary as maps

    if task == "headneck_muscles":
        part = maps.map_taskid_to_partname_headneck_muscles[task_id]
        return dict(maps.class_map_parts_headneck_muscles[part])
    if task == CROP_TASK:
        return dict(maps.class_map[CROP_TASK])
    raise TotalSegmentatorError(
        f"TotalSegmentator task {task!r} runs several models; tsretrain knows the parts of none of them"
    )


def crop_model() -> TaskModel:
    """The 6 mm ``total`` model TotalSegmentator runs to crop the CT first."""
    return TaskModel(
        CROP_TASK_ID, CROP_TASK, _folder(CROP_TASK_ID), CROP_TRAINER, "nnUNetPlans", "3d_fullres",
        _spacing(CROP_SPACING), _part_classes(CROP_TASK, CROP_TASK_ID),
    )  # fmt: skip


def task_models(task: str) -> list[TaskModel]:
    """Every model the task runs, its crop model included (the crop model last)."""
    configs = _configs()
    if task not in configs.TASK_CONFIGS:
        raise TotalSegmentatorError(f"unknown TotalSegmentator task {task!r}; check the dictionary's sources")
    config = configs.TASK_CONFIGS[task]
    if "sub_modes" in config:
        config = config["sub_modes"]["default"]
    from totalsegmentator.map_to_binary import class_map

    ids = config["task_id"] if isinstance(config["task_id"], list) else [config["task_id"]]
    models = [
        TaskModel(
            task_id,
            task,
            _folder(task_id),
            config.get("trainer", "nnUNetTrainer"),
            "nnUNetPlans",
            config.get("model", "3d_fullres"),
            _spacing(config["resample"]),
            dict(class_map[task]) if len(ids) == 1 else _part_classes(task, task_id),
        )
        for task_id in ids
    ]
    if config.get("crop_model"):
        return models + task_models(config["crop_model"])
    return [*models, crop_model()] if config.get("crop") else models


def models_for(tasks: list[str]) -> list[TaskModel]:
    """The distinct models a list of tasks needs, in first-use order."""
    seen: dict[int, TaskModel] = {}
    for task in tasks:
        for model in task_models(task):
            seen.setdefault(model.task_id, model)
    return list(seen.values())
