"""The pieces the demo model's training needs beyond the stages themselves: batches of similar
length, bf16 autocast on a CPU, list options from TOML files, and the smaller exported checkpoint."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import pytest
import torch
from conftest import checkpoint_dir
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from test_stages import _losses, _pretrain_config, data  # noqa: F401 (the fixture)

from stable_audio_3 import StableAudioModel
from stable_audio_3.apps import train as train_app
from stable_audio_3.errors import ArgumentValueError
from stable_audio_3.training import ExportConfig, PretrainConfig, build_config, export_checkpoint, pretrain
from stable_audio_3.training.dataset import Clip, caption_weights, similar_length_picks
from stable_audio_3.training.pretrain import parse_oversample


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(1, 300), st.integers(1, 32), st.integers(0, 2**31))
def test_similar_length_picks_stay_in_a_window_of_neighbours(n: int, batch: int, seed: int) -> None:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    picks = similar_length_picks(order, batch, random.Random(seed))
    positions = [order.index(p) for p in picks]
    assert len(picks) == batch and max(positions) - min(positions) < 4 * batch


def test_every_clip_can_be_drawn() -> None:
    rng, order = random.Random(0), list(range(100))
    seen = {p for _ in range(2000) for p in similar_length_picks(order, 4, rng)}
    assert seen == set(order)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(8, 200), st.integers(1, 16), st.integers(0, 2**31), st.booleans())
def test_weighted_picks_never_draw_a_weight_of_zero(n: int, batch: int, seed: int, grouped: bool) -> None:
    weights = [float(i % 3) for i in range(n)]  # every third clip has weight 0
    order = list(range(n))
    random.Random(seed).shuffle(order)
    rng = random.Random(seed)
    picks = similar_length_picks(order, batch, rng, weights=weights) if grouped else None
    picks = picks or rng.choices(range(n), weights=weights, k=batch)
    assert len(picks) == batch and all(weights[p] > 0 for p in picks)


def test_weighted_picks_follow_the_weights() -> None:
    """Clips of weight 2 come about twice as often as clips of weight 1, with length groups too."""
    n, rng = 200, random.Random(0)
    weights = [2.0 if i % 4 == 0 else 1.0 for i in range(n)]
    order = list(range(n))
    rng.shuffle(order)
    counts = [0] * n
    for _ in range(4000):
        for p in similar_length_picks(order, 8, rng, weights=weights):
            counts[p] += 1
    heavy = sum(c for i, c in enumerate(counts) if weights[i] == 2) / (n // 4)
    light = sum(c for i, c in enumerate(counts) if weights[i] == 1) / (n - n // 4)
    assert 1.8 < heavy / light < 2.2


def test_oversample_weights_multiply_per_caption() -> None:
    captions = ["drum kit, rock", "violin", "drum kit, rain"]
    clips = [Clip(Path(f"{i}.wav"), c, 1.0) for i, c in enumerate(captions)]
    assert caption_weights(clips, {}) is None
    assert caption_weights(clips, {"drum kit": 2.0, "rain": 3.0}) == [2.0, 1.0, 6.0]
    with pytest.raises(ArgumentValueError, match="every clip has weight 0"):
        caption_weights(clips, {"": 0.0})


@pytest.mark.parametrize("bad", ["drum kit", "=2", "drum kit=-1", "drum kit=x", "a=inf", "a=nan"])
def test_a_malformed_oversample_item_is_named(bad: str) -> None:
    with pytest.raises(ArgumentValueError, match="oversample: expected TEXT=FACTOR"):
        parse_oversample((bad,))
    with pytest.raises(ArgumentValueError, match=bad.replace("=", ".")):
        PretrainConfig(base="b", data="d", oversample=(bad,))


def test_oversample_keeps_the_text_before_the_last_equals_sign() -> None:
    assert parse_oversample(("tempo=120 BPM=1.5", "riser=0")) == {"tempo=120 BPM": 1.5, "riser": 0.0}


def test_pretraining_in_bf16_on_a_cpu_with_length_groups(data: Path, tmp_path: Path) -> None:  # noqa: F811
    cfg = _pretrain_config(data, tmp_path / "run", steps=12, precision="bf16", group_by_length=True)
    pretrain(cfg)
    losses = [loss for _, loss in _losses(tmp_path / "run")]
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-4:]) < sum(losses[:4])


def test_list_options_come_from_a_toml_file() -> None:
    cfg = build_config(
        PretrainConfig,
        {"base": "b", "data": "d", "sample_prompts": ["a tone", "a drum"]},
        {"steps": 3},
        "test.toml",
    )
    assert cfg.sample_prompts == ("a tone", "a drum") and cfg.steps == 3
    args = train_app.build_parser().parse_args(["pretrain", "--base", "b", "--data", "d", "--sample-prompts"])
    assert args.sample_prompts == []


def test_export_halves_the_weights_and_still_generates(tmp_path: Path) -> None:
    out = export_checkpoint(ExportConfig(model=str(checkpoint_dir("A")), output=str(tmp_path / "small")))
    weights = load_file(str(out / "model.safetensors"))
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float16}
    te = load_file(str(out / "text_encoder" / "model.safetensors"))
    assert {t.dtype for t in te.values() if t.is_floating_point()} == {torch.float16}
    before = (checkpoint_dir("A") / "model.safetensors").stat().st_size
    assert (out / "model.safetensors").stat().st_size < 0.6 * before
    full = StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu")
    half = StableAudioModel.from_pretrained(out, device="cpu")
    a = full.generate("a tone", duration=1.0, steps=4, seed=3, progress=False)
    b = half.generate("a tone", duration=1.0, steps=4, seed=3, progress=False)
    assert torch.isfinite(b).all() and (a - b).abs().max() < 0.05 * a.abs().max() + 1e-3
    with pytest.raises(ValueError, match="dtype"):
        ExportConfig(model="m", output="o", dtype="int8")


def test_waveform_loss_is_relative_to_the_signal_power() -> None:
    from stable_audio_3.training.autoencoder_trainer import waveform_loss

    x = torch.randn(2, 2, 1000, generator=torch.Generator().manual_seed(0))
    assert waveform_loss(x, x) == 0
    assert waveform_loss(torch.zeros_like(x), x) == pytest.approx(1.0)
    assert waveform_loss(0.1 * torch.zeros_like(x), 0.1 * x) == pytest.approx(1.0)
    assert waveform_loss(0.5 * x, x) == pytest.approx(0.25)


def test_the_prompt_cache_never_evicts_a_prompt_of_the_current_call() -> None:
    model = StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu")
    prompt = model.networks.conditioners[model.config.prompt.id]
    prompt._cache_size = 4
    first = prompt(["a", "b", "c", "d"], "cpu")[0]
    again = prompt(["a", "e", "f", "g", "h"], "cpu")[0]  # "a" is the oldest entry: it must survive
    assert torch.equal(first[0], again[0])
    many = prompt([f"p{i}" for i in range(9)], "cpu")[0]  # more prompts than the cache holds
    assert many.shape[0] == 9 and len(prompt._cache) == 9


def test_bf16_on_a_cpu_without_native_bf16_warns(monkeypatch) -> None:
    from stable_audio_3.training import loop

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    with pytest.warns(UserWarning, match="emulated"), loop.autocast("bf16", torch.device("cpu")):
        pass
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with loop.autocast("bf16", torch.device("cpu")):
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16
