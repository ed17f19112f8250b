"""nnU-Net's fingerprint and preprocessing in batches of cases, for a cluster: no pod holds the whole dataset.

- ``fingerprint``: each batch's pod runs nnU-Net's own per-case analysis (``DatasetFingerprintExtractor.
  analyze_case``, with the foreground sample count nnU-Net would use for the whole training set) on its training
  cases and saves one record per case (``nnunet/fingerprints/<dataset>/<case>.npz``);
- ``plan``: one pod merges the records exactly as nnU-Net's extractor merges its results (cases in the dataset's
  order) into ``dataset_fingerprint.json``, then plans as the ``preprocess`` stage does; nnU-Net's planner sees
  the training cases through a planning view of ``dataset.json`` (cases listed, reader named) instead of reading
  the images;
- ``preprocess-cases``: each batch's pod runs nnU-Net's preprocessor (``run_case_save``) on its training cases and
  copies their reference segmentations, as ``nnUNetv2_preprocess`` would for the whole set.

The result equals the one-pod ``preprocess`` stage's (tested).
"""

from __future__ import annotations

import io
import json
import multiprocessing
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsretrain.errors import UserError
from tsretrain.model import Model
from tsretrain.resources import cpu_quota
from tsretrain.run_files import PLANNING_SUMMARY
from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_bytes, atomic_write_text
from tsretrain.training.nnunet_env import NnunetFolders, environment
from tsretrain.training.preprocess import PreprocessConfig, check, make_plans, preprocessing_workers
from tsretrain.ui import log

READER = "SimpleITKIO"  # nnU-Net's reader of .nii.gz (what its probe picks), named in the planning view


@dataclass(frozen=True, kw_only=True)
class BatchConfig:
    """Configuration of ``preprocess-cases``: a batch's cases (only its training cases are worked on; test and
    excluded cases are not in nnU-Net's training set)."""

    work: Path
    model: Model = field(default_factory=Model)
    cases: tuple[str, ...] = ()
    workers: int = 0


@dataclass(frozen=True, kw_only=True)
class FingerprintConfig(BatchConfig):
    """Configuration of ``fingerprint``."""

    fingerprints: Path


@dataclass(frozen=True, kw_only=True)
class PlanConfig(PreprocessConfig):
    """Configuration of ``plan``: the ``preprocess`` stage's planning settings and the batches' records."""

    fingerprints: Path


def _training_set(folders: NnunetFolders, dataset: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    raw = folders.raw / dataset
    if not (raw / "dataset.json").is_file():
        raise UserError(f"{raw / 'dataset.json'} does not exist", "run tsretrain assemble first")
    described = json.loads((raw / "dataset.json").read_text())
    if not (raw / "imagesTr").is_dir():  # a batch without training cases fetched none
        return described, {}
    return described, get_filenames_of_train_images_and_targets(str(raw), described)


def _batch(training: dict[str, Any], cases: tuple[str, ...]) -> list[str]:
    """The batch's training cases present here (every training case when no batch is given)."""
    return sorted(training) if not cases else [case for case in sorted(cases) if case in training]


def _starmap(function: Any, jobs: list[tuple[Any, ...]], workers: int) -> list[Any]:
    """``function`` on each job: in this process when one worker is enough (a spawned process imports torch and
    nnU-Net again, seconds of CPU), else in a pool of spawned processes as nnU-Net runs them."""
    if min(workers, len(jobs)) <= 1:
        return [function(*job) for job in jobs]
    with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
        return list(pool.starmap(function, jobs))


def fingerprint(config: FingerprintConfig) -> StageResult:
    """nnU-Net's per-case fingerprint of the batch's training cases, one record each."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.imageio.reader_writer_registry import recursive_find_reader_writer_by_name

    folders = NnunetFolders(config.work)
    folders.activate()
    described, training = _training_set(folders, config.model.dataset)
    todo = _batch(training, config.cases)
    out = config.fingerprints / config.model.dataset
    out.mkdir(parents=True, exist_ok=True)
    if not todo:
        log.info("fingerprint: no training case among the %d case(s) of the batch", len(config.cases))
        return StageResult("fingerprint", {"fingerprints": str(out)}, {"cases": 0})
    # the sample count nnU-Net draws per case for the whole training set, not for this batch
    extractor = DatasetFingerprintExtractor(config.model.dataset_id, 1)
    samples = int(extractor.num_foreground_voxels_for_intensitystats // described["numTraining"])
    reader = recursive_find_reader_writer_by_name(READER)
    jobs = [(training[c]["images"], training[c]["label"], reader, samples) for c in todo]
    results = _starmap(DatasetFingerprintExtractor.analyze_case, jobs, config.workers or cpu_quota())
    import numpy as np

    for case, (shape, spacing, intensities, _, relative) in zip(todo, results, strict=True):
        arrays = {f"intensities_{i}": np.asarray(v) for i, v in enumerate(intensities)}
        arrays |= {"shape": np.asarray(shape), "spacing": np.asarray(spacing), "relative": np.asarray(relative)}
        record = io.BytesIO()
        np.savez(record, **arrays)  # type: ignore[arg-type]
        atomic_write_bytes(out / f"{case}.npz", record.getvalue())
    log.info("fingerprint: %d training case(s) of %d in the batch", len(todo), len(config.cases) or len(todo))
    return StageResult("fingerprint", {"fingerprints": str(out)}, {"cases": len(todo)})


def merged_fingerprint(folder: Path, described: dict[str, Any], cases: list[str]) -> dict[str, Any]:
    """The dataset fingerprint of these cases' records, as nnU-Net's extractor computes it (``run``)."""
    import numpy as np

    records = [np.load(folder / f"{case}.npz") for case in cases]
    channels = len(described["channel_names"])
    intensities = [np.concatenate([r[f"intensities_{i}"] for r in records]) for i in range(channels)]
    statistics = {}
    for i in range(channels):
        low, median, high = np.percentile(intensities[i], np.array((0.5, 50.0, 99.5)))
        statistics[i] = {
            "mean": float(np.mean(intensities[i])),
            "median": float(median),
            "std": float(np.std(intensities[i])),
            "min": float(np.min(intensities[i])),
            "max": float(np.max(intensities[i])),
            "percentile_99_5": float(high),
            "percentile_00_5": float(low),
        }
    return {
        "spacings": [[float(v) for v in r["spacing"]] for r in records],
        "shapes_after_crop": [[int(v) for v in r["shape"]] for r in records],
        "foreground_intensity_properties_per_channel": statistics,
        "median_relative_size_after_cropping": float(np.median([float(r["relative"]) for r in records], 0)),
    }


def plan(config: PlanConfig) -> StageResult:
    """Merge the batches' fingerprint records and plan (the ``preprocess`` stage's planning, overrides and
    summary), without reading the images."""
    check(config)
    folders = NnunetFolders(config.work)
    folders.activate()
    name = config.model.dataset
    raw, target = folders.raw / name, folders.preprocessed / name
    if not (raw / "dataset.json").is_file():
        raise UserError(f"{raw / 'dataset.json'} does not exist", "run tsretrain assemble first")
    described = json.loads((raw / "dataset.json").read_text())
    records = config.fingerprints / name
    cases = sorted(p.stem for p in records.glob("*.npz"))
    if len(cases) != described["numTraining"]:
        raise UserError(
            f"{len(cases)} fingerprint records in {records} for {described['numTraining']} training cases",
            "run tsretrain fingerprint on every batch first",
        )
    target.mkdir(parents=True, exist_ok=True)
    fingerprint_json = json.dumps(merged_fingerprint(records, described, cases), indent=4)
    atomic_write_text(target / "dataset_fingerprint.json", fingerprint_json)
    with tempfile.TemporaryDirectory() as view:  # the planner lists the training cases; it reads no image
        ending = described["file_ending"]
        listed = {
            case: {
                "images": [str(raw / "imagesTr" / f"{case}_0000{ending}")],
                "label": str(raw / "labelsTr" / f"{case}{ending}"),
            }
            for case in cases
        }
        planning = {**described, "dataset": listed, "overwrite_image_reader_writer": READER}
        (Path(view) / name).mkdir()
        atomic_write_text(Path(view) / name / "dataset.json", json.dumps(planning))
        with environment(("nnUNet_raw", view)):
            result = make_plans(config, folders)
    shutil.copyfile(raw / "dataset.json", target / "dataset.json")  # the planner copied the view
    return StageResult(
        "plan", {"plans": str(target / f"{result['plans_identifier']}.json")}, {"training_cases": len(cases)}
    )


def preprocess_cases(config: BatchConfig) -> StageResult:
    """nnU-Net's preprocessing of the batch's training cases with the planned configuration, and their reference
    segmentations copied where nnU-Net's validation reads them."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folders = NnunetFolders(config.work)
    folders.activate()
    name = config.model.dataset
    target = folders.preprocessed / name
    summary_file = PLANNING_SUMMARY.at(folders.preprocessed, dataset=name)
    if not summary_file.is_file():
        raise UserError(f"{summary_file} does not exist", "run tsretrain plan first")
    planned = json.loads(summary_file.read_text())
    described, training = _training_set(folders, name)
    todo = _batch(training, config.cases)
    plans = PlansManager(str(target / f"{planned['plans_identifier']}.json"))
    dataset_json = json.loads((target / "dataset.json").read_text())
    workers = min(preprocessing_workers(planned, len(dataset_json["labels"]), config.workers), max(1, len(todo)))
    for configuration in planned["preprocessed_configurations"]:
        manager = plans.get_configuration(configuration)
        out = target / manager.data_identifier
        out.mkdir(parents=True, exist_ok=True)
        preprocessor = manager.preprocessor_class(verbose=False)
        jobs = [(str(out / c), training[c]["images"], training[c]["label"], plans, manager, dataset_json) for c in todo]
        _starmap(preprocessor.run_case_save, jobs, workers)
    references = target / "gt_segmentations"
    references.mkdir(exist_ok=True)
    for case in todo:
        shutil.copyfile(training[case]["label"], references / f"{case}{described['file_ending']}")
    log.info("preprocess-cases: %d training case(s) with %d worker(s)", len(todo), workers)
    return StageResult("preprocess-cases", {"preprocessed": str(target)}, {"cases": len(todo), "workers": workers})
