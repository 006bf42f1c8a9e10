"""Stable Audio 3: fast, faithful text-to-audio inference on the official checkpoints."""

from stable_audio_3.audio import read_audio, write_audio
from stable_audio_3.autoencoder import AutoencoderModel
from stable_audio_3.model import StableAudioModel
from stable_audio_3.official.checkpoint import CheckpointError
from stable_audio_3.official.config import ConfigError, ModelConfig
from stable_audio_3.pipeline.record import GenerationRecord
from stable_audio_3.pipeline.request import GenerationCancelled
from stable_audio_3.pipeline.samplers import StepInfo

__all__ = [
    "StableAudioModel",
    "AutoencoderModel",
    "ModelConfig",
    "GenerationRecord",
    "GenerationCancelled",
    "StepInfo",
    "CheckpointError",
    "ConfigError",
    "read_audio",
    "write_audio",
]
__version__ = "0.1.0"
