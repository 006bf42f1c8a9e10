"""Stable Audio 3: fast, faithful text-to-audio inference on the official checkpoints."""

from .autoencoder import AutoencoderModel
from .checkpoint import CheckpointError
from .config import ConfigError, ModelConfig
from .generation import GenerationCancelled, GenerationRecord
from .model import StableAudioModel
from .samplers import StepInfo

__all__ = [
    "StableAudioModel",
    "AutoencoderModel",
    "ModelConfig",
    "GenerationRecord",
    "GenerationCancelled",
    "StepInfo",
    "CheckpointError",
    "ConfigError",
]
__version__ = "0.1.0"
