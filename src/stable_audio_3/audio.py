"""Audio input handling: files, arrays and tensors in, (channels, samples) float32 at a target rate out."""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["read_audio", "to_waveform", "resample", "write_audio"]


def read_audio(path: str | os.PathLike[str]) -> tuple[torch.Tensor, int]:
    """Read a sound file as (channels, samples) float32 and its sample rate."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sr)


def write_audio(
    path: str | os.PathLike[str],
    audio: torch.Tensor,
    sample_rate: int,
    *,
    format: str | None = None,
    subtype: str | None = None,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write (channels, samples) audio atomically (a temporary file renamed into place).

    `format` defaults to the file's extension (wav, flac, ogg, mp3, ...); `subtype` to soundfile's
    default for it; `metadata` sets string tags the format can hold (title, comment, software, ...).
    """
    import soundfile as sf

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    data = audio.detach().float().cpu().numpy().T
    kind = (format or path.suffix[1:] or "wav").upper()
    try:
        with sf.SoundFile(str(tmp), "w", sample_rate, data.shape[1], subtype, format=kind) as f:
            for key, value in (metadata or {}).items():
                setattr(f, key, value)
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def resample(audio: torch.Tensor, src_rate: int, dst_rate: int) -> torch.Tensor:
    """High-quality resampling with soxr (channels, samples) -> (channels, samples')."""
    if src_rate == dst_rate:
        return audio
    import soxr

    data = soxr.resample(audio.detach().cpu().double().numpy().T, src_rate, dst_rate, quality="VHQ")
    return torch.from_numpy(np.ascontiguousarray(data.T)).to(torch.float32)


def _is_rate(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool) and x > 0


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
    elif isinstance(x, np.ndarray):
        if x.dtype == np.int16:
            t = torch.from_numpy(x.astype(np.float32) / 32768.0)
        elif x.dtype == np.int32:
            t = torch.from_numpy(x.astype(np.float32) / 2147483648.0)
        elif np.issubdtype(x.dtype, np.floating):
            t = torch.from_numpy(np.ascontiguousarray(x))
        else:
            raise TypeError(f"{name}: unsupported sample dtype {x.dtype}")
    else:
        raise TypeError(f"{name} must be a path, a tensor, an array or a (waveform, sample_rate) tuple")
    if not t.is_floating_point():
        raise TypeError(f"{name}: samples must be floating point (or int16/int32 arrays)")
    return t.float()


def to_waveform(
    value: Any, name: str, target_rate: int, channels: int = 2, sample_rate: int | None = None
) -> torch.Tensor:
    """Normalise any supported audio input to (channels, samples) float32 at `target_rate`.

    Accepts a file path, `(waveform, rate)` (torchaudio order), `(rate, waveform)` (the official
    docs' order), or a bare tensor/array with `sample_rate` given. Mono is duplicated to stereo;
    channels-last input is transposed. Errors name the argument.
    """
    if isinstance(value, (str, os.PathLike)):
        wave, rate = read_audio(value)
    elif isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"{name} must be a (waveform, sample_rate) pair, got a tuple of {len(value)}")
        a, b = value
        if _is_rate(b) and not _is_rate(a):
            wave, rate = _as_tensor(a, name), int(b)
        elif _is_rate(a) and not _is_rate(b):
            wave, rate = _as_tensor(b, name), int(a)
        else:
            raise ValueError(f"{name} must be (waveform, sample_rate) or (sample_rate, waveform)")
    else:
        wave = _as_tensor(value, name)
        if sample_rate is None:
            raise ValueError(f"{name}: a bare waveform needs its sample rate, pass (waveform, sample_rate)")
        rate = int(sample_rate)
    if wave.dim() == 3 and wave.shape[0] == 1:
        wave = wave[0]
    if wave.dim() == 1:
        wave = wave[None]
    if wave.dim() != 2:
        raise ValueError(f"{name} must be 1-D or 2-D audio, got shape {tuple(wave.shape)}")
    if wave.numel() == 0:
        raise ValueError(f"{name} is empty")
    if wave.shape[0] > wave.shape[1] and wave.shape[1] <= 2:
        wave = wave.T  # channels-last
    if wave.shape[0] > 2:
        raise ValueError(f"{name} has {wave.shape[0]} channels; mono or stereo expected")
    if wave.shape[1] == 0:
        raise ValueError(f"{name} is empty")
    if not torch.isfinite(wave).all():
        raise ValueError(f"{name} contains NaN or infinite samples")
    if wave.shape[0] == 1 and channels == 2:
        wave = wave.repeat(2, 1)
    elif wave.shape[0] == 2 and channels == 1:
        wave = wave.mean(0, keepdim=True)
    return resample(wave.contiguous(), rate, target_rate)
