"""The conditioning of one generation: text (and negative text) plus seconds, as the DiT takes them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stable_audio_3.models.conditioners import NumberConditioner, PromptConditioner

__all__ = ["Conditioning", "condition"]


@dataclass(frozen=True)
class Conditioning:
    cross_cond: torch.Tensor  # (B, text + 1, D): prompt tokens then the seconds token
    global_cond: torch.Tensor  # (B, D): the seconds embedding
    negative_cross_cond: torch.Tensor | None = None
    negative_cross_mask: torch.Tensor | None = None  # (B, text + 1): 1 on real negative tokens


def condition(
    prompt: PromptConditioner,
    seconds: NumberConditioner,
    prompts: tuple[str, ...],
    negatives: tuple[str, ...] | None,
    durations: tuple[float, ...],
    device: torch.device,
    dtype: torch.dtype,
) -> Conditioning:
    """Encode the prompts and durations; the negative prompts share the seconds token."""
    text, _ = prompt(list(prompts), device)
    secs, secs_mask = seconds(list(durations), device)
    cross = torch.cat([text, secs.to(text.dtype)], dim=1).to(dtype)
    if negatives is None:
        return Conditioning(cross, secs[:, 0].to(dtype))
    neg, neg_mask = prompt(list(negatives), device)
    return Conditioning(
        cross,
        secs[:, 0].to(dtype),
        torch.cat([neg, secs.to(neg.dtype)], dim=1),
        torch.cat([neg_mask.float(), secs_mask.float()], dim=1),
    )
