"""Training on top of the public model: LoRA fine-tuning and the Stable Audio 3 stages."""

from stable_audio_3.lora.adapters import ADAPTER_TYPES
from stable_audio_3.training.autoencoder_trainer import AutoencoderTrainConfig, train_autoencoder
from stable_audio_3.training.configs import build_config, field_kinds, read_toml
from stable_audio_3.training.demo_data import DemoDataConfig, make_demo_data
from stable_audio_3.training.distill import DistillConfig, distill, ode_gap, teacher_trajectories
from stable_audio_3.training.export import ExportConfig, export_checkpoint
from stable_audio_3.training.lora_trainer import TrainConfig, train_lora
from stable_audio_3.training.new_model import NewModelConfig, new_model
from stable_audio_3.training.objective import validation_loss
from stable_audio_3.training.post_train import PostTrainConfig, post_train
from stable_audio_3.training.pretrain import PretrainConfig, pretrain

__all__ = [
    "ADAPTER_TYPES",
    "TrainConfig",
    "train_lora",
    "validation_loss",
    "PretrainConfig",
    "pretrain",
    "DemoDataConfig",
    "make_demo_data",
    "NewModelConfig",
    "ExportConfig",
    "export_checkpoint",
    "new_model",
    "AutoencoderTrainConfig",
    "train_autoencoder",
    "PostTrainConfig",
    "post_train",
    "DistillConfig",
    "distill",
    "ode_gap",
    "teacher_trajectories",
    "build_config",
    "field_kinds",
    "read_toml",
]
