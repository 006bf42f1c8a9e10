"""The demo recipe in configs/demo: the autoencoder configs build as written and keep the DiT's frame
(512 samples and 64 channels per latent frame, whatever the patch size), and every stage's TOML is a
valid run of its stage that reads the previous stage's output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stable_audio_3.training import (
    AutoencoderTrainConfig,
    DistillConfig,
    NewModelConfig,
    PostTrainConfig,
    PretrainConfig,
)
from stable_audio_3.training.autoencoder_trainer import _build, standalone_config
from stable_audio_3.training.configs import read_toml

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "demo"


@pytest.mark.parametrize("name", ["autoencoder_p256_config.json", "autoencoder_p512_config.json"])
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


STAGES = {
    "autoencoder.toml": AutoencoderTrainConfig,
    "new_model.toml": NewModelConfig,
    "pretrain.toml": PretrainConfig,
    "distill.toml": DistillConfig,
    "post_train.toml": PostTrainConfig,
}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_demo_stage_config_is_a_valid_run_of_its_stage(name: str) -> None:
    cfg = STAGES[name](**read_toml(CONFIGS / name))
    assert cfg.seed == 0  # the recipe is one seeded run, stage after stage


def test_the_demo_recipe_chains_its_stages_and_ships_the_p512_autoencoder() -> None:
    read = {name: read_toml(CONFIGS / name) for name in STAGES}
    assert read["autoencoder.toml"]["base"] == "configs/demo/autoencoder_p512_config.json"
    assert read["new_model.toml"]["autoencoder"] == read["autoencoder.toml"]["output"] + "/checkpoint"
    assert read["pretrain.toml"]["base"] == read["new_model.toml"]["output"]
    assert read["distill.toml"]["teacher"] == read["pretrain.toml"]["output"] + "/checkpoint"
    assert read["post_train.toml"]["model"] == read["distill.toml"]["output"] + "/checkpoint"
    assert read["new_model.toml"]["split_digits"] and read["post_train.toml"]["discriminator_warmup"] > 0
