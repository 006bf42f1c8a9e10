"""Per-item seeds: item i of a batched call is what a batch-1 call with seed i makes (the server's
request batching depends on it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import checkpoint_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from stable_audio_3 import ArgumentTypeError, ArgumentValueError, StableAudioModel
from stable_audio_3.pipeline.seeds import ItemGenerators

# Batched and batch-1 matmuls may block differently: this is the stage tolerance the parity fixtures
# allow (tests/fixtures/README.md), on audio in [-1, 1].
ATOL = 2e-4


@pytest.fixture(scope="module", params=["A", "B"])
def model(request) -> StableAudioModel:
    return StableAudioModel.from_pretrained(checkpoint_dir(request.param), device="cpu")


# Short padding keeps these tests fast on the tiny fixture models (and leaves silence to check).
FAST = {"steps": 3, "progress": False, "duration_padding_sec": 0.2}


def _solo(model: StableAudioModel, prompt: str, duration: float, seed: int, **kw) -> torch.Tensor:
    return model.generate(prompt, duration=duration, seed=seed, **{**FAST, **kw})[0]


def test_each_item_matches_its_batch_one_call(model: StableAudioModel) -> None:
    prompts, seeds = ["rain", "piano", "drums"], [3, 11, 3]
    batch = model.generate(prompts, duration=1.0, seed=seeds, cfg_scale=2.0, **FAST)
    assert model.last_record.item_seeds == seeds
    assert model.last_record.seed == 3
    for i, (p, s) in enumerate(zip(prompts, seeds, strict=True)):
        solo = _solo(model, p, 1.0, s, cfg_scale=2.0)
        assert batch[i].shape == solo.shape
        assert torch.allclose(batch[i], solo, atol=ATOL, rtol=0), float((batch[i] - solo).abs().max())
    assert not torch.allclose(batch[0], batch[1])


def test_items_of_different_durations_match_their_batch_one_calls(model: StableAudioModel) -> None:
    durations, seeds = [1.0, 0.4], [7, 8]
    with pytest.warns(UserWarning, match="durations differ"):
        batch = model.generate(["a", "b"], duration=durations, seed=seeds, **FAST)
    for i, (d, s) in enumerate(zip(durations, seeds, strict=True)):
        solo = _solo(model, "ab"[i], d, s)
        n = solo.shape[-1]
        assert torch.allclose(batch[i, :, :n], solo, atol=ATOL, rtol=0), float(
            (batch[i, :, :n] - solo).abs().max()
        )
    assert batch.shape[-1] > 0.8 * model.sample_rate
    assert not batch[1, :, int(0.7 * model.sample_rate) :].any()  # silent past duration + padding


def test_a_list_of_one_seed_is_the_int_seed(model: StableAudioModel) -> None:
    a = model.generate("wind", duration=0.5, seed=[42], **FAST)
    b = model.generate("wind", duration=0.5, seed=42, **FAST)
    assert torch.equal(a, b)


def test_inpainting_items_match_their_batch_one_calls(model: StableAudioModel) -> None:
    rng = np.random.default_rng(0)
    source = (rng.standard_normal((2, model.sample_rate)) * 0.1).astype(np.float32)
    kw = {
        "inpaint_audio": (source, model.sample_rate),
        "inpaint_mask_start_seconds": 0.3,
        "inpaint_mask_end_seconds": 0.6,
    }
    batch = model.generate(["x", "y"], duration=1.0, seed=[5, 6], **FAST, **kw)
    for i, s in enumerate([5, 6]):
        solo = _solo(model, "xy"[i], 1.0, s, **kw)
        assert torch.allclose(batch[i], solo, atol=ATOL, rtol=0)


def test_random_entries_are_drawn_and_recorded(model: StableAudioModel) -> None:
    out = model.generate(["a", "b"], duration=0.5, seed=[-1, 4], **FAST)
    drawn, given_seed = model.last_record.item_seeds
    assert given_seed == 4 and drawn >= 0
    again = _solo(model, "a", 0.5, drawn)[None]
    assert torch.allclose(out[:1], again, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    ("seed", "error", "match"),
    [
        ([1, 2, 3], ArgumentValueError, "seed has 3 items but batch_size is 2"),
        ([1, "2"], ArgumentTypeError, "seed must be an int"),
        ([1, 2.5], ArgumentTypeError, "seed must be an int"),
        ([1, -5], ArgumentValueError, "seed must be -1"),
    ],
)
def test_bad_seed_lists_name_the_argument(model: StableAudioModel, seed, error, match) -> None:
    with pytest.raises(error, match=match):
        model.generate(["a", "b"], duration=0.5, seed=seed, steps=1, progress=False)


def test_seed_list_and_generator_are_exclusive(model: StableAudioModel) -> None:
    with pytest.raises(ArgumentValueError, match="per-item seeds or a generator"):
        model.generate(["a", "b"], duration=0.5, seed=[1, 2], generator=torch.Generator(), progress=False)


@settings(max_examples=30, deadline=None)
@given(
    frames=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    seeds=st.data(),
    length_extra=st.integers(0, 5),
)
def test_item_noise_is_each_seeds_own_draw(frames, seeds, length_extra) -> None:
    chosen = seeds.draw(st.lists(st.integers(0, 2**31), min_size=len(frames), max_size=len(frames)))
    gens = ItemGenerators.seeded(chosen, frames, torch.device("cpu"))
    length = max(frames) + length_extra
    noise = gens.randn((len(frames), 3, length), torch.device("cpu"), torch.float32)
    for i, (s, n) in enumerate(zip(chosen, frames, strict=True)):
        own = torch.randn((1, 3, n), generator=torch.Generator().manual_seed(s))
        assert torch.equal(noise[i, :, :n], own[0])
        assert not noise[i, :, n:].any()
