"""The latents generation decodes, for fine-tuning a decoder on them: a clip's real latents noised to
a level t and denoised in one step by a trained DiT (with the clip's caption and length).

Generation decodes the DiT's last one-step estimate (ping-pong sampling with 8 steps denoises last
from t = 0.27), and that estimate's errors are not those of real latents plus Gaussian noise. Taught
to decode such estimates to the clip's own audio, the decoder learns to make clean audio of what the
DiT makes, while the encoder, and so the DiT's latent space, stays as it was."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stable_audio_3.errors import ConfigError
from stable_audio_3.official.same_config import same_but_decoder_window
from stable_audio_3.training.objective import one_step_estimate

__all__ = ["HeadCrops", "head_crops", "OneStepDenoiser"]


@dataclass(frozen=True)
class HeadCrops:
    """A batch of clip openings with what the DiT is conditioned on."""

    audio: torch.Tensor  # (B, channels, samples), zero-padded after a short clip's end
    captions: tuple[str, ...]
    seconds: tuple[float, ...]  # the crop's length in seconds (a crop is conditioned as a whole clip)
    frames: tuple[int, ...]  # latent frames holding audio


def head_crops(
    waves: list[torch.Tensor],
    clips: list,
    batch: int,
    samples: int,
    rate_ratio: tuple[int, int],
    rng: random.Random,
    device,
) -> HeadCrops:
    """`batch` random clips cut to their first `samples`: the DiT was trained on whole clips that
    start at their start, so that is where its estimates are in distribution."""
    (rate, ratio), audio, captions, seconds, frames = rate_ratio, [], [], [], []
    for _ in range(batch):
        i = rng.randrange(len(waves))
        w = waves[i][:, :samples]
        audio.append(torch.nn.functional.pad(w, (0, samples - w.shape[-1])))
        captions.append(clips[i].caption)
        seconds.append(min(clips[i].seconds, samples / rate))
        frames.append(-(-w.shape[-1] // ratio))
    return HeadCrops(torch.stack(audio).to(device), tuple(captions), tuple(seconds), tuple(frames))


class OneStepDenoiser:
    """Replaces a `fraction` of a batch's latents by a model's one-step estimate from them noised to
    t uniform in [t_low, t_high]; the rest stay exact (their decoder keeps reconstructing)."""

    def __init__(
        self,
        path: str,
        sections: tuple[dict[str, Any], dict[str, Any]],
        t_range: tuple[float, float],
        fraction: float,
        device,
    ) -> None:
        """`sections`: the autoencoder config sections of the model at `path` and of the base."""
        from stable_audio_3.model import StableAudioModel

        if not same_but_decoder_window(*sections):
            raise ConfigError(
                f"denoiser: the autoencoder of {Path(path)} differs from the base's, so its DiT was not "
                "trained on these latents (use the model whose autoencoder is the base)"
            )
        self.model = StableAudioModel.from_pretrained(path, device=device, model_half=False)
        (self.t_low, self.t_high), self.fraction = t_range, fraction

    def batch(self, waves, clips, batch: int, crop, g) -> tuple[torch.Tensor, object]:
        """Clip openings and the function that denoises their latents. `crop`: (samples, sample
        rate, autoencoder); `g`: the run's optimisation (its random streams)."""
        samples, rate, ae = crop
        device = ae.bottleneck.bias.device
        crops = head_crops(waves, clips, batch, samples, (rate, ae.config.downsampling_ratio), g.rng, device)
        return crops.audio, lambda z: self(z, crops, g.gen)

    @torch.no_grad()
    def __call__(
        self, z: torch.Tensor, crops: HeadCrops, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the latents the decoder sees, which items are exact)."""
        b, length = z.shape[0], z.shape[-1]
        t = self.t_low + (self.t_high - self.t_low) * torch.rand(b, generator=gen)
        exact = torch.rand(b, generator=gen) >= self.fraction
        t = torch.where(exact, torch.zeros_like(t), t).to(z)
        noise = torch.randn(z.shape, generator=gen).to(z)
        x_t = (1 - t)[:, None, None] * z + t[:, None, None] * noise
        frames = torch.tensor(crops.frames, device=z.device)
        valid = torch.arange(length, device=z.device)[None] < frames[:, None]
        cond = self.model.condition(crops.captions, None, crops.seconds)
        estimate = one_step_estimate(self.model, x_t, t, cond, valid) * valid[:, None].to(z)
        return torch.where(exact[:, None, None].to(z.device), z, estimate), exact.to(z.device)
