"""SAME: the transformer audio autoencoder behind Stable Audio 3 (SAME-S and SAME-L).

Audio (B, 2, T) is cut into patches of `patch_size` samples (B, 2*patch, T/patch). The encoder
groups every `stride` patch tokens with one learned "new" token and keeps that token as the latent;
the decoder does the reverse, one latent token followed by `stride` new tokens that become patches.
Attention is local: SAME-S attends inside windows of two latents, shifted by half a window in the
second half of the stack; SAME-L uses a sliding window of one latent on each side.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stable_audio_3.models import chunking
from stable_audio_3.models.layers import Attention, DynamicTanh, GLUFeedForward, Linear, RMSNorm, Rotary
from stable_audio_3.official.same_config import SAMEConfig, SAMESideConfig

__all__ = ["SAMEAutoencoder", "patchify", "unpatchify"]

# Tokens processed together by windowed (SAME-S) attention stacks: about one 128-latent chunk.
WINDOW_GROUP_TOKENS = 544


def patchify(audio: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, T) -> (B, C * patch, ceil(T / patch)), zero-padding the end; channel c*patch + h."""
    pad = (-audio.shape[-1]) % patch
    if pad:
        audio = F.pad(audio, (0, pad))
    b, c, t = audio.shape
    return audio.view(b, c, t // patch, patch).permute(0, 1, 3, 2).reshape(b, c * patch, t // patch)


def unpatchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Inverse of `patchify` (without the padding): (B, C * patch, L) -> (B, C, L * patch)."""
    b, cp, length = x.shape
    c = cp // patch
    return x.view(b, c, patch, length).permute(0, 1, 3, 2).reshape(b, c, length * patch)


class WeightNormConv1d(nn.Module):
    """Conv1d with weight `g * v / ||v||` (norm per output channel), "same" padding."""

    def __init__(self, cin: int, cout: int, kernel: int, bias: bool = True) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(cout, 1, 1))
        self.weight_v = nn.Parameter(torch.zeros(cout, cin, kernel))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.kernel = kernel
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """A fresh layer: `v` as a default conv initialisation and `g = ||v||`, so `w = v` (loading
        a checkpoint overwrites both)."""
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))
            self.weight_g.copy_(self.weight_v.norm(dim=(1, 2), keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.weight_v
        w = self.weight_g * v / v.norm(dim=(1, 2), keepdim=True)
        return F.conv1d(x, w, self.bias, padding=(self.kernel - 1) // 2)


class SAMELayer(nn.Module):
    """Pre-norm transformer layer (no adaLN): x += Attn(norm(x)); x += FF(norm(x)), own RoPE."""

    def __init__(self, cfg: SAMESideConfig, sinusoidal: bool) -> None:
        super().__init__()
        dim = cfg.width
        if cfg.dyt:
            self.attn_norm: nn.Module = DynamicTanh(dim)
            self.ff_norm: nn.Module = DynamicTanh(dim)
        else:
            self.attn_norm, self.ff_norm = RMSNorm(dim, eps=1e-3), RMSNorm(dim, eps=1e-3)
        self.self_attn = Attention(
            dim,
            cfg.dim_heads,
            differential=cfg.differential,
            qk_norm="dyt" if cfg.dyt else "rms",
            qk_norm_eps=1e-3,
        )
        self.ff = GLUFeedForward(dim, int(dim * cfg.ff_mult), sinusoidal=sinusoidal)
        self.rotary = Rotary(cfg.dim_heads // 2)

    def forward(self, x: torch.Tensor, window: int | None = None) -> torch.Tensor:
        rotary = self.rotary(x.shape[1], device=x.device)
        x = x + self.self_attn(self.attn_norm(x), rotary=rotary, window=window)
        return x + self.ff(self.ff_norm(x))


class ResamplingBlock(nn.Module):
    """Turns `stride` tokens into one (encoder) or one into `stride` (decoder) with learned tokens."""

    def __init__(self, cfg: SAMESideConfig, encoder: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        cin, cout = (cfg.io_channels, cfg.width) if encoder else (cfg.width, cfg.io_channels)
        kernel = 3 if cfg.conv_mapping else 1
        self.mapping = WeightNormConv1d(cin, cout, kernel, cfg.mapping_bias) if cin != cout else None
        n_new = 1 if (encoder or cfg.variable_stride) else cfg.stride
        self.new_tokens = nn.Parameter(torch.zeros(1, n_new, cfg.width))
        self.layers = nn.ModuleList(
            SAMELayer(cfg, sinusoidal=(cfg.depth - j) < cfg.sinusoidal_blocks) for j in range(cfg.depth)
        )

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.mapping is None else self.mapping(x)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        cfg, s = self.cfg, self.cfg.stride
        sliding = cfg.sliding_window is not None
        b = x.shape[0]
        if self.encoder:
            x = F.pad(x, (0, (-x.shape[-1]) % (s if sliding else cfg.window_chunk)))
            x = self._map(x)
        h = x.transpose(1, 2)  # (B, T, D)
        if not self.encoder:
            multiple = 1 if sliding else cfg.window_chunk // s
            h = F.pad(h, (0, 0, 0, (-h.shape[1]) % multiple))
        seg_in, seg_out = (s, 1) if self.encoder else (1, s)
        groups = h.shape[1] // seg_in
        h = h.reshape(b * groups, seg_in, h.shape[-1])
        new = self.new_tokens.expand(b * groups, seg_out, -1)
        if cfg.mask_noise > 0:
            noise = torch.randn(new.shape, generator=generator, device=new.device, dtype=new.dtype)
            new = new + noise * cfg.mask_noise
        h = torch.cat([h, new], dim=1).reshape(b, groups * (s + 1), -1)
        h = self._transform(h)
        h = h.reshape(b * groups, s + 1, -1)[:, -seg_out:]
        h = h.reshape(b, groups * seg_out, -1).transpose(1, 2)
        return h if self.encoder else self._map(h)

    def _transform(self, h: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        b, n, d = h.shape
        if cfg.sliding_window is not None:
            window = cfg.sliding_window[0] * (cfg.stride + 1)
            for layer in self.layers:
                h = layer(h, window=window)
            return h
        size = cfg.window_chunk + cfg.window_chunk // cfg.stride  # tokens per window
        split = cfg.depth // 2 if cfg.chunk_midpoint_shift else cfg.depth
        h = self._windows(h, self.layers[:split], size)
        if split < cfg.depth:
            shift = size // 2
            padded = torch.cat([h[:, :shift], h, h[:, -shift:]], dim=1)
            h = self._windows(padded, self.layers[split:], size)[:, shift:-shift]
        return h

    @staticmethod
    def _windows(h: torch.Tensor, layers: nn.ModuleList, size: int) -> torch.Tensor:
        """Run `layers` on independent `size`-token windows, a bounded group of windows at a time:
        windows never see each other, so grouping changes nothing but the working-set size (long
        audio decodes in cache-sized pieces with constant activation memory, without chunk overlap)."""
        b, n, d = h.shape
        if n % size:
            raise ValueError(f"SAME sequence of {n} tokens is not a whole number of {size}-token windows")
        w = h.reshape(b * (n // size), size, d)
        group = max(1, WINDOW_GROUP_TOKENS // size)
        if w.shape[0] <= group:
            for layer in layers:
                w = layer(w)
            return w.reshape(b, n, d)
        out = torch.empty_like(w)
        for s in range(0, w.shape[0], group):
            part = w[s : s + group]
            for layer in layers:
                part = layer(part)
            out[s : s + group] = part
        return out.reshape(b, n, d)


class SAMEEncoder(nn.Module):
    def __init__(self, cfg: SAMESideConfig) -> None:
        super().__init__()
        self.block = ResamplingBlock(cfg, encoder=True)
        self.proj_out = Linear(cfg.width, cfg.latent_dim)

    def forward(self, patches: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        h = self.block(patches, generator)
        return self.proj_out(h.transpose(1, 2)).transpose(1, 2)


class SAMEDecoder(nn.Module):
    def __init__(self, cfg: SAMESideConfig) -> None:
        super().__init__()
        self.proj_in = Linear(cfg.latent_dim, cfg.width)
        self.block = ResamplingBlock(cfg, encoder=False)

    def forward(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        h = self.proj_in(latents.transpose(1, 2)).transpose(1, 2)
        return self.block(h, generator)


class SoftNormBottleneck(nn.Module):
    """Per-channel affine then division by a running std; decoding may add a little noise."""

    def __init__(self, cfg: SAMEConfig) -> None:
        super().__init__()
        dim = cfg.latent_dim
        self.scaling_factor = nn.Parameter(torch.ones(1, dim, 1))
        self.bias = nn.Parameter(torch.zeros(1, dim, 1))
        self.noise_scaling_factor = nn.Parameter(torch.ones(1, cfg.noise_augment_dim, 1))
        self.running_std = nn.Parameter(torch.ones(1)) if cfg.auto_scale else None
        self.noise_regularize = cfg.noise_regularize

    def encode(self, y: torch.Tensor) -> torch.Tensor:
        z = y * self.scaling_factor + self.bias
        return z if self.running_std is None else z / self.running_std

    def decode(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        y = z if self.running_std is None else z * self.running_std
        if self.noise_regularize:
            scale = self.running_std if self.running_std is not None else y.std(dim=-1, keepdim=True)
            noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
            y = y + noise * scale * 1e-3
        return y


class SAMEAutoencoder(nn.Module):
    """Audio (B, C, T) <-> latents (B, latent_dim, T / downsampling_ratio)."""

    def __init__(self, cfg: SAMEConfig, iterate_batch: bool = False) -> None:
        super().__init__()
        self.config = cfg
        self.iterate_batch = iterate_batch
        self.encoder = SAMEEncoder(cfg.encoder)
        self.decoder = SAMEDecoder(cfg.decoder)
        self.bottleneck = SoftNormBottleneck(cfg)

    def encode(self, audio: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Audio (B, C, T) -> latents; T is zero-padded up to whole patches and windows."""
        patches = patchify(audio, self.config.patch_size)
        if self.iterate_batch:
            h = torch.cat([self.encoder(patches[i : i + 1], generator) for i in range(len(patches))])
        else:
            h = self.encoder(patches, generator)
        return self.bottleneck.encode(h)

    def decode(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents (B, D, L) -> audio (B, C, L' * ratio); L' is L rounded up to the window granularity."""
        if self.iterate_batch:
            z = torch.cat(
                [self.bottleneck.decode(latents[i : i + 1], generator) for i in range(len(latents))]
            )
            patches = torch.cat([self.decoder(z[i : i + 1], generator) for i in range(len(z))])
        else:
            patches = self.decoder(self.bottleneck.decode(latents, generator), generator)
        return self.patches_to_audio(patches)

    def patches_to_audio(self, patches: torch.Tensor) -> torch.Tensor:
        """Decoder output (B, C * patch, L) -> audio (B, C, L * patch), soft-clipped if configured."""
        audio = unpatchify(patches, self.config.patch_size)
        return torch.tanh(audio) if self.config.soft_clip else audio

    def encode_chunked(
        self,
        audio: torch.Tensor,
        chunk_size: int = 128,
        overlap: int = 32,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Encode overlapping chunks of `chunk_size` latents and stitch them (the reference's scheme)."""
        return chunking.encode_chunked(self, audio, chunk_size, overlap, generator)

    def decode_chunked(
        self,
        latents: torch.Tensor,
        chunk_size: int = 128,
        overlap: int = 32,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Decode overlapping chunks of `chunk_size` latents and stitch them (the reference's scheme)."""
        return chunking.decode_chunked(self, latents, chunk_size, overlap, generator)

    def decode_into(
        self,
        latents: torch.Tensor,
        out: torch.Tensor,
        generator: torch.Generator | None = None,
        span: int = chunking.STREAM_SPAN,
    ) -> torch.Tensor:
        """Decode the first `out.shape[-1]` audio samples of `latents` into `out`, a span at a time
        (window-local decoders only); equal to `decode` up to float rounding, in bounded memory."""
        return chunking.decode_into(self, latents, out, generator, span)
