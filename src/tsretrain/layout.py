"""The run layout: where each stage's outputs live, relative to a run folder (``tsretrain run``), a pod's work
folder and a run's store prefix alike, so that a stage finds its inputs at the same relative path everywhere."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

# nnU-Net's three folders under its work root (the environment variables of the same names point at them)
NNUNET_FOLDERS = {"raw": "nnUNet_raw", "preprocessed": "nnUNet_preprocessed", "results": "nnUNet_results"}

# location -> (path relative to the run, what it holds); the README's layout is checked against this table
LOCATIONS: dict[str, tuple[str, str]] = {
    "cohort": ("cohort", "synthetic DICOM cohort: dicom/, truth/, cohort.json (when no input is given)"),
    "scan": (
        "scan",
        "inventory.json (every case plan), cases.csv (the scan's listing), batches/ (a fan-out's inventory per batch)",
    ),
    "converted": ("converted", "cases/CASE/ (CT, label map, manifest.json), cases.csv (the case listing)"),
    "pseudolabels": (
        "pseudolabels",
        "CASE/: tasks/ (TotalSegmentator maps), CASE.nii.gz (the merged map), pseudolabel.json",
    ),
    "split": ("split", "split.json, splits_final.json, split_report.md"),
    "nnunet": ("nnunet", "nnU-Net's work root: the three folders below"),
    "raw": (
        f"nnunet/{NNUNET_FOLDERS['raw']}",
        "DATASET/: imagesTr, labelsTr, imagesTs (test cases only), labelsTs, dataset.json",
    ),
    "preprocessed": (
        f"nnunet/{NNUNET_FOLDERS['preprocessed']}",
        "DATASET/: plans, preprocessed data, planning_summary.json (names the plans)",
    ),
    "results": (
        f"nnunet/{NNUNET_FOLDERS['results']}",
        "DATASET/TRAINER__PLANS__CONFIGURATION/fold_K/: checkpoints, progress.json, validation/",
    ),
    "fingerprints": (
        "nnunet/fingerprints",
        "DATASET/CASE.npz: nnU-Net's fingerprint of each training case (a cluster run's batches)",
    ),
    "predictions": ("predictions", "test/ (fold ensemble), validation/fold_K/"),
    "postprocessing": (
        "postprocessing",
        "validation/ (the folds' validation predictions merged, nnU-Net's postprocessing.pkl and .json, summaries "
        "before and after), trials/, test/ (the test predictions post-processed), decision.json",
    ),
    "evaluation": (
        "evaluation",
        "per_case.csv, per_label.csv, summary.json, review.json (the cases the report shows); postprocessed/: the "
        "same for the post-processed test predictions, against the raw ones",
    ),
    "second": ("second-stage", "test/: the tumour-focused second stage's fold ensemble on the test set"),
    "comparison": (
        "comparison",
        "comparison.json, per_case.csv: first against second stage on the tumour, per test case, paired",
    ),
    "report": ("report", "report.html (self-contained), report.md, figures/"),
    "export": (
        "export",
        "the model package (DATASET-CONFIGURATION-VERSION.zip, nnU-Net's export layout), MODEL_CARD.md",
    ),
    "inference": (
        "inference",
        "CASE/SERIES/: rtstruct.dcm, seg.dcm, labels.nii.gz (new patients' contours); cases.csv, inference.json",
    ),
    "records": (
        ".stages",
        "one record per finished stage: its configuration hash and result (local runs); per finished cluster step "
        "its input key and the files it left for the workflow (a resumed run skips it)",
    ),
    "run_config": ("run_config.json", "the configuration `tsretrain run` ran with (a local run's)"),
    "claim": ("run.json", "the workflow that owns a cluster run's prefix"),
    "status": ("status.json", "how a cluster run ended: status and failed steps"),
}


def batch_id(cases: tuple[str, ...]) -> str:
    """A fan-out batch's id, from its cases: every stage fanning out over the same batches names it alike (its
    inventory ``scan/batches/<id>.json``, its manifests ``_manifest-batch-<id>.json``)."""
    return hashlib.sha256(",".join(cases).encode()).hexdigest()[:16]


def relative(location: str) -> str:
    """A location's path relative to the run (``/``-separated, the same on disk and in the store)."""
    return LOCATIONS[location][0]


@dataclass(frozen=True)
class RunLayout:
    """The locations of one run folder."""

    root: Path

    def at(self, location: str) -> Path:
        return self.root / relative(location)

    @property
    def cohort(self) -> Path:
        return self.at("cohort")

    @property
    def scan(self) -> Path:
        return self.at("scan")

    @property
    def converted(self) -> Path:
        return self.at("converted")

    @property
    def split(self) -> Path:
        return self.at("split")

    @property
    def nnunet(self) -> Path:
        return self.at("nnunet")

    @property
    def raw(self) -> Path:
        return self.at("raw")

    @property
    def preprocessed(self) -> Path:
        return self.at("preprocessed")

    @property
    def results(self) -> Path:
        return self.at("results")

    @property
    def predictions(self) -> Path:
        return self.at("predictions")

    @property
    def postprocessing(self) -> Path:
        return self.at("postprocessing")

    @property
    def evaluation(self) -> Path:
        return self.at("evaluation")

    @property
    def comparison(self) -> Path:
        return self.at("comparison")

    @property
    def report(self) -> Path:
        return self.at("report")

    @property
    def records(self) -> Path:
        return self.at("records")


def markdown_table() -> str:
    """The layout as the README shows it (a test keeps the two equal)."""
    rows = [f"| `{path}{'' if path.endswith('.json') else '/'}` | {holds} |" for path, holds in LOCATIONS.values()]
    return "\n".join(["| path | holds |", "|---|---|", *rows])
