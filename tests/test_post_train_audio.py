"""Stage 3's optional generator term on audio: the decoded one-step estimate against the decoded real
latents, through the frozen decoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import checkpoint_dir
from safetensors.torch import load_file
from test_stages import _post_config, data  # noqa: F401 (the fixture)

from stable_audio_3 import StableAudioModel
from stable_audio_3.training import PostTrainConfig, post_train
from stable_audio_3.training.post_train import decoded_audio_loss


def _latents(model: StableAudioModel, seed: int, frames: int = 6) -> torch.Tensor:
    shape = (2, model.autoencoder.config.latent_dim, frames)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_the_audio_term_is_zero_on_the_real_latents_and_reaches_only_the_estimate() -> None:
    model = StableAudioModel.from_pretrained(checkpoint_dir("B"), device="cpu", model_half=False)
    real, valid = _latents(model, 0), torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    assert float(decoded_audio_loss(model, real, real, valid)) == 0.0
    fake = _latents(model, 1).requires_grad_(True)
    loss = decoded_audio_loss(model, fake, real, valid)
    assert loss > 0 and torch.isfinite(loss)
    loss.backward()
    assert fake.grad is not None and fake.grad[:, :, :4].abs().sum() > 0
    assert (fake.grad[1, :, 4:] == 0).all()  # frames past the clip's end play no part
    assert all(p.grad is None for p in model.autoencoder.parameters())  # the decoder stays as it is
    moved = fake.detach().clone()
    moved[1, :, 4:] += 5.0
    # Both without autograd: with it the CPU kernels may sum in another order (bits apart on AMX).
    assert torch.equal(
        decoded_audio_loss(model, moved, real, valid), decoded_audio_loss(model, fake.detach(), real, valid)
    )


def test_a_negative_audio_weight_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="audio_weight"):
        PostTrainConfig(model="m", data="d", audio_weight=-1.0)


@pytest.mark.slow
def test_post_training_with_the_audio_term_logs_it_and_moves_the_generator(
    data: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    with_audio = post_train(
        _post_config(data, tmp_path / "audio", steps=3, checkpoint_every=3, audio_weight=1.0)
    )
    audio = [
        json.loads(line)["audio"] for line in (tmp_path / "audio" / "metrics.jsonl").read_text().splitlines()
    ]
    assert len(audio) == 3 and all(a > 0 for a in audio)
    plain = post_train(_post_config(data, tmp_path / "plain", steps=3, checkpoint_every=3))
    a, b = load_file(str(with_audio / "model.safetensors")), load_file(str(plain / "model.safetensors"))
    dit = [k for k in a if k.startswith("model.")]
    assert dit and any(not torch.equal(a[k], b[k]) for k in dit)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("pretransform."))  # autoencoder untouched
