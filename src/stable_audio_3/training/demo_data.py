"""A deterministic captioned dataset for the embedded demo model: General-MIDI instruments rendered
from the TimGM6mb soundfont that the `pretty_midi` wheel ships (with `tinysoundfont`), GM drum
patterns at named tempos, and procedural sound effects. Captions follow the official prompt style
("acoustic grand piano, C major chord, 100 BPM"). Some parameter combinations are held out of
training (`split` in the manifest) for the evaluation.

Needs the optional training extra: `pip install ".[train]"` and `pip install --no-deps tinysoundfont`
(its declared `pyaudio` dependency needs PortAudio headers and is not used here).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from stable_audio_3.checks import check_int, check_number
from stable_audio_3.errors import ArgumentValueError

__all__ = [
    "DemoDataConfig",
    "make_demo_data",
    "INSTRUMENTS",
    "held_out",
    "split_key",
    "draw_prompts",
    "family",
    "FAMILIES",
]

# GM program -> caption name and family (the evaluation checks the family).
INSTRUMENTS = {
    0: ("acoustic grand piano", "tonal"),
    11: ("vibraphone", "tonal"),
    19: ("church organ", "tonal"),
    24: ("nylon guitar", "tonal"),
    32: ("acoustic bass", "tonal"),
    40: ("violin", "tonal"),
    48: ("string ensemble", "tonal"),
    56: ("trumpet", "tonal"),
    73: ("flute", "tonal"),
    80: ("square lead", "tonal"),
}
# Keys played above the named pitch with `sounding_pitch`: TimGM6mb's church organ sounds a 16-foot
# rank an octave below its key (its waveform repeats at half the key's frequency).
KEY_SHIFT = {19: 12}
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
CHORDS = {"major": (0, 4, 7), "minor": (0, 3, 7), "seventh": (0, 4, 7, 10)}
DRUM_PATTERNS = {  # 16th-note grid: (GM percussion key, steps)
    "rock beat": ((36, (0, 8)), (38, (4, 12)), (42, tuple(range(0, 16, 2)))),
    "four on the floor": ((36, (0, 4, 8, 12)), (39, (4, 12)), (46, (2, 6, 10, 14))),
    "breakbeat": ((36, (0, 10)), (38, (4, 12, 15)), (42, tuple(range(0, 16, 2)))),
}
SFX = ("white noise", "rain texture", "rising sweep", "falling sweep", "impact", "riser")
# What each kind of clip sounds like, for the evaluation's family check.
FAMILIES = {"drums": "percussive", "white noise": "noise", "rain texture": "noise", "riser": "noise"}
FAMILIES |= {"impact": "percussive", "rising sweep": "tonal", "falling sweep": "tonal"}
KINDS = ("note", "chord", "arpeggio", "melody", "drums", "sfx")


@dataclass
class DemoDataConfig:
    """What `stable-audio-train make-demo-data` writes."""

    output: str = "demo_data"
    count: int = 3000
    seed: int = 0
    sample_rate: int = 16000
    min_seconds: float = 1.0
    max_seconds: float = 10.0
    peak: float = 0.8  # every clip is scaled to this peak (the soundfont renders quietly)
    drum_offsets: bool = False
    low_notes: int = 0
    sounding_pitch: bool = False
    progress: bool = True

    HELP: ClassVar[dict[str, str]] = {
        "output": "folder for <id>.wav + <id>.txt captions and manifest.jsonl",
        "count": "clips to write (held-out combinations are listed in the manifest, not written)",
        "drum_offsets": "start each drum pattern at a random point of its bar (default: on the downbeat)",
        "low_notes": "extra single-note clips in each instrument's lowest octave, written after the others",
        "sounding_pitch": "play the church organ an octave up, so it sounds the note its caption names "
        "(the soundfont's organ sounds an octave below its key; default: the key as named)",
    }

    def __post_init__(self) -> None:
        check_int("count", self.count, low=1)
        check_int("low_notes", self.low_notes, low=0)
        check_int("sample_rate", self.sample_rate, low=8000, high=48000)
        check_number("min_seconds", self.min_seconds, low=0.5)
        check_number("max_seconds", self.max_seconds, low=self.min_seconds)
        check_number("peak", self.peak, low=0.0, high=1.0, low_open=True)


def family(kind: str, params: dict[str, Any]) -> str:
    """tonal, percussive or noise: what a clip of this kind and parameters sounds like."""
    if kind == "sfx":
        return FAMILIES[params["effect"]]
    return FAMILIES.get(kind, "tonal")


def split_key(kind: str, params: dict[str, Any]) -> tuple:
    """The combination a caption names: (instrument, note) for single notes, (instrument, pitch
    class) for chords, arpeggios and melodies (their captions name no octave), (pattern, tempo) for
    drums; effects are not split."""
    if kind == "drums":
        return ("drums", params["pattern"], params["bpm"])
    if kind == "sfx":
        return ("sfx",)
    pitch = _note(params["root"]) if kind == "note" else NOTE_NAMES[params["root"] % 12]
    return ("note" if kind == "note" else "harmony", params["program"], pitch)


def held_out(kind: str, params: dict[str, Any]) -> bool:
    """About one combination in eight is kept for evaluation: its caption never occurs in training."""
    key = split_key(kind, params)
    if key == ("sfx",):
        return False
    return int(hashlib.sha1(json.dumps(key).encode()).hexdigest(), 16) % 8 == 0


def _note(midi: int) -> str:
    return f"{NOTE_NAMES[midi % 12]}{midi // 12 - 1}"


def _soundfont() -> str:
    try:
        import pretty_midi
    except ImportError:
        raise ArgumentValueError(
            'make-demo-data needs pretty_midi: pip install "stable-audio-3[train]"'
        ) from None
    return str(Path(pretty_midi.__file__).parent / "TimGM6mb.sf2")


class _Renderer:
    """Notes on one soundfont synth: (start s, duration s, key, velocity) events -> stereo float32."""

    def __init__(self, sample_rate: int) -> None:
        try:
            import tinysoundfont
        except ImportError:
            raise ArgumentValueError(
                "make-demo-data needs tinysoundfont: pip install --no-deps tinysoundfont"
            ) from None
        self.rate = sample_rate
        self.synth = tinysoundfont.Synth(samplerate=sample_rate, gain=-3)
        self.font = self.synth.sfload(_soundfont())

    def render(
        self, events: list[tuple[float, float, int, int]], seconds: float, program: int, drums: bool
    ) -> np.ndarray:
        s = self.synth
        s.program_select(0, self.font, 128 if drums else 0, 0 if drums else program, is_drums=drums)
        total = int(seconds * self.rate)
        changes = sorted(
            [(t, 1, k, v) for t, _, k, v in events] + [(t + d, 0, k, 0) for t, d, k, _ in events]
        )
        out, now = [], 0
        for t, on, key, vel in changes:
            at = min(total, int(t * self.rate))
            if at > now:
                out.append(np.frombuffer(s.generate(at - now), dtype=np.float32).copy())
                now = at
            s.noteon(0, key, vel) if on else s.noteoff(0, key)
        if total > now:
            out.append(np.frombuffer(s.generate(total - now), dtype=np.float32).copy())
        s.notes_off()
        s.generate(self.rate // 2)  # let release tails die before the next clip
        return np.concatenate(out).reshape(-1, 2)


def _tonal(
    kind: str, rng: random.Random, seconds: float, octaves: int = 2
) -> tuple[dict[str, Any], str, list]:
    """Parameters, caption and note events of a tonal clip, its root in the instrument's lowest
    `octaves` octaves."""
    program = rng.choice(list(INSTRUMENTS))
    name = INSTRUMENTS[program][0]
    low = 36 if program == 32 else 48
    root = rng.randrange(low, low + 12 * octaves)
    bpm = rng.randrange(60, 161, 10)
    beat = 60.0 / bpm
    params: dict[str, Any] = {"program": program, "root": root, "bpm": bpm}
    if kind == "note":
        return params, f"{name}, {_note(root)} note", [(0.0, seconds * 0.8, root, 100)]
    quality = rng.choice(list(CHORDS))
    params["chord"] = quality
    keys = [root + i for i in CHORDS[quality]]
    label = f"{NOTE_NAMES[root % 12]} {quality} chord"
    if kind == "chord":
        return params, f"{name}, {label}", [(0.0, seconds * 0.8, k, 90) for k in keys]
    if kind == "arpeggio":
        n = max(1, int(seconds / (beat / 2)))
        events = [(i * beat / 2, beat / 2, keys[i % len(keys)], 95) for i in range(n)]
        return params, f"{name}, {NOTE_NAMES[root % 12]} {quality} arpeggio, {bpm} BPM", events
    scale = (0, 2, 4, 5, 7, 9, 11, 12) if quality != "minor" else (0, 2, 3, 5, 7, 8, 10, 12)
    n = max(1, int(seconds / beat))
    events = [(i * beat, beat * 0.9, root + rng.choice(scale), 95) for i in range(n)]
    scale_name = "minor" if quality == "minor" else "major"
    return params, f"{name}, melody in {NOTE_NAMES[root % 12]} {scale_name}, {bpm} BPM", events


def _drums(
    rng: random.Random, seconds: float, phase: random.Random | None
) -> tuple[dict[str, Any], str, list]:
    """A pattern at a tempo; with `phase`, started at a random point of its bar, so that clips of one
    caption differ and a model learns the beat's period rather than where the hits of one clip lie."""
    pattern = rng.choice(list(DRUM_PATTERNS))
    bpm = rng.randrange(70, 171, 5)
    step = 60.0 / bpm / 4
    shift = phase.uniform(0.0, 16 * step) if phase is not None else 0.0
    events = []
    for bar in range(int(math.ceil((seconds + shift) / (16 * step)))):
        for key, steps in DRUM_PATTERNS[pattern]:
            times = ((bar * 16 + s) * step - shift for s in steps)
            events += [(t, step, key, 110) for t in times if 0.0 <= t < seconds]
    return {"pattern": pattern, "bpm": bpm}, f"drum kit, {pattern}, {bpm} BPM", events


def _sfx(rng: random.Random, seconds: float, rate: int) -> tuple[dict[str, Any], str, np.ndarray]:
    """Procedural effects: noise textures, sweeps, impacts, risers (stereo float32)."""
    effect = rng.choice(SFX)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    gen = np.random.default_rng(rng.randrange(2**32))
    noise = gen.standard_normal((n, 2)).astype(np.float32)
    if effect == "white noise":
        wave = 0.2 * noise
    elif effect == "rain texture":
        drops = (gen.random((n, 2)) < 0.002) * gen.standard_normal((n, 2))
        wave = 0.05 * noise + np.convolve(drops[:, 0], np.exp(-np.arange(200) / 30), "same")[:, None] * 0.3
    elif effect in ("rising sweep", "falling sweep"):
        lo, hi = (100.0, 4000.0) if effect == "rising sweep" else (4000.0, 100.0)
        freq = lo * (hi / lo) ** (t / seconds)
        wave = 0.4 * np.sin(2 * np.pi * np.cumsum(freq) / rate)[:, None].repeat(2, 1)
    elif effect == "impact":
        wave = (
            0.8 * noise * np.exp(-t / 0.15)[:, None]
            + 0.5 * np.sin(2 * np.pi * 60 * t)[:, None] * np.exp(-t / 0.4)[:, None]
        )
    else:  # riser
        wave = 0.3 * noise * (t / seconds)[:, None] ** 2
    return {"effect": effect}, effect, np.clip(wave, -1, 1).astype(np.float32)


def _phases(cfg: DemoDataConfig) -> random.Random | None:
    """The drum patterns' start points: a stream of their own, so the clips' other draws (and the
    held-out prompts) do not depend on `drum_offsets`."""
    return random.Random(f"{cfg.seed}-drum-phase") if cfg.drum_offsets else None


def _draw(
    rng: random.Random, cfg: DemoDataConfig, phase: random.Random | None = None
) -> tuple[str, float, dict[str, Any], str, Any]:
    """One clip's kind, length, parameters, caption and note events (or, for effects, its wave)."""
    kind = rng.choice(KINDS)
    seconds = round(rng.uniform(cfg.min_seconds, cfg.max_seconds), 2)
    if kind == "sfx":
        params, caption, wave = _sfx(rng, seconds, cfg.sample_rate)
        return kind, seconds, params, caption, wave
    if kind == "drums":
        params, caption, events = _drums(rng, seconds, phase)
    else:
        params, caption, events = _tonal(kind, rng, seconds)
    return kind, seconds, params, caption, events


def _draw_low_note(rng: random.Random, cfg: DemoDataConfig) -> tuple[str, float, dict[str, Any], str, Any]:
    """A single note in its instrument's lowest octave: the octave whose notes a model trained on
    the usual mix reads an octave off most often (bass octave 2 is 3 % of the single notes)."""
    seconds = round(rng.uniform(cfg.min_seconds, cfg.max_seconds), 2)
    params, caption, events = _tonal("note", rng, seconds, octaves=1)
    return "note", seconds, params, caption, events


def draw_prompts(
    count: int, seed: int, split: str = "held_out", render: bool = False, **config: Any
) -> list[dict[str, Any]]:
    """`count` prompts drawn as the generator draws clips, from one split ("held_out" or "train"):
    rows of kind, caption, seconds and parameters, for the evaluation; `render` adds each one's
    reference audio ("wave", samples x 2, as the dataset would hold it)."""
    if split not in ("held_out", "train"):
        raise ArgumentValueError(f"split must be 'held_out' or 'train', got {split!r}")
    cfg, rng, rows = DemoDataConfig(**config), random.Random(seed), []
    renderer, phase = _Renderer(cfg.sample_rate) if render else None, _phases(cfg)
    while len(rows) < count:
        kind, seconds, params, caption, content = _draw(rng, cfg, phase)
        if held_out(kind, params) == (split == "held_out"):
            rows.append({"caption": caption, "kind": kind, "seconds": seconds, **params})
            if renderer is not None:
                rows[-1]["wave"] = _finish(
                    _wave(renderer, kind, seconds, params, content, cfg.sounding_pitch), cfg
                )
    return rows


def _wave(
    renderer: _Renderer, kind: str, seconds: float, params: dict[str, Any], content: Any, shift_keys: bool
) -> np.ndarray:
    """A clip's audio; `shift_keys` plays each instrument's notes `KEY_SHIFT` semitones up."""
    if kind == "sfx":
        return content
    if kind == "drums":
        return renderer.render(content, seconds, 0, True)
    shift = KEY_SHIFT.get(params["program"], 0) if shift_keys else 0
    events = [(t, d, key + shift, v) for t, d, key, v in content]
    return renderer.render(events, seconds, params["program"], False)


def _finish(wave: np.ndarray, cfg: DemoDataConfig) -> np.ndarray:
    """Scaled to the configured peak, as every clip is written."""
    return np.clip(wave * (cfg.peak / max(float(np.abs(wave).max()), 1e-4)), -1, 1).astype(np.float32)


def make_demo_data(cfg: DemoDataConfig) -> Path:
    """Write the clips, their captions and `manifest.jsonl`; returns the manifest's path. The same
    seed writes the same files."""
    import soundfile as sf
    from tqdm.auto import tqdm

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    rng, phase = random.Random(cfg.seed), _phases(cfg)
    low_rng = random.Random(f"{cfg.seed}-low-notes")  # own stream: the `count` clips do not change
    renderer = _Renderer(cfg.sample_rate)
    rows, held, total = [], 0, cfg.count + cfg.low_notes
    bar = tqdm(total=total, desc="rendering demo clips", unit="clip", disable=not cfg.progress)
    while len(rows) < total:
        if len(rows) < cfg.count:
            kind, seconds, params, caption, content = _draw(rng, cfg, phase)
        else:
            kind, seconds, params, caption, content = _draw_low_note(low_rng, cfg)
        if held_out(kind, params):
            held += 1
            continue  # never written: the evaluation draws its own held-out prompts
        wave = _finish(_wave(renderer, kind, seconds, params, content, cfg.sounding_pitch), cfg)
        name = f"{len(rows):05d}_{kind}"
        sf.write(str(out / f"{name}.wav"), wave, cfg.sample_rate, subtype="PCM_16")
        (out / f"{name}.txt").write_text(caption)
        rows.append({"path": f"{name}.wav", "caption": caption, "kind": kind, "seconds": seconds, **params})
        bar.update(1)
    bar.close()
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "dataset.json").write_text(json.dumps({**vars(cfg), "held_out_skipped": held}, indent=1))
    return manifest
