"""Rectified-flow samplers as small pure functions sharing one signature and one callback shape.

`model(x, t) -> v` predicts the velocity `v ~ noise - data`, so `denoised = x - t v`. Schedules
are (B, steps + 1) tensors (one row per batch item). Step i evaluates the model once, at
`sigmas[:, i]` cast to x's dtype (the engine decides each step's guidance branch from that before
sampling starts). `generator` is one `torch.Generator` for the batch or per-item generators
(`ItemGenerators`). After every step the sampler calls `callback(StepInfo)`; a callback may raise
(e.g. `GenerationCancelled`) to stop sampling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from stable_audio_3.pipeline.seeds import Generators, randn

__all__ = ["StepInfo", "Sampler", "sample_pingpong", "sample_euler", "sample_dpmpp", "SAMPLERS"]

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class StepInfo:
    """What a sampler reports after each step."""

    step: int  # 0-based index of the step just taken
    steps: int
    t: torch.Tensor  # (B,) noise level the model was evaluated at
    t_next: torch.Tensor  # (B,) noise level after the step
    x: torch.Tensor  # the state after the step
    denoised: torch.Tensor  # the model's estimate of the clean latents at this step


Callback = Callable[[StepInfo], None]
Sampler = Callable[..., torch.Tensor]


def _column(sigmas: torch.Tensor, i: int, x: torch.Tensor) -> torch.Tensor:
    return sigmas[:, i].to(x.dtype)


def sample_pingpong(
    model: ModelFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    generator: Generators = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Ping-pong sampling for `rf_denoiser` models: denoise fully, then re-noise to the next level.

    Fresh noise is drawn at every step, the last one included (where it is multiplied by 0), so the
    random stream matches the reference sampler.
    """
    steps = sigmas.shape[1] - 1
    for i in range(steps):
        t, t_next = _column(sigmas, i, x), _column(sigmas, i + 1, x)
        denoised = x - t[:, None, None] * model(x, t)
        noise = randn(x.shape, generator, x.device, x.dtype)
        x = (1 - t_next[:, None, None]) * denoised + t_next[:, None, None] * noise
        if callback is not None:
            callback(StepInfo(i, steps, t, t_next, x, denoised))
    return x


def sample_euler(
    model: ModelFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    generator: Generators = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Euler integration of the probability-flow ODE (`rectified_flow` models)."""
    steps = sigmas.shape[1] - 1
    for i in range(steps):
        t, t_next = _column(sigmas, i, x), _column(sigmas, i + 1, x)
        v = model(x, t)
        denoised = x - t[:, None, None] * v
        x = x + (t_next - t)[:, None, None] * v
        if callback is not None:
            callback(StepInfo(i, steps, t, t_next, x, denoised))
    return x


def _log_snr(t: torch.Tensor) -> torch.Tensor:
    return torch.log((1 - t).clamp(min=1e-10) / t.clamp(min=1e-10))


def sample_dpmpp(
    model: ModelFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    generator: Generators = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) in the flow parameterisation (an alternative for `rectified_flow` models)."""
    steps = sigmas.shape[1] - 1
    previous: torch.Tensor | None = None
    for i in range(steps):
        t, t_next = sigmas[:, i, None, None], sigmas[:, i + 1, None, None]
        denoised = x - t * model(x, sigmas[:, i].to(x.dtype))
        coeff = (t_next - t) / ((1 - t_next).clamp(min=1e-10) * t.clamp(min=1e-10))
        d = denoised
        if previous is not None and not bool((t_next == 0).all()):
            t_prev = sigmas[:, i - 1, None, None]
            r = (_log_snr(t) - _log_snr(t_prev)) / (_log_snr(t_next) - _log_snr(t))
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
        x = (t_next / t.clamp(min=1e-10)) * x - (1 - t_next) * coeff * d
        previous = denoised
        if callback is not None:
            callback(StepInfo(i, steps, sigmas[:, i], sigmas[:, i + 1], x, denoised))
    return x


SAMPLERS: dict[str, Sampler] = {"pingpong": sample_pingpong, "euler": sample_euler, "dpmpp": sample_dpmpp}
