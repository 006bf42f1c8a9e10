"""`AutoencoderModel`: the SAME autoencoder on its own (SAME-S / SAME-L or a full checkpoint's)."""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from stable_audio_3.devices import resolve_device
from stable_audio_3.models.same import SAMEAutoencoder
from stable_audio_3.official import hub
from stable_audio_3.official.checkpoint import load_official_state_dict, read_safetensors
from stable_audio_3.official.config import ConfigError
from stable_audio_3.official.same_config import SAMEConfig

__all__ = ["AutoencoderModel"]

_FULL_PREFIX = "pretransform.model."


class AutoencoderModel:
    """Encode audio to SAME latents (256 channels, one frame per 4096 samples) and decode them back."""

    def __init__(self, autoencoder: SAMEAutoencoder, sample_rate: int, device: torch.device) -> None:
        self.autoencoder = autoencoder
        self.sample_rate = sample_rate
        self.device = device

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        device: str | torch.device | None = None,
        revision: str | None = None,
    ) -> AutoencoderModel:
        """`same-s`, `same-l`, a model name whose checkpoint contains one, or a local directory."""
        dev = resolve_device(device)
        files = hub.resolve_autoencoder(name_or_path, revision=revision)
        raw = json.loads(files.config.read_text())
        model = raw.get("model", {})
        section = model if "encoder" in model else model.get("pretransform", {}).get("config")
        if not isinstance(section, dict):
            raise ConfigError(f"{files.config} holds no autoencoder config")
        cfg = SAMEConfig.from_official(section)
        with torch.device("meta"):
            ae = SAMEAutoencoder(cfg)
        state = read_safetensors(files.weights)
        if any(k.startswith(_FULL_PREFIX) for k in state):
            load_official_state_dict(ae, state, strip_prefix=_FULL_PREFIX)
        else:
            load_official_state_dict(ae, state, autoencoder_only=True)
        ae.to(dev).eval().requires_grad_(False)
        sample_rate = int(raw.get("sample_rate", 44100))
        return cls(ae, sample_rate, dev)

    @property
    def downsampling_ratio(self) -> int:
        return self.autoencoder.config.downsampling_ratio

    @torch.inference_mode()
    def encode(
        self,
        audio: Any,
        sample_rate: int | None = None,
        *,
        chunked: bool = False,
        chunk_size: int = 128,
        overlap: int = 32,
    ) -> torch.Tensor:
        """Audio -> latents (B, 256, frames). `audio`: a path, `(waveform, rate)`, or a waveform with
        `sample_rate`; a (B, C, T) tensor encodes a batch. Resampled to the model rate, padded up to
        a whole number of latent frames."""
        from stable_audio_3.audio import to_waveform

        channels = self.autoencoder.config.io_channels
        if isinstance(audio, torch.Tensor) and audio.dim() == 3:
            items = [to_waveform(a, "audio", self.sample_rate, channels, sample_rate) for a in audio]
        else:
            items = [to_waveform(audio, "audio", self.sample_rate, channels, sample_rate)]
        ratio = self.downsampling_ratio
        n = -(-max(w.shape[-1] for w in items) // ratio) * ratio
        batch = torch.stack([torch.nn.functional.pad(w, (0, n - w.shape[-1])) for w in items]).to(self.device)
        batch = batch.to(next(self.autoencoder.parameters()).dtype)
        if chunked:
            return self.autoencoder.encode_chunked(batch, chunk_size=chunk_size, overlap=overlap)
        return self.autoencoder.encode(batch)

    @torch.inference_mode()
    def decode(
        self,
        latents: torch.Tensor,
        *,
        chunked: bool = False,
        chunk_size: int = 128,
        overlap: int = 32,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Latents (B, 256, frames) -> audio (B, 2, frames * 4096) float32."""
        if not isinstance(latents, torch.Tensor) or latents.dim() != 3:
            raise ValueError("latents must be a (batch, channels, frames) tensor")
        z = latents.to(self.device, next(self.autoencoder.parameters()).dtype)
        if chunked:
            out = self.autoencoder.decode_chunked(
                z, chunk_size=chunk_size, overlap=overlap, generator=generator
            )
        else:
            out = self.autoencoder.decode(z, generator=generator)
        return out.float()
