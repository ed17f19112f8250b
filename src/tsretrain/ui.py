"""Progress and logging for people: rich bars in a terminal, plain periodic log lines in pods."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

NO_TERMINAL_WIDTH = int(os.environ.get("COLUMNS", "200"))
_TERMINAL = sys.stderr.isatty()
# Without a terminal (a pod's log, CI, a pipe) lines are never wrapped (a path cut in two cannot be copied) and
# tables get room; COLUMNS still rules where it is set.
console = Console(stderr=True, soft_wrap=not _TERMINAL, width=None if _TERMINAL else NO_TERMINAL_WIDTH)
log = logging.getLogger("tsretrain")


def setup_logging(verbose: bool = False) -> None:
    """Rich log lines in a terminal, timestamped plain lines elsewhere (pods, CI)."""
    level = logging.DEBUG if verbose else logging.INFO
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("tsretrain")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


@contextlib.contextmanager
def progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``: a progress bar in a terminal, a log line every ~10 % or 30 s otherwise."""
    if console.is_terminal:
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)
        return
    done = 0
    last_time = time.monotonic()
    last_tenth = 0

    def advance(n: int) -> None:
        nonlocal done, last_time, last_tenth
        done += n
        tenth = (10 * done) // max(total, 1)
        if done == total or tenth > last_tenth or time.monotonic() - last_time > 30:
            log.info("%s: %d/%d", description, done, total)
            last_time, last_tenth = time.monotonic(), tenth

    yield advance
