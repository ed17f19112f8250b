"""How the command line ends: user errors in one or two lines (exit 2), Ctrl-C (exit 130), bugs with a traceback.

A :class:`UserError` says what went wrong and what to do about it; it never shows a traceback unless
``--debug`` is given. Any other exception is an internal error: its traceback is printed with a request to
report it (exit 1).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any

import typer

USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130

_debug = False


class UserError(ValueError):
    """Bad input or usage: a message and the advice the user needs (exit code 2).

    A stage that cannot run as configured raises it; on a cluster its exit code is never retried.
    """

    exit_code = USER_ERROR_EXIT

    def __init__(self, message: str, advice: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.advice = advice

    def lines(self) -> list[str]:
        return [f"error: {self.message}"] + ([f"  {self.advice}"] if self.advice else [])


class Interrupted(UserError):
    """The user stopped the run (Ctrl-C); what finished is kept (exit code 130)."""

    exit_code = INTERRUPTED_EXIT

    def lines(self) -> list[str]:
        return [f"interrupted: {self.message}"] + ([f"  {self.advice}"] if self.advice else [])


def set_debug(debug: bool) -> None:
    """Show full tracebacks for every error (``--debug``)."""
    global _debug
    _debug = debug


def report(exc: UserError, where: str = "") -> int:
    """Print a user error in its one or two lines on stderr (traceback with ``--debug``); return its exit code."""
    if _debug:
        traceback.print_exc()
    lines = exc.lines()
    if where:
        lines[0] = f"{where}: {lines[0]}"
    for line in lines:
        print(line, file=sys.stderr)
    return exc.exit_code


def run_cli(app: Callable[..., Any]) -> int:
    """Run a click/typer application and turn its outcome into an exit code and a short message."""
    try:
        result = app(standalone_mode=False)
    except UserError as exc:
        return report(exc)
    except (typer.Abort, KeyboardInterrupt):  # Ctrl-C outside a stage that handles it
        print("interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
    except typer.TyperException as exc:  # usage errors (unknown option, missing argument): exit 2
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            print(f"error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", USER_ERROR_EXIT))
    except Exception:
        traceback.print_exc()
        print("internal error in tsretrain: please report it with the traceback above", file=sys.stderr)
        return 1
    return int(result) if isinstance(result, int) else 0
