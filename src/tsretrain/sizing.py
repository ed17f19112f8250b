"""What each cluster step needs, from the run's own work: local disk, memory and a deadline per pod.

The scan knows the work (its inventory: per case its DICOM bytes and CT voxels, the fan-out's batches, the
dictionary's classes) and writes one budget per step for the workflow (``disk-<step>``, ``memory-<step>``,
``deadline-<step>``), which gives each pod an emptyDir, a memory request and limit, and an
``activeDeadlineSeconds`` of that size, never below its template's own values (the ``scratch`` and
``data-scratch`` parameters, the pod class, an hour).

Per-case costs scale with the case's voxels (and, where nnU-Net works per class, with the classes), from
measurements at or near RADCURE's size (3,346 CTs of 512 x 512 x about 181 voxels; the sources beside each
figure, ``docs/benchmarks.md``). What a step's time or memory does not follow from the data is left to its
template: training (epochs x iterations, whatever the case count), assemble's memory (it copies files) and the
TotalSegmentator step (its real networks' cost is not measured here: no weights, no GPU).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tsretrain.storage.atomic import atomic_write_text

GiB = 2**30
RADCURE_VOXELS = 512 * 512 * 181

# Disk (bytes per voxel): the converted CT and label map (int16 and uint8 NIfTI, gzip level 1) about 130 GB for
# RADCURE; nnU-Net's preprocessed training set (float32 image and int16 segmentation, blosc2) 80-129 GB for
# 2,677 cases; a label map alone (mostly background, gzip).
CONVERTED_PER_VOXEL = 0.82
PREPROCESSED_PER_VOXEL = 1.0
LABELS_PER_VOXEL = 0.05
CHECKPOINTS = 5 * 250e6  # the final checkpoints of five folds of a 3d_fullres model

# CPU nanoseconds and peak bytes per voxel of one process working on one case (per class where nnU-Net works per
# class), and its fixed memory (imports).
CONVERT_NS = 2.22e9 / RADCURE_VOXELS  # `tsretrain convert` of a RADCURE-sized case: 2.22 CPU s (bench/convert.py)
CONVERT_BYTES = 0.5 * GiB / RADCURE_VOXELS  # under 0.5 GiB a process (tests/conversion/test_conversion_memory.py)
# nnU-Net's own per-case functions by the model's classes (bench/case_costs.py, docs/benchmarks.md): analyze_case,
# run_case with resampling, and the export of a case's half-precision logits back to its grid (float64 inside)
FINGERPRINT_NS, FINGERPRINT_BYTES = {22: 33.0, 91: 44.0}, {22: 14.6, 91: 16.1}
PREPROCESS_NS, PREPROCESS_BYTES = {22: 2937.0, 91: 3897.0}, {22: 46.7, 91: 45.4}
EXPORT_NS, EXPORT_BYTES = {22: 2056.0, 91: 6172.0}, {22: 224.3, 91: 892.5}
EVALUATE_NS_PER_LABEL = 0.8e9 / 90 / (180 * 512 * 512)  # Dice, HD95, NSD: 0.8 CPU s a case of 90 (bench/evaluate.py)
EVALUATE_BYTES = 341 * 2**20 / (180 * 512 * 512)  # a worker's peak with one case of 90 labels (bench/evaluate.py)
# nnU-Net's determine_postprocessing: per validation case and step tried (all foreground, then each label), its
# compute_metrics (20 CPU s a case of 90 labels) and the component removal with its write (1.5 s); README Limits
POSTPROCESS_NS_PER_LABEL, POSTPROCESS_NS = 20e9 / 90 / RADCURE_VOXELS, 1.5e9 / RADCURE_VOXELS
POSTPROCESS_BYTES = 16.0  # a reference, a prediction and their connected components (int32), an estimate
# A GPU's sliding-window prediction of one fold (step 0.5, eight mirrorings), an estimate derived from measured
# training throughput (bench/gpu_epoch.py: 3.45 steps/s of 2 x 64 x 160 x 160 on an H200; a forward pass a third of
# a step): 8 windows over each voxel x 8 mirrorings / 20.7 windows per second, about 1.4 microseconds per voxel
PREDICT_GPU_NS = 1400.0
PREDICTING_BYTES_PER_CLASS = 4.0  # the predicting process's float32 logits at the network's spacing
FIXED = GiB  # a process's imports (torch, nnU-Net)
# The scan runs before anything knows the work, so its pod is not sized. It keeps the header records in an index on
# its disk (1.90 and 1.94 kB a file measured on bench/convert.py's tree and the test cohort) and writes the inventory
# and the batches' slices of it (57.8 kB of JSON a patient, each); in memory one patient's records at a time (1.76
# KiB of heap a record), the fan-out batch of plans being written, a line per case (under 0.2 KiB measured,
# tests/conversion/test_scan_memory.py) and SQLite's page cache
SCAN_INDEX_PER_FILE, INVENTORY_PER_PATIENT = 2.0e3, 57.8e3
SCAN_BYTES_PER_RECORD, SCAN_BYTES_PER_CASE, SCAN_CACHE = 1.76 * 1024, 1024, 16 * 2**20

BANDWIDTH = 100e6  # bytes per second between a pod and the store (a conservative S3 figure)
FOLDS, TEST_FRACTION, VALIDATED = 5, 0.2, 0.8  # the default split: every training case validated by one fold
MARGIN = 1.5  # disk and memory: the need times this
TIME_MARGIN, START = 2.0, 1800  # deadline: twice the estimate plus half an hour (start, image pull, fetch)
HOUR = 3600


@dataclass(frozen=True)
class PodClass:
    """A kind of pod (a stage's ``resources``): its CPUs, memory (bytes), GPUs and whether its processes share
    batches through ``/dev/shm`` (nnU-Net's worker processes: a memory-backed volume there)."""

    cpu_request: float
    cpu_limit: int
    memory_request: int
    memory_limit: int
    gpus: int = 0
    shared_memory: bool = False


PodClassName = Literal["cpu", "big-cpu", "gpu", "big-gpu"]
POD_CLASSES: dict[PodClassName, PodClass] = {
    "cpu": PodClass(2, 4, 8 * GiB, 16 * GiB),
    "big-cpu": PodClass(8, 16, 32 * GiB, 64 * GiB, shared_memory=True),
    "gpu": PodClass(8, 12, 32 * GiB, 48 * GiB, gpus=1, shared_memory=True),
    # validation: nnU-Net's export holds a resampled case's logits in float64 beside the predicting process
    "big-gpu": PodClass(8, 12, 96 * GiB, 128 * GiB, gpus=1, shared_memory=True),
}


@dataclass(frozen=True)
class CaseWork:
    """What one case weighs: its DICOM files and its CT's voxels (none for a case that cannot be converted)."""

    dicom_bytes: int
    voxels: int


def case_work(plan: dict[str, Any]) -> CaseWork:
    """A case's weight from its inventory plan."""
    shape = (plan.get("geometry") or {}).get("shape_zyx") or []
    return CaseWork(sum(int(size) for _, size, _ in plan.get("file_stats", [])), math.prod(shape) if shape else 0)


@dataclass(frozen=True)
class Work:
    """The run's work as the scan sees it: its cases, the fan-out's batches, test cases per prediction pod and the
    model's classes (the dictionary's labels and background)."""

    cases: Mapping[str, CaseWork]
    batches: Sequence[tuple[str, ...]]
    test_batch_size: int
    classes: int

    def batch_voxels(self) -> list[list[int]]:
        return [[self.cases[c].voxels for c in batch] for batch in self.batches]

    def largest(self) -> int:
        return max((w.voxels for w in self.cases.values()), default=0)

    def total(self) -> int:
        return sum(w.voxels for w in self.cases.values())


@dataclass(frozen=True)
class Budget:
    """One step's pod: local disk and memory (bytes) and deadline (seconds); ``None``: its template's own."""

    disk: int
    memory: int | None = None
    seconds: int | None = None


def _need(nbytes: float) -> int:
    return int(nbytes * MARGIN + GiB)


def _deadline(seconds: float) -> int:
    return max(HOUR, math.ceil((seconds * TIME_MARGIN + START) / 60) * 60)


def _processes(cpus: int, per_voxel: float, voxels: int) -> int:
    """Memory of ``cpus`` worker processes, each on a case of ``voxels``."""
    return _need(cpus * (per_voxel * voxels + FIXED))


def _by_classes(table: dict[int, float], classes: int) -> float:
    """A figure measured at two class counts, for ``classes``: linear between them, the nearest's outside."""
    low, high = min(table), max(table)
    share = min(1.0, max(0.0, (classes - low) / (high - low)))
    return table[low] + share * (table[high] - table[low])


def preprocess_bytes(classes: int) -> float:
    """Peak bytes per voxel of one process running nnU-Net's preprocessing of a case (``run_case``)."""
    return _by_classes(PREPROCESS_BYTES, classes)


def export_bytes(classes: int) -> float:
    """Peak bytes per voxel of one nnU-Net export process: a case's logits resampled to its own grid (float64
    inside)."""
    return _by_classes(EXPORT_BYTES, classes)


def _prediction(classes: int, voxels: int, cpus: int, folds: int) -> tuple[float, int]:
    """Seconds and memory of predicting one case: each fold on the GPU, the export on the CPUs, with the predicting
    process's logits and two export processes within the three quarters of the limit nnU-Net's pool is sized to."""
    export = export_bytes(classes) * voxels + FIXED
    memory = int(2 * export / 0.75 + PREDICTING_BYTES_PER_CLASS * classes * voxels + FIXED)
    seconds = folds * PREDICT_GPU_NS * voxels / 1e9 + _by_classes(EXPORT_NS, classes) * voxels / 1e9 / min(cpus, 2)
    return seconds, memory


def step_budgets(work: Work, pods: Mapping[str, PodClass]) -> dict[str, Budget]:
    """Each sized step's budget: a fan-out step's largest batch, a whole-dataset step's whole set (every usable
    case, an upper bound of the training set), a prediction batch as large as ``test_batch_size`` of the largest
    cases; ``pods`` gives each step's pod class (its CPUs; a CPU pod's when absent)."""
    batches = work.batch_voxels()
    batch_dicom = max((sum(work.cases[c].dicom_bytes for c in batch) for batch in work.batches), default=0)
    batch_voxels = max((sum(b) for b in batches), default=0)
    batch_largest = max((max(b, default=0) for b in batches), default=0)
    total, largest, classes = work.total(), work.largest(), work.classes
    labels = classes - 1
    biggest = sorted((w.voxels for w in work.cases.values()), reverse=True)[: work.test_batch_size]
    validated = VALIDATED * total / FOLDS  # a fold's validation cases' voxels
    tested = TEST_FRACTION * total

    def cpus(step: str) -> int:
        return pods.get(step, POD_CLASSES["cpu"]).cpu_limit

    def cpu_time(step: str, ns_per_voxel: float, voxels: float, nbytes: float = 0) -> int:
        return _deadline(ns_per_voxel * voxels / 1e9 / cpus(step) + nbytes / BANDWIDTH)

    case_s, case_memory = _prediction(classes, largest, cpus("predict"), FOLDS)  # every fold, the ensemble exported
    fold_s, fold_memory = _prediction(classes, largest, cpus("validate"), 1)
    per_voxel = max(largest, 1)  # the times above are the largest case's: per voxel, divided by its voxels
    preprocess_ns, preprocessing = _by_classes(PREPROCESS_NS, classes), preprocess_bytes(classes)
    evaluate_ns = EVALUATE_NS_PER_LABEL * labels
    postprocess_ns = (2 + labels) * (POSTPROCESS_NS_PER_LABEL * labels + POSTPROCESS_NS)
    second_s, second_memory = _prediction(2, largest, cpus("second-predict"), FOLDS)
    return {
        "convert": Budget(
            _need(batch_dicom + batch_voxels * CONVERTED_PER_VOXEL),
            _processes(cpus("convert"), CONVERT_BYTES, batch_largest),
            cpu_time("convert", CONVERT_NS, batch_voxels, batch_dicom + batch_voxels * CONVERTED_PER_VOXEL),
        ),
        # the CTs, the task maps, the merged maps
        "pseudolabel": Budget(_need(3 * batch_voxels * CONVERTED_PER_VOXEL)),
        "fingerprint": Budget(
            _need(batch_voxels * CONVERTED_PER_VOXEL),
            _processes(cpus("fingerprint"), _by_classes(FINGERPRINT_BYTES, classes), batch_largest),
            cpu_time(
                "fingerprint", _by_classes(FINGERPRINT_NS, classes), batch_voxels, batch_voxels * CONVERTED_PER_VOXEL
            ),
        ),
        "preprocess-cases": Budget(
            _need(batch_voxels * (CONVERTED_PER_VOXEL + PREPROCESSED_PER_VOXEL)),
            _processes(cpus("preprocess-cases"), preprocessing, batch_largest),
            cpu_time("preprocess-cases", preprocess_ns, batch_voxels, batch_voxels * 2 * CONVERTED_PER_VOXEL),
        ),
        # the converted cases fetched, the raw dataset written
        "assemble": Budget(
            _need(2 * total * CONVERTED_PER_VOXEL), seconds=_deadline(3 * total * CONVERTED_PER_VOXEL / BANDWIDTH)
        ),
        "train": Budget(_need(total * PREPROCESSED_PER_VOXEL + CHECKPOINTS)),
        # the preprocessed set, as train; a fold's validation cases predicted and exported
        "validate": Budget(
            _need(total * PREPROCESSED_PER_VOXEL + CHECKPOINTS),
            fold_memory,
            _deadline(validated * fold_s / per_voxel + total * PREPROCESSED_PER_VOXEL / BANDWIDTH),
        ),
        "predict": Budget(
            _need(2 * sum(biggest) * CONVERTED_PER_VOXEL + CHECKPOINTS),
            case_memory,
            _deadline(sum(biggest) * case_s / per_voxel + 2 * sum(biggest) * CONVERTED_PER_VOXEL / BANDWIDTH),
        ),
        # the training references and the folds' validation predictions, their merged copy, nnU-Net's post-processed
        # copy and its trials' (three at most), the test predictions and their post-processed copy
        "postprocess": Budget(
            _need(7 * total * LABELS_PER_VOXEL),
            _processes(cpus("postprocess"), POSTPROCESS_BYTES, largest),
            cpu_time("postprocess", postprocess_ns, VALIDATED * total),
        ),
        # references, predictions raw and post-processed (test set)
        "evaluate": Budget(
            _need(3 * total * LABELS_PER_VOXEL),
            _processes(cpus("evaluate"), EVALUATE_BYTES, largest),
            cpu_time("evaluate", evaluate_ns, tested),
        ),
        # the second stage: train's data plus both models' checkpoints; its prediction as predict's; the comparison
        # holds the references and both stages' predictions
        "second-stage": Budget(_need(total * PREPROCESSED_PER_VOXEL + 2 * CHECKPOINTS)),
        "second-predict": Budget(
            _need(2 * sum(biggest) * CONVERTED_PER_VOXEL + 2 * CHECKPOINTS),
            second_memory,
            _deadline(sum(biggest) * second_s / per_voxel),
        ),
        "compare-stages": Budget(
            _need(3 * total * LABELS_PER_VOXEL),
            _processes(cpus("compare-stages"), EVALUATE_BYTES, largest),
            cpu_time("compare-stages", EVALUATE_NS_PER_LABEL, tested),
        ),
    }


def _sized(budgets: dict[str, Budget], field: str) -> tuple[str, ...]:
    return tuple(step for step, budget in budgets.items() if getattr(budget, field) is not None)


_EXAMPLE = step_budgets(Work({}, [], 1, 2), {})
SIZED = tuple(_EXAMPLE)  # the steps the scan sizes (every step holding cases): their disk
MEMORY_SIZED = _sized(_EXAMPLE, "memory")  # and their memory, where it follows from the data
TIMED = _sized(_EXAMPLE, "seconds")  # and their deadline, where it follows from the data


def write_budgets(
    folder: Path,
    budgets: dict[str, Budget],
    scratch: int,
    data_scratch: int,
    pods: Mapping[str, PodClass],
    whole_dataset: Collection[str],
) -> dict[str, dict[str, str]]:
    """One file per step and resource (``disk-<step>``, ``memory-<step>``, ``deadline-<step>``), never below the
    least of its kind: the disk minimums (``data_scratch`` for the steps holding the whole dataset), the pod class's
    memory limit, an hour."""
    written: dict[str, dict[str, str]] = {}
    for step, budget in budgets.items():
        values = {"disk": quantity(max(budget.disk, data_scratch if step in whole_dataset else scratch))}
        if budget.memory is not None:
            values["memory"] = quantity(max(budget.memory, pods.get(step, POD_CLASSES["cpu"]).memory_limit))
        if budget.seconds is not None:
            values["deadline"] = str(max(budget.seconds, HOUR))
        for kind, value in values.items():
            atomic_write_text(folder / f"{kind}-{step}", value)
        written[step] = values
    return written


def quantity(nbytes: int) -> str:
    """Bytes as a Kubernetes quantity in whole GiB (rounded up)."""
    return f"{math.ceil(nbytes / GiB)}Gi"
