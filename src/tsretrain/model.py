"""The model a run builds: one object handed from stage to stage instead of loose fields in each configuration."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tsretrain.errors import UserError
from tsretrain.run_files import PLANNING_SUMMARY, read_planning_summary

DATASET = re.compile(r"Dataset(\d{3})_([A-Za-z0-9][\w.-]*)")


@dataclass(frozen=True, kw_only=True)
class Model:
    """nnU-Net dataset, label dictionary, trainer, plans, configuration and the folds trained and ensembled."""

    dataset: str = "Dataset366_TotalSegmentator"  # nnU-Net's folder name: Dataset<three-digit id>_<name>
    dictionary: str = "radcure-oar21"
    trainer: str = "nnUNetTrainerTsr"
    plans: str | None = None  # None: the plans the preprocess stage wrote (its planning summary names them)
    configuration: str = "3d_fullres"
    folds: tuple[int, ...] = (0, 1, 2, 3, 4)

    def __post_init__(self) -> None:
        match = DATASET.fullmatch(self.dataset)
        if match is None or int(match[1]) == 0:
            raise ValueError(f"dataset {self.dataset!r}: nnU-Net needs Dataset<id 001-999>_<name>, e.g. Dataset366_TS")
        if not self.folds or any(f < 0 for f in self.folds):
            raise ValueError(f"folds {self.folds}: give at least one fold, each 0 or more")

    @property
    def dataset_id(self) -> int:
        return int(self.dataset[7:10])

    def plans_in(self, preprocessed: Path) -> str:
        """The plans name: the model's own, or the one preprocessing wrote under ``preprocessed`` (nnU-Net's
        ``nnUNet_preprocessed`` folder)."""
        if self.plans:
            return self.plans
        summary = PLANNING_SUMMARY.at(preprocessed, dataset=self.dataset)
        if not summary.is_file():
            raise UserError(f"{summary} is missing", "run the preprocess stage first, or name the plans")
        return read_planning_summary(preprocessed, self.dataset)["plans_identifier"]

    def model_folder(self, plans: str) -> str:
        """nnU-Net's results folder of this trainer, plans and configuration."""
        return f"{self.trainer}__{plans}__{self.configuration}"
