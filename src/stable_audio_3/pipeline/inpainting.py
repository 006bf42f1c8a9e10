"""Inpainting masks: regions in seconds -> a keep/regenerate mask at audio rate and at latent rate.

Convention: 1 = keep (provided context), 0 = regenerate.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from stable_audio_3.errors import ArgumentTypeError, ArgumentValueError

__all__ = ["regions_from_seconds", "mask_from_regions", "limit_mask", "mask_to_latents"]


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def regions_from_seconds(start: Any, end: Any, duration: float) -> list[tuple[float, float]]:
    """Validate `inpaint_mask_start_seconds` / `inpaint_mask_end_seconds` into (start, end) pairs.

    Both scalars (one region) or both lists of equal length (several regions). Regions must satisfy
    0 <= start < end, and start before the generated `duration`; an end past it is clamped.
    """
    if isinstance(start, (list, tuple)) != isinstance(end, (list, tuple)):
        raise ArgumentTypeError(
            "inpaint_mask_start_seconds and inpaint_mask_end_seconds must both be numbers or both be lists"
        )
    starts = list(start) if isinstance(start, (list, tuple)) else [start]
    ends = list(end) if isinstance(end, (list, tuple)) else [end]
    if len(starts) != len(ends):
        raise ArgumentValueError(
            f"inpaint_mask_start_seconds has {len(starts)} values but "
            f"inpaint_mask_end_seconds has {len(ends)}"
        )
    if not starts:
        raise ArgumentValueError("inpaint_mask_start_seconds is empty: give at least one region")
    regions = []
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        for name, v in (("inpaint_mask_start_seconds", s), ("inpaint_mask_end_seconds", e)):
            if not _is_number(v):
                raise ArgumentTypeError(f"{name}[{i}] must be a number, got {type(v).__name__}")
            if v != v or v in (float("inf"), float("-inf")):
                raise ArgumentValueError(f"{name}[{i}] must be finite")
        s, e = float(s), float(e)
        if s < 0:
            raise ArgumentValueError(f"inpaint_mask_start_seconds[{i}] is negative ({s})")
        if s >= e:
            raise ArgumentValueError(
                f"inpaint_mask_start_seconds / inpaint_mask_end_seconds region {i}: "
                f"start {s} must be before end {e}"
            )
        if s >= duration:
            raise ArgumentValueError(
                f"inpaint_mask_start_seconds region {i} starts at {s} s, past the generated duration "
                f"{duration} s"
            )
        regions.append((s, e))
    return regions


def mask_from_regions(
    regions: Sequence[tuple[float, float]], n_samples: int, sample_rate: int
) -> torch.Tensor:
    """(1, n_samples) float mask: ones with `[int(start*sr), int(end*sr))` zeroed per region."""
    mask = torch.ones(1, n_samples)
    for s, e in regions:
        mask[:, min(int(s * sample_rate), n_samples) : min(int(e * sample_rate), n_samples)] = 0
    return mask


def limit_mask(mask: torch.Tensor, n_samples: int, max_seconds: float, sample_rate: int) -> torch.Tensor:
    """Fit to the generation length and force "regenerate" past the longest requested duration.

    The second rule is the reference's (it matches training, where padding is never context).
    """
    mask = mask[..., :n_samples].float().clone()
    if mask.shape[-1] < n_samples:  # a shorter prebuilt mask: the rest is regenerated (never stretched)
        mask = F.pad(mask, (0, n_samples - mask.shape[-1]))
    end = int(max_seconds * sample_rate)
    if end < mask.shape[-1]:
        mask[..., end:] = 0
    return mask


def mask_to_latents(mask: torch.Tensor, length: int) -> torch.Tensor:
    """(B, samples) -> (B, 1, length) by nearest-neighbour (frame i takes sample floor(i*S/length))."""
    return F.interpolate(mask[:, None, :], size=length, mode="nearest")
