"""One `generate()` call, checked once: `GenerationRequest.check_inputs` turns the public arguments into a
frozen request (per-item lists, resolved seed, sampler, guidance, editing mode, decoded audio
inputs) or raises an error naming the argument. Everything downstream takes the request."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from stable_audio_3.audio import to_waveform
from stable_audio_3.checks import (
    MAX_BATCH_SIZE,
    MAX_STEPS,
    check_bool,
    check_int,
    check_interval,
    check_number,
    per_item,
    resolve_seed,
)
from stable_audio_3.errors import ArgumentTypeError, ArgumentValueError
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
    "check_int",
    "MAX_STEPS",
    "Canceller",
    "as_canceller",
    "default_duration",
]

DEFAULT_DURATION = 30.0  # seconds (official: 120, minutes of CPU time)


def default_duration(longest: float) -> float:
    """What `duration=None` asks for: 30 s, or the longest the call allows if that is shorter."""
    return min(DEFAULT_DURATION, longest)


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
    raise ArgumentTypeError("cancel must be a threading.Event or a callable returning bool")


def _check_callback(callback: Any) -> Callable[[StepInfo], None] | None:
    if callback is not None and not callable(callback):
        raise ArgumentTypeError(
            f"callback must be a callable taking a StepInfo, got {type(callback).__name__}"
        )
    return callback


def _check_generator(generator: Any, device: torch.device) -> torch.Generator | None:
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise ArgumentTypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ArgumentValueError(f"generator is on {generator.device} but the model runs on {device}")
    return generator


def _batch_size(prompt: Any, batch_size: Any) -> int:
    if prompt is None:
        raise ArgumentValueError("prompt is required (use '' for unconditional generation)")
    if isinstance(prompt, (list, tuple)) and not prompt:
        raise ArgumentValueError("prompt is an empty list: give at least one prompt")
    if batch_size is not None:
        return check_int("batch_size", batch_size, low=1, high=MAX_BATCH_SIZE)
    batch = len(prompt) if isinstance(prompt, (list, tuple)) else 1
    if batch > MAX_BATCH_SIZE:
        raise ArgumentValueError(f"prompt has {batch} items; at most {MAX_BATCH_SIZE} per call")
    return batch


def _seeds(seed: Any, batch: int, generator: torch.Generator | None) -> tuple[int, tuple[int, ...] | None]:
    """One seed for the batch's single random stream, or a list: one stream per item (item i then
    gets exactly what a batch-1 call with seed i gets); -1/None entries draw a random seed."""
    if not isinstance(seed, (list, tuple)):
        return resolve_seed(seed), None
    if len(seed) != batch:
        raise ArgumentValueError(f"seed has {len(seed)} items but batch_size is {batch}")
    if generator is not None:
        raise ArgumentValueError("give either per-item seeds or a generator, not both")
    seeds = tuple(resolve_seed(s) for s in seed)
    return seeds[0], seeds


def _explicit_sigmas(sigmas: Any, steps: int, batch: int) -> torch.Tensor:
    """An explicit schedule as a (batch, steps + 1) float32 CPU tensor."""
    if isinstance(sigmas, (str, bytes)):
        raise ArgumentTypeError("sigmas must be a tensor or a list of numbers, got a string")
    try:
        s = torch.as_tensor(sigmas, dtype=torch.float32, device="cpu")
    except (TypeError, ValueError, RuntimeError):
        raise ArgumentTypeError(
            f"sigmas must be a tensor or a (nested) list of numbers, got {type(sigmas).__name__}"
        ) from None
    if s.dim() == 1:
        s = s[None].expand(batch, -1).clone()
    if s.dim() != 2 or s.shape[0] not in (1, batch):
        raise ArgumentValueError(
            f"sigmas must have shape (steps + 1,) or (batch_size, steps + 1), got {tuple(s.shape)}"
        )
    if s.shape[0] == 1:
        s = s.expand(batch, -1).clone()
    if s.shape[1] != steps + 1:
        raise ArgumentValueError(f"sigmas has {s.shape[1]} values per item but steps + 1 = {steps + 1}")
    if not torch.isfinite(s).all() or (s < 0).any() or (s > 1).any():
        raise ArgumentValueError("sigmas must be finite values in [0, 1]")
    if (s[:, -1] != 0).any():
        raise ArgumentValueError("sigmas must end at 0")
    return s


def _shift(options: Any) -> Shift | None:
    """`sampling_shift`: None keeps the checkpoint's; else options in the official
    `sampling_distribution_shift_options` schema (`{"type": "logsnr", ...}`), or "none" for no shift."""
    if options is None:
        return None
    if options == "none":
        return IdentityShift()
    if not isinstance(options, Mapping):
        raise ArgumentTypeError(
            f"sampling_shift must be None, 'none' or a mapping of shift options, got {options!r}"
        )
    try:
        return shift_from_config(options)
    except ValueError as err:
        raise ArgumentValueError(f"sampling_shift: {err}") from None


def _guidance(a: Mapping[str, Any]) -> Guidance:
    return Guidance(
        check_number("cfg_scale", a["cfg_scale"]),
        check_number("apg_scale", a["apg_scale"], low=0.0, high=1.0),
        check_interval("cfg_interval", a["cfg_interval"]),
        check_number("cfg_norm_threshold", a["cfg_norm_threshold"], low=0.0),
        check_number("scale_phi", a["scale_phi"], low=0.0, high=1.0),
    )


def _prebuilt_mask(mask: Any, batch: int) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        try:
            mask = torch.as_tensor(mask)
        except (TypeError, ValueError, RuntimeError):
            raise ArgumentTypeError(
                "inpaint_mask must be a tensor or array of shape (batch or 1, samples)"
            ) from None
    if mask.dim() == 1:
        mask = mask[None]
    if mask.dim() != 2 or mask.shape[0] not in (1, batch) or mask.shape[1] == 0:
        raise ArgumentValueError(
            f"inpaint_mask must have shape (1 or {batch}, samples), got {tuple(mask.shape)}"
        )
    mask = mask.detach().float().cpu()
    if not torch.isfinite(mask).all() or (mask < 0).any() or (mask > 1).any():
        raise ArgumentValueError("inpaint_mask values must be in [0, 1] (1 = keep, 0 = regenerate)")
    return mask


def _durations(a: Mapping[str, Any], cfg: ModelConfig, batch: int) -> tuple[list[float], int]:
    """Per-item durations (each at least one sample, at most the cap; None: 30 s or the cap) and
    the sample cap."""
    max_samples = cfg.sample_size
    if a["sample_size"] is not None:
        ae = cfg.pretransform.autoencoder
        granule = ae.downsampling_ratio * ae.latent_multiple
        max_samples = check_int("sample_size", a["sample_size"], low=granule)
        if max_samples % granule:
            raise ArgumentValueError(
                f"sample_size must be a multiple of {granule} (the latent granularity), got {max_samples}"
            )
    _check_position_table(cfg, max_samples)
    rate = cfg.sample_rate
    duration = default_duration(max_samples / rate) if a["duration"] is None else a["duration"]
    durations = per_item("duration", duration, batch, float)
    for d in durations:
        check_number("duration", d, low=0.0, low_open=True, high=max_samples / rate)
        if int(d * rate) < 1:
            raise ArgumentValueError(f"duration {d} s is shorter than one sample at {rate} Hz")
    return durations, max_samples


def _check_position_table(cfg: ModelConfig, max_samples: int) -> None:
    """A DiT with learned absolute positions (`use_abs_pos_emb`) knows only as many frames as its
    table has rows: a longer `sample_size` is refused here, not deep inside the DiT."""
    dit = cfg.diffusion.dit
    if not dit.learned_positions:
        return
    ratio = cfg.pretransform.autoencoder.downsampling_ratio
    frames = dit.learned_positions - dit.num_memory_tokens
    if max_samples > frames * ratio:
        raise ArgumentValueError(
            f"sample_size {max_samples} is longer than this model's learned positions cover "
            f"({frames} latent frames, {frames * ratio} samples)"
        )


def _sampler(sampler: Any, objective: str) -> str:
    sampler = DEFAULT_SAMPLERS[objective] if sampler is None else sampler
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ArgumentValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    if sampler == "pingpong" and objective != "rf_denoiser":
        raise ArgumentValueError(
            "the pingpong sampler needs an rf_denoiser checkpoint; use 'euler' or 'dpmpp'"
        )
    return sampler


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
            raise ArgumentValueError("give both inpaint_mask_start_seconds and inpaint_mask_end_seconds")
        if has_regions and mask is not None:
            raise ArgumentValueError("give either inpaint_mask or inpaint_mask_start/end_seconds, not both")
        if a["inpaint_audio"] is None and (has_regions or mask is not None):
            given = "inpaint_mask" if mask is not None else "inpaint_mask_start/end_seconds"
            raise ArgumentValueError(f"{given} needs inpaint_audio: the audio whose other parts are kept")
        if a["inpaint_audio"] is not None and not has_regions and mask is None:
            raise ArgumentValueError(
                "inpaint_audio needs the regions to regenerate: inpaint_mask_start_seconds and "
                "inpaint_mask_end_seconds, or inpaint_mask"
            )
        level = check_number("init_noise_level", a["init_noise_level"], low=0.0, low_open=True, high=1.0)
        if a["init_audio"] is None and level != 1.0:
            raise ArgumentValueError("init_noise_level only applies with init_audio")
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
    seed: int  # the batch's seed (with per-item seeds: item 0's)
    item_seeds: tuple[int, ...] | None  # one random stream per item, when `seed` was a list
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
        batch = _batch_size(a["prompt"], a["batch_size"])
        prompts = per_item("prompt", a["prompt"], batch, str)
        negative = a["negative_prompt"]
        negatives = None if negative is None else per_item("negative_prompt", negative, batch, str)
        durations, max_samples = _durations(a, cfg, batch)
        steps = check_int("steps", a["steps"], low=1, high=MAX_STEPS)
        guidance = _guidance(a)
        padding = check_number("duration_padding_sec", a["duration_padding_sec"], low=0.0)
        sampler = _sampler(a["sampler"], cfg.diffusion.objective)
        edit = EditRequest.check(a, cfg, batch, max(durations))
        generator = _check_generator(a["generator"], device)
        seed, item_seeds = _seeds(a["seed"], batch, generator)
        chunked = check_bool("chunked_decode", a["chunked_decode"], optional=True)
        return cls(
            prompts=tuple(prompts),
            negative_prompts=None if negatives is None else tuple(negatives),
            durations=tuple(durations),
            steps=steps,
            seed=seed,
            item_seeds=item_seeds,
            sampler=sampler,
            guidance=guidance,
            duration_padding_sec=padding,
            max_samples=max_samples,
            sigmas=None if a["sigmas"] is None else _explicit_sigmas(a["sigmas"], steps, batch),
            shift=_shift(a["sampling_shift"]),
            chunked_decode=cfg.pretransform.chunked if chunked is None else chunked,
            return_latents=check_bool("return_latents", a["return_latents"]),
            truncate_output_to_duration=check_bool(
                "truncate_output_to_duration", a["truncate_output_to_duration"]
            ),
            decode_all_latents=check_bool("decode_all_latents", a["decode_all_latents"]),
            edit=edit,
            callback=_check_callback(a["callback"]),
            cancel=as_canceller(a["cancel"]),
            progress=check_bool("progress", a["progress"], optional=True),
            generator=generator,
        )
