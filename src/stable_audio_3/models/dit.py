"""The diffusion transformer: a DiT over SAME latents with adaLN, memory tokens and rotary attention.

One forward pass predicts the rectified-flow velocity `v ~ noise - data` for latents `x` at noise
level `t`, given text tokens (cross-attention), a global vector (seconds) and a per-frame local
tensor (the inpainting mask and masked latents).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from stable_audio_3.models.attention import PADDING_MODES
from stable_audio_3.models.layers import (
    MLP,
    Attention,
    ExpoFourierFeatures,
    GLUFeedForward,
    LearnedPositions,
    Linear,
    RMSNorm,
    Rotary,
    ScaledSinusoidalPositions,
)
from stable_audio_3.official.dit_config import DiTConfig

__all__ = ["DiffusionTransformer"]


@dataclass(frozen=True)
class KeyPadding:
    """Which self-attention keys are real: a (B, N) bool `mask`, or a `length` shared by every item
    (keys past it are dropped), or neither when every key is real."""

    mask: torch.Tensor | None = None
    length: int | None = None


@dataclass
class Prepared:
    """Per-generation conditioning of every block (see `DiffusionTransformer.prepare`)."""

    kv: list[tuple[list[torch.Tensor], torch.Tensor]]
    local: list[torch.Tensor | None]
    batch: int
    length: int


class DiTBlock(nn.Module):
    """adaLN block: modulated self-attention, cross-attention, local add, modulated feed-forward."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim

        def norm() -> RMSNorm:
            return RMSNorm(dim, eps=cfg.norm_eps, force_fp32=cfg.norm_force_fp32)

        attn = {"differential": cfg.differential, "qk_norm": cfg.qk_norm, "qk_norm_eps": cfg.qk_norm_eps}
        self.attn_norm = norm()
        self.self_attn = Attention(dim, cfg.dim_head, **attn)
        self.cross_norm = norm()
        self.cross_attn = Attention(dim, cfg.dim_head, cross=True, dim_context=dim, **attn)
        self.ff_norm = norm()
        self.ff = GLUFeedForward(dim, int(dim * cfg.ff_mult), sinusoidal=cfg.ff_sinusoidal)
        self.local_embed = MLP(cfg.local_add_cond_dim, dim, dim) if cfg.local_add_cond_dim else None
        self.num_memory_tokens = cfg.num_memory_tokens
        self.scale_shift_gate = nn.Parameter(torch.zeros(6 * dim))

    def forward(
        self,
        x: torch.Tensor,
        *,
        kv: tuple[list[torch.Tensor], torch.Tensor],
        adaln: torch.Tensor,
        local: torch.Tensor | None,
        rotary: torch.Tensor,
        keys: KeyPadding,
        padding: str,
    ) -> torch.Tensor:
        """`kv`: this block's cross-attention keys/values; `local`: its local-add embedding
        (B, L, E), or (B, 1, E) when it is the same for every frame; both precomputed once per
        generation by `DiffusionTransformer.prepare`. `keys`: which self-attention keys are real."""
        s_sa, h_sa, g_sa, s_ff, h_ff, g_ff = (self.scale_shift_gate + adaln)[:, None, :].chunk(6, dim=-1)
        y = self.attn_norm(x) * (1 + s_sa) + h_sa
        y = self.self_attn(y, rotary=rotary, key_mask=keys.mask, key_length=keys.length, padding=padding)
        x = y * torch.sigmoid(1 - g_sa) + x
        x = x + self.cross_attn(self.cross_norm(x), kv=kv)
        if local is not None:  # (B, L or 1, E); memory tokens get nothing
            n_mem = self.num_memory_tokens
            x = torch.cat([x[:, :n_mem], x[:, n_mem:] + local], dim=1) if n_mem else x + local
        y = self.ff(self.ff_norm(x) * (1 + s_ff) + h_ff)
        return y * torch.sigmoid(1 - g_ff) + x


class DiffusionTransformer(nn.Module):
    """Velocity model `v = f(x, t | text, seconds, local)` on (B, C, L) latents."""

    def __init__(self, cfg: DiTConfig, attention_padding: str = "exclude") -> None:
        super().__init__()
        if attention_padding not in PADDING_MODES:
            raise ValueError(f"attention_padding must be one of {PADDING_MODES}, got {attention_padding!r}")
        self.config = cfg
        self.attention_padding = attention_padding
        dim, io = cfg.embed_dim, cfg.io_channels
        self.timestep_features = ExpoFourierFeatures(cfg.timestep_features_dim)
        self.timestep_embed = MLP(cfg.timestep_features_dim, dim, dim)
        self.cond_embed = MLP(cfg.cond_token_dim, dim, dim, bias=False)
        self.global_embed = MLP(cfg.global_cond_dim, dim, dim, bias=False)
        self.preprocess_conv = nn.Conv1d(io, io, 1, bias=False)
        self.postprocess_conv = nn.Conv1d(io, io, 1, bias=False)
        self.project_in = Linear(io, dim, bias=False)
        self.project_out = Linear(dim, io, bias=False)
        if cfg.num_memory_tokens:
            self.memory_tokens = nn.Parameter(torch.zeros(cfg.num_memory_tokens, dim))
        self.rotary = Rotary(cfg.rotary_dim)
        self.positions: nn.Module | None = None
        if cfg.sinusoidal_positions:
            self.positions = ScaledSinusoidalPositions(dim)
        elif cfg.learned_positions:
            self.positions = LearnedPositions(dim, cfg.learned_positions)
        self.adaln_embed = MLP(dim, dim, 6 * dim)
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))

    @property
    def dtype(self) -> torch.dtype:
        return self.preprocess_conv.weight.dtype

    def _timestep_input(self, t: torch.Tensor) -> torch.Tensor:
        if not self.config.timestep_features_logsnr:
            return t
        tc = t.clamp(1e-7, 1 - 1e-7)
        logsnr = torch.log((1 - tc) / tc).clamp(-12, 5)
        return (5 - logsnr) / 17

    def key_padding(
        self,
        batch: int,
        length: int,
        padding_mask: torch.Tensor | None = None,
        valid_lengths: Sequence[int] | None = None,
        *,
        device: torch.device | None = None,
    ) -> KeyPadding:
        """Self-attention keys of `batch` sequences of `length` frames (memory tokens always real).

        From `valid_lengths` (host integers) this needs no look at device memory: nothing padded
        means no mask; in "exclude" mode one shared length drops the padded keys (no mask at all, so
        SDPA may use its flash kernels); otherwise a mask is built from the lengths. A
        `padding_mask` tensor is read once per forward to learn whether anything is padded.
        """
        n_mem = self.config.num_memory_tokens
        if padding_mask is not None:
            if valid_lengths is not None:
                raise ValueError("give padding_mask or valid_lengths, not both")
            if tuple(padding_mask.shape) != (batch, length):
                raise ValueError(
                    f"padding_mask must have shape {(batch, length)}, got {tuple(padding_mask.shape)}"
                )
            valid = padding_mask.to(device=device, dtype=torch.bool)
            if bool(valid.all()):
                return KeyPadding()
            return KeyPadding(mask=torch.cat([valid.new_ones(batch, n_mem), valid], dim=1))
        if valid_lengths is None:
            return KeyPadding()
        lengths = [int(n) for n in valid_lengths]
        if len(lengths) != batch or any(not 0 < n <= length for n in lengths):
            raise ValueError(f"valid_lengths must hold {batch} values in [1, {length}], got {lengths}")
        if min(lengths) == length:
            return KeyPadding()
        if self.attention_padding == "exclude" and len(set(lengths)) == 1:
            return KeyPadding(length=n_mem + lengths[0])
        positions = torch.arange(n_mem + length, device=device)
        return KeyPadding(mask=torch.stack([positions < n_mem + n for n in lengths]))

    def prepare(self, cross_cond: torch.Tensor, local_cond: torch.Tensor | None, length: int) -> Prepared:
        """Everything that depends only on the conditioning, not on x or t: per block, the
        cross-attention keys/values of the projected text context and the local-add embedding.
        Computing it once per generation saves that work at every sampling step."""
        dtype = self.dtype
        b = cross_cond.shape[0]
        context = self.cond_embed(cross_cond.to(dtype))
        kvs = [block.cross_attn.project_context(context) for block in self.blocks]
        embeds: list[torch.Tensor | None] = [None] * len(self.blocks)
        if self.config.local_add_cond_dim:
            if local_cond is None or not bool(local_cond.any()):
                # Text-to-audio feeds zeros: every frame gets the same embedding (the bias path), so
                # one frame is embedded and broadcast instead of L identical rows per block.
                local = torch.zeros(
                    b, 1, self.config.local_add_cond_dim, device=cross_cond.device, dtype=dtype
                )
            else:
                local = local_cond.to(dtype).transpose(1, 2)
            embeds = [block.local_embed(local) for block in self.blocks]
        return Prepared(kvs, embeds, b, length)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        *,
        cross_cond: torch.Tensor | None = None,
        global_cond: torch.Tensor,
        local_cond: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        valid_lengths: Sequence[int] | None = None,
        prepared: Prepared | None = None,
    ) -> torch.Tensor:
        """x: (B, C, L); t: (B,); cross_cond: (B, N, cond_dim); global_cond: (B, global_dim);
        local_cond: (B, local_dim, L) (zeros when None, as in text-to-audio); padding_mask: (B, L)
        bool, True on valid frames, or the same as `valid_lengths` (per item, the number of leading
        valid frames; host integers, so the forward never waits for the device). `prepared`:
        `prepare(cross_cond, local_cond, L)` made earlier (cross_cond and local_cond are then not
        needed). Returns the velocity (B, C, L) in the parameter dtype."""
        dtype = self.dtype
        b, _, length = x.shape
        x = x.to(dtype)
        t = t.float()
        if prepared is None:
            if cross_cond is None:
                raise ValueError("DiffusionTransformer needs cross_cond or prepared conditioning")
            prepared = self.prepare(cross_cond, local_cond, length)
        elif prepared.batch != b or prepared.length != length:
            raise ValueError("prepared conditioning was made for another batch size or length")

        # The reference rounds t to the activation dtype before the Fourier features (fp16 in half
        # mode; kept for parity). bfloat16 has too few mantissa bits for that, so it stays float32.
        tc = self._timestep_input(t)
        tc = tc.to(dtype) if dtype == torch.float16 else tc
        temb = self.timestep_embed(self.timestep_features(tc).to(dtype))
        adaln = self.adaln_embed(self.global_embed(global_cond.to(dtype)) + temb)

        h = self.preprocess_conv(x) + x
        h = self.project_in(h.transpose(1, 2))
        n_mem = self.config.num_memory_tokens
        if n_mem:
            h = torch.cat([self.memory_tokens.expand(b, -1, -1), h], dim=1)
        rotary = self.rotary(h.shape[1], device=h.device)
        if self.positions is not None:  # counted from the first memory token, as in the reference
            h = h + self.positions(h.shape[1], device=h.device).to(h.dtype)
        keys = self.key_padding(b, length, padding_mask, valid_lengths, device=h.device)
        for block, kv, local in zip(self.blocks, prepared.kv, prepared.local, strict=True):
            h = block(
                h,
                kv=kv,
                adaln=adaln,
                local=local,
                rotary=rotary,
                keys=keys,
                padding=self.attention_padding,
            )
        out = self.project_out(h[:, n_mem:]).transpose(1, 2)
        return self.postprocess_conv(out) + out
