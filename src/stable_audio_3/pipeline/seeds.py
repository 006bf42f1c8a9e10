"""Per-item seeds: one random stream per batch item, so that item i of a batched call draws exactly
what a batch-1 call with seed i draws. This is what lets a server merge requests into one sampling
run without changing anyone's audio.

A batch-1 call of a shorter item has fewer latent frames, so each item's latent noise is drawn at
its own batch-1 length (in the same memory order) and the frames past it, which attention masks for
that item, are zero. Sources and decoding are handled one item at a time by the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["ItemGenerators", "Generators", "randn"]


@dataclass(frozen=True)
class ItemGenerators:
    """One seeded generator per batch item and each item's latent frames in a batch-1 call."""

    generators: tuple[torch.Generator, ...]
    frames: tuple[int, ...]

    @classmethod
    def seeded(cls, seeds: Sequence[int], frames: Sequence[int], device: torch.device) -> ItemGenerators:
        gens = tuple(torch.Generator(device=device).manual_seed(int(s)) for s in seeds)
        return cls(gens, tuple(int(n) for n in frames))

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, shape: Sequence[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(B, C, L) latent noise: item i's first `frames[i]` frames from its own stream, zeros after."""
        batch, channels, length = shape
        if batch != len(self.generators):
            raise ValueError(f"noise for {batch} items from {len(self.generators)} per-item generators")
        out = torch.zeros(tuple(shape), device=device, dtype=dtype)
        for i, (g, n) in enumerate(zip(self.generators, self.frames, strict=True)):
            n = min(n, length)
            out[i, :, :n] = torch.randn((channels, n), generator=g, device=device, dtype=dtype)
        return out


Generators = torch.Generator | ItemGenerators | None


def randn(
    shape: Sequence[int], generator: Generators, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Standard normal noise of `shape` from one generator for the batch, or one per item."""
    if isinstance(generator, ItemGenerators):
        return generator.randn(shape, device, dtype)
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
