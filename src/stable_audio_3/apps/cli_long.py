"""`stable-audio --long`: one item past the checkpoint's maximum by windowed continuation
(`generate_long`), streamed into the output file, with the same sidecar record as any output."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

__all__ = ["add_long_flags", "check_long", "run_long"]


def add_long_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("long-form (past the checkpoint's maximum duration)")
    g.add_argument("--long", action="store_true", help="windowed continuation up to --duration seconds")
    g.add_argument("--window", type=float, default=None, help="seconds per window (default: the maximum)")
    g.add_argument("--overlap", type=float, default=None, help="seconds each window continues from")
    g.add_argument("--crossfade", type=float, default=None, help="seconds of each join's crossfade")


class LongFormUsageError(ValueError):
    is_usage_error = True


def check_long(args: argparse.Namespace, batch: int, arguments: dict[str, Any]) -> None:
    """The long-form flags are consistent (before any model loads)."""
    UsageError = LongFormUsageError  # noqa: N806
    if not args.long:
        for flag in ("window", "overlap", "crossfade"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag} only applies with --long")
        return
    if batch != 1:
        raise UsageError("--long makes one item: give one prompt and no --batch-size")
    if "init_audio" in arguments or "inpaint_audio" in arguments:
        raise UsageError("--long cannot be combined with --init-audio or --inpaint-audio")


def run_long(
    args: argparse.Namespace, model: Any, arguments: dict[str, Any], plan: Any, say, file_record
) -> None:
    """Write the long item into plan.paths[0] and its sidecar (`file_record` builds it), each
    renamed into place."""
    from stable_audio_3 import generate_long

    path = plan.paths[0]
    kwargs = {k: v for k, v in arguments.items() if k not in ("prompt", "duration", "batch_size")}
    kwargs.pop("truncate_output_to_duration", None)
    long = {"window": args.window, "overlap": args.overlap, "crossfade": args.crossfade}
    say(f"long-form: {arguments['duration']:g} s in windows")
    generate_long(model, arguments["prompt"], arguments["duration"], output=path, **long, **kwargs)
    record = {**file_record(args, model, arguments), "long": long, "output": {"path": str(path)}}
    sidecar = plan.sidecar(path)
    staged = sidecar.with_name(f".{sidecar.name}.pending")
    staged.write_text(json.dumps(record, indent=1))
    os.replace(staged, sidecar)
    print(path)
