"""Generation lengths: samples to generate, latent frames, and the frames attention treats as real."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["Lengths", "plan_lengths", "generation_length", "effective_lengths", "valid_lengths"]


@dataclass(frozen=True)
class Lengths:
    """The sizes of one generation."""

    samples: int  # audio samples generated (a multiple of the downsampling ratio)
    latents: int  # latent frames
    valid: tuple[int, ...]  # per item: frames that are real (duration + padding)


def plan_lengths(
    durations: Sequence[float], padding_sec: float, sample_rate: int, ratio: int, multiple: int, cap: int
) -> Lengths:
    """Samples, latent frames and valid frames for these durations (see the functions below)."""
    samples = generation_length(durations, padding_sec, sample_rate, ratio, multiple, cap)
    latents = samples // ratio
    valid = valid_lengths(durations, padding_sec, sample_rate, ratio, latents)
    return Lengths(samples, latents, tuple(valid))


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
