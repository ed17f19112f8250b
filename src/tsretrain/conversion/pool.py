"""Worker processes that stop at once on Ctrl-C instead of draining their queue."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor


def _ignore_interrupt() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; workers are terminated by it


def ignore_interrupts() -> None:
    """From now on Ctrl-C is ignored (while an interrupted run writes what it finished)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A process pool whose workers ignore SIGINT; on an exception (Ctrl-C) queued work is cancelled and
    running workers are terminated, so the exception reaches the caller within moments."""
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_ignore_interrupt)
    try:
        yield pool
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            ignore_interrupts()  # a second Ctrl-C must not break the clean-up
        processes = list((pool._processes or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(10)
        raise
    pool.shutdown(wait=True)
