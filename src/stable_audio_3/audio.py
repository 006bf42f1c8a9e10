"""Audio input handling: files, arrays and tensors in, (channels, samples) float32 at a target rate out."""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stable_audio_3.errors import (
    ArgumentTypeError,
    ArgumentValueError,
    AudioInputError,
    MissingFileError,
    as_path,
    describe,
)

__all__ = ["read_audio", "to_waveform", "resample", "write_audio"]


def read_audio(path: str | os.PathLike[str], *, argument: str = "path") -> tuple[torch.Tensor, int]:
    """Read a sound file as (channels, samples) float32 and its sample rate. A missing, empty,
    truncated or non-audio file is an `AudioInputError` naming `argument` and the path."""
    import soundfile as sf

    path = as_path(argument, path)
    if not path.is_file():
        raise MissingFileError(f"{argument}: audio file not found: {path}")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as err:
        reason = "the file is empty" if path.stat().st_size == 0 else describe(err)
        raise AudioInputError(f"{argument}: cannot read {path} as audio ({reason})") from None
    if data.shape[0] == 0:
        raise AudioInputError(f"{argument}: {path} holds no samples")
    if not np.isfinite(data).all():
        raise AudioInputError(f"{argument}: {path} contains NaN or infinite samples")
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sr)


def _check_writable(path: Path, audio: Any, sample_rate: Any, kind: str) -> np.ndarray:
    """The samples to write as (samples, channels) float32, after checking every argument."""
    import soundfile as sf

    if kind not in sf.available_formats():
        raise ArgumentValueError(
            f"format {kind.lower()!r} is not one soundfile can write (use wav, flac, ogg or mp3)"
        )
    if not _is_rate(sample_rate):
        raise ArgumentValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    if not isinstance(audio, torch.Tensor) or audio.dim() not in (1, 2) or not audio.is_floating_point():
        raise ArgumentTypeError("audio must be a float tensor of shape (channels, samples) or (samples,)")
    if audio.numel() == 0:
        raise ArgumentValueError("audio is empty")
    if not torch.isfinite(audio).all():
        raise ArgumentValueError("audio contains NaN or infinite samples; refusing to write it")
    if not path.parent.is_dir():
        raise MissingFileError(f"path: the folder {path.parent} does not exist")
    audio = audio if audio.dim() == 2 else audio[None]
    return audio.detach().float().cpu().numpy().T


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

    path = as_path("path", path)
    kind = (format or path.suffix[1:] or "wav").upper()
    data = _check_writable(path, audio, sample_rate, kind)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with sf.SoundFile(str(tmp), "w", sample_rate, data.shape[1], subtype, format=kind) as f:
            for key, value in (metadata or {}).items():
                setattr(f, key, value)
            f.write(data)
        os.replace(tmp, path)
    except (sf.LibsndfileError, ValueError, TypeError) as err:
        raise ArgumentValueError(f"cannot write {path} as {kind.lower()}: {describe(err)}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


# Sample rates an audio input may declare; outside this range it is almost surely a mistake (a
# swapped tuple, samples in milliseconds) and resampling would allocate without bound.
MIN_INPUT_RATE, MAX_INPUT_RATE = 1_000, 1_536_000


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
    if isinstance(x, list):
        try:
            x = np.asarray(x, dtype=np.float32)
        except (TypeError, ValueError):
            raise ArgumentTypeError(f"{name}: a list waveform must hold numbers (or lists of them)") from None
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
            raise ArgumentTypeError(f"{name}: unsupported sample dtype {x.dtype} (float, int16 or int32)")
    else:
        raise ArgumentTypeError(
            f"{name} must be a path, a tensor, an array or a (waveform, sample_rate) tuple, "
            f"got {type(x).__name__}"
        )
    if not t.is_floating_point():
        raise ArgumentTypeError(
            f"{name}: samples must be floating point (or int16/int32 arrays), got {t.dtype}"
        )
    return t.float()


def _wave_and_rate(value: Any, name: str, sample_rate: Any) -> tuple[torch.Tensor, int]:
    if isinstance(value, (str, os.PathLike)):
        return read_audio(value, argument=name)
    if isinstance(value, tuple):
        if len(value) != 2:
            raise AudioInputError(
                f"{name} must be a (waveform, sample_rate) pair, got a tuple of {len(value)}"
            )
        a, b = value
        if _is_rate(b) and not _is_rate(a):
            return _as_tensor(a, name), int(b)
        if _is_rate(a) and not _is_rate(b):
            return _as_tensor(b, name), int(a)
        raise AudioInputError(
            f"{name} must be (waveform, sample_rate) or (sample_rate, waveform) with a positive int rate"
        )
    wave = _as_tensor(value, name)
    if sample_rate is None:
        raise AudioInputError(f"{name}: a bare waveform needs its sample rate, pass (waveform, sample_rate)")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral):
        raise ArgumentTypeError(f"sample_rate must be an int, got {sample_rate!r}")
    if not _is_rate(sample_rate):
        raise ArgumentValueError(f"sample_rate must be positive, got {sample_rate}")
    return wave, int(sample_rate)


def _shaped(wave: torch.Tensor, name: str) -> torch.Tensor:
    """(channels, samples) from 1-D, 2-D (either order) or (1, C, T) input."""
    if wave.dim() == 3 and wave.shape[0] == 1:
        wave = wave[0]
    if wave.dim() == 1:
        wave = wave[None]
    if wave.dim() != 2:
        raise AudioInputError(f"{name} must be 1-D or 2-D audio, got shape {tuple(wave.shape)}")
    if wave.numel() == 0:
        raise AudioInputError(f"{name} is empty")
    if wave.shape[0] > wave.shape[1] and wave.shape[1] <= 2:
        wave = wave.T  # channels-last
    if wave.shape[0] > 2:
        raise AudioInputError(f"{name} has {wave.shape[0]} channels; mono or stereo expected")
    if not torch.isfinite(wave).all():
        raise AudioInputError(f"{name} contains NaN or infinite samples")
    return wave


def to_waveform(
    value: Any, name: str, target_rate: int, channels: int = 2, sample_rate: int | None = None
) -> torch.Tensor:
    """Normalise any supported audio input to (channels, samples) float32 at `target_rate`.

    Accepts a file path, `(waveform, rate)` (torchaudio order), `(rate, waveform)` (the official
    docs' order), or a bare tensor/array/list with `sample_rate` given. Mono is duplicated to
    stereo; channels-last input is transposed. Errors name the argument.
    """
    wave, rate = _wave_and_rate(value, name, sample_rate)
    if not MIN_INPUT_RATE <= rate <= MAX_INPUT_RATE:
        raise AudioInputError(
            f"{name}: sample rate {rate} Hz is outside [{MIN_INPUT_RATE}, {MAX_INPUT_RATE}] Hz"
        )
    wave = _shaped(wave, name)
    if wave.shape[0] == 1 and channels == 2:
        wave = wave.repeat(2, 1)
    elif wave.shape[0] == 2 and channels == 1:
        wave = wave.mean(0, keepdim=True)
    out = resample(wave.contiguous(), rate, target_rate)
    if out.shape[-1] == 0:
        raise AudioInputError(f"{name} is shorter than one sample at {target_rate} Hz")
    return out
