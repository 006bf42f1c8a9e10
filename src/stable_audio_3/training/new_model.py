"""A new model to pre-train from scratch: a DiT and conditioning template (`model_config.json` in
the official schema), a trained autoencoder folder and a fresh T5Gemma-shaped text encoder whose
tokenizer is trained on the dataset's captions, composed into one checkpoint folder in the
official layout. `pretrain --base <that folder>` trains it; this is how the demo model starts."""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from stable_audio_3.checks import check_int, check_number
from stable_audio_3.errors import ConfigError
from stable_audio_3.official.conditioner_config import T5GEMMA_WIDTHS
from stable_audio_3.official.config import ModelConfig, read_config_json
from stable_audio_3.training import loop
from stable_audio_3.training.autoencoder_trainer import load_autoencoder_weights, standalone_config
from stable_audio_3.training.dataset import find_clips
from stable_audio_3.training.export import write_checkpoint
from stable_audio_3.training.text_encoder_folder import write_text_encoder_folder

__all__ = ["NewModelConfig", "new_model", "compose_config"]


@dataclass
class NewModelConfig:
    """What `stable-audio-train new-model` composes."""

    template: str  # model_config.json: DiT and conditioning (its pretransform section is replaced)
    autoencoder: str  # a trained autoencoder folder (`stable-audio-train autoencoder` output)
    captions: str  # folder of audio + captions, or a manifest: the tokenizer's training text
    output: str = "new_model"
    seed: int = 0
    text_layers: int = 2
    text_heads: int = 4
    text_head_dim: int = 64
    text_ff: int = 1024
    vocab_size: int = 512
    position_scale: float = 0.0  # 0: the reference's initial scale, embed_dim ** -0.5
    split_digits: bool = False  # tokenizer: "c4" -> "c", "4"

    HELP: ClassVar[dict[str, str]] = {
        "template": "model_config.json of the DiT and conditioning (official schema)",
        "autoencoder": "trained autoencoder folder; its config becomes the pretransform section",
        "captions": "folder of audio + .txt captions, or a .csv/.jsonl manifest",
        "output": "checkpoint folder to write (random DiT, trained autoencoder, new text encoder)",
        "position_scale": "initial scale of the DiT's sinusoidal positions when the template has "
        "use_sinusoidal_emb (0: the reference's embed_dim ** -0.5, tiny next to the noise)",
        "split_digits": "tokenize a note as pitch class and octave (c4 -> c 4), as sharps already are",
    }

    def __post_init__(self) -> None:
        for name in ("seed", "text_layers", "text_heads", "text_head_dim", "text_ff", "vocab_size"):
            check_int(name, getattr(self, name), low=0 if name == "seed" else 1)
        check_number("position_scale", self.position_scale, low=0.0)


def compose_config(template: dict[str, Any], autoencoder: dict[str, Any]) -> dict[str, Any]:
    """The template with the autoencoder's section as its pretransform, and every width that
    follows from the latent size (DiT input/output, the inpainting channels) set to match."""
    raw = copy.deepcopy(template)
    section = copy.deepcopy(autoencoder["model"])
    latent = int(section["latent_dim"])
    raw["sample_rate"] = int(autoencoder.get("sample_rate", raw.get("sample_rate", 44100)))
    raw["audio_channels"] = int(autoencoder.get("audio_channels", section.get("io_channels", 2)))
    model = raw["model"]
    pre = model.setdefault("pretransform", {"type": "autoencoder"})
    pre["config"] = section
    model["io_channels"] = latent
    dit = model["diffusion"]["config"]
    dit["io_channels"] = latent
    if model["diffusion"].get("local_add_cond_ids"):
        dit["local_add_cond_dim"] = latent + 1  # the inpainting mask and the masked input's latents
    granule = int(section["downsampling_ratio"]) * 2
    raw["sample_size"] = max(granule, int(raw["sample_size"]) // granule * granule)
    return raw


def _prompt_settings(raw: dict[str, Any]) -> dict[str, Any]:
    prompt = next(c for c in raw["model"]["conditioning"]["configs"] if c["type"] == "t5gemma")["config"]
    name = prompt.get("model_name", "google/t5gemma-b-b-ul2")
    if name not in T5GEMMA_WIDTHS:
        raise ConfigError(f"config: prompt model_name {name!r} has no known width")
    return {"width": T5GEMMA_WIDTHS[name], "max_length": int(prompt.get("max_length", 128))}


def new_model(cfg: NewModelConfig) -> Path:
    """Write the composed checkpoint folder; returns its path."""
    ae_config, ae_weights = standalone_config(cfg.autoencoder)
    if ae_weights is None:
        raise ConfigError(f"autoencoder: {cfg.autoencoder} is a config file, not a trained folder")
    raw = compose_config(read_config_json(cfg.template), ae_config)
    try:
        model_cfg = ModelConfig.from_dict(raw)
        model_cfg.check_wiring()
    except (TypeError, ValueError, KeyError) as err:
        raise ConfigError(f"{cfg.template}: the composed config is not valid ({err})") from None
    from stable_audio_3.models.networks import Networks

    with loop.forked_rng(cfg.seed):
        networks = Networks(model_cfg, "exclude")
    load_autoencoder_weights(networks.autoencoder, ae_weights)
    if cfg.position_scale:
        _scale_positions(networks.dit, cfg.position_scale, cfg.template)
    captions = [clip.caption for clip in find_clips(cfg.captions)]
    out = Path(cfg.output)
    staging = out.with_name(f".{out.name}.text_encoder")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write_text_encoder_folder(
            staging,
            captions,
            layers=cfg.text_layers,
            heads=cfg.text_heads,
            head_dim=cfg.text_head_dim,
            ff=cfg.text_ff,
            vocab_size=cfg.vocab_size,
            seed=cfg.seed,
            split_digits=cfg.split_digits,
            **_prompt_settings(raw),
        )
        with torch.no_grad():
            return write_checkpoint(networks, out, raw, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _scale_positions(dit, scale: float, template: str) -> None:
    """Start the DiT's absolute positions at rms `scale` (the reference starts them at
    embed_dim ** -0.5 of its tokens' size, too small to be picked up in a short run)."""
    positions = dit.positions
    if positions is None:
        raise ConfigError(f"position_scale: {template} has no use_sinusoidal_emb or use_abs_pos_emb")
    with torch.no_grad():
        if hasattr(positions, "scale"):
            positions.scale.fill_(scale)
        else:
            weight = positions.emb.weight
            weight.mul_(scale * positions.dim**0.5 / weight.pow(2).mean().sqrt())
