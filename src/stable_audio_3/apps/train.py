"""`stable-audio-train`: every training stage as a subcommand, configured by a TOML file and flags.

    stable-audio-train pretrain --config pretrain.toml --steps 2000
    stable-audio-train lora --model small-music-base --data clips/ --output my_lora/

Each subcommand's flags are generated from its configuration dataclass (one flag per option,
`--config FILE` for a TOML file whose options the flags override). Multi-GPU or multi-node: run
the same command under `torchrun` (`torchrun --nproc_per_node 4 -m stable_audio_3.apps.train ...`).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from stable_audio_3.apps.failures import OneLineParser, run_reporting

__all__ = ["main", "build_parser", "STAGES"]

PROG = "stable-audio-train"
# subcommand -> (config class name, run function name, what it does)
STAGES = {
    "make-demo-data": (
        "DemoDataConfig",
        "make_demo_data",
        "render the captioned demo dataset (needs .[train])",
    ),
    "autoencoder": (
        "AutoencoderTrainConfig",
        "train_autoencoder",
        "a SAME-shaped autoencoder for any official config",
    ),
    "new-model": (
        "NewModelConfig",
        "new_model",
        "compose a model to pre-train: a DiT template, a trained autoencoder, a new text encoder",
    ),
    "pretrain": ("PretrainConfig", "pretrain", "stage 1: flow-matching pre-training of the DiT"),
    "distill": ("DistillConfig", "distill", "stage 2: ODE-distillation warm-up of a stage-1 model"),
    "post-train": ("PostTrainConfig", "post_train", "stage 3: adversarial post-training to an rf_denoiser"),
    "lora": ("TrainConfig", "train_lora", "LoRA fine-tuning on a base checkpoint"),
    "export": ("ExportConfig", "export_checkpoint", "a trained checkpoint with its weights stored smaller"),
}


def _stage(name: str) -> tuple[type, Any]:
    import stable_audio_3.training as training

    cls_name, fn_name, _ = STAGES[name]
    return getattr(training, cls_name), getattr(training, fn_name)


def _add_flags(p: argparse.ArgumentParser, cls: type) -> None:
    """One flag per dataclass field; every default is None so only given flags override the file."""
    import dataclasses

    from stable_audio_3.training import field_kinds

    helps = {k: v for c in reversed(cls.__mro__) for k, v in vars(c).get("HELP", {}).items()}
    for f, (kind, _) in zip(dataclasses.fields(cls), field_kinds(cls).values(), strict=True):
        flag = "--" + f.name.replace("_", "-")
        default = None if f.default is dataclasses.MISSING else f.default
        text = helps.get(f.name, "") + (f" (default: {default})" if default not in (None, ()) else "")
        if kind not in (bool, int, float, str, list, tuple):
            continue  # structured options (mappings) come from the config file only
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif kind in (list, tuple):
            p.add_argument(flag, nargs="*", default=None, help=text)
        else:
            p.add_argument(flag, type=kind, default=None, help=text, metavar=f.name.upper())


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, (_, _, text) in STAGES.items():
        s = sub.add_parser(name, help=text, description=text)
        s.add_argument("--config", default=None, help="TOML file of options (flags override it)")
        _add_flags(s, _stage(name)[0])
    return p


def run(stage: str, options: dict[str, Any]) -> int:
    from stable_audio_3.training import build_config, read_toml

    cls, fn = _stage(stage)
    config_file = options.pop("config", None)
    file_options = read_toml(config_file, stage) if config_file else {}
    cfg = build_config(cls, file_options, options, config_file or f"{PROG} {stage}")
    result = fn(cfg)
    if os.environ.get("RANK", "0") == "0":
        print(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    stage = args.pop("stage")
    return run_reporting(f"{PROG} {stage}", lambda: run(stage, args))


if __name__ == "__main__":
    raise SystemExit(main())
