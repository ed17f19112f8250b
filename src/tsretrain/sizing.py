"""The local disk each cluster step needs, from the run's own work (the scan's inventory: per case its DICOM bytes
and CT voxels, the fan-out's batches) and per-voxel costs: the scan writes them for the workflow, which gives each
pod an emptyDir of that size (never below the ``scratch`` and ``data-scratch`` parameters, the minimums).

Per-voxel costs, from RADCURE at its size (3,346 CTs of 512 x 512 x about 181 voxels): the converted CT and label
map (int16 and uint8 NIfTI, gzip level 1) about 130 GB, 0.82 bytes per voxel; nnU-Net's preprocessed training set
(float32 image and int16 segmentation, blosc2) 80-129 GB for 2,677 cases, up to 1.0 byte per voxel; a label map
alone (mostly background) about 0.05. A step's need
is what it fetches plus what it writes, times a margin of one half, plus 1 GiB for the pod's own files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsretrain.storage.atomic import atomic_write_text

CONVERTED_PER_VOXEL = 0.82
PREPROCESSED_PER_VOXEL = 1.0
LABELS_PER_VOXEL = 0.05  # a uint8 label map alone (references, predictions): mostly background, gzip
CHECKPOINTS = 5 * 250e6  # the final checkpoints of five folds of a 3d_fullres model
MARGIN, BASE = 1.5, 2**30


@dataclass(frozen=True)
class CaseWork:
    """What one case weighs: its DICOM files and its CT's voxels (none for a case that cannot be converted)."""

    dicom_bytes: int
    voxels: int


def case_work(plan: dict[str, Any]) -> CaseWork:
    """A case's weight from its inventory plan."""
    shape = (plan.get("geometry") or {}).get("shape_zyx") or []
    return CaseWork(sum(int(size) for _, size, _ in plan.get("file_stats", [])), math.prod(shape) if shape else 0)


def _need(nbytes: float) -> int:
    return int(nbytes * MARGIN + BASE)


def step_disks(cases: dict[str, CaseWork], batches: Iterable[tuple[str, ...]], test_batch_size: int) -> dict[str, int]:
    """Bytes of local disk per step: a fan-out step's largest batch, a whole-dataset step's whole set (every usable
    case, an upper bound of the training set), a prediction batch as large as ``test_batch_size`` of the largest
    cases."""
    batch_dicom = max((sum(cases[c].dicom_bytes for c in batch) for batch in batches), default=0)
    batch_voxels = max((sum(cases[c].voxels for c in batch) for batch in batches), default=0)
    total = sum(w.voxels for w in cases.values())
    largest = sorted((w.voxels for w in cases.values()), reverse=True)[:test_batch_size]
    return {
        "convert": _need(batch_dicom + batch_voxels * CONVERTED_PER_VOXEL),
        "pseudolabel": _need(3 * batch_voxels * CONVERTED_PER_VOXEL),  # the CTs, the task maps, the merged maps
        "fingerprint": _need(batch_voxels * CONVERTED_PER_VOXEL),
        "preprocess-cases": _need(batch_voxels * (CONVERTED_PER_VOXEL + PREPROCESSED_PER_VOXEL)),
        "assemble": _need(2 * total * CONVERTED_PER_VOXEL),  # the converted cases fetched, the raw dataset written
        "train": _need(total * PREPROCESSED_PER_VOXEL + CHECKPOINTS),
        "validate": _need(total * PREPROCESSED_PER_VOXEL + CHECKPOINTS),  # the preprocessed set, as train
        "predict": _need(2 * sum(largest) * CONVERTED_PER_VOXEL + CHECKPOINTS),
        # the training references and the folds' validation predictions, their merged copy, nnU-Net's post-processed
        # copy and its trials' (three at most), the test predictions and their post-processed copy
        "postprocess": _need(7 * total * LABELS_PER_VOXEL),
        "evaluate": _need(3 * total * LABELS_PER_VOXEL),  # references, predictions raw and post-processed (test set)
        # the second stage: train's data plus both models' checkpoints; its prediction as predict's; the comparison
        # holds the references and both stages' predictions
        "second-stage": _need(total * PREPROCESSED_PER_VOXEL + 2 * CHECKPOINTS),
        "second-predict": _need(2 * sum(largest) * CONVERTED_PER_VOXEL + 2 * CHECKPOINTS),
        "compare-stages": _need(3 * total * LABELS_PER_VOXEL),
    }


SIZED = tuple(step_disks({}, [], 1))  # the steps the scan sizes (every step holding cases)
# at least ``data-scratch``; the others at least ``scratch``
WHOLE_DATASET = ("assemble", "train", "validate", "second-stage")


def write_sizes(folder: Path, disks: dict[str, int], scratch: int, data_scratch: int) -> dict[str, str]:
    """One file per step (``disk-<step>``) holding its emptyDir size, never below the minimum of its kind."""
    sizes = {}
    for step, need in disks.items():
        sizes[step] = quantity(max(need, data_scratch if step in WHOLE_DATASET else scratch))
        atomic_write_text(folder / f"disk-{step}", sizes[step])
    return sizes


def quantity(nbytes: int) -> str:
    """Bytes as a Kubernetes quantity in whole GiB (rounded up)."""
    return f"{math.ceil(nbytes / 2**30)}Gi"
