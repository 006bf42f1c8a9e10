"""Stable Audio 3: fast, faithful text-to-audio inference on the official checkpoints.

The public names are imported on first use, so `import stable_audio_3` (and a command line's
`--help`) does not pay for PyTorch until something needs it. The errors, limits and the demo
model's name need no PyTorch and are imported at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from stable_audio_3.checks import MAX_BATCH_SIZE, MAX_STEPS
from stable_audio_3.errors import (
    ArgumentTypeError,
    ArgumentValueError,
    AudioInputError,
    CheckpointError,
    ConfigError,
    GatedRepoError,
    HubError,
    LoRAFileError,
    MissingFileError,
    NonFiniteOutputError,
    NotCachedError,
    OutOfMemoryError,
    StableAudioError,
)
from stable_audio_3.official.hub import DEMO_MODEL, DEMO_NOTICE

if TYPE_CHECKING:
    from stable_audio_3.audio import read_audio, write_audio
    from stable_audio_3.autoencoder import AutoencoderModel
    from stable_audio_3.longform import generate_long, iter_long
    from stable_audio_3.model import StableAudioModel
    from stable_audio_3.official.config import ModelConfig
    from stable_audio_3.pipeline.record import GenerationRecord
    from stable_audio_3.pipeline.request import GenerationCancelled
    from stable_audio_3.pipeline.samplers import StepInfo

_LAZY = {
    "StableAudioModel": "stable_audio_3.model",
    "AutoencoderModel": "stable_audio_3.autoencoder",
    "ModelConfig": "stable_audio_3.official.config",
    "GenerationRecord": "stable_audio_3.pipeline.record",
    "GenerationCancelled": "stable_audio_3.pipeline.request",
    "StepInfo": "stable_audio_3.pipeline.samplers",
    "generate_long": "stable_audio_3.longform",
    "iter_long": "stable_audio_3.longform",
    "read_audio": "stable_audio_3.audio",
    "write_audio": "stable_audio_3.audio",
}
__all__ = [
    "StableAudioModel",
    "AutoencoderModel",
    "ModelConfig",
    "GenerationRecord",
    "GenerationCancelled",
    "StepInfo",
    "generate_long",
    "iter_long",
    "read_audio",
    "write_audio",
    "MAX_STEPS",
    "MAX_BATCH_SIZE",
    "DEMO_MODEL",
    "DEMO_NOTICE",
    "StableAudioError",
    "ArgumentValueError",
    "ArgumentTypeError",
    "MissingFileError",
    "AudioInputError",
    "CheckpointError",
    "ConfigError",
    "LoRAFileError",
    "HubError",
    "GatedRepoError",
    "NotCachedError",
    "NonFiniteOutputError",
    "OutOfMemoryError",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'stable_audio_3' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
