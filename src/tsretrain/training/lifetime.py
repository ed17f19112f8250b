"""Worker processes that end with the process that started them, however it ends (Linux).

nnU-Net's data-augmentation workers are daemon processes: they are stopped when the trainer exits normally,
but a trainer killed with SIGKILL or SIGTERM leaves them running, orphaned, each holding its share of the
dataset in memory. After :func:`end_children_with_parent`, every child forked from the main thread of this
process asks the kernel for SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1
_state = {"installed": False, "parent": 0, "from_main_thread": False}


def _before_fork() -> None:
    _state["parent"] = os.getpid()
    _state["from_main_thread"] = threading.current_thread() is threading.main_thread()


def _in_child() -> None:
    # The signal follows the forking *thread*: a child of a short-lived thread would die with that thread.
    if not _state["from_main_thread"]:
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != _state["parent"]:  # the parent died before the request took effect
        os._exit(1)


def end_children_with_parent() -> None:
    """From now on, children forked by this process end when it does (once per process; no-op off Linux)."""
    if _state["installed"] or not sys.platform.startswith("linux"):
        return
    os.register_at_fork(before=_before_fork, after_in_child=_in_child)
    _state["installed"] = True
