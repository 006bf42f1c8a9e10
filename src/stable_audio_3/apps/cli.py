"""`stable-audio-3`: generate audio from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stable-audio-3", description="Generate audio with Stable Audio 3.")
    p.add_argument("--model", default="small-music", help="registry name or local checkpoint directory")
    p.add_argument("-p", "--prompt", required=True, nargs="+", help="one prompt per batch item")
    p.add_argument("--negative-prompt", nargs="+", default=None)
    p.add_argument(
        "--duration", type=float, nargs="+", default=[30.0], help="seconds (one, or one per prompt)"
    )
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--cfg-scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=-1)
    p.add_argument("--device", default=None)
    p.add_argument("--attention-padding", choices=["exclude", "reference_cpu"], default="exclude")
    speed = p.add_argument_group("speed options")
    speed.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        default=None,
        help="compute dtype (default: float16 on CUDA, float32 elsewhere)",
    )
    speed.add_argument("--cuda-graphs", action="store_true", help="replay sampling steps as CUDA graphs")
    speed.add_argument("--compile", action="store_true", help="torch.compile the DiT (GPUs)")
    speed.add_argument(
        "--cpu-int8", action="store_true", help="CPU fast mode: dynamic int8 DiT linears (not exact)"
    )
    p.add_argument("-o", "--output", default="output.wav", help="output file; batches get _<i> suffixes")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from stable_audio_3 import StableAudioModel

    try:
        model = StableAudioModel.from_pretrained(
            args.model, device=args.device, attention_padding=args.attention_padding, dtype=args.dtype
        )
        if args.cuda_graphs:
            model.cuda_graphs = True
        if args.cpu_int8:
            model.enable_cpu_int8()
        if args.compile:
            model.compile()
        duration = args.duration[0] if len(args.duration) == 1 else args.duration
        negative = None
        if args.negative_prompt is not None:
            negative = args.negative_prompt[0] if len(args.negative_prompt) == 1 else args.negative_prompt
        audio = model.generate(
            prompt=args.prompt if len(args.prompt) > 1 else args.prompt[0],
            negative_prompt=negative,
            duration=duration,
            steps=args.steps,
            cfg_scale=args.cfg_scale,
            seed=args.seed,
        )
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"stable-audio-3: error: {err}", file=sys.stderr)
        return 2
    from stable_audio_3 import write_audio

    out = Path(args.output)
    if out.suffix == "":
        out = out.with_suffix(".wav")
    paths = (
        [out]
        if audio.shape[0] == 1
        else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(len(audio))]
    )
    for path, item in zip(paths, audio, strict=True):
        write_audio(path, item, model.sample_rate)
        print(path)
    record = model.last_record
    if record is not None:
        print(f"seed {record.seed}, {record.timings.get('total', 0.0):.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
