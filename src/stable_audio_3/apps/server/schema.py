"""What a client may send: the JSON body of `POST /v1/generations`, checked field by field, and the
job it becomes (one item per output, each with its own prompt, duration and seed).

Only data travels: audio inputs are base64 (or multipart uploads) decoded in memory, LoRAs are named
among those the server loaded. A string is never treated as a path, so no client can make the
server open a file. The generate controls are then checked by the model itself
(`StableAudioModel.check_arguments`), so the server accepts exactly what the Python API accepts.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from stable_audio_3 import MAX_BATCH_SIZE
from stable_audio_3.apps.items import item_seeds

__all__ = ["GenerationBody", "JobSpec", "Item", "FieldError", "build_spec", "AUDIO_FIELDS", "field_of"]

Number = StrictFloat | StrictInt
AUDIO_FIELDS = ("init_audio", "inpaint_audio")
# Controls every item of a job shares; jobs whose shared controls agree can run as one batch.
SHARED = (
    "steps",
    "cfg_scale",
    "apg_scale",
    "duration_padding_sec",
    "sampler",
    "cfg_interval",
    "cfg_norm_threshold",
    "scale_phi",
    "sampling_shift",
    "init_noise_level",
    "inpaint_mask_start_seconds",
    "inpaint_mask_end_seconds",
    "chunked_decode",
)


class GenerationBody(BaseModel):
    """The generate controls (see `StableAudioModel.generate`); unset fields take its defaults."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: StrictStr | Annotated[list[StrictStr], Field(min_length=1, max_length=64)]
    negative_prompt: StrictStr | list[StrictStr] | None = None
    duration: Number | list[Number] | None = Field(
        None, description="seconds (default: 30 or the model's max)"
    )
    steps: StrictInt | None = None
    cfg_scale: Number | None = None
    seed: StrictInt | list[StrictInt] | None = Field(
        None, description="-1/None: random; item k of a job with one seed gets seed + k"
    )
    batch_size: Annotated[StrictInt, Field(ge=1, le=MAX_BATCH_SIZE)] | None = Field(
        None, description="items in the job (default: one per prompt)"
    )
    apg_scale: Number | None = None
    duration_padding_sec: Number | None = None
    sampler: Literal["pingpong", "euler", "dpmpp"] | None = None
    cfg_interval: Annotated[list[Number], Field(min_length=2, max_length=2)] | None = None
    cfg_norm_threshold: Number | None = None
    scale_phi: Number | None = None
    sampling_shift: Literal["none"] | dict[str, StrictStr | Number] | None = None
    init_audio: StrictStr | None = Field(None, description="base64 of an audio file (wav, flac, ogg, mp3)")
    init_noise_level: Number | None = None
    inpaint_audio: StrictStr | None = Field(None, description="base64 of an audio file")
    inpaint_mask_start_seconds: Number | list[Number] | None = None
    inpaint_mask_end_seconds: Number | list[Number] | None = None
    chunked_decode: StrictBool | None = None
    lora: dict[StrictStr, Number] | None = Field(
        None, description="strengths of LoRAs loaded at start, by name"
    )


class FieldError(ValueError):
    """A request field that cannot work; answered with 422 naming `field`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Item:
    prompt: str
    negative_prompt: str | None
    duration: float
    seed: int


@dataclass
class JobSpec:
    """A checked job: its items, the controls they share, LoRA strengths by name, decoded audio."""

    items: list[Item]
    shared: dict[str, Any]
    lora: dict[str, float] = field(default_factory=dict)
    audio: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return "+".join(sorted(self.audio)) or "text_to_audio"

    def batch_key(self) -> str | None:
        """Jobs with equal keys can share one sampling run; None: this job runs alone (its audio)."""
        if self.audio:
            return None
        negatives = self.items[0].negative_prompt is not None
        return json.dumps([self.shared, self.lora, negatives], sort_keys=True)

    def to_json(self) -> dict[str, Any]:
        """Everything but the audio (stored beside it as files)."""
        return {"items": [vars(i) for i in self.items], "shared": self.shared, "lora": self.lora}

    @classmethod
    def from_json(cls, data: dict[str, Any], audio: dict[str, tuple[np.ndarray, int]]) -> JobSpec:
        return cls([Item(**i) for i in data["items"]], data["shared"], data["lora"], audio)

    def generate_arguments(self) -> dict[str, Any]:
        """`generate()` keyword arguments for this job alone."""
        return merged_arguments([self])


def merged_arguments(specs: list[JobSpec]) -> dict[str, Any]:
    """One `generate()` call for compatible jobs: items concatenated, per-item seeds."""
    items = [i for s in specs for i in s.items]
    first = specs[0]
    args = dict(first.shared)
    args["prompt"] = [i.prompt for i in items]
    args["duration"] = [i.duration for i in items]
    args["seed"] = [i.seed for i in items]
    if items[0].negative_prompt is not None:
        args["negative_prompt"] = [i.negative_prompt or "" for i in items]
    for name, (wave, rate) in first.audio.items():
        args[name] = (wave, rate)
    return args


def decode_audio(name: str, data: bytes) -> tuple[np.ndarray, int]:
    """Audio file bytes -> ((channels, samples) float32, rate), or a FieldError naming `name`."""
    import soundfile as sf

    if not data:
        raise FieldError(name, f"{name} is empty")
    try:
        wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError):
        raise FieldError(name, f"{name} is not a readable audio file (wav, flac, ogg or mp3)") from None
    if wave.shape[0] == 0 or not np.isfinite(wave).all():
        raise FieldError(name, f"{name} holds no samples or non-finite samples")
    return np.ascontiguousarray(wave.T), int(rate)


def _base64_audio(name: str, text: str) -> tuple[np.ndarray, int]:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FieldError(
            name, f"{name} must be base64-encoded audio (file paths are never opened by the server)"
        ) from None
    return decode_audio(name, data)


def _items(body: GenerationBody, default_duration: float) -> list[Item]:
    prompts = body.prompt if isinstance(body.prompt, list) else None
    batch = body.batch_size or (len(prompts) if prompts else 1)

    def each(name: str, value: Any, default: Any) -> list[Any]:
        if isinstance(value, list):
            if len(value) != batch:
                raise FieldError(name, f"{name} has {len(value)} items but the job has {batch}")
            return value
        return [default if value is None else value] * batch

    seeds = body.seed if isinstance(body.seed, list) else item_seeds(body.seed, batch)
    seeds = [item_seeds(s, 1)[0] for s in each("seed", seeds, -1)]  # -1 entries of a list: random
    return [
        Item(p, n, float(d), int(s))
        for p, n, d, s in zip(
            each("prompt", body.prompt, ""),
            each("negative_prompt", body.negative_prompt, None),
            each("duration", body.duration, default_duration),
            seeds,
            strict=True,
        )
    ]


def build_spec(
    body: GenerationBody, uploads: dict[str, bytes], lora_names: list[str], default_duration: float
) -> JobSpec:
    """The job a body (and its multipart uploads) asks for, or a FieldError naming the field."""
    audio = {}
    for name in AUDIO_FIELDS:
        text = getattr(body, name)
        if text is not None and name in uploads:
            raise FieldError(name, f"{name} given both in the JSON body and as an upload")
        if text is not None:
            audio[name] = _base64_audio(name, text)
        elif name in uploads:
            audio[name] = decode_audio(name, uploads[name])
    unknown = sorted(set(body.lora or {}) - set(lora_names))
    if unknown:
        known = ", ".join(lora_names) or "none are loaded"
        raise FieldError("lora", f"lora: unknown LoRA name(s) {unknown} (loaded: {known})")
    shared = {k: getattr(body, k) for k in SHARED if getattr(body, k) is not None}
    if "cfg_interval" in shared:
        shared["cfg_interval"] = tuple(shared["cfg_interval"])
    return JobSpec(_items(body, default_duration), shared, dict(body.lora or {}), audio)


_NAME = re.compile(r"[a-z_]+")


def field_of(message: str, fields: tuple[str, ...]) -> str:
    """The request field an error message of the Python API names (it starts with the argument)."""
    for token in _NAME.findall(message)[:3]:
        if token in fields:
            return token
    return next((f for f in fields if f in message), "body")
