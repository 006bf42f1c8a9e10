"""The errors this package raises on purpose, one small hierarchy.

Every one derives from `StableAudioError`, so an app can tell "the input was bad" (a
`ValueError` / `TypeError` subclass that names the argument, and the file where one is involved)
from a failure of its own. Errors from dependencies (soundfile, safetensors, json, soxr, torch)
are translated where the input enters, never passed through.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "StableAudioError",
    "ArgumentValueError",
    "ArgumentTypeError",
    "MissingFileError",
    "AudioInputError",
    "CheckpointError",
    "ConfigError",
    "LoRAFileError",
    "HubError",
    "GatedRepoError",
    "NotCachedError",
    "NonFiniteOutputError",
    "OutOfMemoryError",
    "describe",
    "as_path",
]


class StableAudioError(Exception):
    """Base of every error `stable_audio_3` raises deliberately."""


class ArgumentValueError(StableAudioError, ValueError):
    """An argument has the right type but a value that cannot work; the message names it."""


class ArgumentTypeError(StableAudioError, TypeError):
    """An argument has the wrong type; the message names it and the types accepted."""


class MissingFileError(ArgumentValueError, FileNotFoundError):
    """A path given as an argument does not exist (or is not the kind of path expected)."""


class AudioInputError(ArgumentValueError):
    """An audio argument (file, array or tensor) cannot be read or used."""


class CheckpointError(ArgumentValueError):
    """A checkpoint's files are unreadable or do not match the model built from its config."""


class ConfigError(CheckpointError):
    """A model config is malformed or uses a feature this package does not implement."""


class LoRAFileError(ArgumentValueError):
    """A LoRA file is malformed or does not fit the model."""


class HubError(StableAudioError, RuntimeError):
    """A download from the Hugging Face Hub failed (network, authentication or cache)."""


class GatedRepoError(HubError, PermissionError):
    """The repository needs its license accepted and a login."""


class NotCachedError(HubError, FileNotFoundError):
    """The files are not in the local cache and cannot be downloaded now."""


class NonFiniteOutputError(StableAudioError, RuntimeError):
    """The model produced NaN or infinite values; raised instead of returning them."""


class OutOfMemoryError(StableAudioError, MemoryError):
    """The device ran out of memory; the message says what was being allocated for."""


def describe(err: BaseException) -> str:
    """A dependency's exception as one short line: its type and its first line of text."""
    text = " ".join(str(err).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def as_path(argument: str, value: object) -> Path:
    """`value` as a filesystem path, or an `ArgumentTypeError` naming `argument`."""
    if isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes):
        path = os.fspath(value)
        if isinstance(path, str):
            return Path(path)
    raise ArgumentTypeError(f"{argument} must be a path (str or os.PathLike), got {type(value).__name__}")
