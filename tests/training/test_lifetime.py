"""Children forked by a process that called end_children_with_parent() die with it, even by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from processes import alive, wait_until

# Starts a daemon worker (as nnU-Net's augmenters do), prints its pid and waits to be killed.
PARENT = """
import multiprocessing, sys, time
from tsretrain.training.lifetime import end_children_with_parent
if sys.argv[1] == "on":
    end_children_with_parent()
worker = multiprocessing.get_context("fork").Process(target=time.sleep, args=(120,), daemon=True)
worker.start()
print(worker.pid, flush=True)
time.sleep(120)
"""


def _orphan_after(kill: signal.Signals, setting: str, patience: float) -> bool:
    """Whether the worker outlives its parent killed by ``kill`` by ``patience`` seconds."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, setting], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    worker = int(parent.stdout.readline())
    try:
        parent.send_signal(kill)
        parent.wait(timeout=30)
        return not wait_until(lambda: not alive(worker), patience)
    finally:
        if alive(worker):
            os.kill(worker, signal.SIGKILL)


@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_workers_end_with_their_parent(kill: signal.Signals) -> None:
    assert not _orphan_after(kill, "on", 5.0)
    # without it, the daemon worker is orphaned (the parent-death signal, with it, comes within milliseconds)
    assert _orphan_after(kill, "off", 1.0)
