"""Warnings that point at the user's line: the first caller outside this package, found by walking
the stack, so no call site has to count its own depth (`stacklevel=4` breaks on every refactor)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

__all__ = ["warn_caller"]

_PACKAGE = str(Path(__file__).resolve().parent)


def warn_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """`warnings.warn` attributed to the nearest frame whose code is not in `stable_audio_3`."""
    frame = sys._getframe(1)
    level = 2
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
