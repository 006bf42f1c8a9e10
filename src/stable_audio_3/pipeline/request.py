"""Argument checking, lengths and the record of a generation (independent of the networks)."""

from __future__ import annotations

import math
import numbers
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = [
    "GenerationCancelled",
    "GenerationRecord",
    "per_item",
    "resolve_seed",
    "generation_length",
    "effective_lengths",
    "valid_lengths",
    "Canceller",
    "as_canceller",
]


class GenerationCancelled(RuntimeError):
    """Raised inside `generate()` when its `cancel` signal fires; nothing is returned."""


@dataclass
class GenerationRecord:
    """Everything needed to reproduce or describe one `generate()` call."""

    seed: int
    prompts: list[str]
    negative_prompts: list[str] | None
    durations: list[float]
    steps: int
    cfg_scale: float
    apg_scale: float
    sampler: str
    duration_padding_sec: float
    latent_length: int
    sample_rate: int
    device: str
    dtype: str
    sigmas: list[list[float]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Canceller = Callable[[], bool]


def as_canceller(cancel: threading.Event | Callable[[], bool] | None) -> Canceller | None:
    """Accept a `threading.Event` or a zero-argument callable returning True to stop."""
    if cancel is None:
        return None
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    if callable(cancel):
        return cancel
    raise TypeError("cancel must be a threading.Event or a callable returning bool")


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def per_item(name: str, value: Any, batch_size: int, kind: type | tuple[type, ...]) -> list[Any]:
    """Broadcast a scalar to `batch_size` items, or check a per-item list has exactly that length."""
    if isinstance(value, (list, tuple)):
        if len(value) != batch_size:
            raise ValueError(f"{name} has {len(value)} items but batch_size is {batch_size}")
        items = list(value)
    else:
        items = [value] * batch_size
    for item in items:
        ok = _is_number(item) if kind is float else isinstance(item, kind)
        if not ok:
            expected = "a number" if kind is float else "a string"
            raise TypeError(f"{name} must be {expected} or a list of them, got {type(item).__name__}")
    return [float(x) for x in items] if kind is float else items


def resolve_seed(seed: int | None) -> int:
    """-1 or None draws a fresh random seed (returned, so the caller can record it)."""
    if seed is None or seed == -1:
        return random.SystemRandom().randrange(0, 2**31 - 1)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**63:
        raise ValueError(f"seed must be -1 (random) or in [0, 2**63), got {seed}")
    return int(seed)


def generation_length(
    durations: Sequence[float],
    padding_sec: float,
    sample_rate: int,
    ratio: int,
    multiple: int,
    sample_size: int,
) -> int:
    """Audio samples to generate: (max duration + padding) rounded up to `ratio`, then to `ratio *
    multiple` (the autoencoder's latent granularity), capped at `sample_size`."""
    longest = max(durations)
    if longest <= 0:
        return sample_size
    n = int((longest + padding_sec) * sample_rate)
    n = math.ceil(n / ratio) * ratio
    step = ratio * multiple
    n = math.ceil(n / step) * step
    return min(n, sample_size)


def effective_lengths(durations: Sequence[float], sample_rate: int, ratio: int) -> torch.Tensor:
    """Latent frames covered by each item's requested duration (drives the schedule shift)."""
    return torch.tensor([math.ceil(int(d * sample_rate) / ratio) for d in durations], dtype=torch.float32)


def valid_lengths(
    durations: Sequence[float], padding_sec: float, sample_rate: int, ratio: int, latent_length: int
) -> list[int]:
    """Latent frames per item that attention treats as real: duration plus the padding headroom."""
    extra = int(padding_sec * sample_rate / ratio)
    return [min(math.ceil(int(d * sample_rate) / ratio) + extra, latent_length) for d in durations]
