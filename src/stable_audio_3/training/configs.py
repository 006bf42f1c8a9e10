"""Stage configurations: a TOML file plus command-line overrides, checked against the stage's
dataclass, so every option is declared once (the dataclass) and documented in one place."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, ClassVar

import tomllib

from stable_audio_3.errors import ArgumentValueError, ConfigError, MissingFileError

__all__ = [
    "RunOptions",
    "DiTRunOptions",
    "PRECISIONS",
    "SHARDINGS",
    "read_toml",
    "build_config",
    "field_kinds",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SHARDINGS = ("ddp", "fsdp")


@dataclasses.dataclass(kw_only=True)
class RunOptions:
    """The options every training stage has, besides its own."""

    seed: int = 42
    device: str | None = None
    precision: str = "auto"  # auto (bf16 autocast on CUDA) | fp32 | bf16 (also on a CPU) | fp16
    resume: bool = False  # continue from <output>/train_state.pt
    progress: bool = True
    tensorboard: bool = False

    HELP: ClassVar[dict[str, str]] = {
        "precision": "auto (bf16 autocast on CUDA, fp32 on a CPU), fp32, bf16 (CUDA or CPU) or fp16",
        "resume": "continue from <output>/train_state.pt (same steps, same losses)",
        "tensorboard": "also write TensorBoard scalars under <output>/tensorboard",
    }

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ArgumentValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")


@dataclasses.dataclass(kw_only=True)
class DiTRunOptions(RunOptions):
    """The options of the stages that train a whole DiT (pre-training, distillation, post-training)."""

    sharding: str = "ddp"  # under torchrun: ddp | fsdp
    max_grad_norm: float = 0.0  # clip the gradients' global L2 norm to this; 0: no clipping

    HELP: ClassVar[dict[str, str]] = {
        "max_grad_norm": "clip the gradients' global L2 norm to this before each step (0: no clipping)",
        "sharding": "under torchrun: ddp (a whole copy per process) or fsdp (the DiT, its gradients, "
        "optimizer moments and EMA sharded across the processes)",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sharding not in SHARDINGS:
            raise ArgumentValueError(f"sharding must be one of {SHARDINGS}, got {self.sharding!r}")
        if not self.max_grad_norm >= 0:
            raise ArgumentValueError(f"max_grad_norm must be >= 0, got {self.max_grad_norm!r}")


def read_toml(path: str | Path, section: str | None = None) -> dict[str, Any]:
    """The options in a TOML file: its `[section]` table when present, else its top level."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"--config: file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None
    if section is not None and isinstance(data.get(section), dict):
        data = data[section]
    return {k.replace("-", "_"): v for k, v in data.items()}


def field_kinds(cls: type) -> dict[str, tuple[type, bool]]:
    """Each field's base type and whether it may be None (from the dataclass annotations)."""
    hints = typing.get_type_hints(cls)
    kinds = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if typing.get_origin(hint) in (tuple, list):  # tuple[str, ...]: its arguments are not a union
            kinds[f.name] = (typing.get_origin(hint), False)
            continue
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = type(None) in typing.get_args(hint)
        origin = typing.get_origin(args[0]) if args else typing.get_origin(hint)
        if origin in (tuple, list):
            kinds[f.name] = (origin, optional)
        else:
            kinds[f.name] = (args[0] if args else hint, optional)
    return kinds


def _coerce(name: str, value: Any, kind: type, optional: bool, where: str) -> Any:
    if value is None and optional:
        return None
    if kind in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ArgumentValueError(f"{where}: {name} must be a list, got {value!r}")
        return kind(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ArgumentValueError(f"{where}: {name} must be {kind.__name__}, got {value!r}")
    return value


def build_config(cls: type, file_options: dict[str, Any], overrides: dict[str, Any], where: str) -> Any:
    """`cls(**options)`: the file's options, then the overrides (flags given on the command line)."""
    kinds = field_kinds(cls)
    unknown = sorted(set(file_options) - set(kinds))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)} (known: {', '.join(kinds)})")
    options = {k: _coerce(k, v, *kinds[k], where) for k, v in file_options.items()}
    options.update({k: v for k, v in overrides.items() if v is not None})
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.name not in options
    ]
    if required:
        raise ArgumentValueError(
            f"missing required option(s): {', '.join('--' + r.replace('_', '-') for r in required)}"
        )
    return cls(**options)
