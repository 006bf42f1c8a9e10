"""Property-based fuzzing of the public API on the tiny model: whatever the arguments, a call either
returns finite audio of the documented shape or raises a ValueError/TypeError of ours. Each
argument is drawn from a mix of valid values, edge values and wrong types; derandomized, so CI runs
the same 200+ examples every time."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from conftest import checkpoint_dir
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stable_audio_3 import AutoencoderModel, StableAudioError, StableAudioModel

SR = 6000
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
WRONG = st.sampled_from([None, "1", b"x", [], {}, object(), float("nan"), float("inf"), -1, True, 10**9])


SEEDS = st.integers(0, 2**32 - 1)


def _noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Gaussian noise fixed by a drawn seed, not by the global RNG (which earlier tests move), so a
    failing example replays exactly."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _maybe_wrong(valid: st.SearchStrategy, p_wrong: int = 6) -> st.SearchStrategy:
    """Mostly `valid`, about one time in `p_wrong` a wrong or extreme value."""
    return st.integers(0, p_wrong - 1).flatmap(lambda i: WRONG if i == 0 else valid)


def _audio_input() -> st.SearchStrategy:
    """Audio arguments as users pass them, right and wrong."""
    samples = st.integers(0, 3000)
    waves = st.tuples(st.sampled_from([1, 2, 3]), samples, SEEDS).map(lambda s: _noise(s[:2], s[2]) * 0.3)
    rates = st.sampled_from([SR, 44100, 8000, 0, 1, 2.5])
    return st.one_of(
        st.none(),
        st.tuples(waves, rates),
        st.tuples(rates, waves),
        waves,
        st.just("/nonexistent.wav"),
        st.just((np.zeros(500, np.int16), SR)),
    )


@st.composite
def _editing(draw: st.DrawFn) -> dict[str, Any]:
    """No editing, audio-to-audio or inpainting, with plausible sources and regions."""
    kind = draw(st.sampled_from(["none", "none", "audio_to_audio", "inpainting"]))
    if kind == "none":
        return {}
    shape = (draw(st.sampled_from([1, 2])), draw(st.integers(300, 6000)))
    wave = _noise(shape, draw(SEEDS)) * 0.3
    source = (wave, draw(st.sampled_from([SR, 8000, 44100])))
    if kind == "audio_to_audio":
        return {"init_audio": source, "init_noise_level": draw(st.floats(0.05, 1.0))}
    starts = draw(st.lists(st.floats(0.0, 0.6), min_size=1, max_size=2))
    ends = [s + draw(st.floats(0.05, 0.5)) for s in starts]
    return {"inpaint_audio": source, "inpaint_mask_start_seconds": starts, "inpaint_mask_end_seconds": ends}


VALID_VALUES: dict[str, st.SearchStrategy] = {
    "prompt": st.one_of(st.text(max_size=12), st.lists(st.text(max_size=8), min_size=1, max_size=3)),
    "duration": st.floats(0.01, 1.2),
    "steps": st.integers(1, 3),
    "cfg_scale": st.floats(0.0, 6.0),
    "seed": st.integers(-1, 2**31),
    "sampler": st.sampled_from([None, "euler", "dpmpp", "pingpong"]),
    "apg_scale": st.floats(0.0, 1.0),
    "duration_padding_sec": st.floats(0.0, 2.0),
    "cfg_interval": st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)).map(lambda t: tuple(sorted(t))),
    "return_latents": st.booleans(),
    "chunked_decode": st.sampled_from([None, False, True]),
}
VALID = st.fixed_dictionaries(VALID_VALUES)
# Faults: 0-2 arguments replaced by a wrong type, an extreme value or a mismatched list.
FAULT_VALUES = st.one_of(
    WRONG,
    st.sampled_from(
        [0, 0.0, -0.5, 1e-9, 1e6, 2**63, 1001, "euler", ["a", "b"], [0.5, 0.6], (1.0,), (0.9, 0.1)]
    ),
    _audio_input(),
)
FAULTS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                *VALID_VALUES,
                "batch_size",
                "negative_prompt",
                "init_audio",
                "init_noise_level",
                "inpaint_audio",
                "inpaint_mask_start_seconds",
                "inpaint_mask_end_seconds",
                "sigmas",
                "sample_size",
            ]
        ),
        FAULT_VALUES,
    ),
    max_size=2,
)
GENERATE_ARGS = st.tuples(VALID, _editing(), FAULTS).map(lambda t: {**t[0], **t[1], **dict(t[2])})


@pytest.fixture(scope="module")
def model() -> StableAudioModel:
    return StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu")


def _ours(err: BaseException) -> bool:
    return isinstance(err, StableAudioError) and isinstance(err, (ValueError, TypeError))


def _expected_batch(args: dict[str, Any]) -> int:
    if args.get("batch_size") is not None:
        return args["batch_size"]
    return len(args["prompt"]) if isinstance(args["prompt"], list) else 1


def _check_output(model: StableAudioModel, args: dict[str, Any], out: torch.Tensor) -> None:
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.dim() == 3 and out.shape[0] == _expected_batch(args)
    if args["return_latents"]:
        assert out.shape[1] == model.autoencoder.config.latent_dim
        return
    assert out.shape[1] == 2 and out.abs().max() <= 1.0
    durations = args["duration"] if isinstance(args["duration"], list) else [args["duration"]]
    durations = [model.default_duration if d is None else d for d in durations]  # None: the default
    longest = int(max(durations) * SR)
    if len(set(durations)) == 1:
        assert out.shape[2] == longest
    else:
        assert out.shape[2] >= longest


@FUZZ
@given(args=GENERATE_ARGS)
def test_generate_returns_finite_audio_or_an_error_of_ours(
    model: StableAudioModel, args: dict[str, Any]
) -> None:
    try:
        out = model.generate(**args, progress=False)
    except Exception as err:  # noqa: BLE001 - the property is about which errors escape
        assert _ours(err), f"{type(err).__module__}.{type(err).__name__}: {err}"
        event(f"refused: {type(err).__name__}")
        return
    event("generated")
    _check_output(model, args, out)


LATENTS = st.tuples(st.integers(0, 3), st.sampled_from([8, 8, 8, 3]), st.integers(0, 6), SEEDS).flatmap(
    lambda s: st.sampled_from(
        [
            _noise(s[:3], s[3]),
            _noise(s[:3], s[3]) * 50,
            torch.full(s[:3], float("nan")),
            torch.zeros(s[:3], dtype=torch.int64),
        ]
    )
)


@FUZZ
@given(
    latents=st.one_of(LATENTS, WRONG),
    chunked=_maybe_wrong(st.booleans(), 8),
    chunk_size=_maybe_wrong(st.integers(0, 8), 8),
    overlap=_maybe_wrong(st.integers(0, 4), 8),
)
def test_decode_returns_finite_audio_or_an_error_of_ours(
    model, latents, chunked, chunk_size, overlap
) -> None:
    ae = AutoencoderModel(model.autoencoder, SR, model.device)
    try:
        out = ae.decode(latents, chunked=chunked, chunk_size=chunk_size, overlap=overlap)
    except Exception as err:  # noqa: BLE001
        assert _ours(err), f"{type(err).__module__}.{type(err).__name__}: {err}"
        return
    assert torch.isfinite(out).all() and out.dtype == torch.float32
    assert out.shape[:2] == (latents.shape[0], 2) and out.shape[2] >= latents.shape[2] * ae.downsampling_ratio


@FUZZ
@given(
    audio=st.one_of(_audio_input(), WRONG),
    sample_rate=st.one_of(st.none(), st.sampled_from([SR, 44100, 0, "x"])),
)
def test_encode_returns_finite_latents_or_an_error_of_ours(model, audio, sample_rate) -> None:
    ae = AutoencoderModel(model.autoencoder, SR, model.device)
    try:
        z = ae.encode(audio, sample_rate=sample_rate)
    except Exception as err:  # noqa: BLE001
        assert _ours(err), f"{type(err).__module__}.{type(err).__name__}: {err}"
        return
    assert torch.isfinite(z).all() and z.dim() == 3 and z.shape[1] == model.autoencoder.config.latent_dim
    assert z.shape[2] >= 1 and math.isfinite(float(z.abs().max()))


def test_fuzzing_left_the_model_as_loaded(model: StableAudioModel) -> None:
    """Runs after the fuzz tests (file order): hundreds of calls, good and bad, changed nothing."""
    fresh = StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu")
    args = {"prompt": "wind", "duration": 0.5, "steps": 2, "seed": 5, "progress": False}
    assert torch.equal(model.generate(**args), fresh.generate(**args))
