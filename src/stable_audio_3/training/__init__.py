"""Training on top of the public model: LoRA fine-tuning today."""

from stable_audio_3.lora.adapters import ADAPTER_TYPES
from stable_audio_3.training.lora_trainer import TrainConfig, train_lora, validation_loss

__all__ = ["ADAPTER_TYPES", "TrainConfig", "train_lora", "validation_loss"]
