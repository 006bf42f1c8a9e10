"""The record of one generation: what was asked, what was used (the seed, the schedule), how long it took."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stable_audio_3.pipeline.request import GenerationRequest

__all__ = ["GenerationRecord"]


@dataclass
class GenerationRecord:
    """Everything needed to reproduce or describe one `generate()` call."""

    seed: int
    prompts: list[str]
    negative_prompts: list[str] | None
    durations: list[float]
    steps: int
    cfg_scale: float
    apg_scale: float
    sampler: str
    duration_padding_sec: float
    latent_length: int
    sample_rate: int
    device: str
    dtype: str
    sigmas: list[list[float]] = field(default_factory=list)
    cfg_interval: list[float] = field(default_factory=lambda: [0.0, 1.0])  # noise levels guided
    item_seeds: list[int] | None = None  # per-item seeds (item i reproduces alone with seed=item_seeds[i])
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def for_items(self, start: int, stop: int) -> GenerationRecord:
        """The record narrowed to items [start, stop) of the batch (what a server or a batch job
        reports for one request merged into a larger call); `extra["batch_items"]` keeps the size."""

        def cut(values: list | None) -> list | None:
            return None if values is None else values[start:stop]

        out = GenerationRecord(**{**asdict(self), "extra": {**self.extra, "batch_items": len(self.prompts)}})
        out.prompts, out.durations = cut(self.prompts), cut(self.durations)
        out.negative_prompts, out.item_seeds = cut(self.negative_prompts), cut(self.item_seeds)
        if len(self.sigmas) == len(self.prompts):
            out.sigmas = cut(self.sigmas)
        if self.item_seeds is not None:
            out.seed = self.item_seeds[start]
        return out

    @classmethod
    def from_request(
        cls,
        request: GenerationRequest,
        *,
        latent_length: int,
        sample_rate: int,
        device: str,
        dtype: str,
        sigmas: list[list[float]],
        extra: dict[str, Any],
    ) -> GenerationRecord:
        """The record of `request` as it ran (the schedule and sizes it got)."""
        g = request.guidance
        return cls(
            seed=request.seed,
            prompts=list(request.prompts),
            negative_prompts=None if request.negative_prompts is None else list(request.negative_prompts),
            durations=list(request.durations),
            steps=request.steps,
            cfg_scale=g.cfg_scale,
            apg_scale=g.apg_scale,
            sampler=request.sampler,
            duration_padding_sec=request.duration_padding_sec,
            latent_length=latent_length,
            sample_rate=sample_rate,
            device=device,
            dtype=dtype,
            sigmas=sigmas,
            cfg_interval=list(g.interval),
            item_seeds=None if request.item_seeds is None else list(request.item_seeds),
            extra=extra,
        )
