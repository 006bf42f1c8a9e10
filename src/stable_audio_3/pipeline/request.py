"""One `generate()` call, checked once: `GenerationRequest.check_inputs` turns the public arguments into a
frozen request (per-item lists, resolved seed, sampler, guidance, editing mode, decoded audio
inputs) or raises an error naming the argument. Everything downstream takes the request."""

from __future__ import annotations

import numbers
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from stable_audio_3.audio import to_waveform
from stable_audio_3.notices import warn_caller
from stable_audio_3.official.config import ModelConfig
from stable_audio_3.pipeline.guidance import Guidance
from stable_audio_3.pipeline.inpainting import regions_from_seconds
from stable_audio_3.pipeline.samplers import SAMPLERS, StepInfo
from stable_audio_3.pipeline.schedules import IdentityShift, Shift, shift_from_config

__all__ = [
    "GenerationCancelled",
    "GenerationRequest",
    "EditRequest",
    "EditMode",
    "DEFAULT_SAMPLERS",
    "per_item",
    "resolve_seed",
    "check_number",
    "Canceller",
    "as_canceller",
]

# The sampler each objective's checkpoints were made for.
DEFAULT_SAMPLERS = {"rf_denoiser": "pingpong", "rectified_flow": "euler"}

EditMode = Literal["text_to_audio", "audio_to_audio", "inpainting", "audio_to_audio+inpainting"]


class GenerationCancelled(RuntimeError):
    """Raised inside `generate()` when its `cancel` signal fires; nothing is returned."""


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


def check_number(
    name: str, value: Any, *, low: float | None = None, high: float | None = None, low_open: bool = False
) -> float:
    """`value` as a finite float within the bounds, or an error naming `name`."""
    if not _is_number(value):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (v <= low if low_open else v < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return v


def _batch_size(prompt: Any, batch_size: Any) -> int:
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        return batch_size
    return len(prompt) if isinstance(prompt, (list, tuple)) else 1


def _explicit_sigmas(sigmas: Any, steps: int, batch: int) -> torch.Tensor:
    """An explicit schedule as a (batch, steps + 1) float32 CPU tensor."""
    s = torch.as_tensor(sigmas, dtype=torch.float32, device="cpu")
    if s.dim() == 1:
        s = s[None].expand(batch, -1).clone()
    if s.dim() != 2 or s.shape[0] not in (1, batch):
        raise ValueError(
            f"sigmas must have shape (steps + 1,) or (batch_size, steps + 1), got {tuple(s.shape)}"
        )
    if s.shape[0] == 1:
        s = s.expand(batch, -1).clone()
    if s.shape[1] != steps + 1:
        raise ValueError(f"sigmas has {s.shape[1]} values per item but steps + 1 = {steps + 1}")
    if not torch.isfinite(s).all() or (s < 0).any() or (s > 1).any():
        raise ValueError("sigmas must be finite values in [0, 1]")
    if (s[:, -1] != 0).any():
        raise ValueError("sigmas must end at 0")
    return s


def _shift(options: Any) -> Shift | None:
    """`sampling_shift`: None keeps the checkpoint's; else options in the official
    `sampling_distribution_shift_options` schema (`{"type": "logsnr", ...}`), or "none" for no shift."""
    if options is None:
        return None
    if options == "none":
        return IdentityShift()
    if not isinstance(options, Mapping):
        raise TypeError(f"sampling_shift must be None, 'none' or a mapping of shift options, got {options!r}")
    try:
        return shift_from_config(options)
    except ValueError as err:
        raise ValueError(f"sampling_shift: {err}") from None


def _guidance(a: Mapping[str, Any]) -> Guidance:
    try:
        lo, hi = (float(v) for v in a["cfg_interval"])
    except (TypeError, ValueError):
        raise TypeError(f"cfg_interval must be a pair of numbers, got {a['cfg_interval']!r}") from None
    if not lo <= hi:
        raise ValueError(f"cfg_interval must be (low, high) with low <= high, got {a['cfg_interval']!r}")
    return Guidance(
        check_number("cfg_scale", a["cfg_scale"]),
        check_number("apg_scale", a["apg_scale"], low=0.0, high=1.0),
        (lo, hi),
        a["cfg_norm_threshold"],
        a["scale_phi"],
    )


def _prebuilt_mask(mask: Any, batch: int) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        try:
            mask = torch.as_tensor(mask)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError("inpaint_mask must be a tensor or array of shape (batch or 1, samples)") from None
    if mask.dim() == 1:
        mask = mask[None]
    if mask.dim() != 2 or mask.shape[0] not in (1, batch) or mask.shape[1] == 0:
        raise ValueError(f"inpaint_mask must have shape (1 or {batch}, samples), got {tuple(mask.shape)}")
    mask = mask.detach().float().cpu()
    if not torch.isfinite(mask).all() or (mask < 0).any() or (mask > 1).any():
        raise ValueError("inpaint_mask values must be in [0, 1] (1 = keep, 0 = regenerate)")
    return mask


@dataclass(frozen=True)
class EditRequest:
    """The audio a generation starts from or keeps: waveforms (channels, samples) at the model rate."""

    init_audio: torch.Tensor | None = None
    init_noise_level: float = 1.0
    inpaint_audio: torch.Tensor | None = None
    regions: tuple[tuple[float, float], ...] | None = None  # seconds to regenerate
    inpaint_mask: torch.Tensor | None = None  # (1 or B, samples), 1 = keep

    @property
    def mode(self) -> EditMode:
        if self.init_audio is None:
            return "text_to_audio" if self.inpaint_audio is None else "inpainting"
        return "audio_to_audio" if self.inpaint_audio is None else "audio_to_audio+inpainting"

    @classmethod
    def check(cls, a: Mapping[str, Any], cfg: ModelConfig, batch: int, longest: float) -> EditRequest:
        starts, ends, mask = a["inpaint_mask_start_seconds"], a["inpaint_mask_end_seconds"], a["inpaint_mask"]
        has_regions = starts is not None or ends is not None
        if has_regions and (starts is None or ends is None):
            raise ValueError("give both inpaint_mask_start_seconds and inpaint_mask_end_seconds")
        if has_regions and mask is not None:
            raise ValueError("give either inpaint_mask or inpaint_mask_start/end_seconds, not both")
        if a["inpaint_audio"] is not None and not has_regions and mask is None:
            raise ValueError(
                "inpaint_audio needs the regions to regenerate: inpaint_mask_start_seconds and "
                "inpaint_mask_end_seconds, or inpaint_mask"
            )
        level = 1.0
        if a["init_audio"] is not None:
            level = check_number("init_noise_level", a["init_noise_level"], low=0.0, low_open=True, high=1.0)
        elif a["init_noise_level"] != 1.0:
            raise ValueError("init_noise_level only applies with init_audio")
        regions = None
        if has_regions:
            regions = tuple(regions_from_seconds(starts, ends, longest))
            if any(e > longest for _, e in regions):
                warn_caller(
                    f"an inpaint region ends after the generated duration ({longest} s); it is clamped there"
                )
        channels = cfg.pretransform.autoencoder.io_channels

        def wave(name: str) -> torch.Tensor | None:
            value = a[name]
            return None if value is None else to_waveform(value, name, cfg.sample_rate, channels=channels)

        return cls(
            init_audio=wave("init_audio"),
            init_noise_level=level,
            inpaint_audio=wave("inpaint_audio"),
            regions=regions,
            inpaint_mask=None if mask is None else _prebuilt_mask(mask, batch),
        )


@dataclass(frozen=True)
class GenerationRequest:
    """A checked `generate()` call (see `StableAudioModel.generate` for what each argument means)."""

    prompts: tuple[str, ...]
    negative_prompts: tuple[str, ...] | None
    durations: tuple[float, ...]
    steps: int
    seed: int
    sampler: str
    guidance: Guidance
    duration_padding_sec: float
    max_samples: int
    sigmas: torch.Tensor | None  # explicit (batch, steps + 1) schedule, CPU float32
    shift: Shift | None  # the schedule shift, when the call overrides the checkpoint's
    chunked_decode: bool
    return_latents: bool
    truncate_output_to_duration: bool
    decode_all_latents: bool
    edit: EditRequest
    callback: Callable[[StepInfo], None] | None
    cancel: Canceller | None
    progress: bool | None
    generator: torch.Generator | None

    @property
    def batch(self) -> int:
        return len(self.prompts)

    @property
    def mode(self) -> EditMode:
        return self.edit.mode

    @classmethod
    def check_inputs(
        cls, cfg: ModelConfig, device: torch.device, arguments: Mapping[str, Any]
    ) -> GenerationRequest:
        """Validate `generate()`'s keyword arguments (all of them, by name) for this checkpoint."""
        a = arguments
        if a["prompt"] is None:
            raise ValueError("prompt is required (use '' for unconditional generation)")
        batch = _batch_size(a["prompt"], a["batch_size"])
        prompts = per_item("prompt", a["prompt"], batch, str)
        negative = a["negative_prompt"]
        negatives = None if negative is None else per_item("negative_prompt", negative, batch, str)
        durations = per_item("duration", a["duration"], batch, float)
        max_samples = cfg.sample_size if a["sample_size"] is None else int(a["sample_size"])
        if max_samples <= 0:
            raise ValueError(f"sample_size must be positive, got {a['sample_size']}")
        for d in durations:
            check_number("duration", d, low=0.0, low_open=True, high=max_samples / cfg.sample_rate)
        steps = a["steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        guidance = _guidance(a)
        padding = check_number("duration_padding_sec", a["duration_padding_sec"], low=0.0)
        objective = cfg.diffusion.objective
        sampler = a["sampler"] or DEFAULT_SAMPLERS[objective]
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
        if sampler == "pingpong" and objective != "rf_denoiser":
            raise ValueError("the pingpong sampler needs an rf_denoiser checkpoint; use 'euler' or 'dpmpp'")
        edit = EditRequest.check(a, cfg, batch, max(durations))
        seed = resolve_seed(a["seed"])
        generator = a["generator"]
        if generator is not None and generator.device.type != device.type:
            raise ValueError(f"generator is on {generator.device} but the model runs on {device}")
        chunked = a["chunked_decode"]
        return cls(
            prompts=tuple(prompts),
            negative_prompts=None if negatives is None else tuple(negatives),
            durations=tuple(durations),
            steps=steps,
            seed=seed,
            sampler=sampler,
            guidance=guidance,
            duration_padding_sec=padding,
            max_samples=max_samples,
            sigmas=None if a["sigmas"] is None else _explicit_sigmas(a["sigmas"], steps, batch),
            shift=_shift(a["sampling_shift"]),
            chunked_decode=cfg.pretransform.chunked if chunked is None else bool(chunked),
            return_latents=bool(a["return_latents"]),
            truncate_output_to_duration=bool(a["truncate_output_to_duration"]),
            decode_all_latents=bool(a["decode_all_latents"]),
            edit=edit,
            callback=a["callback"],
            cancel=as_canceller(a["cancel"]),
            progress=a["progress"],
            generator=generator,
        )
