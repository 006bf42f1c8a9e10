"""Editing modes: masks, audio inputs, chunked decoding and every bad-input case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import checkpoint_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from stable_audio_3 import StableAudioModel
from stable_audio_3.audio import to_waveform
from stable_audio_3.pipeline.inpainting import (
    limit_mask,
    mask_from_regions,
    mask_to_latents,
    regions_from_seconds,
)

_MODELS: dict[str, StableAudioModel] = {}


def load(config: str) -> StableAudioModel:
    if config not in _MODELS:
        _MODELS[config] = StableAudioModel.from_pretrained(checkpoint_dir(config), device="cpu")
    return _MODELS[config]


def _sine(n: int, sr: int, channels: int = 2) -> torch.Tensor:
    t = torch.arange(n) / sr
    return torch.stack([torch.sin(2 * torch.pi * 220 * (c + 1) * t) * 0.3 for c in range(channels)])


# ---------------------------------------------------------------- masks


@settings(max_examples=80, deadline=None)
@given(
    regions=st.lists(
        st.tuples(st.floats(0.0, 1.9), st.floats(0.01, 1.0)).map(lambda r: (r[0], r[0] + r[1])),
        min_size=1,
        max_size=4,
    ),
    duration=st.floats(1.0, 2.0),
)
def test_kept_regions_are_exactly_where_the_caller_said(regions, duration) -> None:
    sr, ratio, n = 6000, 256, 256 * 188  # generation lengths are whole latent frames
    regions = [(s, e) for s, e in regions if s < duration]
    if not regions:
        return
    mask = limit_mask(mask_from_regions(regions, n, sr), n, duration, sr)
    for i in range(0, n, 997):
        inside = any(int(s * sr) <= i < int(e * sr) for s, e in regions) or i >= int(duration * sr)
        assert mask[0, i].item() == (0.0 if inside else 1.0)
    latent = mask_to_latents(mask, n // ratio)[0, 0]
    for f in range(n // ratio):
        assert latent[f].item() == mask[0, f * ratio].item()  # frame f takes sample f * ratio


@pytest.mark.parametrize(
    ("start", "end", "error", "pattern"),
    [
        (1.0, 0.5, ValueError, "start 1.0 must be before end 0.5"),
        (0.5, 0.5, ValueError, "must be before end"),
        (-0.1, 0.5, ValueError, "inpaint_mask_start_seconds\\[0\\] is negative"),
        (5.0, 6.0, ValueError, "past the generated duration"),
        ([0.1, 0.5], [0.3], ValueError, "has 2 values but inpaint_mask_end_seconds has 1"),
        (0.1, [0.3], TypeError, "both be numbers or both be lists"),
        ([], [], ValueError, "at least one region"),
        (["a"], [0.3], TypeError, "inpaint_mask_start_seconds\\[0\\] must be a number"),
        (float("nan"), 0.3, ValueError, "must be finite"),
    ],
)
def test_bad_regions(start, end, error, pattern) -> None:
    with pytest.raises(error, match=pattern):
        regions_from_seconds(start, end, 2.0)


def test_region_end_past_duration_is_clamped_with_a_warning() -> None:
    model = load("A")
    src = (model.sample_rate, _sine(6000, model.sample_rate))
    with pytest.warns(UserWarning, match="clamped"):
        model.generate(
            "x",
            duration=1.0,
            steps=2,
            seed=0,
            inpaint_audio=src,
            inpaint_mask_start_seconds=0.5,
            inpaint_mask_end_seconds=3.0,
            progress=False,
        )


# ---------------------------------------------------------------- audio inputs


def test_audio_input_forms_agree(tmp_path: Path) -> None:
    sr = 6000
    wave = _sine(3000, sr)
    path = tmp_path / "a.wav"
    sf.write(str(path), wave.numpy().T, sr, subtype="FLOAT")
    ref = to_waveform((wave, sr), "init_audio", sr)
    assert torch.equal(ref, wave)
    assert torch.equal(to_waveform((sr, wave), "init_audio", sr), ref)
    assert torch.equal(to_waveform((wave.numpy().T.copy(), sr), "init_audio", sr), ref)  # channels last
    assert torch.allclose(to_waveform(path, "init_audio", sr), ref, atol=1e-7)
    mono = to_waveform((wave[0], sr), "init_audio", sr)
    assert mono.shape == (2, 3000) and torch.equal(mono[0], mono[1])
    assert torch.equal(to_waveform((wave[None], sr), "init_audio", sr), ref)  # (1, C, T)
    pcm = (wave.numpy().T * 32767).astype(np.int16)
    assert torch.allclose(to_waveform((sr, pcm), "init_audio", sr), ref, atol=1e-4)


def test_audio_is_resampled_with_a_real_resampler() -> None:
    wave = _sine(4410, 44100)
    out = to_waveform((wave, 44100), "inpaint_audio", 6000)
    assert out.shape == (2, 600)
    expected = _sine(600, 6000)
    assert (out[:, 50:-50] - expected[:, 50:-50]).abs().max().item() < 1e-2


@pytest.mark.parametrize(
    ("value", "error", "pattern"),
    [
        ((torch.full((2, 100), float("nan")), 6000), ValueError, "init_audio contains NaN"),
        ((torch.zeros(2, 0), 6000), ValueError, "init_audio is empty"),
        ((torch.zeros(3, 100), 6000), ValueError, "init_audio has 3 channels"),
        ((torch.zeros(2, 100), "6000"), ValueError, "init_audio must be \\(waveform, sample_rate\\)"),
        ((6000, 6000), ValueError, "init_audio must be \\(waveform, sample_rate\\)"),
        ((torch.zeros(2, 100), 6000, 1), ValueError, "pair"),
        (torch.zeros(2, 100), ValueError, "init_audio: a bare waveform needs its sample rate"),
        ("/no/such/file.wav", FileNotFoundError, "audio file not found"),
        (3.5, TypeError, "init_audio must be a path"),
        ((np.zeros((2, 100), dtype=np.uint8), 6000), TypeError, "init_audio: unsupported sample dtype"),
        ((torch.zeros(2, 2, 2, 100), 6000), ValueError, "init_audio must be 1-D or 2-D"),
    ],
)
def test_bad_audio_inputs_name_the_argument(value, error, pattern) -> None:
    with pytest.raises(error, match=pattern):
        to_waveform(value, "init_audio", 6000)


def test_generate_rejects_bad_edit_arguments() -> None:
    model = load("A")
    src = (model.sample_rate, _sine(6000, model.sample_rate))
    base = {"prompt": "x", "duration": 1.0, "steps": 2, "seed": 0, "progress": False}
    with pytest.raises(ValueError, match="inpaint_audio needs the regions"):
        model.generate(**base, inpaint_audio=src)
    with pytest.raises(ValueError, match="both inpaint_mask_start_seconds and inpaint_mask_end_seconds"):
        model.generate(**base, inpaint_audio=src, inpaint_mask_start_seconds=0.2)
    with pytest.raises(ValueError, match="init_noise_level must be <= 1"):
        model.generate(**base, init_audio=src, init_noise_level=1.5)
    with pytest.raises(ValueError, match="init_noise_level must be > 0"):
        model.generate(**base, init_audio=src, init_noise_level=0.0)
    with pytest.raises(ValueError, match="init_noise_level only applies with init_audio"):
        model.generate(**base, init_noise_level=0.5)
    with pytest.raises(ValueError, match="inpaint_mask must have shape"):
        model.generate(**base, inpaint_audio=src, inpaint_mask=torch.ones(3, 5, 5))
    with pytest.raises(ValueError, match="inpaint_mask values must be in"):
        model.generate(**base, inpaint_audio=src, inpaint_mask=torch.full((1, 100), 2.0))


# ---------------------------------------------------------------- batches and modes


def test_batched_inpainting_with_per_item_prompts_and_durations() -> None:
    model = load("A")
    src = (model.sample_rate, _sine(9000, model.sample_rate))
    with pytest.warns(UserWarning, match="durations differ"):
        audio = model.generate(
            ["a", "b", "c"],
            duration=[1.5, 1.0, 1.2],
            steps=2,
            seed=3,
            inpaint_audio=src,
            inpaint_mask_start_seconds=[0.2, 0.8],
            inpaint_mask_end_seconds=[0.4, 1.0],
            progress=False,
        )
    assert audio.shape[0] == 3 and torch.isfinite(audio).all()


def test_prebuilt_mask_equals_the_same_regions_in_seconds() -> None:
    model = load("B")
    sr = model.sample_rate
    src = (sr, _sine(int(1.5 * sr), sr))
    base = {"prompt": "x", "duration": 1.5, "steps": 3, "seed": 4, "inpaint_audio": src, "progress": False}
    a = model.generate(**base, inpaint_mask_start_seconds=0.5, inpaint_mask_end_seconds=1.0)
    mask = torch.ones(1, int(1.5 * sr))
    mask[:, int(0.5 * sr) : int(1.0 * sr)] = 0
    b = model.generate(**base, inpaint_mask=mask)
    assert torch.equal(a, b)


def test_audio_to_audio_schedule_starts_at_the_level_and_low_levels_stay_close() -> None:
    model = load("A")
    sr = model.sample_rate
    src = (sr, _sine(int(1.5 * sr), sr))
    model.generate("x", duration=1.5, steps=6, seed=1, init_audio=src, init_noise_level=0.3, progress=False)
    sig = torch.tensor(model.last_record.sigmas[0])
    assert sig[0].item() == pytest.approx(0.3) and sig[-1] == 0
    assert torch.all(sig[1:] <= sig[:-1])


@settings(max_examples=6, deadline=None)
@given(frames=st.integers(34, 90), config=st.sampled_from(["A", "E"]))
def test_chunked_and_full_decode_agree(frames: int, config: str) -> None:
    ae = load(config).autoencoder
    if config == "A":
        # SAME-S attends in windows of two latents: generation lengths are always even, and an odd
        # full decode pads with a zero token that the chunked decode never sees.
        frames += frames % 2
    z = torch.randn(1, ae.config.latent_dim, frames, generator=torch.Generator().manual_seed(frames))
    with torch.inference_mode():
        full = ae.decode(z)[..., : frames * ae.config.downsampling_ratio]
        chunked = ae.decode_chunked(z, chunk_size=32, overlap=8)
    assert chunked.shape == full.shape
    assert (chunked - full).abs().max().item() <= 1e-4 * max(1.0, full.abs().max().item())
