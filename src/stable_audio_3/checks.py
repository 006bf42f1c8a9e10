"""Argument checks shared by every public entry point: each returns the checked value or raises an
error of ours that names the argument."""

from __future__ import annotations

import numbers
import random
from typing import Any

from stable_audio_3.errors import ArgumentTypeError, ArgumentValueError

__all__ = [
    "MAX_STEPS",
    "MAX_BATCH_SIZE",
    "is_number",
    "check_number",
    "check_int",
    "check_bool",
    "per_item",
    "resolve_seed",
]


# The most sampler steps one call may ask for: the released models use 8 (rf_denoiser) to 100
# (rectified_flow); far beyond that is a typo that would otherwise run for hours.
MAX_STEPS = 1000
# The most items one call may generate: far past what fits any device at the released lengths,
# and it keeps a typo from building a billion-entry prompt list before the allocator can object.
MAX_BATCH_SIZE = 1024


def is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int within the bounds (Python or NumPy integers), or an error naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    v = int(value)
    if low is not None and v < low:
        raise ArgumentValueError(f"{name} must be >= {low}, got {v}")
    if high is not None and v > high:
        raise ArgumentValueError(f"{name} must be <= {high}, got {v}")
    return v


def check_bool(name: str, value: Any, *, optional: bool = False) -> bool | None:
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        allowed = "True, False or None" if optional else "True or False"
        raise ArgumentTypeError(f"{name} must be {allowed}, got {value!r}")
    return value


def per_item(name: str, value: Any, batch_size: int, kind: type | tuple[type, ...]) -> list[Any]:
    """Broadcast a scalar to `batch_size` items, or check a per-item list has exactly that length."""
    if isinstance(value, (list, tuple)):
        if len(value) != batch_size:
            raise ArgumentValueError(f"{name} has {len(value)} items but batch_size is {batch_size}")
        items = list(value)
    else:
        items = [value] * batch_size
    for item in items:
        ok = is_number(item) if kind is float else isinstance(item, kind)
        if not ok:
            expected = "a number" if kind is float else "a string"
            raise ArgumentTypeError(f"{name} must be {expected} or a list of them, got {type(item).__name__}")
    return [float(x) for x in items] if kind is float else items


def resolve_seed(seed: int | None) -> int:
    """-1 or None draws a fresh random seed (returned, so the caller can record it)."""
    if seed is None:
        return random.SystemRandom().randrange(0, 2**31 - 1)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ArgumentTypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed == -1:
        return random.SystemRandom().randrange(0, 2**31 - 1)
    if not 0 <= int(seed) < 2**63:
        raise ArgumentValueError(f"seed must be -1 (random) or in [0, 2**63), got {seed}")
    return int(seed)


def check_number(
    name: str, value: Any, *, low: float | None = None, high: float | None = None, low_open: bool = False
) -> float:
    """`value` as a finite float within the bounds, or an error naming `name`."""
    if not is_number(value):
        raise ArgumentTypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        raise ArgumentValueError(f"{name} must be finite, got {value}")
    if low is not None and (v <= low if low_open else v < low):
        raise ArgumentValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and v > high:
        raise ArgumentValueError(f"{name} must be <= {high}, got {value}")
    return v


def check_interval(name: str, value: Any) -> tuple[float, float]:
    """`value` as a (low, high) pair of noise levels with 0 <= low <= high <= 1."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ArgumentTypeError(f"{name} must be a pair of numbers, got {value!r}")
    low, high = (check_number(name, v, low=0.0, high=1.0) for v in value)
    if not low <= high:
        raise ArgumentValueError(f"{name} must be (low, high) with low <= high, got {value!r}")
    return low, high
