"""Building blocks shared by the diffusion transformer and the SAME autoencoder.

Parameter names here are our own; `checkpoint.py` maps the official state-dict keys onto them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stable_audio_3.models.attention import attend
from stable_audio_3.models.kernels import linear

__all__ = [
    "Linear",
    "RMSNorm",
    "DynamicTanh",
    "ExpoFourierFeatures",
    "GLUFeedForward",
    "Rotary",
    "ScaledSinusoidalPositions",
    "apply_rotary",
    "Attention",
    "MLP",
]


class Linear(nn.Linear):
    """`nn.Linear` (same parameters and state-dict keys) whose float32 CPU inference runs through
    oneDNN when available (`kernels.linear`); `onednn = False` forces `F.linear`."""

    onednn: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias, self.onednn)


class RMSNorm(nn.Module):
    """`x / sqrt(mean(x^2) + eps) * gamma` (no bias). `force_fp32` computes the statistic in float32."""

    def __init__(self, dim: int, eps: float = 1e-5, force_fp32: bool = False) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.force_fp32 = force_fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.force_fp32:
            return F.rms_norm(x, x.shape[-1:], weight=self.gamma, eps=self.eps)
        return F.rms_norm(x.float(), x.shape[-1:], weight=self.gamma.float(), eps=self.eps).to(x.dtype)


class DynamicTanh(nn.Module):
    """DyT normalisation: `gamma * tanh(alpha * x) + beta` with a scalar `alpha`."""

    def __init__(self, dim: int, alpha_init: float = 1.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), alpha_init))
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * torch.tanh(self.alpha * x) + self.beta


class ExpoFourierFeatures(nn.Module):
    """Fourier features with exponentially spaced frequencies in [0.5, 10000]; output `[cos, sin]`.

    Always computed in float32 and cast back to the input dtype, as the released models expect.
    """

    def __init__(self, dim: int, min_freq: float = 0.5, max_freq: float = 10000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"ExpoFourierFeatures needs an even dim, got {dim}")
        self.dim = dim
        self.log_range = (math.log(min_freq), math.log(max_freq))
        # An explicit (dim // 2,) float32 table replaces the computed one (see `frequencies`).
        self.fixed_frequencies: torch.Tensor | None = None

    def frequencies(self, device: torch.device | None = None) -> torch.Tensor:
        """`exp(lo + r (hi - lo))` over a float32 ramp, with PyTorch's float32 `exp` as the reference.

        That `exp` is not correctly rounded, and which last bit it gives for a short table can depend
        on the host CPU (its vector width decides which elements take the scalar path). With angles
        up to ~6e4 one ulp of a frequency moves a feature by ~1e-3, so comparisons against outputs
        made on another host can pin the table with `fixed_frequencies`.
        """
        if self.fixed_frequencies is not None:
            return self.fixed_frequencies.to(device=device, dtype=torch.float32)
        ramp = torch.linspace(0.0, 1.0, self.dim // 2, dtype=torch.float32, device=device)
        lo, hi = self.log_range
        return torch.exp(ramp * (hi - lo) + lo)

    # Must stay out of torch.compile graphs (`StableAudioModel.compile` keeps it eager): the angles reach
    # ~6e4, where one float32 ulp is 4e-3, so a compiler re-associating `u * f * 2 * pi` would move the
    # features far beyond parity tolerance.
    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u: (...,) -> (..., dim)."""
        dtype = u.dtype
        freqs = self.frequencies(u.device)
        angles = ((u.float()[..., None] * freqs) * 2) * math.pi
        return torch.cat([angles.cos(), angles.sin()], dim=-1).to(dtype)


class MLP(nn.Module):
    """Two linear layers with a SiLU in between (`W2 silu(W1 x + b1) + b2`)."""

    def __init__(self, dim_in: int, dim_hidden: int, dim_out: int, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = Linear(dim_in, dim_hidden, bias=bias)
        self.fc2 = Linear(dim_hidden, dim_out, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(x)))


# Tokens per feed-forward piece at inference: rows are independent, so splitting long sequences only
# bounds the (rows, 2 * inner) hidden activation (32 MB for the small DiT, 48 MB for medium's).
FF_CHUNK_ROWS = 1024


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return any(t.requires_grad for t in tensors)


class GLUFeedForward(nn.Module):
    """Gated feed-forward: `W_out (a * act(b)) + b_out` with `[a, b] = split(W_in x + b_in)`.

    `act` is SiLU, or `sin(pi x)` for the "sinusoidal" blocks of the SAME-L decoder.
    """

    def __init__(self, dim: int, inner: int, sinusoidal: bool = False) -> None:
        super().__init__()
        self.proj_in = Linear(dim, 2 * inner)
        self.proj_out = Linear(inner, dim)
        self.sinusoidal = sinusoidal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // max(1, x.shape[-1])
        if rows <= FF_CHUNK_ROWS or (torch.is_grad_enabled() and _needs_grad(x, self.proj_in.weight)):
            return self._rows(x)
        flat = x.reshape(rows, x.shape[-1])
        out = flat.new_empty(rows, self.proj_out.out_features)
        for start in range(0, rows, FF_CHUNK_ROWS):
            out[start : start + FF_CHUNK_ROWS] = self._rows(flat[start : start + FF_CHUNK_ROWS])
        return out.view(*x.shape[:-1], self.proj_out.out_features)

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.proj_in(x)
        value, gate = hidden.chunk(2, dim=-1)
        if hidden.requires_grad:
            act = torch.sin(gate * 3.14159265359) if self.sinusoidal else F.silu(gate)
        else:  # inference: the activation overwrites its own half of the hidden tensor
            act = gate.mul_(3.14159265359).sin_() if self.sinusoidal else F.silu(gate, inplace=True)
        return self.proj_out(value * act)


class Rotary(nn.Module):
    """Rotary position angles over the first `dim` head channels (half-split layout).

    `inv_freq` is a persistent buffer because the released checkpoints store it.
    """

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        self.dim = dim
        # Made on the CPU even when the model is built on the meta device: meta arithmetic runs
        # through PyTorch's reference decompositions, which import the compiler (~1.5 s).
        inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float32, device="cpu") / dim)
        self.register_buffer("inv_freq", inv_freq.to(torch.empty(0).device))  # the ambient device

    def forward(self, n: int, device: torch.device | None = None) -> torch.Tensor:
        """Angles (n, dim) in float32 for positions 0..n-1."""
        pos = torch.arange(n, device=device or self.inv_freq.device, dtype=torch.float32)
        theta = pos[:, None] * self.inv_freq.float()[None, :]
        return torch.cat([theta, theta], dim=-1)


class ScaledSinusoidalPositions(nn.Module):
    """Absolute positions added to the token sequence: [sin(p w), cos(p w)] x a learned scale, with
    w = 10000^(-k / (dim/2)) (the reference's `use_sinusoidal_emb`). Rotary angles only tell a token
    how far away another one is; this tells it where it is, e.g. how far from a clip's start.

    The frequencies are not stored (the reference keeps them out of its checkpoints): they are made
    in `forward`, so a model built on the meta device and then loaded needs nothing else."""

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"sinusoidal positions need an even width, got {dim}")
        self.dim, self.base = dim, base
        self.scale = nn.Parameter(torch.full((1,), dim**-0.5))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.scale.fill_(self.dim**-0.5)

    def forward(self, n: int, device: torch.device | None = None) -> torch.Tensor:
        """(n, dim) embeddings of positions 0..n-1 in float32."""
        device = device or self.scale.device
        half = self.dim // 2
        inv_freq = self.base ** (-torch.arange(half, dtype=torch.float32, device=device) / half)
        angles = torch.arange(n, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1) * self.scale.float()


class LearnedPositions(nn.Module):
    """One learned vector per position, added to the token sequence and scaled by dim ** -0.5 (the
    reference's `use_abs_pos_emb`): a table, so the DiT can tie any feature to where a frame is,
    e.g. where the beats of a tempo fall in a clip. Sequences longer than the table are refused."""

    def __init__(self, dim: int, rows: int) -> None:
        super().__init__()
        self.dim = dim
        self.emb = nn.Embedding(rows, dim)

    def forward(self, n: int, device: torch.device | None = None) -> torch.Tensor:
        """(n, dim) embeddings of positions 0..n-1 in float32."""
        rows = self.emb.num_embeddings
        if n > rows:
            raise ValueError(f"the DiT's learned positions cover {rows} tokens, the sequence has {n}")
        return self.emb.weight[:n].float() * self.dim**-0.5


def apply_rotary(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate the first `angles.shape[-1]` channels of x (..., n, d) in float32; the rest pass through."""
    r = angles.shape[-1]
    xf = x.float()
    rot, rest = xf[..., :r], xf[..., r:]
    a, b = rot.chunk(2, dim=-1)
    rotated = rot * angles.cos() + torch.cat([-b, a], dim=-1) * angles.sin()
    return torch.cat([rotated, rest], dim=-1)


def _qk_norm(kind: str | None, dim_head: int, eps: float) -> nn.Module:
    if kind in (None, "none"):
        return nn.Identity()
    if kind == "rms":
        return RMSNorm(dim_head, eps=eps)
    if kind == "dyt":
        return DynamicTanh(dim_head)
    raise ValueError(f"unsupported qk_norm {kind!r} (expected 'rms', 'dyt' or none)")


class Attention(nn.Module):
    """Multi-head attention, optionally differential (`Attn(q,k,v) - Attn(q',k',v)`, shared v).

    Self-attention uses one fused projection (`to_qkv`: q, k, v[, q', k']); cross-attention projects
    queries (`to_q`: q[, q']) and context (`to_kv`: k[, k'], v) separately.
    """

    def __init__(
        self,
        dim: int,
        dim_head: int,
        *,
        cross: bool = False,
        dim_context: int | None = None,
        differential: bool = False,
        qk_norm: str | None = "rms",
        qk_norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if dim % dim_head:
            raise ValueError(f"attention width {dim} is not a multiple of the head size {dim_head}")
        self.heads = dim // dim_head
        self.dim_head = dim_head
        self.cross = cross
        self.differential = differential
        n_q = 2 if differential else 1
        if cross:
            self.to_q = Linear(dim, n_q * dim, bias=False)
            self.to_kv = Linear(dim_context or dim, (n_q + 1) * dim, bias=False)
        else:
            self.to_qkv = Linear(dim, (2 * n_q + 1) * dim, bias=False)
        self.to_out = Linear(dim, dim, bias=False)
        self.q_norm = _qk_norm(qk_norm, dim_head, qk_norm_eps)
        self.k_norm = _qk_norm(qk_norm, dim_head, qk_norm_eps)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.dim_head).transpose(1, 2)

    def project_context(self, context: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Cross-attention keys (normed, one or two) and values of a context; constant over a whole
        generation, so callers may compute them once and pass them back as `kv`."""
        kv = self.to_kv(context).chunk(3 if self.differential else 2, dim=-1)
        return [self.k_norm(self._heads(k)) for k in kv[:-1]], self._heads(kv[-1])

    def project(
        self, x: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Return normed query heads, normed key heads (one or two each) and value heads."""
        if self.cross:
            qs = self.to_q(x).chunk(2 if self.differential else 1, dim=-1)
            ks, v = self.project_context(context)
            return [self.q_norm(self._heads(q)) for q in qs], ks, v
        parts = self.to_qkv(x).chunk(5 if self.differential else 3, dim=-1)
        if self.differential:
            qs, ks, v = (parts[0], parts[3]), (parts[1], parts[4]), parts[2]
        else:
            qs, ks, v = (parts[0],), (parts[1],), parts[2]
        qs = [self.q_norm(self._heads(q)) for q in qs]
        ks = [self.k_norm(self._heads(k)) for k in ks]
        return qs, ks, self._heads(v)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        rotary: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        padding: str = "exclude",
        window: int | None = None,
        kv: tuple[list[torch.Tensor], torch.Tensor] | None = None,
        key_length: int | None = None,
    ) -> torch.Tensor:
        """x: (B, N, dim). `rotary`: angles (N, r); `key_mask`: (B, N) bool of valid keys;
        `kv`: precomputed `project_context(context)` for cross-attention.

        `window`: symmetric sliding-window radius in tokens. See `attention.attend` for `padding`
        and `key_length`.
        """
        if kv is not None:
            qs = [self.q_norm(self._heads(q)) for q in self.to_q(x).chunk(len(kv[0]), dim=-1)]
            ks, v = kv
        else:
            qs, ks, v = self.project(x, context)
        if rotary is not None:
            qs = [apply_rotary(q, rotary).to(v.dtype) for q in qs]
            ks = [apply_rotary(k, rotary).to(v.dtype) for k in ks]
        keys = {"key_mask": key_mask, "padding": padding, "window": window, "key_length": key_length}
        out = attend(qs[0], ks[0], v, **keys)
        if self.differential:
            out = out - attend(qs[1], ks[1], v, **keys)
        b, h, n, d = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, h * d))


def quantize_linears_int8(root: nn.Module) -> None:
    """Swap every `Linear` under `root` for PyTorch's dynamic int8 linear, in place (CPU only)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its deprecation
        from torch.ao.quantization import quantize_dynamic

        for parent in list(root.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is Linear:  # quantize_dynamic only swaps exact nn.Linear
                    bias = child.bias is not None
                    plain = nn.Linear(child.in_features, child.out_features, bias, device="meta")
                    plain.weight, plain.bias = child.weight, child.bias
                    setattr(parent, name, plain)
        quantize_dynamic(root, {nn.Linear}, dtype=torch.qint8, inplace=True)
