"""`stable-audio-train new-model`: a DiT template, a trained autoencoder and a new text encoder
composed into a checkpoint folder that loads, generates and pre-trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import checkpoint_dir
from safetensors.torch import load_file

from stable_audio_3 import AutoencoderModel, ConfigError, StableAudioModel
from stable_audio_3.training import NewModelConfig, new_model
from stable_audio_3.training.new_model import compose_config

CAPTIONS = ["trumpet, D minor chord", "drum kit, rock beat, 120 BPM", "violin, A4 note", "riser"]


def _captions(folder: Path) -> Path:
    folder.mkdir()
    rows = [{"path": f"{i}.wav", "caption": c} for i, c in enumerate(CAPTIONS)]
    for i in range(len(CAPTIONS)):
        sf.write(str(folder / f"{i}.wav"), np.zeros((600, 2), dtype=np.float32), 6000)
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "manifest.jsonl"


def _template(tmp_path: Path, **dit: int) -> Path:
    raw = json.loads((checkpoint_dir("A") / "model_config.json").read_text())
    raw["model"]["pretransform"]["config"] = "replaced"
    raw["model"]["diffusion"]["config"].update(dit)
    path = tmp_path / "template.json"
    path.write_text(json.dumps(raw))
    return path


def _config(tmp_path: Path, template: Path, **options) -> NewModelConfig:
    """A tiny text encoder over the test captions, composed with fixture A's autoencoder."""
    return NewModelConfig(
        template=str(template),
        autoencoder=str(checkpoint_dir("A")),
        captions=str(_captions(tmp_path / "data")),
        output=str(tmp_path / "new"),
        **{"text_layers": 1, "text_heads": 2, "text_head_dim": 8, "text_ff": 16, **options},
    )


def test_composed_folder_keeps_the_autoencoder_and_knows_the_captions(tmp_path: Path) -> None:
    cfg = _config(tmp_path, _template(tmp_path, depth=1))
    folder = new_model(cfg)
    model = StableAudioModel.from_pretrained(folder, device="cpu")
    assert model.config.diffusion.dit.depth == 1
    source = AutoencoderModel.from_pretrained(checkpoint_dir("A"), device="cpu")
    for (name, a), b in zip(
        model.networks.autoencoder.state_dict().items(), source.autoencoder.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    words = json.loads((folder / "text_encoder" / "tokenizer.json").read_text())["model"]["vocab"]
    assert {"trumpet", "minor", "bpm", "a4", "riser"} <= set(words)
    audio = model.generate(CAPTIONS[0], duration=0.5, steps=2, seed=0, progress=False)
    assert torch.isfinite(audio).all()
    again = new_model(NewModelConfig(**{**vars(cfg), "output": str(tmp_path / "again")}))
    a, b = load_file(str(folder / "model.safetensors")), load_file(str(again / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the seed decides
    assert not list(tmp_path.glob(".*"))  # no staging folder left behind


def test_the_latent_width_follows_the_autoencoder() -> None:
    raw = json.loads((checkpoint_dir("A") / "model_config.json").read_text())
    ae = {"sample_rate": 8000, "model": {**raw["model"]["pretransform"]["config"], "latent_dim": 4}}
    composed = compose_config(raw, ae)
    dit = composed["model"]["diffusion"]["config"]
    assert composed["sample_rate"] == 8000 and composed["model"]["io_channels"] == 4
    assert dit["io_channels"] == 4 and dit["local_add_cond_dim"] == 5
    assert composed["sample_size"] % (256 * 2) == 0


def test_a_config_file_is_not_a_trained_autoencoder(tmp_path: Path) -> None:
    manifest = _captions(tmp_path / "data")
    cfg = NewModelConfig(
        template=str(_template(tmp_path)),
        autoencoder=str(checkpoint_dir("A") / "model_config.json"),
        captions=str(manifest),
        output=str(tmp_path / "x"),
    )
    with pytest.raises(ConfigError, match="not a trained folder"):
        new_model(cfg)


@pytest.mark.parametrize(("scale", "expected"), [(0.0, None), (1.5, 1.5)])
def test_sinusoidal_positions_start_at_the_chosen_scale(tmp_path: Path, scale: float, expected) -> None:
    template = _template(tmp_path, depth=1, use_sinusoidal_emb=True)
    weights = load_file(
        str(new_model(_config(tmp_path, template, position_scale=scale)) / "model.safetensors")
    )
    width = json.loads(template.read_text())["model"]["diffusion"]["config"]["embed_dim"]
    value = weights["model.model.transformer.pos_emb.scale"].item()
    assert value == pytest.approx(width**-0.5 if expected is None else expected)


def test_learned_positions_start_at_the_chosen_scale(tmp_path: Path) -> None:
    template = _template(tmp_path, depth=1, use_abs_pos_emb=True, abs_pos_emb_max_length=12)
    weights = load_file(str(new_model(_config(tmp_path, template, position_scale=0.8)) / "model.safetensors"))
    table = weights["model.model.transformer.pos_emb.emb.weight"]
    dit = json.loads(template.read_text())["model"]["diffusion"]["config"]
    assert table.shape == (12 + dit["num_memory_tokens"], dit["embed_dim"])
    added = table * dit["embed_dim"] ** -0.5  # what the DiT adds to its tokens
    assert added.pow(2).mean().sqrt().item() == pytest.approx(0.8, rel=1e-4)


def test_a_negative_position_scale_is_named() -> None:
    with pytest.raises(ValueError, match="position_scale"):
        NewModelConfig(template="t", autoencoder="a", captions="c", position_scale=-1.0)


def test_a_position_scale_without_positions_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="position_scale.*use_sinusoidal_emb or use_abs_pos_emb"):
        new_model(_config(tmp_path, _template(tmp_path, depth=1), position_scale=1.0))


def test_generation_stays_within_the_learned_positions(tmp_path: Path) -> None:
    template = _template(tmp_path, depth=1, use_abs_pos_emb=True, abs_pos_emb_max_length=8)
    model = StableAudioModel.from_pretrained(new_model(_config(tmp_path, template)), device="cpu")
    frame = model.config.pretransform.autoencoder.downsampling_ratio
    audio = model.generate(CAPTIONS[1], duration=0.1, steps=2, seed=0, sample_size=8 * frame, progress=False)
    assert torch.isfinite(audio).all()
    with pytest.raises(ValueError, match="sample_size .* learned positions cover .8 latent frames"):
        model.generate(CAPTIONS[1], duration=0.1, steps=2, seed=0, sample_size=10 * frame, progress=False)


def test_split_digits_reaches_the_written_tokenizer(tmp_path: Path) -> None:
    folder = new_model(_config(tmp_path, _template(tmp_path, depth=1), split_digits=True))
    vocab = json.loads((folder / "text_encoder" / "tokenizer.json").read_text())["model"]["vocab"]
    assert {"a", "4"} <= set(vocab) and "a4" not in vocab
