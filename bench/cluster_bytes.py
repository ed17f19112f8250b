"""Bytes each cluster step fetches from the store, measured on the wire by the test harness (a per-pod proxy in
``tests/cluster/argo_sim``) on the synthetic cohort of ``tests/e2e/test_cluster_run.py``, extrapolated to RADCURE.

Extrapolation (per pod): the synthetic cohort has 29 patients (64 x 64 x 24 voxels in the test); RADCURE has 3,346
patients, 323.5 GB of DICOM, CTs of about 512 x 512 x 181. A step's bytes scale with what it reads: DICOM of a
batch (per-patient DICOM ratio), headers of every file (8 KiB ranged reads per object), per-case JSON
(patients ratio), or images of the whole dataset (patients x voxels ratio). Model checkpoints (train, predict)
are the tiny model's here and are not extrapolated.

Usage: ``python bench/cluster_bytes.py [--out docs/benchmarks.md]`` (runs the harness test, about 10 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from benchlib import update_section

ROOT = Path(__file__).resolve().parents[1]
RADCURE_PATIENTS, RADCURE_DICOM = 3346, 323.5e9
RADCURE_VOXELS, RADCURE_OBJECTS_PER_PATIENT = 512 * 512 * 181, 183  # CT slices and an RTSTRUCT
RANGED_READ = 8 * 1024
SCALING = {  # template: what its bytes scale with
    "claim": "nothing",
    "scan": "headers",
    "convert": "batch DICOM",
    "pseudolabel": "batch images",
    "listing": "patients",
    "split": "patients",
    "assemble": "dataset images",
    "fingerprint": "batch images",
    "plan": "nothing",  # nnU-Net draws 10^8 foreground samples over all training cases, whatever their count
    "preprocess-cases": "batch images",
    "assemble-merged": "dataset images",
    "train": "dataset images",  # a fold's first attempt; a resumed one also fetches the fold's checkpoints
    "validate": "dataset images",  # the fold's validation cases
    "predict": "batch images",  # a batch of test cases and the folds' final checkpoints (not scaled)
    "evaluate": "dataset images",
    "evaluate-merged": "dataset images",
    "second-stage": "dataset images",  # as train, from the first stage's checkpoint of the fold
    "second-predict": "batch images",
    "compare-stages": "dataset images",  # the test references and both stages' predictions
    "report": "patients",
    "report-second": "patients",
    "export": "nothing",  # the folds' checkpoints and the run's small records
    "record-status": "nothing",
}


def measure() -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        record = Path(folder) / "bytes.json"
        command = [sys.executable, "-m", "pytest", "-q", "-n", "0", "tests/e2e/test_cluster_run.py", "-k", "bytes"]
        env = {**os.environ, "TSRETRAIN_CLUSTER_BYTES": str(record)}
        subprocess.run(command, cwd=ROOT, env=env, check=False)
        if not record.is_file():
            raise SystemExit("the harness run did not record its figures (see the test output above)")
        data: dict[str, object] = json.loads(record.read_text())
        return data


def factor(kind: str, patients: int, dicom_bytes: int, objects: int, voxels_here: int) -> float:
    per_patient = RADCURE_DICOM / RADCURE_PATIENTS / (dicom_bytes / patients)
    cases = RADCURE_PATIENTS / patients
    voxels = RADCURE_VOXELS / voxels_here
    read_here = objects * min(RANGED_READ, dicom_bytes / objects)  # header-sized ranged reads per object
    return {
        "nothing": 1.0,
        "headers": RADCURE_PATIENTS * RADCURE_OBJECTS_PER_PATIENT * RANGED_READ / read_here,
        "batch DICOM": per_patient,
        "batch images": voxels,
        "patients": cases,
        "dataset images": cases * voxels,
    }[kind]


def table(data: dict[str, object]) -> str:
    pods = data["pods"]
    assert isinstance(pods, list)
    patients, dicom_bytes, objects = int(data["patients"]), int(data["dicom_bytes"]), int(data["dicom_objects"])
    voxels = int(data["voxels_per_case"])
    by_template: dict[str, list[int]] = defaultdict(list)
    for pod in pods:
        by_template[pod["template"]].append(int(pod["fetched"]))
    lines = [
        f"Measured on the synthetic cohort ({patients} patients, {dicom_bytes / 1e6:.0f} MB of DICOM, {voxels} voxels "
        "per CT, "
        "convert batches of 8), one fold of the tiny configuration; bytes received by each pod from the store. "
        "Extrapolated to RADCURE (3,346 patients, 323.5 GB) by what each step's bytes scale with.",
        "",
        "Train: a fold's first attempt (the preprocessed data); a resumed attempt also fetches the fold's "
        "checkpoints. Predict: a batch of test cases (the tiny model's checkpoints scaled with the images). Plan: "
        "the fingerprint records, nnU-Net's 10^8 foreground samples in all (4 bytes each) whatever the case count. "
        "The steps that read the whole dataset (assemble, train) are where a PVC beats an emptyDir.",
        "",
        "| step | pods | fetched per pod here | scales with | per pod at RADCURE (estimate) |",
        "|---|---|---|---|---|",
    ]
    for template, values in sorted(by_template.items(), key=lambda kv: list(SCALING).index(kv[0])):
        kind = SCALING[template]
        here = min(values) if template == "train" else max(values)  # train: the first attempt, data only
        estimate = here * factor(kind, patients, dicom_bytes, objects, voxels)
        lines.append(f"| {template} | {len(values)} | {_size(here)} | {kind} | {_size(estimate)} |")
    return "\n".join(lines)


def _size(value: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f} B"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=None, help="results file to update (docs/benchmarks.md)")
    parser.add_argument("--figures", type=Path, default=None, help="use recorded figures instead of measuring")
    args = parser.parse_args()
    data = json.loads(args.figures.read_text()) if args.figures else measure()
    update_section(args.out, "bench/cluster_bytes.py", "## Bytes fetched per cluster step\n\n" + table(data))


if __name__ == "__main__":
    main()
