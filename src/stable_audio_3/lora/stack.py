"""`LoRAStack`: the LoRAs on one model — their names, strengths, merge state and layer filters.

The public model delegates every LoRA call here, and the trainer attaches its adapters here, so the
bookkeeping lives in one object.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from stable_audio_3.lora.adapters import (
    LoRAConfig,
    adapter_targets,
    attach,
    detach_all,
    iter_adapters,
    layer_selected,
)
from stable_audio_3.lora.files import apply_lora_file, read_lora_file
from stable_audio_3.lora.merging import Merger

__all__ = ["LoRAStack"]


def _is_strength(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value == value


class LoRAStack:
    """Stacked adapters on `roots` (our top-level names -> modules: `dit`, `conditioners`).

    `on_change` runs whenever the effective weights may have changed identity (load, unload, merge),
    e.g. to drop captured CUDA graphs.
    """

    def __init__(self, roots: dict[str, nn.Module], on_change=lambda: None) -> None:
        self.roots = roots
        self.names: list[str] = []
        self._merger = Merger()
        self._on_change = on_change

    @property
    def merged(self) -> bool:
        return self._merger.merged

    def __len__(self) -> int:
        return len(self.names)

    def load(
        self,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        svd_bases_path: str | os.PathLike[str] | None = None,
    ) -> list[int]:
        """Read every file first (a bad one attaches nothing), then stack them; returns their indices."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self._require_unmerged("load_lora")
        files = [read_lora_file(p) for p in paths]
        bases = None
        if svd_bases_path is not None and any(f.config.adapter_type.endswith("-xs") for f in files):
            bases = torch.load(str(svd_bases_path), map_location="cpu", weights_only=True)
        indices = []
        for f in files:
            apply_lora_file(self.roots, f, len(self.names), bases)
            indices.append(len(self.names))
            self.names.append(f.name)
        self._on_change()
        return indices

    def attach_trainable(self, cfg: LoRAConfig, name: str = "training") -> list[nn.Parameter]:
        """Fresh adapters on every layer the config's filters select; returns their parameters."""
        index = len(self.names)
        for root_name, root in self.roots.items():
            for layer, module in list(adapter_targets(root)):
                if layer_selected(f"{root_name}.{layer}", cfg.include, cfg.exclude):
                    attach(module, cfg, index=index)
        self.names.append(name)
        params = [p for *_, a in self._adapters() if a.index == index for p in a.parameters()]
        for p in params:
            p.requires_grad_(True)
        self._on_change()
        return params

    def _adapters(self) -> Iterator:
        for root in self.roots.values():
            yield from iter_adapters(root)

    def set_strength(self, strength: float, index: int | None = None) -> None:
        if not _is_strength(strength):
            raise TypeError(f"strength must be a number, got {strength!r}")
        if index is not None and not 0 <= index < len(self.names):
            raise ValueError(f"lora_index {index} is out of range: {len(self.names)} LoRA(s) loaded")
        self._require_unmerged("set_lora_strength")
        for *_, adapter in self._adapters():
            if index is None or adapter.index == index:
                adapter.strength.fill_(float(strength))

    def strengths(self) -> list[float]:
        found = {a.index: float(a.strength) for *_, a in self._adapters()}
        return [found.get(i, 0.0) for i in range(len(self.names))]

    def unload(self) -> None:
        self._merger.unmerge()
        for root in self.roots.values():
            detach_all(root)
        self.names.clear()
        self._on_change()

    def merge(self) -> None:
        self._merger.merge(self.roots)
        self._on_change()

    def unmerge(self) -> None:
        self._merger.unmerge()
        self._on_change()

    @contextlib.contextmanager
    def strength_for_call(self, strength: float | Sequence[float] | None) -> Iterator[None]:
        """Strengths for one generation (one for all LoRAs, or one each), restored afterwards."""
        if strength is None:
            yield
            return
        if not self.names:
            raise ValueError("lora_strength was given but no LoRA is loaded (use load_lora first)")
        values = list(strength) if isinstance(strength, (list, tuple)) else [strength] * len(self.names)
        if len(values) != len(self.names):
            raise ValueError(
                f"lora_strength has {len(values)} values but {len(self.names)} LoRA(s) are loaded"
            )
        saved = self.strengths()
        try:
            for i, v in enumerate(values):
                self.set_strength(v, index=i)
            yield
        finally:
            for i, v in enumerate(saved):
                self.set_strength(v, index=i)

    def _require_unmerged(self, what: str) -> None:
        if self._merger.merged:
            raise RuntimeError(f"{what}: the LoRAs are merged; call unmerge_lora() first")
