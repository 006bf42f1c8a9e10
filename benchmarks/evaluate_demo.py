"""Measure the demo model: does it follow prompts it never saw, and do its editing modes work?

    pip install ".[train,eval]" && pip install --no-deps tinysoundfont
    python benchmarks/evaluate_demo.py [--model demo] [--prompts 120] [--images docs/images]

Prompts are drawn from the held-out split of the demo dataset (instrument x pitch and pattern x tempo
combinations whose captions never occur in training), plus effect prompts (effects are not split);
`--split train` draws them from the training split instead, to tell underfitting from generalising.
Each generated clip is measured, and so is the reference render of the same prompt (the measure's own
ceiling): pitch of note and chord prompts (pyin, within a semitone; chord roots by pitch class), how
much of a single note's energy lies off its harmonics, tempo of drum prompts (beat tracker, within
5 %, strict and allowing the tracker's double/half errors), family (tonal / percussive / noise, a
nearest-centroid rule fitted on training-split renders). Inpainting: the MR-STFT distance of the kept
regions to the autoencoder's reconstruction of the source, and of the filled regions to the source.
Continuation: the seam's spectral flux over the clip's median flux. Speed: 10 s of audio end to end.
Prints a table, writes JSON and spectrograms.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import demo_measures as dm  # noqa: E402

from stable_audio_3 import AutoencoderModel, StableAudioModel  # noqa: E402
from stable_audio_3.generation_config import fill_defaults  # noqa: E402
from stable_audio_3.training.demo_data import draw_prompts, family  # noqa: E402

PITCHED = ("note", "chord")
ELSEWHERE = (1.0, 2.0, 3.0, 5.0, 6.0, 7.0)  # seconds where a continuation's flux is compared
MEASURES = ("pitch_ok", "tempo_ok", "tempo_ok_octave", "family_ok")


def _generate(model: StableAudioModel, row: dict, seed: int, args: argparse.Namespace) -> np.ndarray:
    audio = model.generate(
        row["caption"],
        duration=_duration(row),
        steps=args.steps,
        seed=seed,
        progress=False,
        **args.guidance,
    )
    return audio[0].numpy()


def _duration(row: dict) -> float:
    """Drum prompts get at least 6 s (the beat tracker needs bars), the others at least 2 s."""
    return round(max(row["seconds"], 6.0 if row["kind"] == "drums" else 2.0), 2)


def _measure(row: dict, wave: np.ndarray, rate: int, rule: dm.FamilyRule) -> dict:
    out = {"family_ok": rule(dm.family_features(wave, rate)) == family(row["kind"], row)}
    if row["kind"] in PITCHED:
        midi = dm.pitch_midi(wave, rate)
        out["pitch"] = midi
        out["pitch_ok"] = dm.pitch_right(midi, row["root"], row["kind"] == "chord")
    if row["kind"] == "note":
        out["off_harmonic_db"] = dm.off_harmonic_db(wave, rate, row["root"])
    if row["kind"] == "drums":
        bpm = dm.tempo_bpm(wave, rate)
        out["tempo"] = bpm
        out["tempo_ok"] = dm.tempo_right(bpm, row["bpm"])
        out["tempo_ok_octave"] = dm.tempo_right(bpm, row["bpm"], double_half=True)
    return out


def _rate(results: list[dict], key: str) -> dict:
    values = [r[key] for r in results if key in r]
    rate = float(np.mean(values)) if values else float("nan")
    return {"ok": int(sum(values)), "n": len(values), "rate": rate}


def _median(results: list[dict], key: str = "off_harmonic_db") -> float:
    values = [r[key] for r in results if key in r]
    return float(np.median(values)) if values else float("nan")


def prompt_following(model: StableAudioModel, args: argparse.Namespace) -> dict:
    rate = model.sample_rate
    train = draw_prompts(150, seed=args.seed + 1, split="train", render=True, sample_rate=rate)
    rule = dm.FamilyRule(
        [dm.family_features(r["wave"], rate) for r in train], [family(r["kind"], r) for r in train]
    )
    rows = draw_prompts(args.prompts, seed=args.seed, split=args.split, render=True, sample_rate=rate)
    effects = [r for r in draw_prompts(200, seed=args.seed + 2, split="train", sample_rate=rate, render=True)]
    rows += [r for r in effects if r["kind"] == "sfx"][: args.effects]
    draws: list[list[dict]] = [[] for _ in range(args.draws)]
    reference = []
    for i, row in enumerate(rows):
        for k, results in enumerate(draws):
            wave = _generate(model, row, draw_seed(args.seed, i, k), args)
            results.append({"caption": row["caption"], **_measure(row, wave, rate, rule)})
            if k == 0 and i < args.examples:
                dm.spectrogram_png(args.work / f"t2a_{i:02d}.png", [wave], rate, [row["caption"]])
        reference.append(_measure(row, row["wave"], rate, rule))
        print(f"\r{i + 1}/{len(rows)} prompts", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    report = {
        f"{args.split}_prompts": args.prompts,
        "effect_prompts": len(rows) - args.prompts,
        "generated": {k: _rate(draws[0], k) for k in MEASURES},
        "reference_renders": {k: _rate(reference, k) for k in MEASURES},
        "off_harmonic_db_median": {"generated": _median(draws[0]), "reference_renders": _median(reference)},
        "items": draws[0],
    }
    if args.draws > 1:
        report["over_draws"] = over_draws(draws)
    return report


def draw_seed(seed: int, index: int, draw: int) -> int:
    """Draw 0 is the headline draw (prompt i at seed + i); later draws take seeds far from it."""
    return seed + index + 100_000 * draw


def over_draws(draws: list[list[dict]]) -> dict:
    """Each measure's count of right prompts in every draw, and their mean: one draw of ~50 pitched
    prompts moves by several prompts from seed to seed, so the mean says what a draw can expect."""
    out = {}
    for key in MEASURES:
        counts = [_rate(results, key)["ok"] for results in draws]
        n = _rate(draws[0], key)["n"]
        mean = float(np.mean(counts))
        out[key] = {"n": n, "ok_per_draw": counts, "mean_ok": mean, "mean_rate": mean / max(n, 1)}
    return out


def _source(rate: int, seed: int, kind: str, seconds: float) -> dict:
    rows = draw_prompts(
        400, seed=seed, render=True, sample_rate=rate, min_seconds=seconds, max_seconds=seconds
    )
    return next(r for r in rows if r["kind"] == kind)


def _inpaint(model: StableAudioModel, caption: str, wave: torch.Tensor, starts, ends, seed: int, args):
    """8 s regenerated where [starts, ends) say; a source shorter than 8 s is continued."""
    audio = model.generate(
        caption,
        duration=8.0,
        steps=args.steps,
        seed=seed,
        progress=False,
        **args.guidance,
        inpaint_audio=(wave, model.sample_rate),
        inpaint_mask_start_seconds=starts,
        inpaint_mask_end_seconds=ends,
    )
    return audio[0].numpy()


def editing(model: StableAudioModel, ae: AutoencoderModel, args: argparse.Namespace) -> dict:
    rate, out = model.sample_rate, {"inpainting": [], "continuation": []}
    for j, kind in enumerate(("melody", "drums", "chord")):
        src = _source(rate, args.seed + 10 + j, kind, 8.0)
        wave = torch.from_numpy(src["wave"].T.copy())
        recon = ae.decode(ae.encode(wave, sample_rate=rate))[0, :, : wave.shape[-1]].numpy()
        starts, ends = [1.5, 5.0], [3.0, 6.5]
        edited = _inpaint(model, src["caption"], wave, starts, ends, args.seed + j, args)
        keep = np.ones(wave.shape[-1], bool)
        for s, e in zip(starts, ends, strict=True):
            keep[int(s * rate) : int(e * rate)] = False
        kept = dm.stft_distance(edited[:, keep], recon[:, keep])
        filled = dm.stft_distance(edited[:, ~keep], src["wave"].T[:, ~keep])
        rms_recon = max(float(np.sqrt((recon[:, ~keep] ** 2).mean())), 1e-9)
        fill_rms = float(np.sqrt((edited[:, ~keep] ** 2).mean())) / rms_recon
        out["inpainting"].append(
            {
                "caption": src["caption"],
                "kept_vs_reconstruction": kept,
                "filled_vs_source": filled,
                "filled_rms_ratio": fill_rms,
            }
        )
        marks = [(2, s, e) for s, e in zip(starts, ends, strict=True)]
        dm.spectrogram_png(
            args.images / f"demo_inpainting_{kind}.png",
            [src["wave"].T, recon, edited],
            rate,
            ["source", "autoencoder reconstruction", "inpainted (regions outlined)"],
            marks,
        )
        prefix = wave[:, : 4 * rate]
        cont = _inpaint(model, src["caption"], prefix, 4.0, 8.0, args.seed + j, args)
        out["continuation"].append(
            {
                "caption": src["caption"],
                "seam_ratio": dm.seam_ratio(cont, rate, 4.0),
                "reference_seam_ratio_at_4s": dm.seam_ratio(src["wave"].T, rate, 4.0),
                "median_ratio_elsewhere": float(np.median([dm.seam_ratio(cont, rate, t) for t in ELSEWHERE])),
            }
        )
        dm.spectrogram_png(
            args.images / f"demo_continuation_{kind}.png",
            [prefix.numpy(), cont],
            rate,
            ["the first 4 s of the source", "continued to 8 s (seam outlined)"],
            [(1, 3.95, 4.05)],
        )
    return out


def speed(model: StableAudioModel, args: argparse.Namespace) -> dict:
    fixed = {"duration": 10.0, "steps": args.steps, "progress": False, **args.guidance}
    model.generate("drum kit, rock beat, 120 BPM", seed=0, **fixed)
    times = []
    for i in range(args.repeats):
        start = time.perf_counter()
        prompt = f"acoustic grand piano, C major chord {i}"  # a new prompt: no cached encoding
        model.generate(prompt, seed=i, **fixed)
        times.append(time.perf_counter() - start)
    return {"seconds_for_10s": float(np.median(times)), "all": times, "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo")
    p.add_argument("--prompts", type=int, default=120, help="prompts drawn from the split")
    p.add_argument(
        "--split",
        default="held_out",
        choices=["held_out", "train"],
        help="draw the prompts from the training split instead: does a miss come from generalising?",
    )
    p.add_argument("--effects", type=int, default=20, help="effect prompts (family only)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument(
        "--cfg-scale", type=float, default=None, help="guidance (default: the model's generation_config.json)"
    )
    apg = "1: pure APG, 0: plain CFG (default: as --cfg-scale)"
    p.add_argument("--apg-scale", type=float, default=None, help=apg)
    p.add_argument(
        "--cfg-interval", type=float, nargs=2, default=None, help="noise levels guided (as --cfg-scale)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--draws", type=int, default=1, help="generate each prompt N times (the first is the headline)"
    )
    p.add_argument("--examples", type=int, default=0, help="spectrograms of the first N generations")
    p.add_argument("--images", type=Path, default=HERE.parent / "docs" / "images")
    p.add_argument("--out", type=Path, default=HERE / "results" / "evaluate_demo.json")
    p.add_argument("--skip", nargs="*", default=[], choices=["prompts", "editing", "speed"])
    args = p.parse_args()
    if args.draws < 1:
        p.error(f"--draws must be at least 1, got {args.draws}")
    args.work = args.out.parent / "demo_examples"
    model = StableAudioModel.from_pretrained(args.model, device="cpu")
    ae = AutoencoderModel.from_pretrained(args.model, device="cpu")
    report = {"model": args.model, "host": platform.processor() or platform.machine(), "steps": args.steps}
    interval = None if args.cfg_interval is None else tuple(args.cfg_interval)
    given = {"cfg_scale": args.cfg_scale, "cfg_interval": interval, "apg_scale": args.apg_scale}
    args.guidance = fill_defaults(given, model.generation_defaults)  # every generation below uses it
    report.update(args.guidance)
    if "speed" not in args.skip:
        report["speed"] = speed(model, args)
    if "prompts" not in args.skip:
        report["prompts"] = prompt_following(model, args)
    if "editing" not in args.skip:
        report["editing"] = editing(model, ae, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    _print(report)


def _print(report: dict) -> None:
    print("| measure | demo model | reference renders | threshold |\n|---|---|---|---|")
    if "prompts" in report:
        g, r = report["prompts"]["generated"], report["prompts"]["reference_renders"]
        rows = (
            ("pitch within a semitone (note, chord root)", "pitch_ok", "≥ 80 %"),
            ("tempo within 5 %", "tempo_ok", "≥ 80 %"),
            ("tempo within 5 %, double/half allowed", "tempo_ok_octave", "≥ 80 %"),
            ("family (tonal / percussive / noise)", "family_ok", "≥ 90 %"),
        )
        for name, key, threshold in rows:
            print(
                f"| {name} | {g[key]['ok']}/{g[key]['n']} ({100 * g[key]['rate']:.0f} %) | "
                f"{r[key]['ok']}/{r[key]['n']} ({100 * r[key]['rate']:.0f} %) | {threshold} |"
            )
        off = report["prompts"].get("off_harmonic_db_median")
        if off:
            print(
                f"| single notes: energy off the harmonics (median, dB; lower is cleaner) | "
                f"{off['generated']:.1f} | {off['reference_renders']:.1f} | |"
            )
        for key, d in report["prompts"].get("over_draws", {}).items():
            per_draw = ", ".join(str(c) for c in d["ok_per_draw"])
            draws = len(d["ok_per_draw"])
            print(f"| {key} over {draws} draws | mean {d['mean_ok']:.1f}/{d['n']} ({per_draw}) | | |")
    if "editing" in report:
        for item in report["editing"]["inpainting"]:
            print(
                f"| inpainting '{item['caption']}': kept regions vs AE reconstruction (MR-STFT) | "
                f"{item['kept_vs_reconstruction']:.3f} | filled vs source {item['filled_vs_source']:.3f}, "
                f"filled RMS ratio {item['filled_rms_ratio']:.2f} | close to 0 |"
            )
        for item in report["editing"]["continuation"]:
            print(
                f"| continuation '{item['caption']}': seam flux / median flux | {item['seam_ratio']:.2f} | "
                f"source at 4 s {item['reference_seam_ratio_at_4s']:.2f}; the output elsewhere "
                f"{item['median_ratio_elsewhere']:.2f} | near the output's own |"
            )
    if "speed" in report:
        s = report["speed"]
        what = f"10 s of audio, {report['steps']} steps, {s['threads']} threads"
        print(f"| {what} | {s['seconds_for_10s']:.2f} s | | ≤ 2 s |")


if __name__ == "__main__":
    main()
