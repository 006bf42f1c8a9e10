"""Merging adapters into the base weights (for speed) and back, exactly: the originals are kept."""

from __future__ import annotations

import torch
import torch.nn.utils.parametrize as parametrize
from torch import nn

from stable_audio_3.lora.adapters import Adapter

__all__ = ["Merger"]


class Merger:
    """Fold adapters into the base weights for speed, exactly reversibly (originals are kept)."""

    def __init__(self) -> None:
        self._saved: list[tuple[nn.Module, torch.Tensor]] = []

    @property
    def merged(self) -> bool:
        return bool(self._saved)

    @torch.no_grad()
    def merge(self, roots: dict[str, nn.Module]) -> None:
        if self._saved:
            return
        for root in roots.values():
            for _, module in root.named_modules():
                if not parametrize.is_parametrized(module, "weight"):
                    continue
                stack = module.parametrizations.weight
                effective = module.weight.detach().clone()
                self._saved.append((module, stack.original.detach().clone()))
                for p in stack:
                    if isinstance(p, Adapter):
                        p.enabled = False
                stack.original.copy_(effective)

    @torch.no_grad()
    def unmerge(self) -> None:
        for module, original in self._saved:
            stack = module.parametrizations.weight
            stack.original.copy_(original)
            for p in stack:
                if isinstance(p, Adapter):
                    p.enabled = True
        self._saved.clear()
