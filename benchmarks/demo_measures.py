"""What `evaluate_demo.py` measures on a clip: its pitch (librosa's pyin), how much of a note's energy
lies off its harmonics, its tempo (librosa's beat tracker), its family (tonal / percussive / noise, a
nearest-centroid rule on three spectral features fitted on reference renders), a multi-resolution STFT
distance, a seam measure and a spectrogram image. Every function takes mono or stereo float arrays at
`rate`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "mono",
    "pitch_midi",
    "off_harmonic_db",
    "tempo_bpm",
    "family_features",
    "FamilyRule",
    "stft_distance",
    "seam_ratio",
    "spectrogram_png",
    "semitones_apart",
    "pitch_right",
    "tempo_right",
]


def mono(wave: np.ndarray) -> np.ndarray:
    """(samples,) float32 from (samples,), (samples, channels) or (channels, samples)."""
    w = np.asarray(wave, dtype=np.float32)
    if w.ndim == 2:
        w = w.mean(axis=0 if w.shape[0] <= 2 < w.shape[1] else 1)
    return w


def pitch_midi(wave: np.ndarray, rate: int) -> float | None:
    """The median pyin f0 over voiced frames, as a MIDI number (None when nothing is voiced)."""
    import librosa

    f0, voiced, _ = librosa.pyin(mono(wave), fmin=50.0, fmax=1100.0, sr=rate, frame_length=2048)
    f0 = f0[voiced & np.isfinite(f0)]
    if f0.size < 3:
        return None
    return float(librosa.hz_to_midi(np.median(f0)))


def off_harmonic_db(wave: np.ndarray, rate: int, midi: float, seconds: float = 1.5) -> float:
    """Energy off the harmonics of `midi` over energy on them (dB), from 0.4 x f0 to 10 x f0 (at most
    4 kHz) in the first `seconds`. A clean note scores far below 0; a note smeared in frequency, or
    buried in noise, scores near 0. Unlike the pitch reading it is continuous, so two models that get
    the same notes right can still be told apart."""
    x = mono(wave)[: int(seconds * rate)].astype(np.float64)
    power = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1.0 / rate)
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    band = (freqs > 0.4 * f0) & (freqs < min(10 * f0, 4000.0))
    k = np.round(freqs / f0)
    near = (k >= 1) & (np.abs(freqs - k * f0) < 0.03 * f0 + 3.0)  # 3 % of f0, and the bins' width
    on, off = power[band & near].sum(), power[band & ~near].sum()
    return float(10 * np.log10((off + 1e-20) / (on + 1e-20)))


def semitones_apart(a: float, b: float, octave_free: bool = False) -> float:
    """|a - b| in semitones; `octave_free` compares pitch classes (for chord roots)."""
    d = abs(a - b)
    return min(d % 12, 12 - d % 12) if octave_free else d


def pitch_right(midi: float | None, root: float, chord: bool) -> bool:
    """Within a semitone of the named note (a chord's root by pitch class)."""
    return midi is not None and semitones_apart(midi, root, chord) <= 1


def tempo_right(bpm: float, target: float, double_half: bool = False) -> bool:
    """Within 5 % of the named tempo (or, with `double_half`, of its double or half)."""
    factors = (0.5, 1, 2) if double_half else (1,)
    return any(abs(bpm - f * target) <= 0.05 * f * target for f in factors)


def tempo_bpm(wave: np.ndarray, rate: int) -> float:
    """librosa's beat-tracker tempo estimate."""
    import librosa

    tempo, _ = librosa.beat.beat_track(y=mono(wave), sr=rate)
    return float(np.atleast_1d(tempo)[0])


def family_features(wave: np.ndarray, rate: int) -> np.ndarray:
    """(spectral flatness, percussive energy share after HPSS, peakiness of the onset envelope,
    share of each frame's energy in its strongest 2 % of bins)."""
    import librosa

    y = mono(wave)
    spec = np.abs(librosa.stft(y, n_fft=1024, hop_length=256))
    flatness = float(np.mean(librosa.feature.spectral_flatness(S=spec)))
    harmonic, percussive = librosa.decompose.hpss(spec)
    share = float((percussive**2).sum() / max((harmonic**2).sum() + (percussive**2).sum(), 1e-12))
    onset = librosa.onset.onset_strength(S=librosa.amplitude_to_db(spec), sr=rate)
    peaky = float(onset.max() / max(onset.mean(), 1e-6)) if onset.size else 0.0
    power = spec**2
    top = np.sort(power, axis=0)[-max(1, power.shape[0] // 50) :].sum(0)
    loud = power.sum(0) > 1e-3 * power.sum(0).max()
    peaks = float((top[loud] / power.sum(0)[loud]).mean()) if loud.any() else 0.0
    return np.array([math.log(flatness + 1e-6), share, math.log(peaky + 1e-6), peaks])


class FamilyRule:
    """Nearest centroid in standardised feature space, fitted on reference renders."""

    def __init__(self, features: Sequence[np.ndarray], labels: Sequence[str]) -> None:
        x = np.stack(features)
        self.mean, self.std = x.mean(0), x.std(0) + 1e-9
        z = (x - self.mean) / self.std
        self.labels = sorted(set(labels))
        self.centroids = np.stack([z[[lab == c for lab in labels]].mean(0) for c in self.labels])

    def __call__(self, features: np.ndarray) -> str:
        z = (features - self.mean) / self.std
        return self.labels[int(np.argmin(((self.centroids - z) ** 2).sum(1)))]


def _magnitudes(wave: np.ndarray, n_fft: int) -> np.ndarray:
    import librosa

    return np.abs(librosa.stft(mono(wave), n_fft=n_fft, hop_length=n_fft // 4))


def stft_distance(a: np.ndarray, b: np.ndarray, sizes: Sequence[int] = (256, 512, 1024, 2048)) -> float:
    """Multi-resolution STFT distance: mean over sizes of spectral convergence plus the mean
    |log-magnitude| difference (1e-5 floor); 0 for identical clips."""
    n = min(len(mono(a)), len(mono(b)))
    total = 0.0
    for size in sizes:
        x, y = _magnitudes(mono(a)[:n], size), _magnitudes(mono(b)[:n], size)
        total += np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-9)
        total += np.abs(np.log(np.maximum(x, 1e-5)) - np.log(np.maximum(y, 1e-5))).mean()
    return float(total / len(sizes))


def seam_ratio(wave: np.ndarray, rate: int, seam_seconds: float, hop: int = 256) -> float:
    """Spectral flux across the seam over the median flux of the clip: about 1 when the seam is as
    smooth as the rest of the clip, far above 1 for a click or a jump."""
    spec = np.log1p(_magnitudes(wave, 1024))
    flux = np.sqrt((np.diff(spec, axis=1) ** 2).sum(0))
    at = int(round(seam_seconds * rate / hop))
    around = flux[max(0, at - 2) : at + 2]
    return float(around.max() / max(np.median(flux), 1e-9))


def spectrogram_png(
    path: Path, waves: Sequence[np.ndarray], rate: int, titles: Sequence[str], marks: Sequence[tuple] = ()
) -> Path:
    """Log spectrograms side by side, one per wave, as a PNG; `marks` are (panel, start s, end s)
    spans outlined on a panel (inpainted regions, the seam)."""
    from PIL import Image, ImageDraw

    panels = []
    for wave in waves:
        db = 20 * np.log10(_magnitudes(wave, 512) + 1e-5)
        db = np.clip((db - (db.max() - 80)) / 80, 0, 1)[::-1]
        rgb = np.stack([db**0.7, db**1.5, 0.25 + 0.5 * db * (1 - db)], -1)
        seconds = len(mono(wave)) / rate
        size = (max(60, int(seconds * 60)), 200)  # 60 px per second
        panels.append(Image.fromarray((rgb * 255).astype(np.uint8)).resize(size, Image.BILINEAR))
    width, height = sum(p.width for p in panels) + 10 * (len(panels) - 1), 200 + 22
    canvas = Image.new("RGB", (width, height), "white")
    draw, x = ImageDraw.Draw(canvas), 0
    offsets = []
    for panel, title in zip(panels, titles, strict=True):
        canvas.paste(panel, (x, 22))
        draw.text((x + 4, 4), title, fill="black")
        offsets.append(x)
        x += panel.width + 10
    for index, start, end in marks:
        per_second = panels[index].width / (len(mono(waves[index])) / rate)
        x0, x1 = offsets[index] + start * per_second, offsets[index] + end * per_second
        draw.rectangle([x0, 22, max(x0 + 1, x1), height - 1], outline="white", width=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
