"""Losses for training an autoencoder on waveforms: multi-resolution STFT reconstruction and a
multi-scale STFT discriminator with feature matching."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["stft_sizes", "MultiResolutionSTFTLoss", "MultiScaleSTFTDiscriminator", "hinge_d", "hinge_g"]


def stft_sizes(sample_rate: int, count: int = 5) -> list[int]:
    """FFT sizes from about 46 ms down, halving: (2048, ..., 128) at 44.1 kHz, scaled to the rate."""
    top = 1 << max(5, round(math.log2(sample_rate * 0.0464)))
    return [max(16, top >> i) for i in range(count)]


def _spectrum(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Complex STFT of (B, C, T) audio, channels folded into the batch: (B*C, F, frames)."""
    window = torch.hann_window(n_fft, device=x.device, dtype=torch.float32)
    flat = x.float().reshape(-1, x.shape[-1])
    return torch.stft(flat, n_fft, hop_length=n_fft // 4, window=window, return_complex=True, center=True)


class MultiResolutionSTFTLoss(nn.Module):
    """Sum over FFT sizes of spectral convergence plus mean |log magnitude| difference."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.sizes = sizes

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        total = fake.new_zeros((), dtype=torch.float32)
        for n in self.sizes:
            a, b = _spectrum(fake, n).abs(), _spectrum(real, n).abs()
            convergence = torch.linalg.norm(a - b) / torch.linalg.norm(b).clamp(min=1e-7)
            log_mag = (torch.log(a.clamp(min=1e-5)) - torch.log(b.clamp(min=1e-5))).abs().mean()
            total = total + convergence + log_mag
        return total / len(self.sizes)


class _ScaleDiscriminator(nn.Module):
    """2-D convolutions over one resolution's (real, imaginary) STFT; returns every feature map."""

    def __init__(self, n_fft: int, width: int = 16) -> None:
        super().__init__()
        self.n_fft = n_fft
        chans = [2, width, width, width, width]
        self.convs = nn.ModuleList(
            nn.Conv2d(chans[i], chans[i + 1], (3, 9), stride=(1, 2) if i else (1, 1), padding=(1, 4))
            for i in range(len(chans) - 1)
        )
        self.out = nn.Conv2d(width, 1, (3, 3), padding=(1, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        spec = _spectrum(x, self.n_fft)
        h = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # (B*C, 2, frames, F)
        feats = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
            feats.append(h)
        feats.append(self.out(h))
        return feats


class MultiScaleSTFTDiscriminator(nn.Module):
    """One STFT discriminator per FFT size; `forward` gives each one's feature maps (last: logits)."""

    def __init__(self, sizes: list[int], width: int = 16) -> None:
        super().__init__()
        self.scales = nn.ModuleList(_ScaleDiscriminator(n, width) for n in sizes)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        return [d(x) for d in self.scales]


def hinge_d(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """Hinge loss of the discriminator on its logits (the last map of each scale)."""
    terms = [F.relu(1 - r[-1]).mean() + F.relu(1 + f[-1]).mean() for r, f in zip(real, fake, strict=True)]
    return sum(terms) / len(terms)


def hinge_g(
    real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial loss, feature-matching loss) of the generator: -logits, and the mean L1 distance
    between real and generated feature maps (real ones detached)."""
    adv = sum(-f[-1].mean() for f in fake) / len(fake)
    pairs = [(r, f) for rs, fs in zip(real, fake, strict=True) for r, f in zip(rs[:-1], fs[:-1], strict=True)]
    match = sum((f - r.detach()).abs().mean() / r.detach().abs().mean().clamp(min=1e-5) for r, f in pairs)
    return adv, match / len(pairs)
