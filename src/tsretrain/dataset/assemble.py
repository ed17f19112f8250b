"""The ``assemble`` stage: the nnU-Net raw dataset (``DatasetXXX_Name``) from converted cases and a split.

Training and validation cases go to ``imagesTr``/``labelsTr``; test cases only to ``imagesTs``/``labelsTs``, so
nothing of them reaches nnU-Net's fingerprint or plans. ``dataset.json`` comes from the organ dictionary.
Files are hard links to the converted NIfTIs when the file system allows it (copies otherwise); the whole
dataset folder is written aside and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsretrain import __version__
from tsretrain.labels.dictionary import load_dictionary
from tsretrain.model import Model
from tsretrain.resources import cpu_quota
from tsretrain.run_files import (
    CASE_IMAGE,
    CASE_LABELS,
    MERGED_LABELS,
    Split,
    image_name,
    label_name,
    read_manifest,
    read_split,
)
from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_text, staged_dir


@dataclass(frozen=True, kw_only=True)
class AssembleConfig:
    """Configuration of the ``assemble`` stage."""

    converted: Path
    split: Path
    out: Path
    model: Model = field(default_factory=Model)
    verify: bool = True
    workers: int = 0
    labels_from: Path | None = None


def _place(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def dataset_json(config: AssembleConfig, n_training: int, split: Split) -> dict[str, Any]:
    dictionary = load_dictionary(config.model.dictionary)
    return {
        "name": config.model.dataset,
        "description": f"tsretrain {__version__}, dictionary {dictionary.name} {dictionary.version}",
        "channel_names": {"0": "CT"},
        "labels": dictionary.nnunet_labels(),
        "numTraining": n_training,
        "file_ending": ".nii.gz",
        "tsretrain": {
            "version": __version__,
            "dictionary": dictionary.to_json(),
            "split_seed": split["seed"],
            "test_cases": split["test"],
            # the dataset is only published once nnU-Net's integrity check passed: preprocess need not repeat it
            "integrity_checked": config.verify,
        },
    }


def assemble(config: AssembleConfig) -> StageResult:
    """Write the raw dataset and check it with nnU-Net's own integrity check."""
    split = read_split(config.split)
    dictionary = load_dictionary(config.model.dictionary)
    training = sorted(c for fold in split["folds"] for c in fold)
    test = sorted(split["test"])
    for case in training + test:
        manifest = read_manifest(config.converted, case)
        if manifest["status"] != "ok":
            raise ValueError(f"case {case} in the split is not converted (status {manifest['status']})")
        if manifest["dictionary"]["sha256"] != dictionary.sha256:
            raise ValueError(
                f"case {case} was converted with another dictionary than {config.model.dictionary}; re-run convert"
            )
    target = config.out / config.model.dataset
    with staged_dir(target) as tmp:
        for images, labels, cases in (("imagesTr", "labelsTr", training), ("imagesTs", "labelsTs", test)):
            (tmp / images).mkdir()
            (tmp / labels).mkdir()
            for case in cases:
                _place(CASE_IMAGE.at(config.converted, case=case), tmp / images / image_name(case))
                labels_file = MERGED_LABELS.at(config.labels_from, case=case) if config.labels_from else None
                _place(labels_file or CASE_LABELS.at(config.converted, case=case), tmp / labels / label_name(case))
        atomic_write_text(tmp / "dataset.json", json.dumps(dataset_json(config, len(training), split), indent=1))
        if config.verify:
            verify(tmp, config.workers)
    return StageResult(
        stage="assemble",
        outputs={"dataset": str(target)},
        counts={"training": len(training), "test": len(test)},
    )


def verify(folder: Path, workers: int) -> None:
    """nnU-Net's ``verify_dataset_integrity`` (geometry of image vs label, label values, NaNs)."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(folder), num_processes=workers if workers > 0 else cpu_quota())
