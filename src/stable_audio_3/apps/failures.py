"""How the command-line apps report failure: one line on stderr and an exit code, never a traceback.

Exit codes: 0 success, 2 bad input (a flag, a file, a value: an error of ours that is a
`ValueError` / `TypeError`, or a missing file), 1 a runtime failure (out of memory, non-finite
output, the hub unreachable, anything unexpected), 130 interrupted. Set `STABLE_AUDIO_DEBUG=1`
to see the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn

__all__ = ["BAD_INPUT", "FAILURE", "INTERRUPTED", "OneLineParser", "DefaultsHelpFormatter", "exit_code"]
__all__ += ["one_line", "run_reporting"]

BAD_INPUT, FAILURE, INTERRUPTED = 2, 1, 130


def exit_code(err: BaseException) -> int:
    """2 for input the user can fix, 1 for everything else."""
    from stable_audio_3 import StableAudioError  # lazy: no torch

    if isinstance(err, FileNotFoundError):
        return BAD_INPUT
    ours = isinstance(err, StableAudioError) or getattr(err, "is_usage_error", False)
    return BAD_INPUT if ours and isinstance(err, (ValueError, TypeError)) else FAILURE


def one_line(err: BaseException) -> str:
    """The error as one line; unexpected errors also name their type."""
    from stable_audio_3 import StableAudioError

    text = " ".join(str(err).split())
    if isinstance(err, StableAudioError) or getattr(err, "is_usage_error", False):
        return text or type(err).__name__
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def run_reporting(prog: str, body: Callable[[], int], interrupted: str = "interrupted") -> int:
    """Run `body()` and turn any failure into one line on stderr plus its exit code."""
    try:
        return body()
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return INTERRUPTED
    except Exception as err:  # noqa: BLE001 - the boundary: every failure is reported, none escapes
        if os.environ.get("STABLE_AUDIO_DEBUG", "") not in ("", "0"):
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return exit_code(err)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (plus a pointer to --help), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where it says nothing: None (the help says what it
    means), a switch's False, an empty list."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        silent = action.default is None or action.nargs == 0 or action.default == []
        return action.help if silent else super()._get_help_string(action)
