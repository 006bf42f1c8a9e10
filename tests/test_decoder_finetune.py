"""Fine-tuning only the decoder of a trained model's autoencoder (its latents stay what the DiT was
trained on) with noise on the latents, and exporting the model with that decoder in place."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import checkpoint_dir
from safetensors.torch import load_file
from test_stages import _ae_config, _autoencoder_json, data  # noqa: F401 (the fixture)

from stable_audio_3 import StableAudioModel
from stable_audio_3.errors import ConfigError
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
    plain, _ = _forward(ae, audio, torch.Generator().manual_seed(1))
    if clean is not None:
        assert torch.equal(plain, clean)
    noisy, _ = _forward(ae, audio, torch.Generator().manual_seed(1), latent_noise=1.0)
    change = (noisy - plain).pow(2).mean(dim=(1, 2))
    assert (change > 0).all() and change.max() > 1.5 * change.min()  # a different amount per clip


def test_bad_decoder_options_name_the_argument() -> None:
    with pytest.raises(ValueError, match="latent_noise"):
        AutoencoderTrainConfig(base="b", data="d", latent_noise=-0.1)
    with pytest.raises(TypeError, match="train_encoder"):
        AutoencoderTrainConfig(base="b", data="d", train_encoder="no")
