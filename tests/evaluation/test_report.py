"""A whole small run, end to end on the CPU: the report has every section and the numbers of the CSVs."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from tsretrain.evaluation.report.blocks import fmt
from tsretrain.pipeline.runner import run
from tsretrain.pipeline.summary import summary_lines

SECTIONS = [
    "1. Dataset exploration",
    "2. Split",
    "3. Planning",
    "4. Training",
    "5. Test set evaluation",
    "6. Case review",
    "7. Comparison with published GTVp results",
    "8. Provenance",
]


def test_report_has_every_section_and_embedded_images(finished_run: Path) -> None:
    markdown = (finished_run / "report" / "report.md").read_text()
    html = (finished_run / "report" / "report.html").read_text()
    for section in SECTIONS:
        assert f"## {section}" in markdown and f"<h2>{section}</h2>" in html
    assert html.count("data:image/png;base64,") >= 4 and "src='figures/" not in html
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown):
        assert (finished_run / "report" / image).is_file()


def test_report_numbers_equal_the_csvs(finished_run: Path) -> None:
    markdown = (finished_run / "report" / "report.md").read_text()
    summary = json.loads((finished_run / "evaluation" / "summary.json").read_text())
    assert f"Average Dice across all structures: {fmt(summary['average_dice_all_structures'])}" in markdown
    gtvp = summary["gtvp"]
    assert f"| mean Dice | {fmt(gtvp['mean'])} |" in markdown
    assert f"| median Dice | {fmt(gtvp['median'])} |" in markdown
    assert f"| DSCagg | {fmt(gtvp['dsc_agg'])} |" in markdown
    for quantile, value in gtvp["quantiles"].items():
        assert f"| {quantile} | {fmt(value)} |" in markdown
    with (finished_run / "evaluation" / "per_label.csv").open() as handle:
        for row in csv.DictReader(handle):
            mean = fmt(float(row["dice_mean"])) if row["dice_mean"] else "–"
            if row["reference"]:  # one table per reference source; labels without any reference in one line
                assert f"| {row['name']} | {row['n_reference']} | {mean} |" in markdown
            else:
                assert re.search(rf"No reference in any test case, so in no table: [^\n]*{row['name']}", markdown)
    listing = list(csv.DictReader((finished_run / "converted" / "cases.csv").open()))
    converted = sum(r["status"] == "ok" for r in listing)
    assert f"{len(listing)} patients found; {converted} converted" in markdown
    split = json.loads((finished_run / "split" / "split.json").read_text())
    assert f"| test | {len(split['test'])} |" in markdown
    for model, title in (("nnUNetTrainerTsrTiny", "first stage"), ("nnUNetTrainerTsrTinyGTVpFocal", "second stage")):
        progress = json.loads(next((finished_run / "nnunet").rglob(f"{model}__*/fold_0/progress.json")).read_text())
        epochs, iterations = len(progress["train_losses"]), progress["iterations_per_epoch"]
        row = f"| fold_0 | {epochs} | {iterations} | {fmt(progress['train_losses'][-1])} |"
        assert re.search(rf"\| {title}[^|]* {re.escape(row)}", markdown), (title, row)
    comparison = json.loads((finished_run / "comparison" / "comparison.json").read_text())
    assert "### Second stage: the tumour-focused model against the first stage" in markdown
    for pair in comparison["paired"]:  # first and second stage on the tumour, paired per test case
        means = " | ".join(fmt(pair[k]) for k in ("first_mean", "second_mean", "difference_mean"))
        assert f"| {pair['n_pairs']} | {means} |" in markdown


def test_a_second_run_skips_every_stage(finished_run: Path) -> None:
    assert run(finished_run, finished_run.parent / "run.yaml") == []


def test_provenance_names_each_training_pods_own_environment(finished_run: Path, tmp_path: Path) -> None:
    """On a cluster the report runs in the CPU image: the folds' torch, CUDA, GPU and nnU-Net come from what each
    training process recorded, not from the report's own packages."""
    import shutil

    from tsretrain.evaluation.report import ReportConfig, report

    run = tmp_path / "run"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns("report"))
    progress_path = next((run / "nnunet").rglob("fold_0/progress.json"))
    progress = json.loads(progress_path.read_text())
    assert progress["environment"]["nnunetv2"] and progress["environment"]["cuda"] == "none"  # recorded here
    gpu = {"torch": "2.8.0+cu128", "cuda": "12.8", "gpu": "NVIDIA H100 80GB HBM3", "nnunetv2": "2.8.1"}
    progress |= {"device": "cuda:0", "device_name": gpu["gpu"], "environment": {**progress["environment"], **gpu}}
    progress_path.write_text(json.dumps(progress))
    report(ReportConfig(run_dir=run, out=run / "report"))
    markdown = (run / "report" / "report.md").read_text()
    assert "| NVIDIA H100 80GB HBM3 | torch 2.8.0+cu128, CUDA 12.8 | 2.8.1 |" in markdown


def test_the_run_ends_with_a_summary_of_cases_dice_time_and_report(finished_run: Path) -> None:
    lines = dict(summary_lines(finished_run))
    listing = list(csv.DictReader((finished_run / "converted" / "cases.csv").open()))
    assert lines["cases"].startswith(f"{len(listing)} found, {sum(r['status'] == 'ok' for r in listing)} converted")
    gtvp = json.loads((finished_run / "evaluation" / "summary.json").read_text())["gtvp"]
    assert lines["test Dice"].startswith(f"GTVp mean {gtvp['mean']:.2f}, median {gtvp['median']:.2f}")
    records = [json.loads(p.read_text()) for p in (finished_run / ".stages").glob("*.json")]
    assert all(r["seconds"] >= 0 and r["cpu_seconds"] >= 0 for r in records)
    assert lines["wall time"].startswith("synth ") and "report " in lines["wall time"]
    assert lines["report"] == (finished_run / "report" / "report.html").resolve().as_uri()


def test_synthetic_data_is_recognised_from_the_dicom_whatever_the_flag(finished_run: Path, tmp_path: Path) -> None:
    from tsretrain.evaluation.report import ReportConfig, report

    report(ReportConfig(run_dir=finished_run, out=tmp_path, dataset="Dataset366_TotalSegmentator",
                        trainer="nnUNetTrainerTsrTiny", synthetic=False, run_id="my-run"))  # fmt: skip
    markdown = (tmp_path / "report.md").read_text()
    inventory = json.loads((finished_run / "scan" / "inventory.json").read_text())
    patients = len(inventory["cases"])
    assert markdown.index("> **SYNTHETIC DATA") < markdown.index("## 1. Dataset exploration")  # the top banner
    assert f"{patients} of {patients} patients carry the synthetic generator's mark" in markdown
    literature = markdown[markdown.index("## 7.") : markdown.index("## 8.")]
    assert "SYNTHETIC DATA" in literature and "synthetic data: no" in literature  # beside the comparison
    assert "Eur J Nucl Med Mol Imaging" in literature and "openreview.net" in literature  # rows cite their source
    assert "estimate for CT-only models" in literature and "(expected)" not in literature  # no unsourced claim


def test_provenance_and_the_tumour_as_a_paper_gives_it(finished_run: Path) -> None:
    markdown = (finished_run / "report" / "report.md").read_text()
    provenance = markdown[markdown.index("## 8. Provenance") :]
    assert re.search(r"\| report written \| \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \|", provenance)
    assert f"| run | {finished_run.name} |" in provenance and "commit " in provenance
    digests = re.findall(r"sha256 \| ([0-9a-f]+) \|", provenance)
    assert digests and all(len(d) == 64 for d in digests)  # full digests, not prefixes
    assert '"stages"' in provenance  # the run's configuration itself
    summary = json.loads((finished_run / "evaluation" / "summary.json").read_text())
    lesions = summary["gtvp"]["lesion_detection"]
    assert f"| lesions found (per lesion) | {lesions['found']} of {lesions['lesions']}" in markdown
    assert "| HD95 median (IQR), mm |" in markdown and "| NSD median (IQR) |" in markdown
    assert f"Only {summary['gtvp']['n_cases']} test cases with a tumour: intervals and quantiles" in markdown
    rows = [r for r in csv.DictReader((finished_run / "evaluation" / "per_case.csv").open()) if r["name"] == "GTVp"]
    for row in rows:
        if row["status"] in ("both", "missed"):  # the per-case table: volume, Dice, HD95, NSD, lesions
            assert re.search(rf"\| {row['case']} \| [^|]+ \| {fmt(float(row['dice']))} \|", markdown), row["case"]
