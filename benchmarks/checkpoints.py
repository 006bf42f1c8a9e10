"""Write true-size random-weight checkpoints in the official layout (for benchmarks only).

The shapes are the released ones (`shared/spec/checkpoint-format.md` §6): small = DiT 1024 x 20,
SAME-S; medium = differential DiT 1536 x 24, SAME-L; both with a T5Gemma b-b encoder.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import torch

FIXTURE_TOKENIZER = (
    Path(__file__).resolve().parents[1] / "tests/fixtures/config_a_small_rf_denoiser/checkpoint"
)
TEXT_SUBFOLDER = "t5gemma-b-b-ul2"

_SAME_COMMON = {
    "channels": 128,
    "c_mults": [6],
    "strides": [16],
    "latent_dim": 256,
    "dim_heads": 64,
    "differential": True,
    "dyt": True,
    "variable_stride": True,
    "ff_mult": 3,
}


def _same(large: bool) -> dict[str, Any]:
    enc = dict(_SAME_COMMON, in_channels=512, mask_noise=0.0)
    if large:
        enc.update(channels=256, transformer_depths=[12], sliding_window=[1, 1], conv_mapping=False)
    else:
        enc.update(transformer_depths=[6], chunk_size=32, chunk_midpoint_shift=True, conv_mapping=False)
    dec = {k: v for k, v in enc.items() if k != "in_channels"}
    dec.update(out_channels=512, mask_noise=0.01, sinusoidal_blocks=[8] if large else [0])
    if not large:
        dec["conv_mapping"] = True
    return {
        "encoder": {"type": "same", "config": enc},
        "decoder": {"type": "same", "config": dec, "soft_clip": False},
        "bottleneck": {
            "type": "softnorm",
            "config": {
                "dim": 256,
                "noise_augment_dim": 0,
                "noise_regularize": True,
                "auto_scale": True,
                "freeze": True,
            },
        },
        "pretransform": {"type": "patched", "config": {"channels": 2, "patch_size": 256}},
        "latent_dim": 256,
        "downsampling_ratio": 4096,
        "io_channels": 2,
    }


def official_config(size: str) -> dict[str, Any]:
    """A `model_config.json` with the released dimensions of `small` or `medium`."""
    if size not in ("small", "medium"):
        raise ValueError("size must be 'small' or 'medium'")
    medium = size == "medium"
    dit = {
        "io_channels": 256,
        "embed_dim": 1536 if medium else 1024,
        "depth": 24 if medium else 20,
        "num_heads": 24 if medium else 16,
        "cond_token_dim": 768,
        "project_cond_tokens": True,
        "global_cond_dim": 768,
        "project_global_cond": True,
        "transformer_type": "continuous_transformer",
        "global_cond_type": "adaLN",
        "timestep_features_type": "expo",
        "timestep_features_dim": 256,
        "local_add_cond_dim": 257,
        "num_memory_tokens": 64,
        "norm_type": "rms_norm",
        "norm_kwargs": {"force_fp32": True},
        "attn_kwargs": {"qk_norm": "rms", "differential": medium},
        "ff_kwargs": {"mult": 4},
    }
    return {
        "model_type": "diffusion_cond_inpaint",
        "sample_rate": 44100,
        "sample_size": 16_777_216 if medium else 5_292_032,
        "audio_channels": 2,
        "model": {
            "io_channels": 256,
            "pretransform": {"type": "autoencoder", "chunked": True, "config": _same(medium)},
            "conditioning": {
                "cond_dim": 768,
                "configs": [
                    {
                        "id": "prompt",
                        "type": "t5gemma",
                        "config": {"max_length": 256, "padding_mode": "learned", "subfolder": TEXT_SUBFOLDER},
                    },
                    {
                        "id": "seconds_total",
                        "type": "number",
                        "config": {"min_val": 0, "max_val": 384, "fourier_features_type": "expo"},
                    },
                ],
            },
            "diffusion": {
                "type": "dit",
                "diffusion_objective": "rf_denoiser",
                "cross_attention_cond_ids": ["prompt", "seconds_total"],
                "global_cond_ids": ["seconds_total"],
                "local_add_cond_ids": ["inpaint_mask", "inpaint_masked_input"],
                "config": dit,
            },
        },
    }


def _write_text_encoder(folder: Path, seed: int) -> None:
    from transformers import T5GemmaConfig, T5GemmaEncoderModel

    src = json.loads((FIXTURE_TOKENIZER / "text_encoder/config.json").read_text())
    enc = copy.deepcopy(src["encoder"])
    enc.update(
        head_dim=64,
        intermediate_size=2048,
        num_attention_heads=12,
        num_key_value_heads=12,
        num_hidden_layers=12,
        query_pre_attn_scalar=64,
        vocab_size=256000,
        layer_types=["sliding_attention", "full_attention"] * 6,
    )
    dec = dict(enc, is_decoder=True, num_hidden_layers=1, layer_types=["sliding_attention"])
    src.update(encoder=enc, decoder=dec, vocab_size=256000, is_encoder_decoder=False)
    config = T5GemmaConfig.from_dict(src)
    with torch.random.fork_rng():  # transformers initialises from the global RNG; keep it untouched
        torch.manual_seed(seed)
        model = T5GemmaEncoderModel(config)
    model.to(torch.bfloat16).save_pretrained(folder)  # the released encoder is stored in bfloat16
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(FIXTURE_TOKENIZER / "text_encoder" / name, folder / name)


def write_random_checkpoint(folder: str | Path, size: str = "small", seed: int = 0) -> Path:
    """Create `folder` with model_config.json, model.safetensors and the text encoder, once."""
    from safetensors.torch import save_file

    from stable_audio_3.model import Networks
    from stable_audio_3.official.checkpoint import export_official_state_dict
    from stable_audio_3.official.config import ModelConfig

    folder = Path(folder)
    done = folder / ".complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    raw = official_config(size)
    cfg = ModelConfig.from_dict(raw)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        nets = Networks(cfg, attention_padding="exclude")
    with torch.no_grad():
        for name, p in nets.named_parameters():
            if p.numel() == 0 or name.endswith("running_std"):
                continue
            if p.dim() >= 2 and p[0].numel() > 1:
                p.normal_(0.0, p[0].numel() ** -0.5, generator=gen)
            else:
                p.normal_(0.0, 0.05, generator=gen).add_(1.0 if name.endswith(("gamma", "weight_g")) else 0.0)
    state = {k: v.contiguous() for k, v in export_official_state_dict(nets).items()}
    save_file(state, str(folder / "model.safetensors"))
    (folder / "model_config.json").write_text(json.dumps(raw, indent=2))
    _write_text_encoder(folder / TEXT_SUBFOLDER, seed)
    done.touch()
    return folder
