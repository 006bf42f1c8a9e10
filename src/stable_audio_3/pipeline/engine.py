"""The `generate()` algorithm: lengths, noise, conditioning, sampling and decoding, in that order.

The order of random draws follows the reference exactly (initial noise, one draw per ping-pong step,
then decoder noise), all from one `torch.Generator` seeded with the call's seed, so the same seed
gives the same audio as the reference.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from stable_audio_3.pipeline.editing import prepare_edit_inputs
from stable_audio_3.pipeline.guidance import Denoiser, Guidance
from stable_audio_3.pipeline.request import (
    Canceller,
    GenerationCancelled,
    GenerationRecord,
    effective_lengths,
    generation_length,
    per_item,
    resolve_seed,
    valid_lengths,
)
from stable_audio_3.pipeline.samplers import SAMPLERS, StepInfo
from stable_audio_3.pipeline.schedules import build_schedule, shift_from_config

if TYPE_CHECKING:
    from stable_audio_3.model import StableAudioModel
    from stable_audio_3.pipeline.cudagraphs import StepGraphs

DEFAULT_SAMPLERS = {"rf_denoiser": "pingpong", "rectified_flow": "euler"}


def _check_number(
    name: str, value: Any, *, low: float | None = None, high: float | None = None, low_open: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (v <= low if low_open else v < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return v


def _batch(prompt: Any, batch_size: int | None) -> int:
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        return batch_size
    return len(prompt) if isinstance(prompt, (list, tuple)) else 1


def _explicit_sigmas(sigmas: Any, steps: int, batch: int, device: torch.device) -> torch.Tensor:
    s = torch.as_tensor(sigmas, dtype=torch.float32, device=device)
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


def run_generation(
    model: StableAudioModel,
    *,
    prompt: str | Sequence[str],
    negative_prompt: str | Sequence[str] | None,
    duration: float | Sequence[float],
    steps: int,
    cfg_scale: float,
    seed: int | None,
    batch_size: int | None,
    apg_scale: float,
    duration_padding_sec: float,
    sample_size: int | None,
    chunked_decode: bool | None,
    return_latents: bool,
    truncate_output_to_duration: bool,
    sampler: str | None,
    sigmas: Any,
    cfg_interval: tuple[float, float],
    cfg_norm_threshold: float,
    scale_phi: float,
    callback: Callable[[StepInfo], None] | None,
    cancel: Canceller | None,
    progress: bool | None,
    generator: torch.Generator | None,
    init_audio: Any = None,
    init_noise_level: float = 1.0,
    inpaint_audio: Any = None,
    inpaint_mask: Any = None,
    inpaint_mask_start_seconds: Any = None,
    inpaint_mask_end_seconds: Any = None,
    decode_all_latents: bool = False,
) -> torch.Tensor:
    cfg = model.config
    ae_cfg = cfg.pretransform.autoencoder
    timings: dict[str, float] = {}
    started = time.perf_counter()

    # ---- arguments
    if prompt is None:
        raise ValueError("prompt is required (use '' for unconditional generation)")
    batch = _batch(prompt, batch_size)
    prompts = per_item("prompt", prompt, batch, str)
    negatives = None if negative_prompt is None else per_item("negative_prompt", negative_prompt, batch, str)
    durations = per_item("duration", duration, batch, float)
    max_size = cfg.sample_size if sample_size is None else int(sample_size)
    if max_size <= 0:
        raise ValueError(f"sample_size must be positive, got {sample_size}")
    for d in durations:
        _check_number("duration", d, low=0.0, low_open=True, high=max_size / cfg.sample_rate)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    cfg_scale = _check_number("cfg_scale", cfg_scale)
    apg_scale = _check_number("apg_scale", apg_scale, low=0.0, high=1.0)
    duration_padding_sec = _check_number("duration_padding_sec", duration_padding_sec, low=0.0)
    sampler_name = sampler or DEFAULT_SAMPLERS[cfg.diffusion.objective]
    if sampler_name not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler_name!r}")
    if sampler_name == "pingpong" and cfg.diffusion.objective != "rf_denoiser":
        raise ValueError("the pingpong sampler needs an rf_denoiser checkpoint; use 'euler' or 'dpmpp'")
    start_level = 1.0
    if init_audio is not None:
        start_level = _check_number("init_noise_level", init_noise_level, low=0.0, low_open=True, high=1.0)
    elif init_noise_level != 1.0:
        raise ValueError("init_noise_level only applies with init_audio")
    try:
        lo, hi = (float(v) for v in cfg_interval)
    except (TypeError, ValueError):
        raise TypeError(f"cfg_interval must be a pair of numbers, got {cfg_interval!r}") from None
    if not lo <= hi:
        raise ValueError(f"cfg_interval must be (low, high) with low <= high, got {cfg_interval!r}")
    seed = resolve_seed(seed)
    device = model.device
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but the model runs on {device}")

    # ---- lengths
    ratio = ae_cfg.downsampling_ratio
    multiple = (ae_cfg.encoder_chunk_size or 32) // ae_cfg.strides[0]
    n_samples = generation_length(
        durations, duration_padding_sec, cfg.sample_rate, ratio, max(multiple, 1), max_size
    )
    length = n_samples // ratio
    valid = valid_lengths(durations, duration_padding_sec, cfg.sample_rate, ratio, length)
    padding_mask = torch.arange(length, device=device)[None, :] < torch.tensor(valid, device=device)[:, None]

    # ---- noise first (the reference draws it before any conditioner runs)
    gen = generator if generator is not None else torch.Generator(device=device)
    gen.manual_seed(seed)
    noise = torch.randn((batch, cfg.io_channels, length), generator=gen, device=device, dtype=torch.float32)

    # ---- conditioning
    t0 = time.perf_counter()
    cond = model._condition(prompts, negatives, durations)
    timings["conditioning"] = _elapsed(t0, device)
    t0 = time.perf_counter()
    edit = prepare_edit_inputs(
        model,
        batch=batch,
        durations=durations,
        n_samples=n_samples,
        length=length,
        generator=gen,
        init_audio=init_audio,
        inpaint_audio=inpaint_audio,
        inpaint_mask=inpaint_mask,
        inpaint_mask_start_seconds=inpaint_mask_start_seconds,
        inpaint_mask_end_seconds=inpaint_mask_end_seconds,
    )
    local = edit.local_cond
    if init_audio is not None or inpaint_audio is not None:
        timings["encoding"] = _elapsed(t0, device)

    # ---- schedule
    if sigmas is not None:
        schedule = _explicit_sigmas(sigmas, steps, batch, device)
    else:
        shift = shift_from_config(cfg.diffusion.sampling_shift)
        schedule = build_schedule(
            steps,
            effective_lengths(durations, cfg.sample_rate, ratio),
            shift,
            start=start_level,
            device=device,
        )
    sigma_max = schedule[:, 0, None, None]
    if edit.init_latents is None:
        x = (noise * sigma_max).to(model.dtype)
    else:
        x = (edit.init_latents.float() * (1 - sigma_max) + noise * sigma_max).to(model.dtype)

    denoiser = Denoiser(
        model.dit,
        cross_cond=cond["cross_cond"],
        global_cond=cond["global_cond"],
        local_cond=local,
        padding_mask=padding_mask,
        valid_lengths=valid,
        negative_cross_cond=cond["negative_cross_cond"],
        negative_cross_mask=cond["negative_cross_mask"],
        guidance=Guidance(cfg_scale, apg_scale, (lo, hi), cfg_norm_threshold, scale_phi),
    )
    # Which steps are guided, decided on the host from the levels the sampler will pass (in the model
    # dtype), so that no step waits for the device to find out (and each step can be a CUDA graph).
    schedule_host = schedule.cpu()
    levels = schedule_host.to(model.dtype)
    guided_steps = [denoiser.guidance.applies_at(levels[:, i]) for i in range(steps)]
    graphs = _step_graphs(model)
    position = [0]  # the step being taken; samplers evaluate the model once per step

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        guided = guided_steps[position[0]]
        if graphs is not None:
            return graphs.step(denoiser, x, t, guided)
        return denoiser(x, t, guided=guided)

    bar = _progress_bar(steps, progress)

    def on_step(info: StepInfo) -> None:
        position[0] = info.step + 1
        if bar is not None:
            bar.update(1)
        if callback is not None:
            callback(info)
        if cancel is not None and cancel():
            raise GenerationCancelled(f"generation cancelled after step {info.step + 1} of {info.steps}")

    t0 = time.perf_counter()
    try:
        if cancel is not None and cancel():
            raise GenerationCancelled("generation cancelled before the first step")
        latents = SAMPLERS[sampler_name](velocity, x, schedule, generator=gen, callback=on_step)
    finally:
        if bar is not None:
            bar.close()
    timings["sampling"] = _elapsed(t0, device)

    record = GenerationRecord(
        seed=seed,
        prompts=prompts,
        negative_prompts=negatives,
        durations=durations,
        steps=steps,
        cfg_scale=cfg_scale,
        apg_scale=apg_scale,
        sampler=sampler_name,
        duration_padding_sec=duration_padding_sec,
        latent_length=length,
        sample_rate=cfg.sample_rate,
        device=str(device),
        dtype=str(model.dtype).replace("torch.", ""),
        sigmas=schedule_host.tolist(),
        extra={"cuda_graphs": graphs is not None},
    )
    if return_latents:
        timings["total"] = time.perf_counter() - started
        record.timings = timings
        model.last_record = record
        return latents

    # ---- decode
    t0 = time.perf_counter()
    chunked = cfg.pretransform.chunked if chunked_decode is None else bool(chunked_decode)
    single = truncate_output_to_duration and len(set(durations)) == 1
    full = length * ratio
    samples = min(full, int(durations[0] * cfg.sample_rate)) if single else full
    needed = math.ceil(samples / ratio) if single else max(valid)
    audio = decode_latents(model, latents, needed, chunked, gen, samples, all_latents=decode_all_latents)
    for item, frames in enumerate(valid):  # silence past duration + padding (the padding mask)
        audio[item, :, frames * ratio :] = 0
    audio.clamp_(-1, 1)
    if truncate_output_to_duration and not single:
        warnings.warn(
            "per-item durations differ: returning the full generated length; each item is silent past "
            "its duration plus duration_padding_sec",
            stacklevel=4,
        )
    timings["decoding"] = _elapsed(t0, device)
    timings["total"] = time.perf_counter() - started
    record.timings = timings
    model.last_record = record
    return audio


# Latent frames decoded past the last one that is kept by sliding-window decoders: the context the
# reference's own chunked decoding relies on (half its 32-frame overlap).
DECODE_MARGIN = 16


def decode_latents(
    model: StableAudioModel,
    latents: torch.Tensor,
    needed: int,
    chunked: bool,
    generator: torch.Generator | None,
    samples: int,
    *,
    all_latents: bool = False,
) -> torch.Tensor:
    """The first `samples` audio samples (float32) of the decoded latents, of which only the first
    `needed` frames are decoded (the rest is silenced or truncated by the caller anyway) and left zero.

    Window-local decoders (SAME-S) stream window-aligned spans straight into the output (equal to a
    one-pass decode, in bounded memory, without the chunked plan's 25-40 % overlap work). Sliding-window
    decoders (SAME-L) decode `needed` frames plus a margin, chunked when asked. `all_latents=True` is the
    reference's plan (every frame, the configured chunking), which also reproduces its decoder-noise
    random stream for checkpoints whose decoding is stochastic.
    """
    ae = model.autoencoder
    total = latents.shape[-1]
    z = latents.to(next(ae.parameters()).dtype)
    if all_latents:
        audio = ae.decode_chunked(z, generator=generator) if chunked else ae.decode(z, generator=generator)
        return audio[..., :samples].float()
    if ae.config.decoder.sliding_window is None:
        out = torch.zeros(z.shape[0], ae.config.io_channels, samples, device=z.device)
        ae.decode_into(z, out[..., : min(samples, needed * ae.config.downsampling_ratio)], generator)
        return out
    keep = min(total, needed + DECODE_MARGIN)
    z = z[..., :keep]
    audio = ae.decode_chunked(z, generator=generator) if chunked else ae.decode(z, generator=generator)
    audio = audio[..., : min(samples, needed * ae.config.downsampling_ratio)].float()
    return torch.nn.functional.pad(audio, (0, samples - audio.shape[-1]))


def _elapsed(since: float, device: torch.device) -> float:
    """Seconds since `since`, after the device has finished the work queued so far: GPU kernels run
    asynchronously, so without the wait a stage's time would be its launch time (one wait per stage,
    a handful per generation)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
    return time.perf_counter() - since


def _step_graphs(model: StableAudioModel) -> StepGraphs | None:
    """The model's CUDA-graph cache when enabled and usable: unmerged LoRAs recompute their weights
    on the host at every generation, which a captured graph would not see, so they run eagerly."""
    graphs = model._step_graphs
    if graphs is None:
        return None
    if model.lora_names and not model._merger.merged:
        warnings.warn(
            "CUDA graphs are not used while LoRAs are loaded unmerged (merge_lora() makes them usable)",
            stacklevel=5,
        )
        return None
    return graphs


def _progress_bar(steps: int, progress: bool | None):
    """A tqdm bar when asked for, or by default when stderr is a terminal."""
    import sys

    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc="sampling", unit="step", leave=False)
