"""Loading: strict key checking, config validation, registry names through a mocked hub."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import checkpoint_dir, full_t5gemma_folder
from safetensors.torch import load_file, save_file

import stable_audio_3.official.hub as hub_module
from stable_audio_3 import AutoencoderModel, CheckpointError, ConfigError, StableAudioModel
from stable_audio_3.official.checkpoint import official_to_ours, ours_to_official
from stable_audio_3.official.config import load_model_config


def _copy_checkpoint(tmp_path: Path, config: str = "A") -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(checkpoint_dir(config), dst)
    for p in dst.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    return dst


def _rewrite_weights(ckpt: Path, edit) -> None:
    tensors = load_file(str(ckpt / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(ckpt / "model.safetensors"))


def test_key_translation_round_trips_for_every_fixture_key(config_key: str) -> None:
    keys = load_file(str(checkpoint_dir(config_key) / "model.safetensors")).keys()
    for key in keys:
        assert ours_to_official(official_to_ours(key)) == key


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    ckpt = _copy_checkpoint(tmp_path)
    gone = "model.model.transformer.layers.1.self_attn.to_qkv.weight"
    _rewrite_weights(ckpt, lambda t: t.pop(gone))
    with pytest.raises(CheckpointError, match=r"missing 1 tensor\(s\): " + gone.replace(".", r"\.")):
        StableAudioModel.from_pretrained(ckpt, device="cpu")


def test_unexpected_tensor_is_named(tmp_path: Path) -> None:
    ckpt = _copy_checkpoint(tmp_path)
    extra = "model.model.transformer.layers.0.surprise.weight"
    _rewrite_weights(ckpt, lambda t: t.__setitem__(extra, torch.zeros(3)))
    with pytest.raises(CheckpointError, match="unexpected 1 tensor.*surprise"):
        StableAudioModel.from_pretrained(ckpt, device="cpu")


def test_wrong_shape_is_named(tmp_path: Path) -> None:
    ckpt = _copy_checkpoint(tmp_path)
    key = "pretransform.model.bottleneck.scaling_factor"
    _rewrite_weights(ckpt, lambda t: t.__setitem__(key, torch.zeros(1, 5, 1)))
    with pytest.raises(CheckpointError, match=r"wrong shape.*bottleneck\.scaling_factor \(file \(1, 5, 1\)"):
        StableAudioModel.from_pretrained(ckpt, device="cpu")


def test_unknown_config_key_is_named(tmp_path: Path) -> None:
    ckpt = _copy_checkpoint(tmp_path)
    cfg = json.loads((ckpt / "model_config.json").read_text())
    cfg["model"]["diffusion"]["config"]["bogus_option"] = 1
    (ckpt / "model_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="bogus_option"):
        load_model_config(ckpt / "model_config.json")


def test_unsupported_objective_is_explained(tmp_path: Path) -> None:
    ckpt = _copy_checkpoint(tmp_path)
    cfg = json.loads((ckpt / "model_config.json").read_text())
    cfg["model"]["diffusion"]["diffusion_objective"] = "v"
    (ckpt / "model_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="diffusion_objective"):
        StableAudioModel.from_pretrained(ckpt, device="cpu")


def test_bad_names_and_paths() -> None:
    with pytest.raises(ValueError, match="unknown model 'small-musik'"):
        StableAudioModel.from_pretrained("small-musik")
    with pytest.raises(FileNotFoundError):
        StableAudioModel.from_pretrained("./no/such/dir")
    with pytest.raises(ValueError, match="AutoencoderModel"):
        StableAudioModel.from_pretrained("same-s")
    with pytest.raises(ValueError, match="attention_padding"):
        StableAudioModel.from_pretrained(checkpoint_dir("A"), attention_padding="sometimes")


def test_max_duration_comes_from_the_checkpoint() -> None:
    cfg = load_model_config(checkpoint_dir("A") / "model_config.json")
    assert cfg.max_duration == pytest.approx(cfg.sample_size / cfg.sample_rate)


class FakeHub:
    """Stands in for huggingface_hub: serves fixture files as if they were cached snapshots."""

    def __init__(self, root: Path, source: Path) -> None:
        self.root, self.source, self.calls = root, source, []

    def snapshot(self, repo: str) -> Path:
        path = self.root / repo.replace("/", "--")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def hf_hub_download(self, repo_id: str, filename: str, revision: str | None = None, **_) -> str:
        self.calls.append(("file", repo_id, filename, revision))
        dst = self.snapshot(repo_id) / filename
        if not dst.exists():
            shutil.copy(self.source / filename, dst)
        return str(dst)

    def snapshot_download(self, repo_id: str, revision: str | None = None, allow_patterns=None, **_) -> str:
        self.calls.append(("snapshot", repo_id, tuple(allow_patterns or ()), revision))
        snap = self.snapshot(repo_id)
        for pattern in allow_patterns or ["*"]:
            sub = pattern.rstrip("/*")
            if sub and not (snap / sub).exists():
                shutil.copytree(self.source / sub, snap / sub)
        return str(snap)

    def try_to_load_from_cache(self, repo_id: str, filename: str, revision: str | None = None, **_):
        path = self.root / repo_id.replace("/", "--") / filename
        return str(path) if path.exists() else None


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch) -> FakeHub:
    import huggingface_hub

    fake = FakeHub(tmp_path / "hub", checkpoint_dir("A"))
    for name in ("hf_hub_download", "snapshot_download", "try_to_load_from_cache"):
        monkeypatch.setattr(huggingface_hub, name, getattr(fake, name))
    return fake


def test_registry_name_downloads_official_repo_and_text_encoder(fake_hub: FakeHub) -> None:
    model = StableAudioModel.from_pretrained("small-music", device="cpu", revision="v1")
    repo = hub_module.MODEL_REPOS["small-music"]
    assert ("file", repo, "model_config.json", "v1") in fake_hub.calls
    assert ("file", repo, "model.safetensors", "v1") in fake_hub.calls
    assert ("snapshot", repo, ("text_encoder/*",), "v1") in fake_hub.calls
    audio = model.generate("a test", duration=0.5, steps=2, seed=3, progress=False)
    assert audio.shape == (1, 2, int(0.5 * model.sample_rate))


def test_autoencoder_reuses_a_cached_full_checkpoint(fake_hub: FakeHub) -> None:
    fake_hub.hf_hub_download(hub_module.MODEL_REPOS["small-sfx"], "model_config.json")
    fake_hub.hf_hub_download(hub_module.MODEL_REPOS["small-sfx"], "model.safetensors")
    fake_hub.calls.clear()
    ae = AutoencoderModel.from_pretrained("same-s", device="cpu")
    assert fake_hub.calls == []  # nothing downloaded: the cached small-sfx file was used
    z = ae.encode((torch.zeros(2, 3000), ae.sample_rate))
    assert z.shape[:2] == (1, 8)


def test_autoencoder_from_local_full_checkpoint_and_standalone_file(tmp_path: Path) -> None:
    full = AutoencoderModel.from_pretrained(checkpoint_dir("E"), device="cpu")
    standalone = tmp_path / "same"
    standalone.mkdir()
    cfg = json.loads((checkpoint_dir("E") / "model_config.json").read_text())
    (standalone / "model_config.json").write_text(
        json.dumps({"sample_rate": cfg["sample_rate"], "model": cfg["model"]["pretransform"]["config"]})
    )
    tensors = load_file(str(checkpoint_dir("E") / "model.safetensors"))
    prefix = "pretransform.model."
    save_file(
        {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)},
        str(standalone / "model.safetensors"),
    )
    alone = AutoencoderModel.from_pretrained(standalone, device="cpu")
    wave = torch.sin(torch.arange(4000) / 7.0).repeat(2, 1)
    z1 = full.encode((wave, full.sample_rate))
    z2 = alone.encode((wave, alone.sample_rate))
    assert torch.equal(z1, z2)
    assert full.decode(z1).shape == (1, 2, z1.shape[-1] * full.downsampling_ratio)


def test_offline_without_cache_says_what_to_do(monkeypatch, tmp_path: Path) -> None:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*_, **__):
        raise LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache.*local checkpoint directory"):
        StableAudioModel.from_pretrained("medium", device="cpu")


def test_gated_repo_says_how_to_log_in(monkeypatch) -> None:
    import huggingface_hub

    class GatedRepoError(OSError):  # stands in for huggingface_hub's (an OSError subclass)
        pass

    def gated(*_, **__):
        raise GatedRepoError("401 Client Error: access to this gated repo is restricted")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", gated)
    with pytest.raises(PermissionError, match="gated.*log in"):
        AutoencoderModel.from_pretrained("same-l", device="cpu")


def test_text_encoder_reads_a_full_encoder_decoder_file(tmp_path: Path) -> None:
    """The released text-encoder folder holds the whole T5Gemma encoder-decoder; only the encoder is used."""
    from stable_audio_3.models.conditioners import TextEncoder

    full = full_t5gemma_folder(tmp_path)
    encoder = TextEncoder(tmp_path)
    ids, mask = encoder.tokenize(["warm pads, slow tempo"], 24)
    with torch.no_grad():
        expected = full.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(encoder(ids, mask), expected)
