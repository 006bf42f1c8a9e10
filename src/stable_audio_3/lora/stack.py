"""`LoRAStack`: the LoRAs on one model — their names, strengths, merge state and layer filters.

The public model delegates every LoRA call here, and the trainer attaches its adapters here, so the
bookkeeping lives in one object.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from torch import nn

from stable_audio_3.checks import check_int, check_number
from stable_audio_3.errors import ArgumentTypeError, ArgumentValueError, as_path
from stable_audio_3.lora.adapters import (
    LoRAConfig,
    adapter_targets,
    attach,
    detach_all,
    iter_adapters,
    layer_selected,
)
from stable_audio_3.lora.files import attach_staged, read_lora_file, read_svd_bases, stage_lora_file
from stable_audio_3.lora.merging import Merger

__all__ = ["LoRAStack"]


@dataclass
class RunSettings:
    """Per-LoRA settings applied at generation time: the noise levels at which the LoRA is active
    (`interval`, inclusive) and which layers it acts on (official include/exclude patterns)."""

    interval: tuple[float, float] = (0.0, 1.0)
    include: list[str] | None = None
    exclude: list[str] | None = None

    @property
    def default(self) -> bool:
        return self.interval == (0.0, 1.0) and self.include is None and self.exclude is None


def _patterns(name: str, value: Sequence[str] | str | None) -> list[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
    if items is None or not all(isinstance(v, str) for v in items):
        raise ArgumentTypeError(f"{name} must be a string or a list of strings, got {value!r}")
    items = [v.strip() for item in items for v in item.split(",") if v.strip()]
    return items or None


class LoRAStack:
    """Stacked adapters on `roots` (our top-level names -> modules: `dit`, `conditioners`).

    `on_change` runs whenever the effective weights may have changed identity (load, unload, merge),
    e.g. to drop captured CUDA graphs.
    """

    def __init__(self, roots: dict[str, nn.Module], on_change=lambda: None) -> None:
        self.roots = roots
        self.names: list[str] = []
        self.settings: list[RunSettings] = []
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
        """Read and check every file against the model first, then stack them all; returns their
        indices. A failure anywhere attaches nothing: the model is left exactly as it was."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        if not isinstance(paths, (list, tuple)) or not paths:
            raise ArgumentTypeError(f"paths must be a path or a non-empty list of paths, got {paths!r}")
        paths = [as_path("paths", p) for p in paths]
        self._require_unmerged("load_lora")
        files = [read_lora_file(p) for p in paths]
        bases = None
        if svd_bases_path is not None and any(f.config.adapter_type.endswith("-xs") for f in files):
            bases = read_svd_bases(svd_bases_path)
        first = len(self.names)
        staged = [stage_lora_file(self.roots, f, first + i, bases) for i, f in enumerate(files)]
        for f, adapters in zip(files, staged, strict=True):
            attach_staged(adapters)
            self.names.append(f.name)
            self.settings.append(RunSettings())
        self._on_change()
        return list(range(first, first + len(files)))

    def attach_trainable(self, cfg: LoRAConfig, name: str = "training") -> list[nn.Parameter]:
        """Fresh adapters on every layer the config's filters select; returns their parameters."""
        index = len(self.names)
        for root_name, root in self.roots.items():
            for layer, module in list(adapter_targets(root)):
                if layer_selected(f"{root_name}.{layer}", cfg.include, cfg.exclude):
                    attach(module, cfg, index=index)
        self.names.append(name)
        self.settings.append(RunSettings())
        params = [p for *_, a in self._adapters() if a.index == index for p in a.parameters()]
        for p in params:
            p.requires_grad_(True)
        self._on_change()
        return params

    def _adapters(self) -> Iterator:
        for root in self.roots.values():
            yield from iter_adapters(root)

    def set_strength(self, strength: float, index: int | None = None, name: str = "strength") -> None:
        value = check_number(name, strength)
        indices = self._indices(index)
        self._require_unmerged("set_lora_strength")
        for *_, adapter in self._adapters():
            if adapter.index in indices:
                adapter.strength.fill_(value)

    def strengths(self) -> list[float]:
        found = {a.index: float(a.strength) for *_, a in self._adapters()}
        return [found.get(i, 0.0) for i in range(len(self.names))]

    def unload(self) -> None:
        self._merger.unmerge()
        for root in self.roots.values():
            detach_all(root)
        self.names.clear()
        self.settings.clear()
        self._on_change()

    def merge(self) -> None:
        if any(st.interval != (0.0, 1.0) for st in self.settings):
            raise RuntimeError(
                "merge_lora: a LoRA has a noise-level interval; merged weights cannot follow it"
            )
        self._merger.merge(self.roots)
        self._on_change()

    def unmerge(self) -> None:
        self._merger.unmerge()
        self._on_change()

    def _indices(self, index: int | None) -> list[int]:
        """The LoRAs a call addresses: all (None) or one; an error when none is loaded."""
        if not self.names:
            raise ArgumentValueError("no LoRA is loaded (use load_lora first)")
        if index is None:
            return list(range(len(self.names)))
        i = check_int("lora_index", index)
        if not 0 <= i < len(self.names):
            raise ArgumentValueError(f"lora_index {i} is out of range: {len(self.names)} LoRA(s) loaded")
        return [i]

    def set_interval(self, low: float, high: float, index: int | None = None) -> None:
        """Noise levels (inclusive) at which the LoRA(s) act on the DiT; (0, 1) is always, the default.
        Adapters on the conditioners, which run once before sampling, are not affected."""
        low, high = check_number("interval low", low), check_number("interval high", high)
        if not 0.0 <= low <= high <= 1.0:
            raise ArgumentValueError(
                f"a LoRA interval must satisfy 0 <= low <= high <= 1, got ({low!r}, {high!r})"
            )
        self._require_unmerged("set_lora_interval")
        for i in self._indices(index):
            self.settings[i].interval = (float(low), float(high))

    def set_layers(
        self,
        include: Sequence[str] | str | None = None,
        exclude: Sequence[str] | str | None = None,
        index: int | None = None,
    ) -> None:
        """Restrict the LoRA(s) to layers matching the official include/exclude patterns (comma
        separated or a list; ranges like `layers.[0-5]` expand); None clears the filter."""
        include, exclude = _patterns("include", include), _patterns("exclude", exclude)
        self._require_unmerged("set_lora_layers")
        for i in self._indices(index):
            self.settings[i].include, self.settings[i].exclude = include, exclude
        self.reset_levels()
        self._on_change()

    def reset_levels(self) -> None:
        """Every adapter active exactly where its layer filter allows (the state between generations)."""
        for root_name, root in self.roots.items():
            for layer, _, _, adapter in iter_adapters(root):
                st = self.settings[adapter.index]
                adapter.active = layer_selected(f"{root_name}.{layer}", st.include, st.exclude)

    @property
    def scheduled(self) -> bool:
        """Whether some LoRA switches on or off with the noise level during a generation."""
        return any(st.interval != (0.0, 1.0) for st in self.settings)

    def enter_level(self, level: float) -> bool:
        """Switch each interval-limited LoRA on or off for a step at noise level `level` (its layer
        filter still applies); True when some adapter changed, so cached weights are stale."""
        changed = False
        for root_name, root in self.roots.items():
            for layer, _, _, adapter in iter_adapters(root):
                st = self.settings[adapter.index]
                lo, hi = st.interval
                in_interval = lo <= level <= hi or root_name != "dit"  # conditioners run once, before
                active = in_interval and layer_selected(f"{root_name}.{layer}", st.include, st.exclude)
                changed |= adapter.active != active
                adapter.active = active
        return changed

    @contextlib.contextmanager
    def strength_for_call(self, strength: float | Sequence[float] | None) -> Iterator[None]:
        """Strengths for one generation (one for all LoRAs, or one each), restored afterwards."""
        if strength is None:
            yield
            return
        if not self.names:
            raise ArgumentValueError("lora_strength was given but no LoRA is loaded (use load_lora first)")
        values = list(strength) if isinstance(strength, (list, tuple)) else [strength] * len(self.names)
        if len(values) != len(self.names):
            raise ArgumentValueError(
                f"lora_strength has {len(values)} values but {len(self.names)} LoRA(s) are loaded"
            )
        values = [check_number("lora_strength", v) for v in values]
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
