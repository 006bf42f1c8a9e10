"""Long-audio plans for the SAME autoencoder.

* `encode_chunked` / `decode_chunked`: the reference's plan — overlapping chunks of `chunk_size`
  latents, each written without its outer half-overlap, the last one aligned to the end.
* `decode_into`: streaming for window-local decoders (SAME-S). Their attention never crosses a window
  (plus half a window with the midpoint shift) and the output convolution reaches one token further,
  so decoding window-aligned spans with a two-window margin gives the one-pass result (up to float
  rounding) while holding only one span's activations, straight into the caller's output buffer.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch

from stable_audio_3.errors import ArgumentValueError

__all__ = ["STREAM_SPAN", "encode_chunked", "decode_chunked", "decode_into"]


class SAMEAutoencoder(Protocol):
    """What the plans use of `models.same.SAMEAutoencoder` (named here so that neither module
    imports the other)."""

    config: Any
    iterate_batch: bool
    bottleneck: Any
    decoder: Any

    def encode(self, audio: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...
    def decode(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...
    def patches_to_audio(self, x: torch.Tensor) -> torch.Tensor: ...


# Latents per streamed span: ~25 MB of decoder activations for SAME-S, and a 3 % margin overhead.
STREAM_SPAN = 256


def check_chunking(chunk_size: int, overlap: int) -> None:
    if chunk_size < 1:
        raise ArgumentValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if not 0 <= overlap < chunk_size:
        raise ArgumentValueError(f"overlap must be in [0, chunk_size), got {overlap}")


def chunk_starts(frames: int, chunk: int, hop: int) -> list[int]:
    """Starts every `hop` frames; the last chunk ends exactly at `frames`."""
    starts = list(range(0, frames - chunk + 1, hop))
    if starts[-1] != frames - chunk:
        starts.append(frames - chunk)
    return starts


def stitch(
    out: torch.Tensor, pieces: list[torch.Tensor], starts: list[int], chunk: int, half: int, scale: int
) -> None:
    """Write each chunk without its outer half-overlap; the last chunk is aligned to the end."""
    total = out.shape[-1]
    for i, (start, piece) in enumerate(zip(starts, pieces, strict=True)):
        last = i == len(starts) - 1
        origin = total - chunk * scale if last else start * scale
        left = 0 if i == 0 else half * scale
        right = chunk * scale if last else (chunk - half) * scale
        out[..., origin + left : origin + right] = piece[..., left:right]


def encode_chunked(
    ae: SAMEAutoencoder,
    audio: torch.Tensor,
    chunk_size: int,
    overlap: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    ratio = ae.config.downsampling_ratio
    check_chunking(chunk_size, overlap)
    total = audio.shape[-1]
    if total < chunk_size * ratio:
        return ae.encode(audio, generator)
    frames = total // ratio
    starts = chunk_starts(frames, chunk_size, chunk_size - overlap)
    pieces = [ae.encode(audio[..., s * ratio : (s + chunk_size) * ratio], generator) for s in starts]
    out = pieces[0].new_zeros(*pieces[0].shape[:-1], frames)
    stitch(out, pieces, starts, chunk_size, overlap // 2, 1)
    return out


def decode_chunked(
    ae: SAMEAutoencoder,
    latents: torch.Tensor,
    chunk_size: int,
    overlap: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    check_chunking(chunk_size, overlap)
    frames = latents.shape[-1]
    if frames < chunk_size:
        return ae.decode(latents, generator)
    ratio = ae.config.downsampling_ratio
    starts = chunk_starts(frames, chunk_size, chunk_size - overlap)
    pieces = [ae.decode(latents[..., s : s + chunk_size], generator) for s in starts]
    out = pieces[0].new_zeros(*pieces[0].shape[:-1], frames * ratio)
    stitch(out, pieces, starts, chunk_size, overlap // 2, ratio)
    return out


def decode_into(
    ae: SAMEAutoencoder,
    latents: torch.Tensor,
    out: torch.Tensor,
    generator: torch.Generator | None = None,
    span: int = STREAM_SPAN,
) -> torch.Tensor:
    """Fill `out` (B, channels, T) with the first T samples of `decode(latents)`; returns `out`."""
    dec = ae.config.decoder
    if dec.sliding_window is not None:
        raise ArgumentValueError(
            "decode_into needs a window-local decoder (SAME-S); use decode_chunked for SAME-L"
        )
    if isinstance(span, bool) or not isinstance(span, int) or span < 1:
        raise ArgumentValueError(f"span must be a positive int, got {span!r}")
    ratio = ae.config.downsampling_ratio
    batch, _, frames = latents.shape
    if out.dim() != 3 or out.shape[0] != batch or out.shape[1] != ae.config.io_channels:
        raise ArgumentValueError(
            f"out must have shape ({batch}, {ae.config.io_channels}, T), got {tuple(out.shape)}"
        )
    if out.shape[-1] > frames * ratio:
        raise ArgumentValueError(
            f"out holds {out.shape[-1]} samples but {frames} latents decode to {frames * ratio}"
        )
    window = dec.window_chunk // dec.stride  # latents per attention window
    span = math.ceil(span / window) * window
    margin = 2 * window
    need = math.ceil(out.shape[-1] / ratio)
    end = min(frames, need + margin)
    items = [slice(i, i + 1) for i in range(batch)] if ae.iterate_batch else [slice(None)]
    for item in items:
        z = ae.bottleneck.decode(latents[item, :, :end], generator)
        for start in range(0, need, span):
            stop = min(start + span, need)
            lo, hi = max(0, start - margin), min(end, stop + margin)
            audio = ae.patches_to_audio(ae.decoder(z[..., lo:hi], generator))
            first, count = (start - lo) * ratio, min(stop * ratio, out.shape[-1]) - start * ratio
            out[item, :, start * ratio : start * ratio + count] = audio[..., first : first + count]
    return out
