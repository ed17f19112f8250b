"""The ``pseudolabel`` stage: TotalSegmentator on each converted CT, then the merged label map.

TotalSegmentator is an optional extra (``pip install tsretrain[pseudolabel]``). Tasks run one at a time in
this process, memory is released between them, and each task's time and peak memory go into the case's
``pseudolabel.json``. Weights come from ``TOTALSEG_HOME_DIR`` or ``--weights`` (a folder, possibly read-only, or
a store prefix staged to local disk; TotalSegmentator's config then lives in ``~/.totalsegmentator``, with usage
statistics off); they are downloaded at run time only with ``--allow-download``. Outputs::

    OUT/<case>/tasks/<task>.nii.gz  TotalSegmentator's multi-label map of each task
    OUT/<case>/<case>.nii.gz        the merged label map (dictionary ids), on the CT grid
    OUT/<case>/pseudolabel.json     per-task time and memory, chosen source per label, overlaps, missing labels
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import gc
import inspect
import json
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from tsretrain.conversion.geometry import VolumeGeometry
from tsretrain.conversion.nifti import write_nifti
from tsretrain.dataset.merge import MergeInputs, merge_labels
from tsretrain.errors import UserError
from tsretrain.labels.dictionary import OrganDictionary, PseudoLabelSource, load_dictionary
from tsretrain.resources import Device
from tsretrain.run_files import (
    CASE_IMAGE,
    CASE_LABELS,
    MERGE_RECORD,
    MERGED_LABELS,
    CaseManifest,
    CaseStatus,
    all_manifests,
)
from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_text
from tsretrain.storage.store import open_store
from tsretrain.totalseg.models import models_for, task_models
from tsretrain.totalseg.standins import is_standin
from tsretrain.training import discovery, precision
from tsretrain.training.nnunet_env import torch_device
from tsretrain.training.precision import Precision
from tsretrain.ui import log, progress
from tsretrain.versions import installed

TASKS = "tasks"  # per case, the folder of the task maps (the merged map sits beside it)


class PseudolabelError(UserError):
    """TotalSegmentator cannot run as configured; the message says what to install or provision."""


@dataclass(frozen=True, kw_only=True)
class PseudolabelConfig:
    """Configuration of the ``pseudolabel`` stage."""

    converted: Path
    out: Path
    dictionary: str = "radcure-ts90"
    device: Device = "auto"
    precision: Precision = "auto"
    weights: str | None = None
    allow_download: bool = False
    prefer_manual: bool = True
    cases: tuple[str, ...] = ()


def required_weights(task: str) -> list[str]:
    """Weight folders (relative to TotalSegmentator's weights dir) a task needs, its crop model included."""
    return [model.folder for model in task_models(task)]


def check_classes(dictionary: OrganDictionary) -> None:
    """Every TotalSegmentator class the dictionary names exists in the installed TotalSegmentator's class map."""
    from totalsegmentator.map_to_binary import class_map

    for label in dictionary.labels:
        for source in label.sources:
            if isinstance(source, PseudoLabelSource) and source.cls not in class_map.get(source.task, {}).values():
                known = list(class_map.get(source.task, {}).values())
                close = difflib.get_close_matches(source.cls, known, n=1)
                raise PseudolabelError(
                    f"dictionary {dictionary.name}: label {label.name} takes {source.task}/{source.cls}, a class the "
                    f"installed TotalSegmentator ({installed('TotalSegmentator')}) does not have"
                    + (f"; did you mean {close[0]}?" if close else ""),
                    "fix the dictionary's source or install the TotalSegmentator version it was written for",
                )


def check_class_maps(tasks: list[str], root: Path) -> None:
    """The weights predict the classes TotalSegmentator's class map names (their dataset.json against
    ``map_to_binary``): weights of another TotalSegmentator version would label organs wrongly, silently."""
    for model in models_for(tasks):  # each model once (every task here shares the crop model)
        dataset = root / model.model_folder / "dataset.json"
        if not dataset.is_file():
            raise PseudolabelError(
                f"TotalSegmentator weights under {root / model.folder} lack {model.model_folder.name}/dataset.json "
                f"(task {model.task} runs {model.trainer}, {model.plans}, {model.configuration})",
                "provision the weights of the installed TotalSegmentator version",
            )
        labels = {int(v): k for k, v in json.loads(dataset.read_text())["labels"].items() if int(v)}
        if labels != model.classes:
            wrong = sorted(i for i in set(labels) | set(model.classes) if labels.get(i) != model.classes.get(i))
            raise PseudolabelError(
                f"TotalSegmentator weights {model.folder} label {wrong[0]} as {labels.get(wrong[0])!r}, its class "
                f"map ({installed('TotalSegmentator')}) as {model.classes.get(wrong[0])!r} "
                f"({len(wrong)} label(s) differ)",
                "the weights belong to another TotalSegmentator version: provision the installed version's",
            )


def check_weights(tasks: list[str], allow_download: bool) -> list[str]:
    """Missing weight folders; raises unless downloading is allowed."""
    from totalsegmentator.config import get_weights_dir

    root = Path(get_weights_dir())
    missing = sorted({f for task in tasks for f in required_weights(task) if not (root / f).is_dir()})
    if missing and not allow_download:
        raise PseudolabelError(
            f"TotalSegmentator weights missing under {root}: {missing}. Provision them (see the README: "
            "'TotalSegmentator weights'), point TOTALSEG_HOME_DIR/--weights at them, or pass --allow-download."
        )
    if not missing:
        check_class_maps(tasks, root)
    return missing


def stage_weights(weights: str, cache: Path) -> Path:
    """A local TotalSegmentator home: a plain path as it is, a store URI (s3://, file://) copied to ``cache``."""
    if "://" not in weights:
        return Path(weights)
    fetched = open_store(weights).download_all("", cache)
    log.info("staged %d weight file(s) from %s to %s", fetched, weights, cache)
    return cache


def use_weights(weights: Path, home: Path) -> None:
    """TotalSegmentator reads its weights from ``weights`` (a TotalSegmentator home holding ``nnunet/results``;
    it may be read-only, e.g. a ReadOnlyMany claim) and keeps its ``config.json`` in the writable ``home``, with
    usage statistics off."""
    os.environ["TOTALSEG_WEIGHTS_PATH"] = str(weights / "nnunet" / "results")
    os.environ["TOTALSEG_HOME_DIR"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "config.json"
    settings = json.loads(config.read_text()) if config.is_file() else {"prediction_counter": 0}
    settings |= {"send_usage_stats": False, "statistics_disclaimer_shown": True}
    atomic_write_text(config, json.dumps(settings, indent=1))


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_task(ct: Path, task: str, out: Path, device: str) -> dict[str, float]:
    """One TotalSegmentator task on one CT (``device`` in its words: gpu, cpu); returns its time and peak memory."""
    import torch
    import totalsegmentator.nnunet
    from totalsegmentator.python_api import totalsegmentator

    discovery.install()

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    # one CT per call, so one segmentation export: TotalSegmentator's default pool of 6 export processes would only
    # start (each importing torch and nnU-Net) and wait
    with predictions_in_process():
        totalsegmentator(ct, out, ml=True, task=task, device=device, quiet=True, nr_thr_saving=1)
    result = {"seconds": round(time.perf_counter() - started, 2), "peak_rss_mib": round(_peak_rss_mib(), 1)}
    if torch.cuda.is_available():
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        torch.cuda.empty_cache()
    gc.collect()
    return result


@contextlib.contextmanager
def predictions_in_process() -> Iterator[None]:
    """TotalSegmentator's nnU-Net predictions run as nnU-Net's own ``predict_from_files_sequential``: each call
    predicts one CT, so the preprocessing process, manager and export pool that ``predict_from_files`` starts per
    prediction (each importing torch and nnU-Net, 2-4 s of CPU) have nothing to overlap with and only add their
    start, twelve times per CT for radcure-ts90 (six tasks, each after its crop model), on a GPU as on CPUs. On a
    CPU the network's forward runs in the process's arithmetic (``--precision``: bfloat16 autocast where the CPU
    computes it natively), as in tsretrain's own predictions."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    original = nnUNetPredictor.predict_from_files
    accepted = inspect.signature(nnUNetPredictor.predict_from_files_sequential).parameters

    @functools.wraps(original)  # the same signature: TotalSegmentator asks it which options it takes
    def sequential(self: Any, inputs: Any, outputs: Any, **options: Any) -> Any:
        precision.apply(self.network, self.device)
        if options.get("num_parts", 1) != 1:  # a share of a folder: nnU-Net's own path
            return original(self, inputs, outputs, **options)
        return self.predict_from_files_sequential(
            inputs, outputs, **{name: value for name, value in options.items() if name in accepted}
        )

    nnUNetPredictor.predict_from_files = sequential
    try:
        yield
    finally:
        nnUNetPredictor.predict_from_files = original


def class_ids(task: str) -> dict[str, int]:
    from totalsegmentator.map_to_binary import class_map

    return {name: int(i) for i, name in class_map[task].items()}


def merge_case(manifest: CaseManifest, config: PseudolabelConfig, tasks: list[str]) -> dict[str, Any]:
    """The merged label map of one converted case from its manual map, its task outputs and its CT."""
    dictionary = load_dictionary(config.dictionary)
    case = manifest["case_id"]
    pseudo_dir = config.out / case
    manual = sitk.GetArrayFromImage(sitk.ReadImage(str(CASE_LABELS.at(config.converted, case=case))))
    manual = manual.astype(np.uint8)
    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(CASE_IMAGE.at(config.converted, case=case))))
    pseudo = {}
    for task in tasks:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(pseudo_dir / TASKS / f"{task}.nii.gz"))).astype(np.uint8)
        if array.shape != manual.shape:
            raise PseudolabelError(f"{case}: {task} output {array.shape} is not on the CT grid {manual.shape}")
        pseudo[task] = array
    present = {name for name, info in manifest["labels"].items() if info["present"]}
    inputs = MergeInputs(manual, present, pseudo, {t: class_ids(t) for t in tasks}, hu)
    merged, report = merge_labels(dictionary, inputs, config.prefer_manual)
    write_nifti(merged, VolumeGeometry.from_json(manifest["geometry"]), MERGED_LABELS.at(config.out, case=case))
    return report


def weights_provenance() -> dict[str, Any]:
    """Which weights TotalSegmentator runs on: the folder, and whether they are tsretrain's stand-ins."""
    from totalsegmentator.config import get_weights_dir

    root = Path(get_weights_dir())
    return {"weights": str(root), "stand_in": is_standin(root)}


def pseudolabel(config: PseudolabelConfig) -> StageResult:
    """Run the dictionary's TotalSegmentator tasks on every converted case and merge the label maps."""
    if config.weights is not None:
        use_weights(stage_weights(config.weights, config.out / ".weights"), Path.home() / ".totalsegmentator")
    dictionary = load_dictionary(config.dictionary)
    tasks = dictionary.pseudolabel_tasks()
    if not tasks:
        raise PseudolabelError(f"dictionary {dictionary.name} names no TotalSegmentator source")
    check_classes(dictionary)
    check_weights(tasks, config.allow_download)
    on_cuda = torch_device(config.device, config.precision).type == "cuda"
    device = "gpu" if on_cuda else "cpu"  # TotalSegmentator's words
    provenance = weights_provenance()
    if provenance["stand_in"]:
        log.warning(
            "TotalSegmentator runs on STAND-IN weights (%s): pseudo-labels of phantoms only", provenance["weights"]
        )
    manifests = [m for m in all_manifests(config.converted) if m["status"] == CaseStatus.OK]
    if config.cases:
        manifests = [m for m in manifests if m["case_id"] in config.cases]
    done = 0
    with progress("pseudolabel: cases", total=len(manifests)) as advance:
        for manifest in manifests:
            case = manifest["case_id"]
            pseudo_dir = config.out / case
            (pseudo_dir / TASKS).mkdir(parents=True, exist_ok=True)
            timings = {}
            for task in tasks:
                target = pseudo_dir / TASKS / f"{task}.nii.gz"
                if not target.is_file():
                    log.info("%s: TotalSegmentator %s", case, task)
                    timings[task] = run_task(CASE_IMAGE.at(config.converted, case=case), task, target, device)
            report = merge_case(manifest, config, tasks)
            record = {"tasks": timings, **provenance, **report}
            atomic_write_text(MERGE_RECORD.at(config.out, case=case), json.dumps(record, indent=1))
            done += 1
            advance(1)
    return StageResult("pseudolabel", {"out": str(config.out)}, {"cases": done, "tasks": len(tasks)})
