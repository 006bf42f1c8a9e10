"""Audio-conditioned generation inputs: audio-to-audio init latents and the inpainting condition."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from stable_audio_3.audio import to_waveform
from stable_audio_3.pipeline.inpainting import (
    limit_mask,
    mask_from_regions,
    mask_to_latents,
    regions_from_seconds,
)

if TYPE_CHECKING:
    from stable_audio_3.model import StableAudioModel

__all__ = ["EditInputs", "prepare_edit_inputs"]


@dataclass
class EditInputs:
    init_latents: torch.Tensor | None  # (B, C, L) or None
    local_cond: torch.Tensor  # (B, C + 1, L): [mask, masked source latents]
    source_latents: torch.Tensor | None  # encoded inpaint source (B, C, L), for inspection


def _encode_source(
    model: StableAudioModel, value: Any, name: str, n_samples: int, generator: torch.Generator
) -> torch.Tensor:
    """Any audio input -> (1, C, L) latents of exactly the generation length (zero-padded or cropped)."""
    cfg = model.config
    ae = model.autoencoder
    wave = to_waveform(value, name, cfg.sample_rate, channels=ae.config.io_channels)
    wave = F.pad(wave, (0, max(0, n_samples - wave.shape[-1])))[:, :n_samples]
    audio = wave[None].to(model.device, next(ae.parameters()).dtype)
    if cfg.pretransform.chunked:
        return ae.encode_chunked(audio, generator=generator)
    return ae.encode(audio, generator=generator)


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


def prepare_edit_inputs(
    model: StableAudioModel,
    *,
    batch: int,
    durations: list[float],
    n_samples: int,
    length: int,
    generator: torch.Generator,
    init_audio: Any = None,
    inpaint_audio: Any = None,
    inpaint_mask: Any = None,
    inpaint_mask_start_seconds: Any = None,
    inpaint_mask_end_seconds: Any = None,
) -> EditInputs:
    """Encode init/inpaint audio (in that order, as the reference draws its RNG) and build the mask."""
    cfg = model.config
    sr = cfg.sample_rate
    channels = cfg.io_channels
    device, dtype = model.device, model.dtype
    longest = max(durations)

    has_regions = inpaint_mask_start_seconds is not None or inpaint_mask_end_seconds is not None
    if has_regions and (inpaint_mask_start_seconds is None or inpaint_mask_end_seconds is None):
        raise ValueError("give both inpaint_mask_start_seconds and inpaint_mask_end_seconds")
    if has_regions and inpaint_mask is not None:
        raise ValueError("give either inpaint_mask or inpaint_mask_start/end_seconds, not both")
    if inpaint_audio is not None and not has_regions and inpaint_mask is None:
        raise ValueError(
            "inpaint_audio needs the regions to regenerate: inpaint_mask_start_seconds and "
            "inpaint_mask_end_seconds, or inpaint_mask"
        )

    mask = None
    if has_regions:
        regions = regions_from_seconds(inpaint_mask_start_seconds, inpaint_mask_end_seconds, longest)
        if any(e > longest for _, e in regions):
            warnings.warn(
                f"an inpaint region ends after the generated duration ({longest} s); it is clamped there",
                stacklevel=5,
            )
        mask = mask_from_regions(regions, n_samples, sr)
    elif inpaint_mask is not None:
        mask = _prebuilt_mask(inpaint_mask, batch)
    if mask is not None:
        mask = limit_mask(mask, n_samples, longest, sr)

    init_latents = None
    if init_audio is not None:
        init_latents = _encode_source(model, init_audio, "init_audio", n_samples, generator).expand(
            batch, -1, -1
        )
    source = None
    if inpaint_audio is not None:
        source = _encode_source(model, inpaint_audio, "inpaint_audio", n_samples, generator).expand(
            batch, -1, -1
        )

    if mask is None:
        latent_mask = torch.zeros(batch, 1, length, device=device, dtype=dtype)
    else:
        latent_mask = mask_to_latents(mask, length).to(device, dtype).expand(batch, -1, -1)
    masked = torch.zeros(batch, channels, length, device=device, dtype=dtype)
    if source is not None:
        masked = source.to(dtype) * latent_mask
    local = torch.cat([latent_mask, masked], dim=1)
    return EditInputs(init_latents, local, source)
