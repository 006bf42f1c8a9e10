"""LoRA adapters: the official adapter types, stacking, runtime strength, exact unload and merge.

An adapter is a weight parametrization `W -> W'` attached to a Linear/Conv1d of the DiT or the
conditioners (never T5Gemma or the autoencoder). Several adapters on one layer are applied in load
order, `W' = P_k(...P_1(P_0(W)))`, as the reference does. Types (`s = alpha / rank`, `σ` = strength):

* `lora`: `W + s σ B A`;  `lora-xs`: `W + s σ U M Vᵀ` with fixed SVD bases U, V of the base weight;
* `dora-rows` / `dora-cols` (+ `-xs`): `V = W + s σ Δ`, normalised per row / column, times `magnitude`;
* `bora` (+ `-xs`): row-normalise × `magnitude_r`, then column-normalise × `magnitude_c`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.utils.parametrize as parametrize
from torch import nn

from stable_audio_3.errors import ArgumentValueError
from stable_audio_3.official.checkpoint import lora_filter_name

__all__ = [
    "ADAPTER_TYPES",
    "LoRAConfig",
    "Adapter",
    "adapter_targets",
    "attach",
    "iter_adapters",
    "detach_all",
    "matches_any",
    "layer_selected",
    "svd_bases",
]

ADAPTER_TYPES = (
    "lora",
    "dora-rows",
    "dora-cols",
    "bora",
    "lora-xs",
    "dora-rows-xs",
    "dora-cols-xs",
    "bora-xs",
)
PARAM_NAMES = ("lora_A", "lora_B", "M_xs", "magnitude", "magnitude_r", "magnitude_c")


@dataclass
class LoRAConfig:
    """What the official `lora_config` metadata holds."""

    rank: int
    alpha: float | None = None
    adapter_type: str = "lora"
    include: list[str] | None = None
    exclude: list[str] | None = None
    dropout: float = 0.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.adapter_type not in ADAPTER_TYPES:
            raise ArgumentValueError(
                f"adapter_type must be one of {ADAPTER_TYPES}, got {self.adapter_type!r}"
            )
        if int(self.rank) < 1:
            raise ArgumentValueError(f"LoRA rank must be >= 1, got {self.rank}")
        self.rank = int(self.rank)
        self.alpha = float(self.rank if self.alpha is None else self.alpha)

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank

    def to_metadata(self) -> dict:
        data = asdict(self)
        data.pop("extra")
        return {**self.extra, **data}


def _expand(pattern: str) -> list[str]:
    """`layers[0-2]` -> `layers0`, `layers1`, `layers2` (any number of ranges, either direction)."""
    import itertools
    import re

    parts = re.split(r"\[(\d+)-(\d+)\]", pattern)
    if len(parts) == 1:
        return [pattern]
    literals, starts, ends = parts[0::3], parts[1::3], parts[2::3]
    pools = []
    for a, b in zip(starts, ends, strict=True):
        a, b = int(a), int(b)
        step = 1 if b >= a else -1
        pools.append([str(i) for i in range(a, b + step, step)])
    out = []
    for combo in itertools.product(*pools):
        out.append("".join(lit + (combo[i] if i < len(combo) else "") for i, lit in enumerate(literals)))
    return out


def matches_any(name: str, patterns: list[str] | None) -> bool:
    """Substring match with range expansion, as the official include/exclude filters."""
    return bool(patterns) and any(p in name for pat in patterns for p in _expand(pat.strip()))


def layer_selected(name: str, include: list[str] | None, exclude: list[str] | None) -> bool:
    """Whether the layer at our module path `name` passes the official include/exclude filters
    (matched against its official name)."""
    official = lora_filter_name(name)
    if include is not None and not matches_any(official, include):
        return False
    return not (exclude is not None and matches_any(official, exclude))


def svd_bases(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-`rank` SVD bases (U: fan_out x r, V: fan_in x r) of a weight, signs fixed so that the
    largest-magnitude entry of each U column is positive (computed in float32 on the CPU)."""
    w = weight.detach().reshape(weight.shape[0], -1).float().cpu()
    u, _, vh = torch.linalg.svd(w, full_matrices=False)
    idx = u.abs().argmax(dim=0)
    signs = u[idx, torch.arange(u.shape[1])].sign()
    signs[signs == 0] = 1
    u, vh = u * signs[None], vh * signs[:, None]
    return u[:, :rank].contiguous(), vh[:rank].T.contiguous()


class Adapter(nn.Module):
    """One LoRA-family adapter on one weight, usable as a `torch.nn.utils.parametrize` parametrization."""

    def __init__(
        self,
        weight: torch.Tensor,
        cfg: LoRAConfig,
        index: int,
        bases: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        fan_out = weight.shape[0]
        fan_in = weight[0].numel()
        kind = cfg.adapter_type
        self.kind, self.index, self.scale, self.rank = kind, index, cfg.scale, cfg.rank
        self.enabled = True  # False while merged into the base weight
        self.active = True  # False outside its LoRA's layer filter or noise-level interval
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else None
        self.register_buffer("strength", torch.tensor(1.0), persistent=False)
        w2 = weight.detach().reshape(fan_out, fan_in).float()
        if kind.endswith("-xs"):
            u, v = bases if bases is not None else svd_bases(weight, cfg.rank)
            if u.shape != (fan_out, cfg.rank) or v.shape != (fan_in, cfg.rank):
                raise ArgumentValueError(
                    f"SVD bases of shape {tuple(u.shape)}/{tuple(v.shape)} "
                    f"do not fit a {fan_out}x{fan_in} weight"
                )
            self.register_buffer("U", u.float().to(weight.device), persistent=False)
            self.register_buffer("V", v.float().to(weight.device), persistent=False)
            self.M_xs = nn.Parameter(torch.zeros(cfg.rank, cfg.rank, device=weight.device))
        else:
            self.lora_A = nn.Parameter(torch.empty(cfg.rank, fan_in, device=weight.device))
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            self.lora_B = nn.Parameter(torch.zeros(fan_out, cfg.rank, device=weight.device))
        base = kind.removesuffix("-xs")
        if base in ("dora-rows", "dora-cols"):
            self.norm_dim = 1 if base == "dora-rows" else 0
            self.magnitude = nn.Parameter(w2.norm(dim=self.norm_dim))
        elif base == "bora":
            self.magnitude_r = nn.Parameter(w2.norm(dim=1))
            self.magnitude_c = nn.Parameter(w2.norm(dim=0))

    def delta(self) -> torch.Tensor:
        """The low-rank update (fan_out x fan_in) in float32, before scale and strength."""
        if self.kind.endswith("-xs"):
            return self.U @ self.M_xs.float() @ self.V.T
        a = self.lora_A if self.dropout is None else self.dropout(self.lora_A)
        return self.lora_B.float() @ a.float()

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not (self.enabled and self.active) or float(self.strength) == 0.0:
            return weight  # the very same tensor: strength 0 is the base model bit for bit
        base = self.kind.removesuffix("-xs")
        if base == "lora":
            d = (self.scale * self.strength * self.delta()).reshape(weight.shape)
            return weight + d.to(weight.dtype)
        w2 = weight.reshape(weight.shape[0], -1).float()
        v = w2 + self.scale * self.strength * self.delta()
        if base == "bora":
            rows = self.magnitude_r.float()[:, None] * (v / (v.norm(dim=1, keepdim=True) + 1e-12))
            out = rows / (rows.norm(dim=0, keepdim=True) + 1e-12) * self.magnitude_c.float()[None, :]
        else:
            out = v / (v.norm(dim=self.norm_dim, keepdim=True) + 1e-12)
            out = out * self.magnitude.float().unsqueeze(self.norm_dim)
        return out.reshape(weight.shape).to(weight.dtype)


def adapter_targets(root: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Every Linear / Conv1d below `root` (the layers the official LoRA format can adapt)."""
    for name, module in root.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            yield name, module


def _base_weight(module: nn.Module) -> torch.Tensor:
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def attach(
    module: nn.Module, cfg: LoRAConfig, index: int, bases: tuple[torch.Tensor, torch.Tensor] | None = None
) -> Adapter:
    """Add one adapter on top of any existing ones on `module.weight`."""
    adapter = Adapter(_base_weight(module), cfg, index, bases)
    parametrize.register_parametrization(module, "weight", adapter, unsafe=True)
    return adapter


def iter_adapters(root: nn.Module) -> Iterator[tuple[str, nn.Module, int, Adapter]]:
    """(module name, module, position in its stack, adapter) for every adapter below `root`."""
    for name, module in root.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for pos, p in enumerate(module.parametrizations.weight):
                if isinstance(p, Adapter):
                    yield name, module, pos, p


def detach_all(root: nn.Module, index: int | None = None) -> None:
    """Remove adapters (all, or those of one index), restoring the exact base weights."""
    for _, module in list(root.named_modules()):
        if not parametrize.is_parametrized(module, "weight"):
            continue
        stack = module.parametrizations.weight
        keep = [p for p in stack if not (isinstance(p, Adapter) and (index is None or p.index == index))]
        if len(keep) == len(stack):
            continue
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        for p in keep:
            parametrize.register_parametrization(module, "weight", p, unsafe=True)
