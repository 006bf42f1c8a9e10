"""`AutoencoderModel`: the SAME autoencoder on its own (SAME-S / SAME-L or a full checkpoint's)."""

from __future__ import annotations

import os
from typing import Any

import torch

from stable_audio_3.checks import check_bool, check_int
from stable_audio_3.devices import resolve_device
from stable_audio_3.errors import ArgumentTypeError, ArgumentValueError, ConfigError, NonFiniteOutputError
from stable_audio_3.models.same import SAMEAutoencoder
from stable_audio_3.official import hub
from stable_audio_3.official.checkpoint import load_official_state_dict, read_safetensors
from stable_audio_3.official.config import read_config_json
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
        raw = read_config_json(files.config)
        cfg, sample_rate = _autoencoder_config(raw, files.config)
        with torch.device("meta"):
            ae = SAMEAutoencoder(cfg)
        state = read_safetensors(files.weights)
        if any(k.startswith(_FULL_PREFIX) for k in state):
            load_official_state_dict(ae, state, strip_prefix=_FULL_PREFIX)
        else:
            load_official_state_dict(ae, state, autoencoder_only=True)
        ae.to(dev).eval().requires_grad_(False)
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

        chunked = check_bool("chunked", chunked)
        chunk_size, overlap = _chunking(chunk_size, overlap)
        channels = self.autoencoder.config.io_channels
        if isinstance(audio, torch.Tensor) and audio.dim() == 3:
            if audio.shape[0] == 0:
                raise ArgumentValueError("audio is an empty batch (shape[0] == 0)")
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
        """Latents (B, 256, frames) -> audio (B, 2, frames * 4096) float32. NaN or infinite latents
        are refused; so is a decode that overflows (`NonFiniteOutputError`)."""
        self._check_latents(latents)
        chunked = check_bool("chunked", chunked)
        chunk_size, overlap = _chunking(chunk_size, overlap)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ArgumentTypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        z = latents.to(self.device, next(self.autoencoder.parameters()).dtype)
        if chunked:
            out = self.autoencoder.decode_chunked(
                z, chunk_size=chunk_size, overlap=overlap, generator=generator
            )
        else:
            out = self.autoencoder.decode(z, generator=generator)
        if not torch.isfinite(out).all():
            raise NonFiniteOutputError(
                "decoding produced NaN or infinite samples: the autoencoder weights may be corrupt, or the "
                "latents far outside the range it was trained on"
            )
        return out.float()

    def _check_latents(self, latents: Any) -> None:
        channels = self.autoencoder.config.latent_dim
        if not isinstance(latents, torch.Tensor) or latents.dim() != 3:
            raise ArgumentTypeError(f"latents must be a (batch, {channels}, frames) tensor")
        if latents.is_complex() or latents.dtype == torch.bool:
            raise ArgumentTypeError(f"latents must be real numbers, got dtype {latents.dtype}")
        if latents.shape[1] != channels:
            raise ArgumentValueError(
                f"latents have {latents.shape[1]} channels but this autoencoder's latents have {channels}"
            )
        if latents.shape[0] == 0 or latents.shape[2] == 0:
            raise ArgumentValueError(f"latents are empty (shape {tuple(latents.shape)})")
        if not torch.isfinite(latents).all():
            raise ArgumentValueError("latents contain NaN or infinite values")


def _chunking(chunk_size: Any, overlap: Any) -> tuple[int, int]:
    size = check_int("chunk_size", chunk_size, low=1)
    return size, check_int("overlap", overlap, low=0, high=size - 1)


def _autoencoder_config(raw: dict[str, Any], path: os.PathLike[str]) -> tuple[SAMEConfig, int]:
    """The SAME section of a standalone or full checkpoint config, and its sample rate."""
    model = raw.get("model")
    model = model if isinstance(model, dict) else {}
    pre = model.get("pretransform")
    section = model if "encoder" in model else pre.get("config") if isinstance(pre, dict) else None
    if not isinstance(section, dict):
        raise ConfigError(f"{path} holds no autoencoder config")
    try:
        cfg = SAMEConfig.from_official(section)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ConfigError(f"{path}: autoencoder config: {err}") from None
    rate = raw.get("sample_rate", 44100)
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise ConfigError(f"{path}: sample_rate must be a positive int, got {rate!r}")
    return cfg, rate
