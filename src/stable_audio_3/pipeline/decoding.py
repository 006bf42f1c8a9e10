"""Latents to audio for `generate()`: only the frames whose audio is kept, in the cheapest exact plan."""

from __future__ import annotations

import torch

from stable_audio_3.models.same import SAMEAutoencoder

__all__ = ["DECODE_MARGIN", "decode_latents"]

# Latent frames decoded past the last one that is kept by sliding-window decoders: the context the
# reference's own chunked decoding relies on (half its 32-frame overlap).
DECODE_MARGIN = 16


def decode_latents(
    ae: SAMEAutoencoder,
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
