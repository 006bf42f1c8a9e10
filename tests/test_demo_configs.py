"""The demo autoencoder configs in configs/demo build as written and keep the DiT's frame: 512
samples and 64 channels per latent frame, whatever the patch size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stable_audio_3.training.autoencoder_trainer import _build, standalone_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "demo"


@pytest.mark.parametrize("name", ["autoencoder_config.json", "autoencoder_p512_config.json"])
def test_a_demo_autoencoder_config_builds_with_512_samples_per_latent_frame(name: str) -> None:
    config, weights = standalone_config(CONFIGS / name)
    assert weights is None and config["sample_rate"] == 16000
    ae = _build(config, None, "cpu", seed=0).eval()
    audio = torch.randn(1, 2, 16 * 512, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        z = ae.encode(audio)
        out = ae.decode(z)
    assert z.shape == (1, 64, 16)
    assert out.shape == audio.shape and torch.isfinite(out).all()
