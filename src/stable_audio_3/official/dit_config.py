"""`model.diffusion.config` of an official checkpoint: every key the reference DiT accepts, parsed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DiTConfig"]

# Every key the reference DiT accepts in `model.diffusion.config`, with the reference default (the
# DiT, ContinuousTransformer and TransformerBlock signatures), and the same for the nested kwargs.
_DEFAULTS: dict[str, Any] = {
    "io_channels": 32,
    "patch_size": 1,
    "embed_dim": 768,
    "cond_token_dim": 0,
    "project_cond_tokens": True,
    "global_cond_dim": 0,
    "project_global_cond": True,
    "input_concat_dim": 0,
    "prepend_cond_dim": 0,
    "depth": 12,
    "num_heads": 8,
    "transformer_type": "continuous_transformer",
    "global_cond_type": "prepend",
    "timestep_cond_type": "global",
    "timestep_embed_dim": None,
    "timestep_features_type": "learned",
    "timestep_features_dim": 256,
    "timestep_features_logsnr": False,
    "final_cross_attn_ix": -1,
    "local_add_cond_dim": None,
    "causal": False,
    "rotary_pos_emb": True,
    "cross_attn_rotary_pos_emb": False,
    "zero_init_branch_outputs": True,
    "conformer": False,
    "use_sinusoidal_emb": False,
    "use_abs_pos_emb": False,
    "abs_pos_emb_max_length": 10000,
    "num_memory_tokens": 0,
    "sliding_window": None,
    "add_rope": False,
    "layer_scale": False,
    "norm_type": "layer_norm",
    "norm_kwargs": {},
    "attn_kwargs": {},
    "ff_kwargs": {},
}
_NORM_DEFAULTS: dict[str, Any] = {"eps": 1e-5, "force_fp32": False, "fix_scale": False}
_ATTN_DEFAULTS: dict[str, Any] = {
    "qk_norm": "none",
    "qk_norm_eps": 1e-6,
    "differential": False,
    "feat_scale": False,
}
_FF_DEFAULTS: dict[str, Any] = {
    "mult": 4,
    "dim_out": None,
    "no_bias": False,
    "glu": True,
    "use_conv": False,
    "conv_kernel_size": 3,
    "sinusoidal": False,
}
# Values this port implements, for the keys where the reference offers more. Keys not listed here
# either change nothing at inference (init-only flags, `timestep_embed_dim`, which the reference
# overrides with `embed_dim` for global timestep conditioning) or are read into `DiTConfig`.
_SUPPORTED: dict[str, tuple[Any, ...]] = {
    "patch_size": (1,),
    "project_cond_tokens": (True,),
    "project_global_cond": (True,),
    "input_concat_dim": (0,),
    "prepend_cond_dim": (0,),
    "transformer_type": ("continuous_transformer",),
    "global_cond_type": ("adaLN",),
    "timestep_cond_type": ("global",),
    "timestep_features_type": ("expo",),
    "causal": (False,),
    "rotary_pos_emb": (True,),
    "cross_attn_rotary_pos_emb": (False,),
    "conformer": (False,),
    "use_sinusoidal_emb": (False, True),
    "sliding_window": (None,),
    "add_rope": (False,),
    "layer_scale": (False,),
    "norm_type": ("rms_norm",),
    "attn_kwargs.qk_norm": ("rms", "none", None),
    "attn_kwargs.feat_scale": (False,),
    "ff_kwargs.no_bias": (False,),
    "ff_kwargs.glu": (True,),
    "ff_kwargs.use_conv": (False,),
}


def _resolve(section: Mapping[str, Any], defaults: dict[str, Any], where: str) -> dict[str, Any]:
    """`section` over `defaults`; unknown keys and unsupported values raise ValueError naming them."""
    unknown = sorted(set(section) - set(defaults))
    if unknown:
        raise ValueError(f"unknown DiT config key(s): {', '.join(where + k for k in unknown)}")
    values = {**defaults, **section}
    for key, value in values.items():
        allowed = _SUPPORTED.get(where + key)
        if allowed is not None and value not in allowed:
            options = ", ".join(map(repr, allowed))
            raise ValueError(f"DiT config {where}{key}={value!r} is not supported (supported: {options})")
    return values


@dataclass(frozen=True)
class DiTConfig:
    """The DiT hyper-parameters this port implements (defaults as in the reference)."""

    io_channels: int = 32
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 8
    cond_token_dim: int = 0
    global_cond_dim: int = 0
    timestep_features_dim: int = 256
    timestep_features_logsnr: bool = False
    local_add_cond_dim: int | None = None
    num_memory_tokens: int = 0
    norm_force_fp32: bool = False
    norm_eps: float = 1e-5
    qk_norm: str | None = None
    qk_norm_eps: float = 1e-6
    differential: bool = False
    ff_mult: float = 4.0
    ff_sinusoidal: bool = False
    sinusoidal_positions: bool = False  # `use_sinusoidal_emb`
    learned_positions: int = 0  # `use_abs_pos_emb`: rows of the table (0: none)

    @property
    def dim_head(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def rotary_dim(self) -> int:
        return max(self.dim_head // 2, 32)

    @classmethod
    def from_official(cls, cfg: Mapping[str, Any]) -> DiTConfig:
        """Parse `model.diffusion.config`. Every key the reference accepts is accepted with its
        reference default; unknown keys and values this port does not implement raise ValueError."""
        top = _resolve(cfg, _DEFAULTS, "")
        norm = _resolve(top["norm_kwargs"] or {}, _NORM_DEFAULTS, "norm_kwargs.")
        attn = _resolve(top["attn_kwargs"] or {}, _ATTN_DEFAULTS, "attn_kwargs.")
        ff = _resolve(top["ff_kwargs"] or {}, _FF_DEFAULTS, "ff_kwargs.")
        embed_dim, depth = int(top["embed_dim"]), int(top["depth"])
        if top["final_cross_attn_ix"] != -1 and top["final_cross_attn_ix"] < depth - 1:
            raise ValueError("DiT config final_cross_attn_ix is not supported (every block cross-attends)")
        if ff["dim_out"] not in (None, embed_dim):
            raise ValueError(f"DiT config ff_kwargs.dim_out={ff['dim_out']!r} is not supported")
        out = cls(
            io_channels=int(top["io_channels"]),
            embed_dim=embed_dim,
            depth=depth,
            num_heads=int(top["num_heads"]),
            cond_token_dim=int(top["cond_token_dim"]),
            global_cond_dim=int(top["global_cond_dim"]),
            timestep_features_dim=int(top["timestep_features_dim"]),
            timestep_features_logsnr=bool(top["timestep_features_logsnr"]),
            local_add_cond_dim=None if top["local_add_cond_dim"] is None else int(top["local_add_cond_dim"]),
            num_memory_tokens=int(top["num_memory_tokens"]),
            norm_force_fp32=bool(norm["force_fp32"]),
            norm_eps=float(norm["eps"]),
            qk_norm=None if attn["qk_norm"] in ("none", None) else attn["qk_norm"],
            qk_norm_eps=float(attn["qk_norm_eps"]),
            differential=bool(attn["differential"]),
            ff_mult=float(ff["mult"]),
            ff_sinusoidal=bool(ff["sinusoidal"]),
            sinusoidal_positions=bool(top["use_sinusoidal_emb"]),
            learned_positions=int(top["abs_pos_emb_max_length"]) + int(top["num_memory_tokens"])
            if top["use_abs_pos_emb"]
            else 0,
        )
        if out.sinusoidal_positions and out.learned_positions:
            raise ValueError("DiT config: use_sinusoidal_emb and use_abs_pos_emb both set (one pos_emb)")
        if out.embed_dim % out.num_heads:
            raise ValueError("DiT config embed_dim must be a multiple of num_heads")
        if out.cond_token_dim <= 0 or out.global_cond_dim <= 0:
            raise ValueError("DiT config needs cond_token_dim > 0 and global_cond_dim > 0 (text and seconds)")
        return out
