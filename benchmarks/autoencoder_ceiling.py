"""How much of the demo measures an autoencoder lets through: its reconstructions of the held-out
reference renders, measured as `evaluate_demo.py` measures generated audio. No DiT can score above
this, so a new autoencoder is judged by it before a stage 1 is spent on it.

    python benchmarks/autoencoder_ceiling.py [--model demo] [--prompts 120] [--out F]

Prints a table (pitch of notes and chord roots, tempo of drum prompts with double/half allowed) for
the renders and the reconstructions, and writes JSON with each prompt's readings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import demo_measures as dm  # noqa: E402

from stable_audio_3 import AutoencoderModel  # noqa: E402
from stable_audio_3.training.demo_data import draw_prompts  # noqa: E402


def _reconstruct(ae: AutoencoderModel, wave: np.ndarray, rate: int) -> np.ndarray:
    audio = torch.from_numpy(np.ascontiguousarray(wave.T))
    return ae.decode(ae.encode(audio, sample_rate=rate))[0, :, : audio.shape[-1]].numpy()


def _readings(row: dict, wave: np.ndarray, rate: int) -> dict:
    if row["kind"] == "drums":
        bpm = dm.tempo_bpm(wave, rate)
        return {"tempo": bpm, "tempo_ok_octave": dm.tempo_right(bpm, row["bpm"], double_half=True)}
    midi = dm.pitch_midi(wave, rate)
    return {"pitch": midi, "pitch_ok": dm.pitch_right(midi, row["root"], row["kind"] == "chord")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo", help="a model or autoencoder checkpoint folder, or a name")
    p.add_argument("--prompts", type=int, default=120, help="held-out prompts drawn (as evaluate_demo.py)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results" / "autoencoder_ceiling.json")
    args = p.parse_args()
    torch.set_num_threads(2)
    ae = AutoencoderModel.from_pretrained(args.model, device="cpu")
    rate = ae.sample_rate
    items = []
    for row in draw_prompts(args.prompts, seed=args.seed, render=True, sample_rate=rate):
        if row["kind"] not in ("note", "chord", "drums"):
            continue
        render = _readings(row, row["wave"].T, rate)
        recon = _readings(row, _reconstruct(ae, row["wave"], rate), rate)
        items.append({"caption": row["caption"], "render": render, "reconstruction": recon})
        print(f"\r{len(items)} prompts", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    report = {"model": args.model, "seed": args.seed, "items": items}
    print("| measure | reconstructions | reference renders |\n|---|---|---|")
    for key, name in (("pitch_ok", "pitch within a semitone"), ("tempo_ok_octave", "tempo, double/half")):
        rows = [i for i in items if key in i["render"]]
        counts = {side: sum(i[side][key] for i in rows) for side in ("reconstruction", "render")}
        report[key] = counts | {"n": len(rows)}
        print(f"| {name} | {counts['reconstruction']}/{len(rows)} | {counts['render']}/{len(rows)} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
