"""The report as a reader sees it: headless Chromium at 800 and 1400 px wide. Fails when anything is wider than the
window (a table or figure cut off, a page that scrolls sideways); otherwise writes a screenshot per width.

``python docs/screenshots.py [--report demo-run/report/report.html] [--out docs]`` (``make screenshots``):
``docs/report-800.png`` and ``docs/report-1400.png``, each the report's first ``--height`` pixels (default 2400).
Needs Debian's ``chromium``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

WIDTHS = (800, 1400)
# Run in the page: every element wider than its box (or than the window), and the page's width and height.
MEASURE = """<script>
window.addEventListener('load', () => {
  const wide = [];
  for (const el of document.querySelectorAll('body *')) {
    const box = el.getBoundingClientRect();
    const clipped = el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== 'visible';
    if (box.right > window.innerWidth + 1 || clipped)
      wide.push(el.tagName + ' ' + (el.textContent || el.getAttribute('alt') || '').slice(0, 60));
  }
  document.body.setAttribute('data-measure', JSON.stringify({
    wide: wide, width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight}));
});
</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        sys.exit("chromium is not installed: apt-get install chromium")
    return found


def browse(browser: str, page: Path, width: int, height: int, *extra: str) -> str:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--window-size={width},{height}", "--virtual-time-budget=5000", *extra, page.as_uri()]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=120).stdout


@dataclass(frozen=True)
class Layout:
    """The page at one width: elements wider than their box or the window, the page's size."""

    wide: list[str]
    width: int
    height: int


def measure(browser: str, report: Path, width: int) -> Layout:
    """The report's layout at ``width``: its elements wider than the window and the page's size."""
    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "report.html"
        page.write_text(report.read_text().replace("</body>", MEASURE + "</body>"))
        dom = browse(browser, page, width, 1000, "--dump-dom")
    found = re.search(r'data-measure="([^"]*)"', dom)
    if found is None:
        raise RuntimeError(f"the page did not report its layout at {width} px")
    return Layout(**json.loads(found[1].replace("&quot;", '"').replace("&amp;", "&")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", type=Path, default=Path("demo-run/report/report.html"))
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args()
    browser = chromium()
    problems = []
    for width in WIDTHS:
        layout = measure(browser, args.report, width)
        print(f"{width} px: page {layout.width} x {layout.height} px, {len(layout.wide)} element(s) too wide")
        problems += [f"{width} px: {element}" for element in layout.wide]
        if layout.width > width:
            problems.append(f"{width} px: the page is {layout.width} px wide")
        shot = args.out / f"report-{width}.png"
        browse(browser, args.report.resolve(), width, args.height, f"--screenshot={shot.resolve()}")
        print(f"wrote {shot}")
    if problems:
        sys.exit("cut off or scrolling sideways:\n" + "\n".join(problems))


if __name__ == "__main__":
    main()
