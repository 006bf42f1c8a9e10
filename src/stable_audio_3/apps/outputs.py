"""Where a command line's results go, checked before any model loads, and how they are written.

One file per batch item (cut to that item's duration), written atomically, each with a sidecar
`<file>.json` that holds the generation record; `generate(**record["arguments"])` on the same model
(and LoRAs) gives the same audio again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FORMATS",
    "encode_audio",
    "OutputError",
    "OutputPlan",
    "plan_outputs",
    "checkpoint_sample_rate",
    "write_outputs",
]

# format -> (soundfile subtype, sample rates it can hold or None for any)
FORMATS: dict[str, tuple[str | None, frozenset[int] | None]] = {
    "wav": ("FLOAT", None),  # float32: exactly what the model produced
    "flac": ("PCM_24", None),
    "ogg": ("VORBIS", None),
    "mp3": ("MPEG_LAYER_III", frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})),
}
OFFICIAL_SAMPLE_RATE = 44100


def encode_audio(wave: Any, sample_rate: int, fmt: str, *, fit_rate: bool = False) -> bytes:
    """(channels, samples) float audio as the bytes of a `fmt` file. MP3 holds only some rates:
    with `fit_rate` others are resampled up to the nearest one it holds (else soundfile refuses)."""
    import io

    import numpy as np
    import soundfile as sf

    data = np.asarray(wave, dtype=np.float32).T
    subtype, rates = FORMATS[fmt]
    if fit_rate and rates is not None and sample_rate not in rates:
        import soxr

        target = min((r for r in rates if r >= sample_rate), default=max(rates))
        data, sample_rate = soxr.resample(data, sample_rate, target), target
    buf = io.BytesIO()
    sf.write(buf, data, sample_rate, format=fmt.upper(), subtype=subtype)
    return buf.getvalue()


class OutputError(ValueError):
    """An output path, format or sample rate that cannot work; raised before the model loads."""

    is_usage_error = True


@dataclass(frozen=True)
class OutputPlan:
    paths: tuple[Path, ...]  # one per batch item
    format: str

    def sidecar(self, path: Path) -> Path:
        return path.with_name(path.name + ".json")


def checkpoint_sample_rate(model: str) -> int:
    """The sample rate a model will produce, read without loading it (a local directory's config;
    every released checkpoint is 44.1 kHz)."""
    config = Path(model) / "model_config.json"
    if config.is_file():
        try:
            return int(json.loads(config.read_text())["sample_rate"])
        except (ValueError, KeyError, TypeError):
            return OFFICIAL_SAMPLE_RATE  # the loader will name what is wrong with it
    return OFFICIAL_SAMPLE_RATE


def _format(output: Path, requested: str | None) -> str:
    suffix = output.suffix[1:].lower()
    if requested is not None and suffix and suffix != requested:
        raise OutputError(f"--output {output} has the extension .{suffix} but --format is {requested}")
    kind = requested or suffix or "wav"
    if kind not in FORMATS:
        raise OutputError(f"--output {output}: unknown audio format .{kind} (use {', '.join(FORMATS)})")
    return kind


def _check_writable(folder: Path) -> None:
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"--output: {existing} is a file, so {folder} cannot be created")
    if not os.access(existing, os.W_OK):
        raise OutputError(f"--output: cannot write in {existing}")


def plan_outputs(output: str, batch: int, fmt: str | None, sample_rate: int, overwrite: bool) -> OutputPlan:
    """The files a run will write: `name.ext`, or `name_<i>.ext` per item of a batch."""
    path = Path(output)
    if path.name in ("", ".", "..") or output.endswith(os.sep):
        raise OutputError(f"--output {output} names a folder; give a file name such as out.wav")
    kind = _format(path, fmt)
    import soundfile as sf

    subtype, rates = FORMATS[kind]
    if kind.upper() not in sf.available_formats():
        raise OutputError(f"--format {kind} is not supported by this libsndfile")
    if rates is not None and sample_rate not in rates:
        raise OutputError(f"--format {kind} cannot hold {sample_rate} Hz audio; use wav or flac")
    base = path.with_suffix(f".{kind}") if not path.suffix else path
    paths = (
        (base,)
        if batch == 1
        else tuple(base.with_name(f"{base.stem}_{i}{base.suffix}") for i in range(batch))
    )
    plan = OutputPlan(paths, kind)
    if not overwrite:
        for p in paths:
            for existing in (p, plan.sidecar(p)):
                if existing.exists():
                    raise OutputError(f"--output: {existing} exists (pass --overwrite to replace it)")
    _check_writable(base.parent)
    return plan


def peak_limited(audio: Any, ceiling_dbfs: float | None) -> Any:
    """Scale an item down so its peak is at most `ceiling_dbfs` (never up)."""
    if ceiling_dbfs is None:
        return audio
    peak = float(audio.abs().max()) if audio.numel() else 0.0
    ceiling = 10.0 ** (ceiling_dbfs / 20.0)
    return audio * (ceiling / peak) if peak > ceiling else audio


def write_outputs(
    plan: OutputPlan,
    audio: Any,
    sample_rate: int,
    durations: Sequence[float],
    record: dict[str, Any],
    ceiling_dbfs: float | None,
) -> list[Path]:
    """Write every item (cut to its own duration) and its sidecar; returns the audio paths. All or
    nothing: every file is written under a temporary name first and renamed into place only when
    all of them succeeded."""
    from stable_audio_3 import write_audio

    subtype, _ = FORMATS[plan.format]
    staged: list[tuple[Path, Path]] = []
    try:
        for item, path in enumerate(plan.paths):
            path.parent.mkdir(parents=True, exist_ok=True)
            samples = audio[item, :, : int(durations[item] * sample_rate)]
            entry = {
                **record,
                "item": item,
                "output": {"path": str(path), "format": plan.format, "peak_ceiling_dbfs": ceiling_dbfs},
            }
            summary = json.dumps({"seed": record["seed"], "item": item, "arguments": record["arguments"]})
            tags = {"software": f"stable_audio_3 {record['versions']['stable_audio_3']}", "comment": summary}
            tmp = path.with_name(f".{path.name}.pending")
            staged.append((tmp, path))
            write_audio(
                tmp,
                peak_limited(samples, ceiling_dbfs),
                sample_rate,
                format=plan.format,
                subtype=subtype,
                metadata=tags if plan.format != "mp3" else None,
            )
            sidecar = plan.sidecar(path)
            tmp_sidecar = sidecar.with_name(f".{sidecar.name}.pending")
            staged.append((tmp_sidecar, sidecar))
            tmp_sidecar.write_text(json.dumps(entry, indent=1))
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return list(plan.paths)
