"""Validation samples written during training: fixed prompts and seeds, so steps can be compared
by ear and by spectrogram."""

from __future__ import annotations

import contextlib
from pathlib import Path

__all__ = ["due", "write_samples"]


def due(step: int, total: int, every: int) -> bool:
    """At the last step, and every `every` steps when `every` > 0."""
    return step == total or (every > 0 and step % every == 0)


def write_samples(
    model,
    prompts: tuple[str, ...],
    folder: Path,
    step: int,
    *,
    duration: float,
    steps: int,
    seed: int,
    sampler: str,
    weights: contextlib.AbstractContextManager | None = None,
) -> list[Path]:
    """Generate one file per prompt (`step<N>_<i>.wav`) with the weights given (e.g. the EMA)."""
    from stable_audio_3.audio import write_audio

    if not prompts:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    dit = model.networks.dit
    was_training = dit.training
    dit.eval()
    try:
        with weights or contextlib.nullcontext():
            audio = model.generate(
                list(prompts), duration=duration, steps=steps, seed=seed, sampler=sampler, progress=False
            )
    finally:
        model.networks.conditioners[model.config.prompt.id].clear_cache()  # inference-mode tensors
        dit.train(was_training)
    paths = [folder / f"step{step:06d}_{i}.wav" for i in range(len(prompts))]
    for path, item in zip(paths, audio, strict=True):
        write_audio(path, item, model.sample_rate)
    return paths
