"""Property tests for schedules and the argument helpers of `generate()`."""

from __future__ import annotations

import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stable_audio_3.pipeline.lengths import generation_length, valid_lengths
from stable_audio_3.pipeline.request import as_canceller, per_item, resolve_seed
from stable_audio_3.pipeline.schedules import (
    DEFAULT_SAMPLING_SHIFT,
    FluxShift,
    IdentityShift,
    LengthShift,
    LogSNRShift,
    build_schedule,
    reference_init_schedule,
    shift_from_config,
)

SHIFTS = [
    DEFAULT_SAMPLING_SHIFT,
    LogSNRShift(rate=1.0),
    LengthShift(),
    FluxShift(alpha_min=1.0, alpha_max=6.93),
    IdentityShift(),
]


def test_default_schedule_values() -> None:
    # The released models' 8-step schedule (sigmoid(8.2 t - 2) with exact endpoints).
    expected = torch.tensor([1, 0.994376, 0.984480, 0.957912, 0.890903, 0.745547, 0.512497, 0.273885, 0])
    got = build_schedule(8, torch.tensor([176.0]), DEFAULT_SAMPLING_SHIFT)[0]
    assert torch.allclose(got, expected, atol=1e-6)


def test_reference_init_schedule_is_the_documented_non_monotonic_one() -> None:
    got = reference_init_schedule(8, torch.tensor([100.0]), DEFAULT_SAMPLING_SHIFT, 0.9)[0]
    expected = torch.tensor([0.9, 0.988541, 0.971667, 0.931662, 0.844224, 0.682980, 0.461327, 0.253979, 0])
    assert torch.allclose(got, expected, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.integers(1, 60),
    level=st.floats(0.01, 1.0),
    lengths=st.lists(st.integers(1, 5000), min_size=1, max_size=3),
    shift_index=st.integers(0, len(SHIFTS) - 1),
)
def test_schedules_start_at_the_level_end_at_zero_and_decrease(steps, level, lengths, shift_index) -> None:
    shift = SHIFTS[shift_index]
    if isinstance(shift, LogSNRShift) and shift.rate > 0:
        # With rate > 0 the start log-SNR passes logsnr_end for lengths under anchor / 2^(8.2 / rate)
        # (about 7 frames): the shift itself turns around there. Only rate 0 ships.
        lengths = [max(n, 8) for n in lengths]
    sched = build_schedule(steps, torch.tensor(lengths, dtype=torch.float32), shift, start=level)
    assert sched.shape == (len(lengths), steps + 1)
    assert torch.all(sched[:, 0] == torch.tensor(level, dtype=torch.float32))
    assert torch.all(sched[:, -1] == 0)
    assert torch.all(sched[:, 1:] <= sched[:, :-1])


def test_shift_from_config() -> None:
    assert shift_from_config(None) == DEFAULT_SAMPLING_SHIFT
    assert shift_from_config({"type": "full", "base_shift": 0.5}) == LengthShift(base_shift=0.5)
    assert isinstance(shift_from_config({"base_shift": 0.5}), LengthShift)  # type defaults to "full"
    with pytest.raises(ValueError, match="type must be one of"):
        shift_from_config({"type": "cosine"})
    with pytest.raises(ValueError, match="bad sampling_distribution_shift_options"):
        shift_from_config({"type": "logsnr", "anchor": 3})


@given(st.lists(st.floats(0.01, 400.0), min_size=1, max_size=4), st.floats(0.0, 10.0))
def test_generation_length_covers_the_longest_item(durations, padding) -> None:
    sr, ratio, multiple, cap = 44100, 4096, 2, 16_777_216
    n = generation_length(durations, padding, sr, ratio, multiple, cap)
    assert n % (ratio * multiple) == 0 or n == cap
    assert n >= min(cap, int((max(durations) + padding) * sr))
    valid = valid_lengths(durations, padding, sr, ratio, n // ratio)
    assert all(1 <= v <= n // ratio for v in valid)


def test_reference_lengths() -> None:
    # Examples from the spec: small model, default padding 6 s, default sample_size cap.
    for seconds, frames in ((10, 174), (30, 388), (120, 1292)):
        assert generation_length([seconds], 6.0, 44100, 4096, 2, 5_292_032) // 4096 == frames


def test_per_item_broadcast_and_errors() -> None:
    assert per_item("prompt", "x", 3, str) == ["x", "x", "x"]
    assert per_item("duration", [1, 2.5], 2, float) == [1.0, 2.5]
    with pytest.raises(ValueError, match="prompt has 2 items but batch_size is 3"):
        per_item("prompt", ["a", "b"], 3, str)
    with pytest.raises(TypeError, match="duration must be a number"):
        per_item("duration", ["1"], 1, float)
    with pytest.raises(TypeError, match="negative_prompt must be a string"):
        per_item("negative_prompt", [None], 1, str)


def test_seeds() -> None:
    assert resolve_seed(5) == 5
    drawn = resolve_seed(-1)
    assert 0 <= drawn < 2**31
    with pytest.raises(TypeError, match="seed"):
        resolve_seed(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        resolve_seed(-7)


def test_canceller_forms() -> None:
    ev = threading.Event()
    c = as_canceller(ev)
    assert c is not None and not c()
    ev.set()
    assert c()
    assert as_canceller(lambda: True)()
    with pytest.raises(TypeError, match="cancel"):
        as_canceller(3)  # type: ignore[arg-type]
