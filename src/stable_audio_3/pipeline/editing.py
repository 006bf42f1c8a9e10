"""Audio-conditioned generation inputs: audio-to-audio init latents and the inpainting condition."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stable_audio_3.models.same import SAMEAutoencoder
from stable_audio_3.pipeline.inpainting import limit_mask, mask_from_regions, mask_to_latents
from stable_audio_3.pipeline.lengths import Lengths
from stable_audio_3.pipeline.request import EditRequest
from stable_audio_3.pipeline.seeds import Generators, ItemGenerators

__all__ = ["EditInputs", "encode_source", "prepare_edit_inputs"]


@dataclass(frozen=True)
class EditInputs:
    init_latents: torch.Tensor | None  # (B, C, L): the audio-to-audio starting point, or None
    local_cond: torch.Tensor  # (B, C + 1, L): [mask, masked source latents]


def encode_source(
    ae: SAMEAutoencoder,
    wave: torch.Tensor,
    samples: int,
    chunked: bool,
    device: torch.device,
    generator: torch.Generator,
) -> torch.Tensor:
    """(C, T) at the model rate -> (1, C', L) latents of exactly the generation length."""
    wave = F.pad(wave, (0, max(0, samples - wave.shape[-1])))[:, :samples]
    audio = wave[None].to(device, next(ae.parameters()).dtype)
    return ae.encode_chunked(audio, generator=generator) if chunked else ae.encode(audio, generator=generator)


def _encode_for_batch(
    ae: SAMEAutoencoder,
    wave: torch.Tensor,
    batch: int,
    lengths: Lengths,
    chunked: bool,
    device: torch.device,
    generator: Generators,
) -> torch.Tensor:
    """(B, C', L) source latents: one encoding for the batch, or with per-item seeds one per item,
    each at its batch-1 length from its own stream (zero past it, where attention masks it)."""
    if not isinstance(generator, ItemGenerators):
        return encode_source(ae, wave, lengths.samples, chunked, device, generator).expand(batch, -1, -1)
    ratio = lengths.samples // lengths.latents
    items = []
    for g, frames in zip(generator.generators, generator.frames, strict=True):
        z = encode_source(ae, wave, frames * ratio, chunked, device, g)
        items.append(F.pad(z, (0, lengths.latents - z.shape[-1])))
    return torch.cat(items)


def _audio_mask(edit: EditRequest, lengths: Lengths, longest: float, sample_rate: int) -> torch.Tensor | None:
    if edit.regions is not None:
        mask = mask_from_regions(edit.regions, lengths.samples, sample_rate)
    elif edit.inpaint_mask is not None:
        mask = edit.inpaint_mask
    else:
        return None
    return limit_mask(mask, lengths.samples, longest, sample_rate)


def prepare_edit_inputs(
    ae: SAMEAutoencoder,
    edit: EditRequest,
    *,
    batch: int,
    longest: float,
    lengths: Lengths,
    sample_rate: int,
    chunked_encode: bool,
    device: torch.device,
    dtype: torch.dtype,
    generator: Generators,
) -> EditInputs:
    """Encode init/inpaint audio (in that order, as the reference draws its RNG) and build the mask."""
    length = lengths.latents
    mask = _audio_mask(edit, lengths, longest, sample_rate)
    init_latents = source = None
    encode = functools.partial(
        _encode_for_batch, ae, batch=batch, lengths=lengths, chunked=chunked_encode, device=device
    )
    if edit.init_audio is not None:
        init_latents = encode(edit.init_audio, generator=generator)
    if edit.inpaint_audio is not None:
        source = encode(edit.inpaint_audio, generator=generator)
    if mask is None:
        latent_mask = torch.zeros(batch, 1, length, device=device, dtype=dtype)
    else:
        latent_mask = mask_to_latents(mask, length).to(device, dtype).expand(batch, -1, -1)
    masked = torch.zeros(batch, ae.config.latent_dim, length, device=device, dtype=dtype)
    if source is not None:
        masked = source.to(dtype) * latent_mask
    return EditInputs(init_latents, torch.cat([latent_mask, masked], dim=1))
