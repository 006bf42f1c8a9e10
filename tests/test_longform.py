"""Long-form generation on the demo model (10.24 s maximum) at 5x its maximum: exact length, seams
crossfaded without a jump, bounded chunks (memory constant in the length), the prompt schedule and
seeds per window, streaming into a file, argument errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from stable_audio_3 import ArgumentTypeError, ArgumentValueError, StableAudioModel, generate_long, iter_long

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import longform_seams as seams  # noqa: E402  (the seam measures, shared with the README's figures)

FAST = seams.FAST


@pytest.fixture(scope="module")
def model() -> StableAudioModel:
    return StableAudioModel.from_pretrained("demo", device="cpu")


def test_five_times_the_maximum_with_seamless_joins(model: StableAudioModel) -> None:
    rate, total = model.sample_rate, 5 * model.max_duration
    prompt = "drum kit, rock beat, 120 BPM"
    audio = generate_long(model, prompt, total, seed=1, overlap=seams.OVERLAP, **FAST)
    assert audio.shape == (2, int(total * rate)) and torch.isfinite(audio).all()
    points = seams.join_points(model, audio.shape[-1])
    assert len(points) >= 8
    at_joins = seams.roughness_at(audio, points, rate)
    around = seams.roughness_everywhere(audio, rate)
    # No join rougher than the roughest 1 % of the output (a click or a jump at a join would be).
    assert at_joins.max() <= np.percentile(around, 99), (at_joins.max(), np.percentile(around, 99))
    # The joins typical of those window positions: the model's beat is locked to a window's start,
    # so a drum hit falls at 2.56 s of every window, joined or not (the demo model: 2.7-3.6 x the
    # median there in plain windows); what a join adds is measured against plain windows.
    control = seams.unjoined(model, prompt, range(1, 6))
    assert np.median(at_joins) <= 1.5 * np.median(control), (np.median(at_joins), np.median(control))


def test_chunks_stay_bounded_however_long(model: StableAudioModel) -> None:
    window = int(model.max_duration * model.sample_rate)
    for total in (2 * model.max_duration, 6 * model.max_duration):
        sizes = [c.shape[-1] for c in iter_long(model, "rain texture", total, seed=0, steps=1)]
        assert max(sizes) <= window and sum(sizes) == int(total * model.sample_rate)


def test_windows_use_the_schedule_and_their_own_seeds(model: StableAudioModel, monkeypatch) -> None:
    calls = []
    real = model.generate

    def spy(prompt, **kw):
        calls.append((prompt, kw["seed"], kw.get("inpaint_mask_start_seconds"), kw["duration"]))
        return real(prompt, **{**kw, "steps": 1})

    monkeypatch.setattr(model, "generate", spy)
    schedule = [(0, "drum kit, rock beat, 120 BPM"), (12.0, "rain texture")]
    generate_long(model, schedule, 25.0, seed=7, window=10.0, overlap=2.0)
    assert [c[0] for c in calls] == [
        "drum kit, rock beat, 120 BPM",
        "drum kit, rock beat, 120 BPM",
        "rain texture",
    ]
    assert [c[1] for c in calls] == [7, 8, 9]
    assert [c[2] for c in calls] == [None, 2.0, 2.0]
    assert calls[-1][3] == pytest.approx(9.0)  # the last window covers only what is left


def test_streaming_into_a_file_equals_the_tensor(model: StableAudioModel, tmp_path) -> None:
    kw = {"seed": 4, "steps": 2, "overlap": 2.0}
    audio = generate_long(model, "violin, A4 note", 14.0, **kw)
    path = generate_long(model, "violin, A4 note", 14.0, output=tmp_path / "long.wav", **kw)
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == model.sample_rate and not list(tmp_path.glob(".*partial"))
    np.testing.assert_allclose(data.T, audio.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"overlap": 12.0}, ArgumentValueError, "overlap"),
        ({"window": 4.0, "overlap": 4.0}, ArgumentValueError, "shorter than the window"),
        ({"window": 60.0}, ArgumentValueError, "window"),
        ({"overlap": 2.0, "crossfade": 3.0}, ArgumentValueError, "crossfade"),
        ({"inpaint_audio": "x.wav"}, ArgumentValueError, "inpaint_audio is set by the long-form plan"),
        ({"duration": -1.0}, ArgumentValueError, "duration"),
        ({"prompt": [(5.0, "late start")]}, ArgumentValueError, "entry starting at 0 s"),
        ({"prompt": 5}, ArgumentTypeError, "prompt schedule|prompt must be"),
    ],
)
def test_bad_arguments_name_themselves(model: StableAudioModel, kwargs, error, match) -> None:
    args = {"prompt": "rain texture", "duration": 30.0, **kwargs}
    with pytest.raises(error, match=match):
        generate_long(model, **args)


def test_the_command_line_long_flag(tmp_path, capsys) -> None:
    from stable_audio_3.apps.entry import main

    out = tmp_path / "long.flac"
    args = ["--prompt", "rain texture", "--duration", "25", "--long", "--overlap", "2", "--steps", "2"]
    assert main([*args, "--seed", "5", "--output", str(out)]) == 0
    data, rate = sf.read(out, always_2d=True)
    assert data.shape == (25 * rate, 2)
    record = __import__("json").loads(out.with_name("long.flac.json").read_text())
    assert record["long"]["overlap"] == 2.0 and record["arguments"]["prompt"] == "rain texture"
    for bad, message in [
        (["--prompt", "a", "--overlap", "2"], "--overlap only applies with --long"),
        (["--prompt", "a", "b", "--long"], "--long makes one item"),
    ]:
        assert main([*bad, "--output", str(tmp_path / "x.wav")]) == 2
        assert message in capsys.readouterr().err
