"""The ``report`` stage: one self-contained HTML file and its Markdown twin, from a finished run's outputs.

Sections follow the seed report: dataset exploration, split, planning, training, test evaluation, case
review, comparison with published GTVp results, provenance. Every number is read from the run's CSV/JSON
outputs (nothing is recomputed here), so each can be traced to its file.

The package: ``blocks`` (what sections are made of), ``render`` (Markdown, HTML), one module per group of sections
(``run``, ``training``, ``results``, ``postprocessing``, ``second_stage``, ``literature``, ``provenance``), the
tables and figures they use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tsretrain.evaluation.report.blocks import Figure, Heading
from tsretrain.evaluation.report.literature import literature_section
from tsretrain.evaluation.report.provenance import provenance_section
from tsretrain.evaluation.report.render import to_html, to_markdown
from tsretrain.evaluation.report.results import evaluation_section, review_section
from tsretrain.evaluation.report.run import (
    dataset_section,
    planning_section,
    scope_blocks,
    split_section,
    synthetic_banner,
    synthetic_cases,
)
from tsretrain.evaluation.report.training import training_section
from tsretrain.layout import RunLayout
from tsretrain.stages import StageResult
from tsretrain.storage.atomic import atomic_write_text

__all__ = ["ReportConfig", "report"]


@dataclass(frozen=True)
class ReportConfig:
    """Configuration of the ``report`` stage."""

    run_dir: Path
    out: Path
    dataset: str = "Dataset366_TotalSegmentator"
    trainer: str = "nnUNetTrainerTsr"
    synthetic: bool = False
    comparison: Path | None = None
    postprocessing: Path | None = None
    run_id: str = ""


def report(config: ReportConfig) -> StageResult:
    run = config.run_dir
    figure_dir = config.out / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    from tsretrain.evaluation.report.postprocessing import postprocessing_blocks
    from tsretrain.evaluation.report.second_stage import second_stage_blocks

    marked, cases = synthetic_cases(run)
    synthetic = config.synthetic or marked > 0  # recognised from the data, whatever the flag says
    training, fold_rows = training_section(run, config.dataset, config.trainer, figure_dir)
    evaluation, summary = evaluation_section(run, figure_dir, synthetic)
    if config.postprocessing is not None:
        evaluation += postprocessing_blocks(config.postprocessing, RunLayout(run).evaluation)
    if config.comparison is not None:
        evaluation += second_stage_blocks(config.comparison, figure_dir)
    blocks = (
        synthetic_banner(marked, cases, config.synthetic)
        + (scope_blocks(run, config.dataset, config.trainer, "label_sources" in summary) if synthetic else [])
        + dataset_section(run)
        + split_section(run)
        + planning_section(run, config.dataset)
        + training
        + evaluation
        + review_section(run, config.dataset, figure_dir)
        + literature_section(summary, synthetic)
        + provenance_section(run, config, fold_rows)
    )
    atomic_write_text(config.out / "report.md", to_markdown(blocks, config.out))
    atomic_write_text(config.out / "report.html", to_html(blocks))
    return StageResult(
        "report",
        {"html": str(config.out / "report.html"), "markdown": str(config.out / "report.md")},
        {
            "sections": sum(isinstance(b, Heading) for b in blocks),
            "figures": sum(isinstance(b, Figure) for b in blocks),
        },
    )
