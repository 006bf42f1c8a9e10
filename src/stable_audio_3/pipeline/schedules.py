"""Noise-level schedules: the timestep shifts and the per-item schedules built from them.

Convention (rectified flow): t = 1 is pure noise, t = 0 is data. A schedule is a (B, steps + 1)
float32 tensor of decreasing noise levels ending at 0; each batch item gets its own row because the
shift depends on the item's effective length (in latent frames).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from stable_audio_3.errors import ArgumentValueError

__all__ = [
    "Shift",
    "IdentityShift",
    "LogSNRShift",
    "LengthShift",
    "FluxShift",
    "DEFAULT_SAMPLING_SHIFT",
    "shift_from_config",
    "build_schedule",
    "reference_init_schedule",
]


class Shift(Protocol):
    def __call__(self, t: torch.Tensor, seq_len: torch.Tensor) -> torch.Tensor:
        """t: (S,) in [0, 1]; seq_len: (B,) lengths in frames -> (B, S)."""
        ...


@dataclass(frozen=True)
class IdentityShift:
    """No shift (config type `none`)."""

    def __call__(self, t: torch.Tensor, seq_len: torch.Tensor) -> torch.Tensor:
        return t[None, :].expand(seq_len.shape[0], -1).clone()


@dataclass(frozen=True)
class LogSNRShift:
    """Uniform spacing in log-SNR between `logsnr_end` and a length-dependent start (type `logsnr`).

    The inference default of the released models (rate 0 gives `sigmoid(8.2 t - 2)`).
    """

    anchor_length: float = 2000.0
    anchor_logsnr: float = -6.2
    rate: float = 1.0
    logsnr_end: float = 2.0

    def __call__(self, t: torch.Tensor, seq_len: torch.Tensor) -> torch.Tensor:
        start = self.anchor_logsnr - self.rate * torch.log2(seq_len.float() / self.anchor_length)
        logsnr = self.logsnr_end - t[None, :] * (self.logsnr_end - start[:, None])
        out = torch.sigmoid(-logsnr)
        out = torch.where(t[None, :] <= 0, torch.zeros_like(out), out)
        return torch.where(t[None, :] >= 1, torch.ones_like(out), out)


@dataclass(frozen=True)
class LengthShift:
    """Length-dependent shift `1 - e^mu / (e^mu + 1/(1-t) - 1)` (config type `full`)."""

    base_shift: float = 0.5
    max_shift: float = 1.15
    min_length: float = 256.0
    max_length: float = 4096.0
    use_sine: bool = False

    def __call__(self, t: torch.Tensor, seq_len: torch.Tensor) -> torch.Tensor:
        seq = seq_len.float().clamp(self.min_length, self.max_length)[:, None]
        span = self.max_length - self.min_length
        mu = -(self.base_shift + (self.max_shift - self.base_shift) * (seq - self.min_length) / span)
        t = t[None, :]
        out = 1 - torch.exp(mu) / (torch.exp(mu) + (1 / (1 - t) - 1))
        if self.use_sine:
            out = torch.sin(out * math.pi / 2)
        return out


@dataclass(frozen=True)
class FluxShift:
    """`alpha t / (1 + (alpha - 1) t)` with alpha log-linear in the length (config type `flux`)."""

    min_length: float = 256.0
    max_length: float = 4096.0
    alpha_min: float = 1.0
    alpha_max: float = 1.0

    def __call__(self, t: torch.Tensor, seq_len: torch.Tensor) -> torch.Tensor:
        lo, hi = math.log(self.min_length), math.log(self.max_length)
        if hi == lo:
            hi += 1e-8
        la_min, la_max = math.log(max(self.alpha_min, 1e-8)), math.log(max(self.alpha_max, 1e-8))
        frac = (torch.log(seq_len.float().clamp(self.min_length, self.max_length)) - lo) / (hi - lo)
        alpha = torch.exp(la_min + frac * (la_max - la_min))[:, None]
        t = t[None, :]
        return alpha * t / (1 + (alpha - 1.0) * t)


_SHIFT_TYPES: dict[str, type] = {
    "none": IdentityShift,
    "logsnr": LogSNRShift,
    "full": LengthShift,
    "flux": FluxShift,
}

# What the released models use when `sampling_distribution_shift_options` is absent.
DEFAULT_SAMPLING_SHIFT = LogSNRShift(anchor_length=2000, anchor_logsnr=-6.2, rate=0.0, logsnr_end=2.0)


def shift_from_config(options: Mapping[str, Any] | None) -> Shift:
    """Build a shift from the config's `sampling_distribution_shift_options` (None -> the default)."""
    if options is None:
        return DEFAULT_SAMPLING_SHIFT
    opts = dict(options)
    kind = opts.pop("type", "full")
    if kind not in _SHIFT_TYPES:
        raise ArgumentValueError(
            f"sampling_distribution_shift_options.type must be one of {sorted(_SHIFT_TYPES)}"
        )
    cls = _SHIFT_TYPES[kind]
    try:
        return cls(**opts)
    except TypeError as err:
        raise ArgumentValueError(
            f"bad sampling_distribution_shift_options for type {kind!r}: {err}"
        ) from None


def build_schedule(
    steps: int, seq_len: torch.Tensor, shift: Shift, *, start: float = 1.0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """A (B, steps + 1) schedule from `start` to 0.

    For `start = 1` this is the reference schedule: `shift(linspace(1, 0, steps + 1))`. For
    `start < 1` (audio-to-audio) the schedule is uniform in *unshifted* time between the inverse
    shift of `start` and 0, so it begins exactly at `start` and decreases monotonically (levels
    below the shift's smallest non-zero value fall back to linear spacing).
    """
    if steps < 1:
        raise ArgumentValueError(f"steps must be >= 1, got {steps}")
    if not 0.0 < start <= 1.0:
        raise ArgumentValueError(f"the starting noise level must be in (0, 1], got {start}")
    seq_len = seq_len.to(device).float().clamp(min=1)
    grid = torch.linspace(1.0, 0.0, steps + 1, device=device)
    if start >= 1.0:
        return shift(grid, seq_len)
    u0 = _inverse_shift(shift, start, seq_len)  # (B,)
    rows = []
    for b in range(seq_len.shape[0]):
        row = shift(grid * u0[b], seq_len[b : b + 1])[0]
        row[0] = start
        if bool((row[1:] > row[:-1]).any()):
            # The shift cannot go below its floor for t > 0 (e.g. sigmoid(-2) for the default
            # log-SNR shift), so a level under it has no shifted pre-image: space linearly instead.
            row = grid * start
            row[0] = start
        rows.append(row)
    return torch.stack(rows)


def _inverse_shift(shift: Shift, level: float, seq_len: torch.Tensor, iters: int = 60) -> torch.Tensor:
    """Unshifted time u with shift(u) = level, per item, by bisection (every shift is monotone)."""
    lo = torch.zeros_like(seq_len, dtype=torch.float64)
    hi = torch.ones_like(lo)
    for _ in range(iters):
        mid = (lo + hi) / 2
        val = torch.stack([shift(mid[b : b + 1].float(), seq_len[b : b + 1])[0, 0] for b in range(len(mid))])
        below = val.double() < level
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return ((lo + hi) / 2).float()


def reference_init_schedule(
    steps: int, seq_len: torch.Tensor, shift: Shift, start: float, *, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The reference's audio-to-audio schedule: shift `linspace(start, 0)` and force the first value.

    Non-monotonic for start < 1 (after the first step it re-noises above `start`); provided so that
    callers can reproduce the reference exactly through `generate(sigmas=...)`.
    """
    seq_len = seq_len.to(device).float().clamp(min=1)
    out = shift(torch.linspace(start, 0.0, steps + 1, device=device), seq_len)
    out[:, 0] = start
    return out
