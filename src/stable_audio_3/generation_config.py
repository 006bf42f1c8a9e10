"""A checkpoint folder's recommended guidance: `generation_config.json`, our own optional file.

Official checkpoints have none, so `generate()` keeps the official defaults for them (`cfg_scale`
1.0, `cfg_interval` (0, 1)). A model that follows prompts best with other settings carries the file
beside `model_config.json` (the demo model does: guidance over the high noise levels), and every
caller that leaves those arguments out (the API, the CLI, the UI, the server) gets them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stable_audio_3.errors import CheckpointError

FILENAME = "generation_config.json"

# The official `generate()` defaults of the arguments a folder may recommend.
OFFICIAL_DEFAULTS: dict[str, Any] = {"cfg_scale": 1.0, "cfg_interval": (0.0, 1.0)}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_generation_config(data: Any, where: str) -> dict[str, Any]:
    """The recommended arguments in `data`, or a CheckpointError naming `where` and the key."""
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{where}: must hold a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(OFFICIAL_DEFAULTS))
    if unknown:
        raise CheckpointError(f"{where}: unknown key(s) {unknown} (allowed: {sorted(OFFICIAL_DEFAULTS)})")
    out: dict[str, Any] = {}
    if "cfg_scale" in data:
        scale = data["cfg_scale"]
        if not _number(scale) or scale < 0:
            raise CheckpointError(f"{where}: cfg_scale must be a finite number >= 0, got {scale!r}")
        out["cfg_scale"] = float(scale)
    if "cfg_interval" in data:
        pair = data["cfg_interval"]
        ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and all(_number(v) for v in pair)
        if not ok or not 0.0 <= pair[0] <= pair[1] <= 1.0:
            raise CheckpointError(
                f"{where}: cfg_interval must be [low, high] with 0 <= low <= high <= 1, got {pair!r}"
            )
        out["cfg_interval"] = (float(pair[0]), float(pair[1]))
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
