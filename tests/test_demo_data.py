"""The demo dataset generator: deterministic, captioned in the official style, held-out
combinations never written, every clip audible and of the asked length."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("tinysoundfont")
pytest.importorskip("pretty_midi")

from stable_audio_3.training import DemoDataConfig, make_demo_data  # noqa: E402
from stable_audio_3.training.dataset import find_clips  # noqa: E402
from stable_audio_3.training.demo_data import (  # noqa: E402
    INSTRUMENTS,
    KINDS,
    _drums,
    _Renderer,
    _wave,
    draw_prompts,
    held_out,
)


def _make(folder: Path, seed: int = 3, count: int = 36) -> Path:
    return make_demo_data(DemoDataConfig(output=str(folder), count=count, seed=seed, progress=False))


def test_the_same_seed_writes_the_same_files(tmp_path: Path) -> None:
    a, b = _make(tmp_path / "a"), _make(tmp_path / "b")
    assert a.read_text() == b.read_text()
    for row in map(json.loads, a.read_text().splitlines()):
        assert (a.parent / row["path"]).read_bytes() == (b.parent / row["path"]).read_bytes()
    assert _make(tmp_path / "c", seed=4).read_text() != a.read_text()


def test_clips_are_captioned_audible_and_never_held_out(tmp_path: Path) -> None:
    manifest = _make(tmp_path / "d", count=60)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 60 and {r["kind"] for r in rows} == set(KINDS)
    for row in rows:
        params = {k: v for k, v in row.items() if k not in ("path", "caption", "kind", "seconds")}
        assert not held_out(row["kind"], params)
        wave, rate = sf.read(str(manifest.parent / row["path"]))
        assert rate == 16000 and wave.shape[1] == 2
        assert abs(wave.shape[0] / rate - row["seconds"]) < 0.01 and 1.0 <= row["seconds"] <= 10.0
        assert np.isfinite(wave).all() and np.abs(wave).max() > 0.01, row["caption"]
        assert (manifest.parent / row["path"]).with_suffix(".txt").read_text() == row["caption"]
        if row["kind"] in ("arpeggio", "melody", "drums"):
            assert row["caption"].endswith(f"{row['bpm']} BPM")
    clips = find_clips(manifest)
    assert [c.caption for c in clips] == [r["caption"] for r in rows]
    stats = json.loads((manifest.parent / "dataset.json").read_text())
    assert stats["held_out_skipped"] > 0


def test_held_out_prompts_name_combinations_training_never_shows(tmp_path: Path) -> None:
    manifest = _make(tmp_path / "e", count=200)
    seen = {json.loads(line)["caption"] for line in manifest.read_text().splitlines()}
    prompts = draw_prompts(300, seed=11)
    assert {p["kind"] for p in prompts} == set(KINDS) - {"sfx"}
    assert not seen & {p["caption"] for p in prompts}
    train = draw_prompts(50, seed=11, split="train")
    assert all(not held_out(p["kind"], p) for p in train)
    with pytest.raises(ValueError, match="split"):
        draw_prompts(1, seed=0, split="test")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), seconds=st.floats(1.0, 10.0))
def test_drum_patterns_keep_their_grid_from_a_random_start(seed: int, seconds: float) -> None:
    plain = _drums(random.Random(seed), seconds, None)
    moved = _drums(random.Random(seed), seconds, random.Random(seed + 1))
    assert plain[1] == moved[1] and plain[0] == moved[0]  # the caption does not depend on the start
    step = 60.0 / plain[0]["bpm"] / 4
    assert plain[2][0][0] == 0.0 and plain[2][0][2] == 36  # without offsets: a kick on the first sample
    times = sorted(t for t, *_ in moved[2])
    assert times and 0.0 <= times[0] < 16 * step and times[-1] < seconds
    grid = (np.array(times) - times[0]) / step  # every hit stays on the pattern's 16th-note grid
    np.testing.assert_allclose(grid, np.round(grid), atol=1e-6)


@pytest.mark.parametrize(
    ("option", "moved", "at_most"),
    [
        ("drum_offsets", lambda row: row["kind"] == "drums", 0.5),
        ("sounding_pitch", lambda row: row.get("program") == 19, 0.9),
    ],
)
def test_an_option_changes_only_the_audio_of_its_clips(
    option: str, moved: Callable[[dict], bool], at_most: float, tmp_path: Path
) -> None:
    """`drum_offsets` moves the drum patterns, `sounding_pitch` the organ's keys; nothing else moves."""
    config = {"count": 40, "seed": 5, "progress": False}
    on = make_demo_data(DemoDataConfig(output=str(tmp_path / "on"), **{option: True}, **config))
    off = make_demo_data(DemoDataConfig(output=str(tmp_path / "off"), **config))
    assert on.read_text() == off.read_text()
    rows = [json.loads(line) for line in on.read_text().splitlines()]
    assert any(map(moved, rows))
    for row in rows:
        a, b = sf.read(str(on.parent / row["path"]))[0], sf.read(str(off.parent / row["path"]))[0]
        # One synth renders every clip, so a clip opens with the last one's fading tail (< 0.1 s),
        # which the peak scaling then carries a little into the rest.
        r = np.corrcoef(a[1600:, 0], b[1600:, 0])[0, 1]
        assert (r < at_most) if moved(row) else (r > 0.9999), (row["caption"], r)


def test_low_notes_are_appended_in_each_instruments_lowest_octave(tmp_path: Path) -> None:
    config = {"count": 20, "seed": 6, "progress": False}
    plain = make_demo_data(DemoDataConfig(output=str(tmp_path / "plain"), **config))
    more = make_demo_data(DemoDataConfig(output=str(tmp_path / "more"), low_notes=12, **config))
    lines = more.read_text().splitlines()
    assert len(lines) == 32 and lines[:20] == plain.read_text().splitlines()
    for row in map(json.loads, lines[20:]):
        low = 36 if row["program"] == 32 else 48
        assert row["kind"] == "note" and low <= row["root"] < low + 12, row
        params = {k: v for k, v in row.items() if k not in ("path", "caption", "kind", "seconds")}
        assert not held_out("note", params) and row["caption"].endswith(" note")
        assert np.abs(sf.read(str(more.parent / row["path"]))[0]).max() > 0.01
    with pytest.raises(ValueError, match="low_notes"):
        DemoDataConfig(low_notes=-1)


def _level_db(wave: np.ndarray, hz: float) -> float:
    """The spectrum's strongest bin within 3 % of `hz`, in dB below the strongest bin overall."""
    mono = wave.mean(1) * np.hanning(len(wave))
    spec = np.abs(np.fft.rfft(mono))
    freqs = np.fft.rfftfreq(len(mono), 1 / 16000)
    band = spec[(freqs > 0.97 * hz) & (freqs < 1.03 * hz)]
    return float(20 * np.log10(band.max() / spec.max()))


@pytest.mark.parametrize("program", sorted(INSTRUMENTS))
def test_with_sounding_pitch_every_instrument_sounds_the_note_its_caption_names(program: int) -> None:
    """The named note's fundamental is there and nothing repeats an octave below it; without the
    option the church organ keeps the soundfont's rank an octave below its key (the default data)."""
    renderer = _Renderer(16000)
    low = 36 if program == 32 else 48
    for root in (low, low + 23):
        params, events = {"program": program, "root": root}, [(0.0, 1.6, root, 100)]
        hz = 440.0 * 2 ** ((root - 69) / 12)
        wave = _wave(renderer, "note", 2.0, params, events, True)[1600:]
        assert _level_db(wave, hz) > -30, (INSTRUMENTS[program][0], root)
        assert _level_db(wave, hz / 2) < -25, (INSTRUMENTS[program][0], root)
        plain = _wave(renderer, "note", 2.0, params, events, False)[1600:]
        assert (_level_db(plain, hz / 2) > -20) == (program == 19), (INSTRUMENTS[program][0], root)
