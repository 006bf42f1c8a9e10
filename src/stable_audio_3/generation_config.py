"""A checkpoint folder's recommended guidance: `generation_config.json`, our own optional file.

Official checkpoints have none, so `generate()` keeps the official defaults for them (`cfg_scale`
1.0, `cfg_interval` (0, 1), `apg_scale` 1.0). A model that follows prompts best with other settings
carries the file beside `model_config.json` (the demo model does: guidance over the high noise
levels), and every caller that leaves those arguments out (the API, the CLI, the UI, the server)
gets them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stable_audio_3.checks import check_interval, check_number
from stable_audio_3.errors import ArgumentTypeError, ArgumentValueError, CheckpointError

FILENAME = "generation_config.json"

# The official `generate()` defaults of the arguments a folder may recommend.
OFFICIAL_DEFAULTS: dict[str, Any] = {"cfg_scale": 1.0, "cfg_interval": (0.0, 1.0), "apg_scale": 1.0}


def parse_generation_config(data: Any, where: str) -> dict[str, Any]:
    """The recommended arguments in `data`, or a CheckpointError naming `where` and the key (the
    values are checked by the same rules as `generate()`'s arguments)."""
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{where}: must hold a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(OFFICIAL_DEFAULTS))
    if unknown:
        raise CheckpointError(f"{where}: unknown key(s) {unknown} (allowed: {sorted(OFFICIAL_DEFAULTS)})")
    out: dict[str, Any] = {}
    try:
        if "cfg_scale" in data:
            out["cfg_scale"] = check_number("cfg_scale", data["cfg_scale"], low=0.0)
        if "cfg_interval" in data:
            out["cfg_interval"] = check_interval("cfg_interval", data["cfg_interval"])
        if "apg_scale" in data:
            out["apg_scale"] = check_number("apg_scale", data["apg_scale"], low=0.0, high=1.0)
    except (ArgumentTypeError, ArgumentValueError) as err:
        raise CheckpointError(f"{where}: {err}") from None
    return out


def load_generation_config(path: str | Path) -> dict[str, Any]:
    """Read and check one `generation_config.json`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not a readable JSON file ({err})") from None
    return parse_generation_config(data, str(path))


def folder_generation_config(folder: Path) -> dict[str, Any]:
    """The recommendations of a checkpoint folder: empty where it has no such file."""
    path = folder / FILENAME
    return load_generation_config(path) if path.is_file() else {}


def fill_defaults(arguments: dict[str, Any], recommended: Mapping[str, Any]) -> dict[str, Any]:
    """`arguments` with each None among the recommendable ones replaced by the folder's value,
    else the official default."""
    for name, official in OFFICIAL_DEFAULTS.items():
        if arguments.get(name) is None:
            arguments[name] = recommended.get(name, official)
    return arguments
