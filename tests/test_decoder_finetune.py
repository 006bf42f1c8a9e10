"""Fine-tuning only the decoder of a trained model's autoencoder (its latents stay what the DiT was
trained on) with noise on the latents, and exporting the model with that decoder in place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import checkpoint_dir
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file
from test_stages import _ae_config, _autoencoder_json, data  # noqa: F401 (the fixture)

from stable_audio_3 import StableAudioModel
from stable_audio_3.errors import ConfigError
from stable_audio_3.official.same_config import SAMEConfig, same_but_decoder_window, with_decoder_window
from stable_audio_3.training import AutoencoderTrainConfig, ExportConfig, export_checkpoint, train_autoencoder
from stable_audio_3.training.autoencoder_trainer import _forward

AE = "pretransform.model."


def _decoder_run(data: Path, out: Path, **overrides) -> Path:  # noqa: F811
    base = str(checkpoint_dir("A"))
    options = {"train_encoder": False, "latent_noise": 0.5, "steps": 3, "checkpoint_every": 3}
    return train_autoencoder(_ae_config(out, data, Path(base), **(options | overrides)))


def _pretransform(weights: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(weights)).items() if k.startswith(AE)}


@pytest.mark.slow
def test_only_the_decoder_moves_and_the_export_ships_it(data: Path, tmp_path: Path) -> None:  # noqa: F811
    folder = _decoder_run(data, tmp_path / "dec")
    model = _pretransform(checkpoint_dir("A") / "model.safetensors")
    tuned = {AE + k: v for k, v in load_file(str(folder / "model.safetensors")).items()}
    assert tuned.keys() == model.keys()
    decoder = [k for k in model if k.startswith(AE + "decoder.")]
    assert all(torch.equal(tuned[k], model[k]) for k in model if k not in decoder)  # encoder, bottleneck
    assert any(not torch.equal(tuned[k], model[k]) for k in decoder)

    out = export_checkpoint(
        ExportConfig(model=str(checkpoint_dir("A")), output=str(tmp_path / "out"), autoencoder=str(folder))
    )
    shipped = load_file(str(out / "model.safetensors"))
    half = export_checkpoint(ExportConfig(model=str(checkpoint_dir("A")), output=str(tmp_path / "half")))
    plain = load_file(str(half / "model.safetensors"))
    assert shipped.keys() == plain.keys()
    for key, value in shipped.items():
        expected = tuned[key].half() if key.startswith(AE + "decoder.") else plain[key]
        assert value.dtype == expected.dtype and torch.equal(value, expected), key
    generated = StableAudioModel.from_pretrained(out, device="cpu").generate(
        "a tone", duration=1.0, steps=2, seed=0, progress=False
    )
    assert torch.isfinite(generated).all()


@pytest.mark.slow
def test_an_autoencoder_with_another_encoder_is_refused(data: Path, tmp_path: Path) -> None:  # noqa: F811
    moved = _decoder_run(data, tmp_path / "enc", train_encoder=True)
    with pytest.raises(ConfigError, match="encoder"):
        export_checkpoint(
            ExportConfig(model=str(checkpoint_dir("A")), output=str(tmp_path / "o"), autoencoder=str(moved))
        )
    assert not (tmp_path / "o").exists()
    other = train_autoencoder(
        _ae_config(tmp_path / "other", data, _autoencoder_json(tmp_path, sample_rate=8000), steps=1)
    )
    with pytest.raises(ConfigError, match="config"):
        export_checkpoint(
            ExportConfig(model=str(checkpoint_dir("A")), output=str(tmp_path / "o"), autoencoder=str(other))
        )


def test_latent_noise_is_drawn_per_clip_and_absent_by_default() -> None:
    from stable_audio_3.models.same import SAMEAutoencoder
    from stable_audio_3.official.same_config import SAMEConfig
    from stable_audio_3.training.autoencoder_trainer import standalone_config

    config, _ = standalone_config(checkpoint_dir("A"))
    ae = SAMEAutoencoder(SAMEConfig.from_official(config["model"])).eval()
    audio = torch.randn(3, 2, 4 * ae.config.downsampling_ratio, generator=torch.Generator().manual_seed(0))
    z = ae.encode(audio)
    clean = ae.decode(z)[..., : audio.shape[-1]] if not ae.config.noise_regularize else None
    plain, _, target, exact = _forward(ae, audio, torch.Generator().manual_seed(1))
    assert exact.all()  # without a denoiser every clip is decoded from its own latents
    assert target is audio
    if clean is not None:
        assert torch.equal(plain, clean)
    noisy, *_ = _forward(ae, audio, torch.Generator().manual_seed(1), latent_noise=1.0)
    change = (noisy - plain).pow(2).mean(dim=(1, 2))
    assert (change > 0).all() and change.max() > 1.5 * change.min()  # a different amount per clip


def test_latent_shrink_scales_latents_and_target_alike_per_clip() -> None:
    from stable_audio_3.models.same import SAMEAutoencoder
    from stable_audio_3.official.same_config import SAMEConfig
    from stable_audio_3.training.autoencoder_trainer import standalone_config

    config, _ = standalone_config(checkpoint_dir("A"))
    cfg = SAMEConfig.from_official(config["model"])
    assert not cfg.noise_regularize  # so the only randomness is the scale
    ae = SAMEAutoencoder(cfg).eval()
    audio = torch.randn(4, 2, 4 * cfg.downsampling_ratio, generator=torch.Generator().manual_seed(0))
    fake, z, target, _ = _forward(ae, audio, torch.Generator().manual_seed(1), latent_shrink=0.8)
    scale = (target / audio).flatten(1)
    assert torch.allclose(scale, scale[:, :1].expand_as(scale), atol=1e-6)  # one scale per clip
    s = scale[:, 0]
    assert ((s >= 0.2 - 1e-6) & (s <= 1.0)).all() and s.max() - s.min() > 0.05
    assert torch.equal(z, ae.encode(audio))  # the latents returned are the encoder's own
    expected = ae.decode(z * s.view(-1, 1, 1))[..., : audio.shape[-1]]
    assert torch.allclose(fake, expected, atol=1e-5)


def test_bad_decoder_options_name_the_argument() -> None:
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="latent_shrink"):
            AutoencoderTrainConfig(base="b", data="d", latent_shrink=bad)
    with pytest.raises(ValueError, match="latent_noise"):
        AutoencoderTrainConfig(base="b", data="d", latent_noise=-0.1)
    with pytest.raises(TypeError, match="train_encoder"):
        AutoencoderTrainConfig(base="b", data="d", train_encoder="no")
    with pytest.raises(ValueError, match="stft_sizes must be >= 16"):
        AutoencoderTrainConfig(base="b", data="d", stft_sizes=(1024, 8))
    with pytest.raises(TypeError, match="stft_sizes must be an int"):
        AutoencoderTrainConfig(base="b", data="d", stft_sizes=("1k",))
    from_cli = AutoencoderTrainConfig(base="b", data="d", stft_sizes=("64", 32))  # the CLI gives str
    assert from_cli.stft_sizes == (64, 32)


@pytest.mark.slow
def test_the_reconstruction_loss_uses_the_chosen_fft_sizes(data: Path, tmp_path: Path) -> None:  # noqa: F811
    """The same first batch scores differently under other FFT sizes, and the run still trains."""
    first = []
    for name, sizes in (("auto", ()), ("long", (512, 256))):
        out = _decoder_run(data, tmp_path / name, latent_noise=0.0, steps=2, stft_sizes=sizes)
        rows = [json.loads(line) for line in (out.parent / "metrics.jsonl").read_text().splitlines()]
        assert all(torch.isfinite(torch.tensor(r["stft"])) for r in rows if "stft" in r)
        first.append(next(r["stft"] for r in rows if "stft" in r))
    assert first[0] != first[1]


@pytest.mark.slow
def test_a_decoder_with_wider_windows_is_trained_and_shipped(data: Path, tmp_path: Path) -> None:  # noqa: F811
    folder = _decoder_run(data, tmp_path / "wide", decoder_window=4, decoder_midpoint_shift=False)
    decoder = json.loads((folder / "model_config.json").read_text())["model"]["decoder"]["config"]
    assert (decoder["chunk_size"], decoder["chunk_midpoint_shift"]) == (4 * decoder["strides"][0], False)
    out = export_checkpoint(
        ExportConfig(model=str(checkpoint_dir("A")), output=str(tmp_path / "out"), autoencoder=str(folder))
    )
    shipped = json.loads((out / "model_config.json").read_text())["model"]["pretransform"]["config"]
    assert shipped["decoder"]["config"] == decoder
    source = json.loads((checkpoint_dir("A") / "model_config.json").read_text())
    assert shipped["encoder"] == source["model"]["pretransform"]["config"]["encoder"]  # source untouched
    model = StableAudioModel.from_pretrained(out, device="cpu")
    assert model.autoencoder.config.decoder.window_chunk == 4 * decoder["strides"][0]
    generated = model.generate("a tone", duration=1.0, steps=2, seed=0, progress=False)
    assert torch.isfinite(generated).all()


def test_decoder_window_needs_a_frozen_encoder_and_a_window_local_decoder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="decoder_window"):
        AutoencoderTrainConfig(base="b", data="d", decoder_window=4)
    with pytest.raises(ValueError, match="decoder_window"):
        AutoencoderTrainConfig(base="b", data="d", train_encoder=False, decoder_window=-1)
    sliding = json.loads((checkpoint_dir("E") / "model_config.json").read_text())
    with pytest.raises(ValueError, match="window-local"):
        with_decoder_window(sliding["model"]["pretransform"]["config"], 4, True)
    run = _ae_config(tmp_path / "o", tmp_path, checkpoint_dir("E"), train_encoder=False, decoder_window=4)
    with pytest.raises(ConfigError, match="decoder_window"):
        train_autoencoder(run)
    assert not (tmp_path / "o").exists()  # refused before anything was written


@given(latents=st.integers(1, 64), shift=st.booleans())
def test_a_decoder_window_changes_only_the_decoder_window_keys(latents: int, shift: bool) -> None:
    section = json.loads((checkpoint_dir("A") / "model_config.json").read_text())["model"]["pretransform"]
    wide = with_decoder_window(section["config"], latents, shift)
    assert same_but_decoder_window(wide, section["config"])
    assert wide["decoder"]["config"]["chunk_size"] == latents * wide["decoder"]["config"]["strides"][0]
    assert SAMEConfig.from_official(wide).decoder.chunk_midpoint_shift is shift
    other = with_decoder_window(section["config"], latents, shift)
    other["decoder"]["config"]["dim_heads"] += 1
    assert not same_but_decoder_window(other, section["config"])
