"""`Networks`: every trainable tensor of a checkpoint in one module tree (DiT, conditioners, SAME)."""

from __future__ import annotations

from torch import nn

from stable_audio_3.models.conditioners import NumberConditioner, PromptConditioner
from stable_audio_3.models.dit import DiffusionTransformer
from stable_audio_3.models.same import SAMEAutoencoder
from stable_audio_3.official.config import ModelConfig

__all__ = ["Networks"]


class Networks(nn.Module):
    """The module tree the official state dict maps onto (`official.checkpoint` names its keys)."""

    def __init__(self, cfg: ModelConfig, attention_padding: str) -> None:
        super().__init__()
        self.dit = DiffusionTransformer(cfg.diffusion.dit, attention_padding=attention_padding)
        self.conditioners = nn.ModuleDict(
            {cfg.prompt.id: PromptConditioner(cfg.prompt), cfg.seconds.id: NumberConditioner(cfg.seconds)}
        )
        self.autoencoder = SAMEAutoencoder(cfg.pretransform.autoencoder, cfg.pretransform.iterate_batch)
