"""The evaluation's measures, checked on signals whose answer is known: a tone's pitch, a click
track's tempo, a clip's distance to itself, a seam that is a jump, and the family of renders."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("librosa")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import demo_measures as dm  # noqa: E402

RATE = 16000


def _tone(midi: float, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    f = 440.0 * 2 ** ((midi - 69) / 12)
    return (0.5 * np.sin(2 * np.pi * f * t) + 0.2 * np.sin(4 * np.pi * f * t)).astype(np.float32)


def _clicks(bpm: float, seconds: float = 8.0) -> np.ndarray:
    wave = np.zeros(int(seconds * RATE), np.float32)
    burst = np.random.default_rng(0).standard_normal(400).astype(np.float32) * np.exp(-np.arange(400) / 60)
    for beat in np.arange(0, seconds, 60.0 / bpm):
        at = int(beat * RATE)
        wave[at : at + 400] += burst[: len(wave) - at]
    return wave


@pytest.mark.parametrize("midi", [45, 60, 72.3])
def test_pitch_of_a_tone(midi: float) -> None:
    assert abs(dm.pitch_midi(np.stack([_tone(midi)] * 2, 1), RATE) - midi) < 0.3


def test_silence_has_no_pitch_and_pitch_classes_wrap() -> None:
    assert dm.pitch_midi(np.zeros(RATE * 2, np.float32), RATE) is None
    assert dm.semitones_apart(59.6, 48.0, octave_free=True) == pytest.approx(0.4)
    assert dm.semitones_apart(59.6, 48.0) == pytest.approx(11.6)


def test_the_rules_that_count_a_reading_right() -> None:
    assert dm.pitch_right(60.9, 60, chord=False) and not dm.pitch_right(72.0, 60, chord=False)
    assert dm.pitch_right(48.0, 60, chord=True) and not dm.pitch_right(None, 60, chord=True)
    assert dm.tempo_right(104.9, 100) and not dm.tempo_right(105.2, 100)
    assert dm.tempo_right(200.0, 100, double_half=True) and not dm.tempo_right(200.0, 100)
    assert dm.tempo_right(51.0, 100, double_half=True) and not dm.tempo_right(150.0, 100, double_half=True)


@pytest.mark.parametrize("bpm", [90, 120])
def test_tempo_of_a_click_track(bpm: float) -> None:
    assert abs(dm.tempo_bpm(_clicks(bpm), RATE) - bpm) <= 0.05 * bpm


def test_distance_and_seam() -> None:
    tone = _tone(60, 4.0)
    assert dm.stft_distance(tone, tone) == pytest.approx(0.0, abs=1e-6)
    assert dm.stft_distance(tone, _tone(67, 4.0)) > 1.0
    jump = np.concatenate([tone[: 2 * RATE], 0.3 * _tone(71, 2.0)])  # another note, suddenly
    assert dm.seam_ratio(jump, RATE, 2.0) > 3 * dm.seam_ratio(tone, RATE, 2.0)


def test_family_rule_separates_tones_clicks_and_noise() -> None:
    rng = np.random.default_rng(2)
    clips = {
        "tonal": [_tone(m) for m in (50, 62, 70)],
        "percussive": [_clicks(b, 2.0) for b in (80, 100, 140)],
    }
    clips["noise"] = [(0.2 * rng.standard_normal(2 * RATE)).astype(np.float32) for _ in range(3)]
    features = [dm.family_features(w, RATE) for ws in clips.values() for w in ws]
    labels = [k for k, ws in clips.items() for _ in ws]
    rule = dm.FamilyRule(features, labels)
    assert rule(dm.family_features(_tone(55), RATE)) == "tonal"
    assert rule(dm.family_features(_clicks(120, 2.0), RATE)) == "percussive"
    assert rule(dm.family_features((0.3 * rng.standard_normal(2 * RATE)).astype(np.float32), RATE)) == "noise"


def test_off_harmonic_energy_tells_a_clean_note_from_a_smeared_one():
    clean = dm.off_harmonic_db(_tone(60), RATE, 60)
    noise = np.random.default_rng(0).standard_normal(2 * RATE).astype(np.float32)
    noisy = dm.off_harmonic_db(_tone(60) + 0.1 * noise, RATE, 60)
    beside = dm.off_harmonic_db(_tone(60) + _tone(61), RATE, 60)  # as loud a semitone above
    assert clean < -40 and -25 < noisy < -10 and -3 < beside < 3
    assert dm.off_harmonic_db(_tone(60), RATE, 61) > 20  # a semitone off: nearly all energy is off


def test_spectrogram_image(tmp_path: Path) -> None:
    from PIL import Image

    path = dm.spectrogram_png(tmp_path / "s.png", [_tone(60), _tone(64)], RATE, ["a", "b"], [(1, 0.5, 1.0)])
    image = Image.open(path)
    assert image.size == (2 * 120 + 10, 222)


def test_draws_keep_the_headline_seed_and_count_each_draw():
    import evaluate_demo as ev

    # Draw 0 is the headline draw: prompt i at seed + i, as before the option existed.
    assert [ev.draw_seed(3, i, 0) for i in range(3)] == [3, 4, 5]
    seeds = {ev.draw_seed(0, i, k) for i in range(200) for k in range(4)}
    assert len(seeds) == 800  # no prompt of one draw shares a seed with another draw's
    draws = [
        [{"pitch_ok": True}, {"pitch_ok": False}, {"tempo_ok": True, "family_ok": True}],
        [{"pitch_ok": True}, {"pitch_ok": True}, {"tempo_ok": False, "family_ok": True}],
    ]
    out = ev.over_draws(draws)
    assert out["pitch_ok"]["ok_per_draw"] == [1, 2] and out["pitch_ok"]["n"] == 2
    assert out["pitch_ok"]["mean_ok"] == 1.5 and out["pitch_ok"]["mean_rate"] == 0.75
    assert out["tempo_ok"]["ok_per_draw"] == [1, 0] and out["family_ok"]["mean_rate"] == 1.0
    assert out["tempo_ok_octave"]["n"] == 0
