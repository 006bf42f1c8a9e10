"""`stable-audio-train-lora`: train a LoRA on a folder of captioned audio.

Multi-GPU: `torchrun --nproc_per_node N -m stable_audio_3.apps.train_cli ...` (same arguments).
"""

from __future__ import annotations

import argparse
import os

from stable_audio_3.apps.failures import OneLineParser, run_reporting

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from stable_audio_3.training import ADAPTER_TYPES

    p = OneLineParser(
        prog="stable-audio-train-lora",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", required=True, help="base checkpoint: registry name (e.g. small-music-base) or folder"
    )
    p.add_argument("--data", required=True, help="folder of audio + .txt captions, or a .csv/.jsonl manifest")
    p.add_argument("--output", default="lora_out", help="folder for LoRA files and the resume state")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default: rank)")
    p.add_argument("--adapter-type", default="lora", choices=ADAPTER_TYPES)
    p.add_argument("--include", nargs="*", default=None, help="only layers whose name contains one of these")
    p.add_argument("--exclude", nargs="*", default=None, help="skip layers whose name contains one of these")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--duration", type=float, default=30.0, help="crop length in seconds")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--cfg-dropout", type=float, default=0.1, help="caption dropout probability")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    p.add_argument("--device", default=None)
    p.add_argument(
        "--cache-dir", default=None, help="where encoded latents are cached (default: <data>/.sa3_latents)"
    )
    p.add_argument("--resume", action="store_true", help="continue from <output>/train_state.pt")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_reporting("stable-audio-train-lora", lambda: _train(args))


def _train(args: argparse.Namespace) -> int:
    from stable_audio_3.training import TrainConfig, train_lora

    cfg = TrainConfig(
        model=args.model,
        data=args.data,
        output=args.output,
        rank=args.rank,
        alpha=args.alpha,
        adapter_type=args.adapter_type,
        include=args.include,
        exclude=args.exclude,
        lr=args.lr,
        steps=args.steps,
        batch_size=args.batch_size,
        duration=args.duration,
        seed=args.seed,
        cfg_dropout=args.cfg_dropout,
        checkpoint_every=args.checkpoint_every,
        precision=args.precision,
        device=args.device,
        cache_dir=args.cache_dir,
        resume=args.resume,
        progress=not args.no_progress,
    )
    path = train_lora(cfg)
    if os.environ.get("RANK", "0") == "0":
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
