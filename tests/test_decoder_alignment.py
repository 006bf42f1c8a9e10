"""Fine-tuning a decoder on a DiT's one-step estimates of clips' latents (what generation decodes):
the estimates, the clip openings they are made of, the options and a short run."""

from __future__ import annotations

import random
from functools import cache
from pathlib import Path

import pytest
import torch
from conftest import checkpoint_dir
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from test_decoder_finetune import _decoder_run, _pretransform
from test_stages import data  # noqa: F401 (the fixture)

from stable_audio_3.errors import ConfigError
from stable_audio_3.training import AutoencoderTrainConfig
from stable_audio_3.training.autoencoder_trainer import standalone_config
from stable_audio_3.training.dataset import Clip
from stable_audio_3.training.decoder_alignment import HeadCrops, OneStepDenoiser, head_crops

AE = "pretransform.model."


@cache
def _section() -> dict:
    return standalone_config(checkpoint_dir("A"))[0]["model"]


@cache
def _denoiser(fraction: float) -> OneStepDenoiser:
    sections = (_section(), _section())
    return OneStepDenoiser(str(checkpoint_dir("A")), sections, (0.2, 0.6), fraction, "cpu")


def _crops(frames: tuple[int, ...]) -> HeadCrops:
    ae = _denoiser(0.5).model.autoencoder
    audio = torch.randn(
        len(frames), 2, 8 * ae.config.downsampling_ratio, generator=torch.Generator().manual_seed(0)
    )
    return HeadCrops(audio, tuple(f"a {i} hertz tone" for i in frames), tuple(1.0 for _ in frames), frames)


@settings(max_examples=15, deadline=None)
@given(fraction=st.sampled_from([0.0, 0.5, 1.0]), seed=st.integers(0, 2**16), valid=st.integers(1, 8))
def test_estimates_replace_a_share_of_the_latents_and_stay_silent_past_the_clip(
    fraction: float, seed: int, valid: int
) -> None:
    denoiser = _denoiser(fraction)
    crops = _crops((8, valid, 8, valid))
    z = denoiser.model.autoencoder.encode(crops.audio)
    seen, exact = denoiser(z, crops, torch.Generator().manual_seed(seed))
    again, _ = denoiser(z, crops, torch.Generator().manual_seed(seed))
    assert torch.equal(seen, again)  # the run's generator alone decides
    assert exact.dtype == torch.bool and exact.shape == (4,)
    if fraction == 0.0:
        assert exact.all()
    if fraction == 1.0:
        assert not exact.any()
    assert torch.equal(seen[exact], z[exact])  # exact clips keep their own latents
    for i in torch.nonzero(~exact).flatten().tolist():
        frames = crops.frames[i]
        assert not torch.allclose(seen[i, :, :frames], z[i, :, :frames], atol=1e-3)  # an estimate
        assert (seen[i, :, frames:] == 0).all()  # nothing past the clip's end
        assert torch.isfinite(seen[i]).all()


def test_head_crops_are_clip_openings_conditioned_as_whole_clips() -> None:
    rate, ratio, samples = 1000, 10, 200
    waves = [torch.randn(2, 150), torch.randn(2, 700)]
    clips = [Clip(Path("a.wav"), "short", 0.15), Clip(Path("b.wav"), "long", 0.7)]
    crops = head_crops(waves, clips, 6, samples, (rate, ratio), random.Random(0), "cpu")
    assert crops.audio.shape == (6, 2, samples)
    for audio, caption, seconds, frames in zip(
        crops.audio, crops.captions, crops.seconds, crops.frames, strict=True
    ):
        i = 0 if caption == "short" else 1
        n = min(samples, waves[i].shape[-1])
        assert torch.equal(audio[:, :n], waves[i][:, :n]) and (audio[:, n:] == 0).all()
        assert seconds == pytest.approx(min(clips[i].seconds, samples / rate))
        assert frames == -(-n // ratio)
    assert set(crops.captions) == {"short", "long"}


def test_bad_denoiser_options_name_the_argument() -> None:
    with pytest.raises(ConfigError, match="denoiser"):
        AutoencoderTrainConfig(base="b", data="d", denoiser="m")  # the encoder would move
    for name, value in (("denoise_t_min", -0.1), ("denoise_t_max", 1.5), ("denoise_fraction", 2.0)):
        with pytest.raises(ValueError, match=name):
            AutoencoderTrainConfig(base="b", data="d", train_encoder=False, denoiser="m", **{name: value})
    with pytest.raises(ValueError, match="denoise_t_max"):
        AutoencoderTrainConfig(base="b", data="d", train_encoder=False, denoise_t_min=0.5, denoise_t_max=0.4)
    other = {**_section(), "latent_dim": _section().get("latent_dim", 0) + 1}
    with pytest.raises(ConfigError, match="denoiser"):
        OneStepDenoiser(str(checkpoint_dir("A")), (other, _section()), (0.1, 0.7), 0.5, "cpu")


@pytest.mark.slow
def test_a_decoder_learns_from_the_dits_estimates(data: Path, tmp_path: Path) -> None:  # noqa: F811
    folder = _decoder_run(data, tmp_path / "aligned", latent_noise=0.0, denoiser=str(checkpoint_dir("A")))
    model = _pretransform(checkpoint_dir("A") / "model.safetensors")
    tuned = {AE + k: v for k, v in load_file(str(folder / "model.safetensors")).items()}
    decoder = [k for k in model if k.startswith(AE + "decoder.")]
    assert all(torch.equal(tuned[k], model[k]) for k in model if k not in decoder)  # encoder, bottleneck
    assert any(not torch.equal(tuned[k], model[k]) for k in decoder)
    assert all(torch.isfinite(tuned[k]).all() for k in decoder)
    plain = _decoder_run(data, tmp_path / "plain", latent_noise=0.0)  # the same run without estimates
    plain_weights = {AE + k: v for k, v in load_file(str(plain / "model.safetensors")).items()}
    assert any(not torch.equal(tuned[k], plain_weights[k]) for k in decoder)
