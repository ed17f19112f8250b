"""What a person reads at the end of ``tsretrain run``: cases, test Dice, time per stage, the report's link.

Everything comes from the run's files (``converted/cases.csv``, ``evaluation/``, ``.stages/``), so the
summary of a run whose stages were all skipped is the same as the one printed when they ran.
"""

from __future__ import annotations

import json
import resource
import time
from collections import Counter
from pathlib import Path
from types import TracebackType

from rich.table import Table

from tsretrain.evaluation.report.structures import large_structures
from tsretrain.layout import RunLayout
from tsretrain.run_files import (
    CASE_LISTING,
    EVALUATION_SUMMARY,
    INFERENCE_LISTING,
    PER_CASE,
    CaseStatus,
    read_csv,
    read_evaluation_summary,
)
from tsretrain.ui import console


class StageClock:
    """Wall and CPU seconds of a stage (this process and the child processes it waited for)."""

    def __enter__(self) -> StageClock:
        self._wall, self._cpu = time.monotonic(), _cpu_seconds()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.seconds = round(time.monotonic() - self._wall, 1)
        self.cpu_seconds = round(_cpu_seconds() - self._cpu, 1)

    def record(self) -> dict[str, float]:
        return {"seconds": self.seconds, "cpu_seconds": self.cpu_seconds}


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def _cases_line(run: Path) -> str | None:
    listing = CASE_LISTING.in_run(run)
    if not listing.is_file():
        return None
    rows = read_csv(listing)
    status = Counter(r["status"] for r in rows)
    reasons = Counter(r["reason"] for r in rows if r["status"] != CaseStatus.OK)
    why = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items()))
    line = f"{len(rows)} found, {status['ok']} converted, {status['excluded']} excluded"
    if status["failed"]:
        line += f", {status['failed']} failed"
    return line + (f" ({why})" if why else "")


def _dice_lines(run: Path) -> list[str]:
    if not EVALUATION_SUMMARY.in_run(run).is_file():
        return []
    summary = read_evaluation_summary(RunLayout(run).evaluation)
    gtvp = summary.get("gtvp") or {}
    lines = []
    if gtvp.get("n_cases"):
        detected = round(gtvp["detection_rate"] * gtvp["n_cases"])
        lines.append(
            f"GTVp mean {gtvp['mean']:.2f}, median {gtvp['median']:.2f} "
            f"({summary['n_cases']} test cases, GTVp found in {detected} of {gtvp['n_cases']})"
        )
    large = large_structures(read_csv(PER_CASE.in_run(run)))
    if large:
        lines.append(", ".join(f"{name} {dice:.2f}" for name, dice in large))
    return lines


def _time_line(run: Path) -> str | None:
    records = {p.stem: json.loads(p.read_text()) for p in RunLayout(run).records.glob("*.json")}
    timed = [(stage, r["seconds"]) for stage, r in records.items() if "seconds" in r]
    if not timed:
        return None
    used = RunLayout(run).at("run_config")
    order = json.loads(used.read_text())["stages"] if used.is_file() else []
    timed.sort(key=lambda item: order.index(item[0]) if item[0] in order else len(order))
    stages = ", ".join(f"{stage} {duration(seconds)}" for stage, seconds in timed)
    return f"{stages}; total {duration(sum(s for _, s in timed))}"


def summary_lines(run: Path) -> list[tuple[str, str]]:
    """(heading, text) pairs of the summary; parts whose files are missing are left out."""
    lines: list[tuple[str, str]] = []
    cases = _cases_line(run)
    if cases:
        lines.append(("cases", cases))
    for n, text in enumerate(_dice_lines(run)):
        lines.append(("test Dice" if n == 0 else "", text))
    timing = _time_line(run)
    if timing:
        lines.append(("wall time", timing))
    report = RunLayout(run).report / "report.html"
    if report.is_file():
        lines.append(("report", report.resolve().as_uri()))
    packages = sorted(RunLayout(run).at("export").glob("*.zip"))
    if packages:
        lines.append(("model", str(packages[-1].resolve())))
    lines += _contour_lines(run)
    return lines


def _contour_lines(run: Path) -> list[tuple[str, str]]:
    """The RTSTRUCT and SEG of the first patient inference contoured."""
    listing = INFERENCE_LISTING.in_run(run)
    if not listing.is_file():
        return []
    done = [row for row in read_csv(listing) if row["status"] == CaseStatus.OK]
    if not done:
        return [("contours", "no CT series could be contoured: see " + str(listing.resolve()))]
    files = dict(item.split("=", 1) for item in done[0]["files"].split(" | ") if "=" in item)
    shown = [files[kind] for kind in ("rtstruct", "seg") if kind in files]
    return [("contours", f"{done[0]['case_id']}: " + ", ".join(str((listing.parent / f).resolve()) for f in shown))]


def show(run: Path) -> None:
    """Print the summary of a run."""
    lines = summary_lines(run)
    if not lines:
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for heading, text in lines:
        table.add_row(heading, text)
    console.rule(f"[bold]summary of {run}")
    console.print(table, highlight=False)
