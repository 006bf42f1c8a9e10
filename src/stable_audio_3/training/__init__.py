"""Training on top of the public model: LoRA fine-tuning today."""

from stable_audio_3.training.lora_trainer import TrainConfig, train_lora, validation_loss

__all__ = ["TrainConfig", "train_lora", "validation_loss"]
