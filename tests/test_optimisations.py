"""Every speed optimisation keeps the output equal to the plain (reference-plan) path within tolerance."""

from __future__ import annotations

import pytest
from conftest import checkpoint_dir

from stable_audio_3 import StableAudioModel

_MODELS: dict[str, StableAudioModel] = {}


def load(config: str) -> StableAudioModel:
    if config not in _MODELS:
        _MODELS[config] = StableAudioModel.from_pretrained(checkpoint_dir(config), device="cpu")
    return _MODELS[config]


@pytest.mark.parametrize("config", ["A", "B", "E"])
@pytest.mark.parametrize("duration", [0.7, 3.0, 9.5])
def test_partial_decode_equals_decoding_everything(config: str, duration: float) -> None:
    model = load(config)
    args = {"prompt": "x", "duration": duration, "steps": 2, "seed": 3, "progress": False}
    fast = model.generate(**args)
    plain = model.generate(**args, decode_all_latents=True)
    assert fast.shape == plain.shape
    assert (fast - plain).abs().max().item() <= 1e-4


def test_partial_decode_with_per_item_durations() -> None:
    model = load("A")
    args = {"prompt": ["a", "b"], "duration": [2.0, 6.5], "steps": 2, "seed": 5, "progress": False}
    with pytest.warns(UserWarning, match="durations differ"):
        fast = model.generate(**args)
    with pytest.warns(UserWarning, match="durations differ"):
        plain = model.generate(**args, decode_all_latents=True)
    assert fast.shape == plain.shape
    assert (fast - plain).abs().max().item() <= 1e-4
    # Past each item's duration + padding the audio is silent in both.
    assert (
        fast[
            0,
            :,
            int((2.0 + 6.0) * model.sample_rate) + model.config.pretransform.autoencoder.downsampling_ratio :,
        ]
        .abs()
        .max()
        == 0
    )
