"""Print max |ours - reference| for every fixture entry (the numbers behind the parity tests).

python benchmarks/parity.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import (  # noqa: E402
    checkpoint_dir,
    generated,
    manifest,
    pin_fixture_host_frequencies,
    stage,
)

from stable_audio_3 import StableAudioModel  # noqa: E402
from stable_audio_3.pipeline.guidance import guided_velocity  # noqa: E402


def _err(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    ours, ref = ours.detach().float(), ref.float()
    if ours.shape != ref.shape:
        return float("nan"), ref.abs().max().item()
    return (ours - ref).abs().max().item(), ref.abs().max().item()


def report(config: str) -> list[dict]:
    model = StableAudioModel.from_pretrained(
        checkpoint_dir(config), device="cpu", attention_padding="reference_cpu"
    )
    pin_fixture_host_frequencies(model.networks)
    rows = []

    def add(entry: str, role: str, ours: torch.Tensor, ref: torch.Tensor, end_to_end: bool = False) -> None:
        err, scale = _err(ours, ref)
        bound = (2e-3 if config == "E" else 1e-3) if end_to_end else 1e-4 * max(1.0, scale)
        rows.append({"config": config, "entry": entry, "role": role, "max_abs_err": err, "bound": bound})

    with torch.inference_mode():
        for e in manifest(config)["entries"]:
            name, kind, out, inp = e["name"], e["kind"], e["outputs"], e.get("inputs", {})
            if kind == "text_conditioner":
                emb, _ = model.networks.conditioners["prompt"](e["args"]["prompts"], "cpu")
                add(name, "embeddings", emb, stage(config, out["embeddings"]))
            elif kind == "seconds_conditioner":
                emb, _ = model.networks.conditioners["seconds_total"](e["args"]["seconds"], "cpu")
                add(name, "embeddings", emb, stage(config, out["embeddings"]))
            elif kind == "conditioning_inputs":
                pos, neg = e["args"]["conditioning"], e["args"]["negative_conditioning"]
                c = model.condition(
                    [p["prompt"] for p in pos], [n["prompt"] for n in neg], [p["seconds_total"] for p in pos]
                )
                add(name, "cross_attn_cond", c.cross_cond, stage(config, out["cross_attn_cond"]))
                add(
                    name,
                    "negative_cross_attn_cond",
                    c.negative_cross_cond,
                    stage(config, out["negative_cross_attn_cond"]),
                )
            elif kind == "dit_forward":
                a = e["args"]

                def get(role: str, inp: dict = inp) -> torch.Tensor | None:
                    return stage(config, inp[role]) if role in inp else None

                local = None
                if a["with_inpaint_condition"]:
                    local = torch.cat([get("inpaint_mask"), get("inpaint_masked_input")], dim=1)
                pm = get("padding_mask")
                v = guided_velocity(
                    model.dit,
                    get("x"),
                    get("t"),
                    cross_cond=get("cross_attn_cond"),
                    global_cond=get("global_cond"),
                    local_cond=local,
                    padding_mask=None if pm is None else pm.bool(),
                    cfg_scale=a["cfg_scale"],
                    apg_scale=a["apg_scale"],
                    negative_cross_cond=get("negative_cross_attn_cond"),
                    negative_cross_mask=get("negative_cross_attn_mask"),
                )
                add(name, "v", v, stage(config, out["v"]))
            elif kind == "same_encode":
                audio = stage(config, inp["audio_preprocessed"])
                add(
                    name,
                    "unchunked",
                    model.autoencoder.encode(audio),
                    stage(config, out["latents_unchunked"]),
                )
                add(
                    name,
                    "chunked",
                    model.autoencoder.encode_chunked(audio, 16, 4),
                    stage(config, out["latents_chunked"]),
                )
            elif kind == "same_decode":
                z = stage(config, inp["latents"])
                add(name, "unchunked", model.autoencoder.decode(z), stage(config, out["audio_unchunked"]))
                add(name, "chunked", model.autoencoder.decode_chunked(z), stage(config, out["audio_chunked"]))
                add(
                    name,
                    "chunked_small",
                    model.autoencoder.decode_chunked(z, 32, 8),
                    stage(config, out["audio_chunked_small"]),
                )
            elif kind == "generate" and "init_audio" not in e["args"] and "inpaint_audio" not in e["args"]:
                last: list[torch.Tensor] = []
                audio = model.generate(
                    seed=e["seed"],
                    **e["args"],
                    progress=False,
                    callback=lambda info, last=last: last.append(info.x),
                )
                add(name, "latents", last[-1], generated(config, out["latents"]), end_to_end=True)
                add(name, "audio", audio, generated(config, out["audio"]), end_to_end=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    rows = [r for c in "ABE" for r in report(c)]
    print(f"{'cfg':3} {'entry':42} {'role':26} {'max|Δ|':>10} {'bound':>10}")
    for r in rows:
        print(f"{r['config']:3} {r['entry']:42} {r['role']:26} {r['max_abs_err']:10.2e} {r['bound']:10.2e}")
    print(f"worst stage ratio err/bound: {max(r['max_abs_err'] / r['bound'] for r in rows):.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
