"""Audio longer than a checkpoint's maximum by windowed continuation: each window inpaints what
follows the last `overlap` seconds of the previous one, and the seam is crossfaded inside that
overlap. Only the overlap is held between windows, so memory does not grow with the length;
`iter_long` yields the audio as it is made. A prompt schedule changes the prompt from a given time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from stable_audio_3.checks import check_number, resolve_seed
from stable_audio_3.errors import ArgumentTypeError, ArgumentValueError

__all__ = ["iter_long", "generate_long"]

Schedule = str | Sequence[tuple[float, str]]


def _prompt_at(schedule: list[tuple[float, str]], seconds: float) -> str:
    return [p for start, p in schedule if start <= seconds + 1e-9][-1]


def _schedule(prompt: Schedule) -> list[tuple[float, str]]:
    if isinstance(prompt, str):
        return [(0.0, prompt)]
    try:
        entries = sorted((float(t), p) for t, p in prompt)
    except (TypeError, ValueError):
        raise ArgumentTypeError(
            "prompt must be a string or a list of (start_seconds, prompt) pairs"
        ) from None
    if not entries or entries[0][0] != 0.0 or not all(isinstance(p, str) for _, p in entries):
        raise ArgumentValueError("a prompt schedule needs string prompts and an entry starting at 0 s")
    return entries


def _plan(model: Any, duration: float, window: float | None, overlap: float | None, crossfade: float | None):
    rate = model.sample_rate
    total = int(check_number("duration", duration, low=0.0, low_open=True) * rate)
    window = check_number(
        "window",
        model.max_duration if window is None else window,
        low=0.0,
        low_open=True,
        high=model.max_duration,
    )
    overlap = check_number(
        "overlap", min(window / 4, 10.0) if overlap is None else overlap, low=0.0, low_open=True
    )
    if overlap >= window:
        raise ArgumentValueError(f"overlap ({overlap} s) must be shorter than the window ({window} s)")
    crossfade = check_number(
        "crossfade", overlap / 2 if crossfade is None else crossfade, low=0.0, high=overlap
    )
    return rate, total, int(window * rate), int(overlap * rate), int(crossfade * rate)


def iter_long(
    model: Any,
    prompt: Schedule,
    duration: float,
    *,
    window: float | None = None,
    overlap: float | None = None,
    crossfade: float | None = None,
    seed: int | None = -1,
    **generate_kwargs: Any,
) -> Iterator[torch.Tensor]:
    """Yield (channels, samples) float32 chunks that together are `duration` seconds. Window k uses
    seed `seed + k` and the scheduled prompt at its start; `window` defaults to the checkpoint's
    maximum, `overlap` to a quarter of it (at most 10 s), `crossfade` to half the overlap. Other
    keyword arguments go to every `generate()` call (steps, cfg_scale, ...)."""
    schedule = _schedule(prompt)
    rate, total, win, ov, xf = _plan(model, duration, window, overlap, crossfade)
    for name in ("inpaint_audio", "inpaint_mask_start_seconds", "inpaint_mask_end_seconds", "batch_size"):
        if name in generate_kwargs:
            raise ArgumentValueError(f"{name} is set by the long-form plan; it cannot be given")
    base = resolve_seed(seed)
    kw = {"progress": False, **generate_kwargs}
    n = min(win, total)
    audio = model.generate(_prompt_at(schedule, 0.0), duration=n / rate, seed=base, **kw)[0, :, :n]
    if n == total:
        yield audio
        return
    yield audio[:, : n - ov]
    tail, made, k = audio[:, n - ov :], n, 1
    while made < total:
        n = min(win, ov + total - made)
        new = model.generate(
            _prompt_at(schedule, (made - ov) / rate),
            duration=n / rate,
            seed=base + k,
            inpaint_audio=(tail, rate),
            inpaint_mask_start_seconds=ov / rate,
            inpaint_mask_end_seconds=n / rate,
            **kw,
        )[0, :, :n]
        ramp = torch.linspace(0.0, 1.0, xf, device=new.device)
        yield tail[:, : ov - xf]
        yield tail[:, ov - xf :] * (1 - ramp) + new[:, ov - xf : ov] * ramp
        made += n - ov
        if made >= total:
            yield new[:, ov:]
            return
        yield new[:, ov : n - ov]
        tail, k = new[:, n - ov :], k + 1


def generate_long(
    model: Any,
    prompt: Schedule,
    duration: float,
    *,
    output: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> torch.Tensor | Path:
    """`iter_long` collected: the audio (channels, samples), or with `output` streamed into that
    file (float32 WAV, or FLAC by its extension, written beside and renamed into place) and its path returned,
    which keeps memory constant however long the audio is."""
    chunks = iter_long(model, prompt, duration, **kwargs)
    if output is None:
        return torch.cat(list(chunks), dim=-1)
    import soundfile as sf

    path = Path(output)
    partial = path.with_name(f".{path.name}.partial")
    try:
        kind = path.suffix[1:].upper() or "WAV"
        subtype = "FLOAT" if kind == "WAV" else None  # WAV holds exactly what the model made
        channels = model.autoencoder.config.io_channels
        with sf.SoundFile(str(partial), "w", model.sample_rate, channels, subtype, format=kind) as f:
            for chunk in chunks:
                f.write(chunk.T.cpu().numpy())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
