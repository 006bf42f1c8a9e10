"""How rough long-form generation's joins are on the demo model: `generate_long` at 5x the model's
maximum, the roughness at every join against the roughness of the same output everywhere and of
plain windows (no join) at the same positions. `tests/test_longform.py` asserts the drum case with
these functions; this script gives the README's figures for several prompts.

    python benchmarks/longform_seams.py [--model demo] [--out F]

Roughness: the RMS of the sample-to-sample difference in 40 ms around a point, over its median in
40 ms frames across the whole output (about 1 where a join is as smooth as the audio, far above for
a click or a jump). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from stable_audio_3 import StableAudioModel, generate_long

HERE = Path(__file__).resolve().parent
FAST = {"steps": 4, "duration_padding_sec": 0.0}
OVERLAP, CROSSFADE = 2.56, 1.28
PROMPTS = ("drum kit, rock beat, 120 BPM", "rain texture", "violin, A4 note")


def roughness_at(audio: torch.Tensor, points: Iterable[int], rate: int) -> np.ndarray:
    """The roughness at `points` (sample indices) of (channels, samples) audio; the difference
    profile and its median are computed once per call, however many points."""
    diff = audio.diff(dim=-1).pow(2).mean(0)
    frame = int(0.04 * rate)
    frames = diff[: diff.numel() // frame * frame].reshape(-1, frame).mean(-1).sqrt()
    median = frames.median().clamp(min=1e-8)
    return np.array(
        [float(diff[max(0, p - frame // 2) : p + frame // 2].mean().sqrt() / median) for p in points]
    )


def roughness_everywhere(audio: torch.Tensor, rate: int) -> np.ndarray:
    """The same measure centred every 10 ms across the output: how rough the audio itself is."""
    return roughness_at(audio, range(rate // 50, audio.shape[-1], rate // 100), rate)


def join_points(model: StableAudioModel, length: int) -> list[int]:
    """Where `generate_long` with OVERLAP and CROSSFADE joins windows: each crossfade's start and end."""
    rate = model.sample_rate
    step = int(model.max_duration * rate) - int(OVERLAP * rate)
    points = []
    for k in range(1, 10):
        start = k * step
        if start + int(OVERLAP * rate) >= length:
            break
        points += [start + int((OVERLAP - CROSSFADE) * rate), start + int(OVERLAP * rate)]
    return points


def unjoined(model: StableAudioModel, prompt: str, seeds: range) -> np.ndarray:
    """The measure at the window positions where the joins fall (the crossfade's start in the
    outgoing window, its end in the incoming one), in plain windows that have no join there."""
    rate = model.sample_rate
    points = [int(t * rate) for t in (model.max_duration - CROSSFADE, OVERLAP)]
    out = []
    for seed in seeds:
        plain = model.generate(prompt, duration=model.max_duration, seed=seed, progress=False, **FAST)[0]
        out.append(roughness_at(plain, points, rate))
    return np.concatenate(out)


def measure(model: StableAudioModel, prompt: str) -> dict:
    """One prompt at 5x the maximum (seed 1): the joins, the output everywhere, plain windows."""
    rate = model.sample_rate
    audio = generate_long(model, prompt, 5 * model.max_duration, seed=1, overlap=OVERLAP, **FAST)
    joins = roughness_at(audio, join_points(model, audio.shape[-1]), rate)
    around = roughness_everywhere(audio, rate)
    plain = unjoined(model, prompt, range(1, 6))
    return {
        "prompt": prompt,
        "joins": len(joins),
        "max_at_joins": float(joins.max()),
        "p99_everywhere": float(np.percentile(around, 99)),
        "median_at_joins": float(np.median(joins)),
        "median_plain_windows": float(np.median(plain)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo")
    p.add_argument("--out", type=Path, default=HERE / "results" / "longform_seams.json")
    args = p.parse_args()
    model = StableAudioModel.from_pretrained(args.model, device="cpu")
    rows = [measure(model, prompt) for prompt in PROMPTS]
    print("| prompt | joins | max at joins | 99th pct everywhere | median at joins | median, plain windows |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['prompt']} | {r['joins']} | {r['max_at_joins']:.2f} | {r['p99_everywhere']:.2f} | "
            f"{r['median_at_joins']:.2f} | {r['median_plain_windows']:.2f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
