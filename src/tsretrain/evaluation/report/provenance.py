"""The report's provenance section: what the run was made of (inputs, split, plans, configuration, packages) with
their digests, and each fold's environment."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tsretrain.evaluation.report.blocks import Block, Heading, Paragraph, Pre, Table
from tsretrain.layout import RunLayout
from tsretrain.run_files import INVENTORY, SPLIT, read_inventory
from tsretrain.versions import commit, installed

if TYPE_CHECKING:
    from tsretrain.evaluation.report import ReportConfig


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "–"


def provenance_section(run: Path, config: ReportConfig, fold_rows: list[list[str]]) -> list[Block]:
    packages = ("tsretrain", "nnunetv2", "torch", "pydicom", "SimpleITK", "numpy")
    versions = [f"{package} {installed(package) or '–'}" for package in packages]
    pre = RunLayout(run).preprocessed / config.dataset
    plans = sorted(pre.glob("*Plans*.json"))
    inventory = read_inventory(RunLayout(run).scan)
    run_config = RunLayout(run).at("run_config")
    return [
        Heading("8. Provenance"),
        Table(
            ["item", "value"],
            [
                ["report written", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")],
                ["run", config.run_id or run.resolve().name],
                ["tsretrain", f"{installed('tsretrain') or '–'}, commit {commit()}"],
                ["input", inventory["input"]],
                [f"input listing ({INVENTORY.describe()}) sha256", _sha(INVENTORY.in_run(run))],
                [
                    "dictionary",
                    f"{inventory['dictionary']['name']} {inventory['dictionary'].get('version', '')} "
                    f"({inventory['dictionary']['sha256'][:16]})",
                ],
                [f"split file ({SPLIT.describe()}) sha256", _sha(SPLIT.in_run(run))],
                *[[f"plans {p.name} sha256", _sha(p)] for p in plans],
                ["packages of the report step", ", ".join(versions)],
                [f"run configuration ({run_config.name}) sha256", _sha(run_config)],
            ],
        ),
        *(
            [Paragraph(f"The run's configuration ({run_config.name}):"), Pre(run_config.read_text())]
            if run_config.is_file()
            else [
                Paragraph(f"No {run_config.name}: a cluster run's configuration is its workflow's parameters in Argo.")
            ]
        ),
        Paragraph("Each fold's environment as its training process recorded it:"),
        Table(["fold", "device", "torch, CUDA", "nnU-Net", "wall time (s)", "GPU hours"], fold_rows),
    ]
