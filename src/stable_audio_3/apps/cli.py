"""`stable-audio` (alias `stable-audio-3`): generate audio from the command line.

Arguments, output paths and input files are all checked before PyTorch is imported or a model is
loaded; bad input is one line on stderr and exit code 2, Ctrl-C is exit code 130, and no file is
ever left half-written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from stable_audio_3 import DEMO_MODEL, DEMO_NOTICE
from stable_audio_3.apps.cli_long import add_long_flags, check_long, run_long
from stable_audio_3.apps.failures import DefaultsHelpFormatter, OneLineParser, run_reporting

__all__ = ["main", "build_parser", "build_job_parser", "add_run_flags", "check_generation", "load_model"]
__all__ += ["file_record"]

PROG = "stable-audio"


def build_parser() -> argparse.ArgumentParser:
    from stable_audio_3 import __version__  # lazy package: no torch here

    p = OneLineParser(
        prog=PROG,
        description="Stable Audio 3: text-to-audio, audio-to-audio, inpainting and continuation.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _model_flags(p.add_argument_group("model"))
    _generation_flags(p.add_argument_group("generation"))
    _editing_flags(p.add_argument_group("audio-to-audio, inpainting and continuation"))
    _lora_flags(p.add_argument_group("LoRA"))
    _output_flags(p.add_argument_group("output"))
    _speed_flags(p.add_argument_group("speed"))
    add_long_flags(p)
    return p


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """The flags that set up a model (checkpoint, LoRAs, speed options), for commands that load one
    model for many generations."""
    _model_flags(p.add_argument_group("model"))
    _lora_flags(p.add_argument_group("LoRA"))
    _speed_flags(p.add_argument_group("speed"))


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(message)


def build_job_parser() -> argparse.ArgumentParser:
    """The per-generation flags alone (what one line of a `stable-audio batch` file may set); its
    errors are raised as `UsageError`s, for the caller to say where."""
    p = _RaisingParser(prog=f"{PROG} batch", add_help=False)
    _generation_flags(p.add_argument_group("generation"))
    _editing_flags(p.add_argument_group("audio-to-audio, inpainting and continuation"))
    return p


def _model_flags(m: argparse._ArgumentGroup) -> None:
    m.add_argument(
        "--model",
        default=None,
        help="registry name (small-music, medium, ...) or local checkpoint directory "
        "(default: the built-in demo model)",
    )
    m.add_argument("--device", default=None, help="cuda / mps / cpu (default: the best available)")
    m.add_argument("--no-half", action="store_true", help="float32 on CUDA instead of float16")
    pad = "padded latents: left out of the softmax, or the reference's CPU way (zeroed values)"
    m.add_argument("--attention-padding", choices=["exclude", "reference_cpu"], default="exclude", help=pad)


def _generation_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("-p", "--prompt", required=True, nargs="+", help="one prompt, or one per batch item")
    g.add_argument("--negative-prompt", nargs="+", default=None, help="one, or one per batch item")
    longest = "default: 30, at most the model's maximum"
    g.add_argument("--duration", type=float, nargs="+", help=f"seconds: one, or one per item ({longest})")
    g.add_argument("--steps", type=int, default=8, help="sampling steps")
    model_default = "default: the model's generation_config.json, else"
    g.add_argument("--cfg-scale", type=float, default=None, help=f"{model_default} 1 (try 7 on -base models)")
    pair = {"type": float, "nargs": 2, "metavar": ("LOW", "HIGH")}
    g.add_argument("--cfg-interval", **pair, help=f"noise levels guided ({model_default} 0 1)")
    apg = "1: adaptive projected guidance, 0: plain CFG"
    g.add_argument("--apg-scale", type=float, default=None, help=f"{apg} ({model_default} 1)")
    g.add_argument(
        "--sampler", choices=["pingpong", "euler", "dpmpp"], default=None, help="default: the checkpoint's"
    )
    g.add_argument("--duration-padding", type=float, default=6.0, help="seconds generated past the duration")
    g.add_argument("--seed", type=int, default=-1, help="-1 draws a random seed (it is recorded)")
    g.add_argument("--batch-size", type=int, default=None, help="default: the number of prompts")


def _editing_flags(e: argparse._ArgumentGroup) -> None:
    e.add_argument("--init-audio", default=None, metavar="PATH", help="audio-to-audio source")
    e.add_argument("--init-noise-level", type=float, default=0.9, help="with --init-audio: 1 = new audio")
    e.add_argument("--inpaint-audio", default=None, metavar="PATH", help="source to inpaint or continue")
    e.add_argument(
        "--inpaint-start",
        type=float,
        nargs="+",
        action="extend",
        default=None,
        metavar="SECONDS",
        help="region starts (several values or repeats = several regions)",
    )
    ends = {"nargs": "+", "action": "extend", "metavar": "SECONDS", "help": "region ends, one per start"}
    e.add_argument("--inpaint-end", type=float, default=None, **ends)
    d = e.add_mutually_exclusive_group()
    chunk = "decode in chunks (less memory; default: the checkpoint's setting)"
    d.add_argument("--chunked-decode", dest="chunked_decode", action="store_true", default=None, help=chunk)
    d.add_argument("--no-chunked-decode", dest="chunked_decode", action="store_false")


def _lora_flags(lo: argparse._ArgumentGroup) -> None:
    lo.add_argument(
        "--lora-ckpt-path",
        nargs="+",
        action="extend",
        default=[],
        metavar="PATH",
        help="LoRA files, stacked in order",
    )
    lo.add_argument(
        "--lora-interval",
        nargs="+",
        action="extend",
        default=None,
        metavar="LOW:HIGH",
        help="noise levels at which a LoRA acts (one for all, or one per LoRA)",
    )
    lo.add_argument(
        "--lora-include",
        nargs="+",
        action="extend",
        default=None,
        metavar="PATTERNS",
        help="comma-separated layer patterns a LoRA acts on (one for all, or one per LoRA)",
    )
    lo.add_argument(
        "--lora-exclude",
        nargs="+",
        action="extend",
        default=None,
        metavar="PATTERNS",
        help="comma-separated layer patterns a LoRA skips (one for all, or one per LoRA)",
    )
    lo.add_argument(
        "--lora-strength",
        type=float,
        nargs="+",
        action="extend",
        default=None,
        help="one for all LoRAs, or one per LoRA",
    )


def _output_flags(o: argparse._ArgumentGroup) -> None:
    o.add_argument("-o", "--output", default="output.wav", help="file; batch items get _<i> suffixes")
    o.add_argument(
        "--format",
        choices=["wav", "flac", "ogg", "mp3"],
        default=None,
        help="default: from the extension (wav without one)",
    )
    o.add_argument("--peak-ceiling-dbfs", type=float, default=None, help="scale down items peaking above")
    o.add_argument("--overwrite", action="store_true", help="replace existing files")


def _speed_flags(s: argparse._ArgumentGroup) -> None:
    s.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        default=None,
        help="default: float16 on CUDA, float32 elsewhere",
    )
    s.add_argument("--cuda-graphs", action="store_true", help="replay sampling steps as CUDA graphs")
    s.add_argument("--compile", action="store_true", help="torch.compile the DiT (GPUs)")
    s.add_argument("--cpu-int8", action="store_true", help="CPU fast mode: int8 DiT linears (not exact)")


class UsageError(ValueError):
    """A flag combination that cannot work."""

    is_usage_error = True


def _per_item(flag: str, values: list | None, batch: int) -> Any:
    if values is None:
        return None
    if len(values) not in (1, batch):
        raise UsageError(f"{flag} has {len(values)} values but the batch has {batch} items")
    return values[0] if len(values) == 1 else list(values)


def _interval(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(":"))
    except ValueError:
        raise UsageError(f"--lora-interval takes LOW:HIGH noise levels, got {text!r}") from None
    if not 0.0 <= low <= high <= 1.0:
        raise UsageError(f"--lora-interval {text}: need 0 <= LOW <= HIGH <= 1")
    return low, high


def _each(values: list | None, count: int) -> list:
    """One value per LoRA from one-for-all or one-each (None when the flag was not given)."""
    if not values:
        return [None] * count
    return values * count if len(values) == 1 else list(values)


def check_generation(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """The batch size and the generate() arguments, or a UsageError naming the flag."""
    prompts = args.prompt
    batch = args.batch_size if args.batch_size is not None else len(prompts)
    from stable_audio_3 import MAX_BATCH_SIZE, MAX_STEPS

    if not 1 <= batch <= MAX_BATCH_SIZE:
        raise UsageError(f"--batch-size must be in [1, {MAX_BATCH_SIZE}], got {batch}")
    if len(prompts) > 1 and batch != len(prompts):
        raise UsageError(f"--batch-size {batch} does not match the {len(prompts)} prompts")
    if any(not d > 0 for d in args.duration or []):
        raise UsageError(f"--duration must be > 0, got {args.duration}")
    if args.cuda_graphs and args.device is not None and not args.device.startswith("cuda"):
        raise UsageError(f"--cuda-graphs needs a CUDA device, not --device {args.device}")
    if args.cpu_int8 and args.dtype not in (None, "float32"):
        raise UsageError(f"--cpu-int8 needs a float32 model, not --dtype {args.dtype}")
    if not 1 <= args.steps <= MAX_STEPS:
        raise UsageError(f"--steps must be in [1, {MAX_STEPS}], got {args.steps}")
    starts, ends = args.inpaint_start, args.inpaint_end
    if (starts is None) != (ends is None) or (starts and len(starts) != len(ends)):
        raise UsageError("--inpaint-start and --inpaint-end need the same number of values")
    if starts and not args.inpaint_audio:
        raise UsageError("--inpaint-start/--inpaint-end need --inpaint-audio")
    if args.inpaint_audio and not starts:
        raise UsageError("--inpaint-audio needs --inpaint-start and --inpaint-end")
    _check_files_and_loras(args)
    arguments: dict[str, Any] = {
        "prompt": prompts[0] if len(prompts) == 1 else list(prompts),
        "negative_prompt": _per_item("--negative-prompt", args.negative_prompt, batch),
        "duration": _per_item("--duration", args.duration, batch),
        "steps": args.steps,
        "cfg_scale": args.cfg_scale,
        "cfg_interval": None if args.cfg_interval is None else tuple(args.cfg_interval),
        "apg_scale": args.apg_scale,
        "sampler": args.sampler,
        "duration_padding_sec": args.duration_padding,
        "seed": args.seed,
        "batch_size": batch,
        "chunked_decode": args.chunked_decode,
        "truncate_output_to_duration": False,  # every item is cut to its own duration when written
    }
    if args.init_audio:
        arguments.update(
            init_audio=str(Path(args.init_audio).resolve()), init_noise_level=args.init_noise_level
        )
    if args.inpaint_audio:
        arguments.update(
            inpaint_audio=str(Path(args.inpaint_audio).resolve()),
            inpaint_mask_start_seconds=starts[0] if len(starts) == 1 else starts,
            inpaint_mask_end_seconds=ends[0] if len(ends) == 1 else ends,
        )
    return batch, arguments


def _check_files_and_loras(args: argparse.Namespace) -> None:
    """Input files exist; per-LoRA flags have one value for all or one per file."""
    for flag, path in [
        ("--init-audio", args.init_audio),
        ("--inpaint-audio", args.inpaint_audio),
        *(("--lora-ckpt-path", p) for p in args.lora_ckpt_path),
    ]:
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{flag}: no such file: {path}")
    for flag in ("strength", "interval", "include", "exclude"):
        values = getattr(args, f"lora_{flag}")
        if values is not None and len(values) not in (1, len(args.lora_ckpt_path)):
            raise UsageError(
                f"--lora-{flag} has {len(values)} values for {len(args.lora_ckpt_path)} LoRA file(s)"
            )
    args.lora_interval = [_interval(v) for v in args.lora_interval or []]


def load_model(args: argparse.Namespace, say) -> Any:
    from stable_audio_3 import StableAudioModel

    say(f"loading {args.model}")
    model = StableAudioModel.from_pretrained(
        args.model,
        device=args.device,
        model_half=False if args.no_half else None,
        attention_padding=args.attention_padding,
        dtype=args.dtype,
    )
    if args.lora_ckpt_path:
        say(f"loading {len(args.lora_ckpt_path)} LoRA(s)")
        model.load_lora(args.lora_ckpt_path)
        count = len(args.lora_ckpt_path)
        settings = zip(
            _each(args.lora_strength, count),
            _each(args.lora_interval, count),
            _each(args.lora_include, count),
            _each(args.lora_exclude, count),
            strict=True,
        )
        for i, (strength, interval, include, exclude) in enumerate(settings):
            if strength is not None:
                model.set_lora_strength(strength, lora_index=i)
            if interval is not None:
                model.set_lora_interval(*interval, lora_index=i)
            if include is not None or exclude is not None:
                model.set_lora_layers(include, exclude, lora_index=i)
    if args.cuda_graphs:
        model.cuda_graphs = True
    if args.cpu_int8:
        model.enable_cpu_int8()
    if args.compile:
        model.compile()
    return model


def file_record(
    args: argparse.Namespace, model: Any, arguments: dict[str, Any], record: Any = None
) -> dict[str, Any]:
    import torch

    from stable_audio_3 import __version__

    """The sidecar of a written file: model, arguments, LoRAs, options, the generation record
    (`record`, default the model's last)."""
    rec = (record or model.last_record).to_dict()
    return {
        "model": args.model if not Path(args.model).is_dir() else str(Path(args.model).resolve()),
        "revision": None,
        "arguments": {**arguments, "seed": rec["seed"]},
        "loras": [
            {
                "path": str(Path(p).resolve()),
                "strength": s,
                "interval": list(st.interval),
                "include": st.include,
                "exclude": st.exclude,
            }
            for p, s, st in zip(args.lora_ckpt_path, model.lora_strengths(), model.lora.settings, strict=True)
        ],
        "options": {
            "device": str(model.device),
            "dtype": rec["dtype"],
            "no_half": args.no_half,
            "attention_padding": args.attention_padding,
            "cpu_int8": args.cpu_int8,
        },
        "seed": rec["seed"],
        "record": rec,
        "versions": {"stable_audio_3": __version__, "torch": torch.__version__},
    }


def _run(args: argparse.Namespace) -> int:
    from stable_audio_3.apps.outputs import checkpoint_sample_rate, plan_outputs, write_outputs

    batch, arguments = check_generation(args)
    check_long(args, batch, arguments)
    if args.model is None:
        args.model = DEMO_MODEL
        print(f"{PROG}: {DEMO_NOTICE}", file=sys.stderr, flush=True)
    plan = plan_outputs(args.output, batch, args.format, checkpoint_sample_rate(args.model), args.overwrite)
    tty = sys.stderr.isatty()

    def say(line: str) -> None:
        print(f"{PROG}: {line}", file=sys.stderr, flush=True)

    def step_line(info: Any) -> None:
        say(f"step {info.step + 1}/{info.steps}" + ("; decoding" if info.step + 1 == info.steps else ""))

    model = load_model(args, say)
    if arguments["duration"] is None:  # 30 s, at most what the checkpoint makes in one go (but --long)
        arguments["duration"] = 30.0 if args.long else model.default_duration
    if args.long:
        return run_long(args, model, arguments, plan, say, file_record) or 0
    audio = model.generate(**arguments, progress=tty, callback=None if tty else step_line)
    record = file_record(args, model, arguments)
    durations = (
        arguments["duration"] if isinstance(arguments["duration"], list) else [arguments["duration"]] * batch
    )
    for path in write_outputs(plan, audio, model.sample_rate, durations, record, args.peak_ceiling_dbfs):
        print(path)
    say(f"seed {record['seed']}, {record['record']['timings'].get('total', 0.0):.2f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting(PROG, lambda: _run(args), "interrupted; nothing was written")
