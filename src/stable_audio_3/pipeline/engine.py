"""The `generate()` algorithm as a sequence of named steps: lengths, noise, conditioning, edit inputs,
schedule, sampling, decoding.

The engine receives the networks it needs (`Components`) and a checked `GenerationRequest`; it never
reaches into the public model. Random draws follow the reference's order exactly (initial noise, the
edit sources' encoder noise, one draw per ping-pong step, then decoder noise), all from one
`torch.Generator` seeded with the request's seed, so the same seed gives the reference's audio.
With per-item seeds each item has its own stream and draws what a batch-1 call with its seed draws.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from stable_audio_3.errors import NonFiniteOutputError
from stable_audio_3.models.conditioners import NumberConditioner, PromptConditioner
from stable_audio_3.models.dit import DiffusionTransformer
from stable_audio_3.models.same import SAMEAutoencoder
from stable_audio_3.notices import warn_caller
from stable_audio_3.official.config import ModelConfig
from stable_audio_3.pipeline.conditioning import Conditioning, condition
from stable_audio_3.pipeline.cudagraphs import StepGraphs
from stable_audio_3.pipeline.decoding import decode_latents
from stable_audio_3.pipeline.editing import EditInputs, prepare_edit_inputs
from stable_audio_3.pipeline.guidance import Denoiser
from stable_audio_3.pipeline.lengths import Lengths, effective_lengths, plan_lengths
from stable_audio_3.pipeline.record import GenerationRecord
from stable_audio_3.pipeline.request import GenerationCancelled, GenerationRequest
from stable_audio_3.pipeline.samplers import SAMPLERS, StepInfo
from stable_audio_3.pipeline.schedules import build_schedule, shift_from_config
from stable_audio_3.pipeline.seeds import Generators, ItemGenerators, randn

__all__ = ["Components", "generate"]


@dataclass(frozen=True)
class Components:
    """What a generation runs on: the networks, where they live, and the step-graph cache (or None)."""

    config: ModelConfig
    dit: DiffusionTransformer
    prompt: PromptConditioner
    seconds: NumberConditioner
    autoencoder: SAMEAutoencoder
    device: torch.device
    dtype: torch.dtype
    graphs: StepGraphs | None = None
    # Called with each step's noise level (first item, host float) before the step is evaluated,
    # e.g. to switch interval-limited LoRAs; None when nothing depends on the level.
    level_hook: Callable[[float], None] | None = None


@dataclass
class _Clock:
    """Per-stage wall times, each taken after the device has finished the stage's queued work."""

    device: torch.device
    started: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)

    def stage(self, name: str, since: float) -> None:
        if self.device.type == "cuda":  # kernels run asynchronously: wait, or we time the launches
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()
        self.timings[name] = time.perf_counter() - since

    def total(self) -> dict[str, float]:
        return {**self.timings, "total": time.perf_counter() - self.started}


def generate(c: Components, request: GenerationRequest) -> tuple[torch.Tensor, GenerationRecord]:
    """Run `request`; returns the audio (or latents) and the record of the run."""
    clock = _Clock(c.device)
    lengths = plan(c, request)  # 1. sizes
    generator, noise = initial_noise(c, request, lengths)  # 2. noise first, as the reference draws it
    t0 = time.perf_counter()
    cond = condition(  # 3. text and seconds
        c.prompt, c.seconds, request.prompts, request.negative_prompts, request.durations, c.device, c.dtype
    )
    clock.stage("conditioning", t0)
    t0 = time.perf_counter()
    edit = edit_inputs(c, request, lengths, generator)  # 4. audio to start from or keep
    if request.mode != "text_to_audio":
        clock.stage("encoding", t0)
    schedule = noise_schedule(c, request)  # 5. noise levels
    t0 = time.perf_counter()
    latents = sample(c, request, cond, edit, lengths, noise, schedule, generator)  # 6. sampling
    clock.stage("sampling", t0)
    record = GenerationRecord.from_request(
        request,
        latent_length=lengths.latents,
        sample_rate=c.config.sample_rate,
        device=str(c.device),
        dtype=str(c.dtype).replace("torch.", ""),
        sigmas=schedule.cpu().tolist(),
        extra={"cuda_graphs": c.graphs is not None},
    )
    if request.return_latents:
        record.timings = clock.total()
        return check_finite(latents, request, c.dtype), record
    t0 = time.perf_counter()
    audio = decode(c, request, latents, lengths, generator)  # 7. audio
    clock.stage("decoding", t0)
    record.timings = clock.total()
    return check_finite(audio, request, c.dtype), record


def check_finite(output: torch.Tensor, request: GenerationRequest, dtype: torch.dtype) -> torch.Tensor:
    """`output`, or a NonFiniteOutputError saying what may have overflowed: never NaN audio."""
    if not torch.isfinite(output).all():
        what = "latents" if request.return_latents else "audio"
        raise NonFiniteOutputError(
            f"the generated {what} contain NaN or infinite values: the checkpoint weights (or a LoRA) "
            f"may be corrupt, or the computation overflowed in {str(dtype).removeprefix('torch.')} "
            f"(try dtype='float32' or a lower cfg_scale, now {request.guidance.cfg_scale})"
        )
    return output


def plan(c: Components, request: GenerationRequest, durations: tuple[float, ...] | None = None) -> Lengths:
    """The sizes of the call (or, with `durations`, of a call for just those items)."""
    ae = c.config.pretransform.autoencoder
    return plan_lengths(
        request.durations if durations is None else durations,
        request.duration_padding_sec,
        c.config.sample_rate,
        ae.downsampling_ratio,
        ae.latent_multiple,
        request.max_samples,
    )


def initial_noise(
    c: Components, request: GenerationRequest, lengths: Lengths
) -> tuple[Generators, torch.Tensor]:
    """The call's generator(s), seeded, and the first draw: the initial noise (float32)."""
    shape = (request.batch, c.config.io_channels, lengths.latents)
    if request.item_seeds is not None:
        frames = [plan(c, request, (d,)).latents for d in request.durations]
        generator: Generators = ItemGenerators.seeded(request.item_seeds, frames, c.device)
    else:
        generator = request.generator if request.generator is not None else torch.Generator(device=c.device)
        generator.manual_seed(request.seed)
    return generator, randn(shape, generator, c.device, torch.float32)


def edit_inputs(
    c: Components, request: GenerationRequest, lengths: Lengths, generator: Generators
) -> EditInputs:
    return prepare_edit_inputs(
        c.autoencoder,
        request.edit,
        batch=request.batch,
        longest=max(request.durations),
        lengths=lengths,
        sample_rate=c.config.sample_rate,
        chunked_encode=c.config.pretransform.chunked,
        device=c.device,
        dtype=c.dtype,
        generator=generator,
    )


def noise_schedule(c: Components, request: GenerationRequest) -> torch.Tensor:
    """(B, steps + 1) noise levels: the explicit `sigmas`, or the checkpoint's shifted schedule from
    the starting level (1, or the audio-to-audio `init_noise_level`) to 0, per item's length."""
    if request.sigmas is not None:
        return request.sigmas.to(c.device)
    ratio = c.config.pretransform.autoencoder.downsampling_ratio
    return build_schedule(
        request.steps,
        effective_lengths(request.durations, c.config.sample_rate, ratio),
        request.shift or shift_from_config(c.config.diffusion.sampling_shift),
        start=request.edit.init_noise_level,
        device=c.device,
    )


class _ScheduledVelocity:
    """The velocity model the sampler calls once per step. Which steps are guided is decided on the
    host before sampling (from the levels the sampler will pass, in the model dtype), so no step waits
    for the device to find out and each step can replay a CUDA graph; the step is its call count."""

    def __init__(
        self,
        denoiser: Denoiser,
        schedule: torch.Tensor,
        graphs: StepGraphs | None,
        level_hook: Callable[[float], None] | None = None,
    ) -> None:
        levels = schedule.cpu().to(denoiser.dit.dtype)
        self.guided = [denoiser.guidance.applies_at(levels[:, i]) for i in range(levels.shape[1] - 1)]
        self.levels = [float(v) for v in levels[0].float()]
        self.denoiser, self.graphs, self.level_hook, self.calls = denoiser, graphs, level_hook, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        guided = self.guided[self.calls]
        if self.level_hook is not None:
            self.level_hook(self.levels[self.calls])
        self.calls += 1
        if self.graphs is not None:
            return self.graphs.step(self.denoiser, x, t, guided)
        return self.denoiser(x, t, guided=guided)


def sample(
    c: Components,
    request: GenerationRequest,
    cond: Conditioning,
    edit: EditInputs,
    lengths: Lengths,
    noise: torch.Tensor,
    schedule: torch.Tensor,
    generator: Generators,
) -> torch.Tensor:
    """Noise (or noised init latents) at the first level, integrated to 0 by the request's sampler."""
    sigma_max = schedule[:, 0, None, None]
    if edit.init_latents is None:
        x = (noise * sigma_max).to(c.dtype)
    else:
        x = (edit.init_latents.float() * (1 - sigma_max) + noise * sigma_max).to(c.dtype)
    valid = torch.tensor(lengths.valid, device=c.device)
    denoiser = Denoiser(
        c.dit,
        cross_cond=cond.cross_cond,
        global_cond=cond.global_cond,
        local_cond=edit.local_cond,
        padding_mask=torch.arange(lengths.latents, device=c.device)[None, :] < valid[:, None],
        valid_lengths=lengths.valid,
        negative_cross_cond=cond.negative_cross_cond,
        negative_cross_mask=cond.negative_cross_mask,
        guidance=request.guidance,
    )
    velocity = _ScheduledVelocity(denoiser, schedule, c.graphs, c.level_hook)
    bar = _progress_bar(request.steps, request.progress)

    def on_step(info: StepInfo) -> None:
        if bar is not None:
            bar.update(1)
        if request.callback is not None:
            request.callback(info)
        if request.cancel is not None and request.cancel():
            raise GenerationCancelled(f"generation cancelled after step {info.step + 1} of {info.steps}")

    try:
        if request.cancel is not None and request.cancel():
            raise GenerationCancelled("generation cancelled before the first step")
        return SAMPLERS[request.sampler](velocity, x, schedule, generator=generator, callback=on_step)
    finally:
        if bar is not None:
            bar.close()


def _decode_plan(c: Components, request: GenerationRequest, lengths: Lengths) -> tuple[int, int]:
    """(samples of output, latent frames to decode): cut to the duration when every item asked for the
    same one, else the full length (each item is silenced past its duration plus padding)."""
    ratio = c.config.pretransform.autoencoder.downsampling_ratio
    durations = request.durations
    single = request.truncate_output_to_duration and len(set(durations)) == 1
    full = lengths.latents * ratio
    samples = min(full, int(durations[0] * c.config.sample_rate)) if single else full
    return samples, math.ceil(samples / ratio) if single else max(lengths.valid)


def _decode_items(
    c: Components, request: GenerationRequest, latents: torch.Tensor, samples: int, gens: ItemGenerators
) -> torch.Tensor:
    """Per-item seeds: each item decoded as its batch-1 call decodes it, from its own stream."""
    out = torch.zeros(request.batch, c.config.pretransform.autoencoder.io_channels, samples, device=c.device)
    for i, (g, frames) in enumerate(zip(gens.generators, gens.frames, strict=True)):
        solo = dataclasses.replace(request, durations=request.durations[i : i + 1])
        n, needed = _decode_plan(c, solo, plan(c, solo))
        one = decode_latents(
            c.autoencoder,
            latents[i : i + 1, :, :frames],
            needed,
            request.chunked_decode,
            g,
            n,
            all_latents=request.decode_all_latents,
        )
        out[i, :, : min(n, samples)] = one[0, :, :samples]
    return out


def decode(
    c: Components,
    request: GenerationRequest,
    latents: torch.Tensor,
    lengths: Lengths,
    generator: Generators,
) -> torch.Tensor:
    """Audio (B, channels, samples) float32 in [-1, 1] (see `_decode_plan` for its length)."""
    ratio = c.config.pretransform.autoencoder.downsampling_ratio
    samples, needed = _decode_plan(c, request, lengths)
    if isinstance(generator, ItemGenerators):
        audio = _decode_items(c, request, latents, samples, generator)
    else:
        audio = decode_latents(
            c.autoencoder,
            latents,
            needed,
            request.chunked_decode,
            generator,
            samples,
            all_latents=request.decode_all_latents,
        )
    single = request.truncate_output_to_duration and len(set(request.durations)) == 1
    for item, frames in enumerate(lengths.valid):  # silence past duration + padding (the padding mask)
        audio[item, :, frames * ratio :] = 0
    audio.clamp_(-1, 1)
    if request.truncate_output_to_duration and not single:
        warn_caller(
            "per-item durations differ: returning the full generated length; each item is silent past "
            "its duration plus duration_padding_sec"
        )
    return audio


def _progress_bar(steps: int, progress: bool | None):
    """A tqdm bar when asked for, or by default when stderr is a terminal."""
    import sys

    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc="sampling", unit="step", leave=False)
