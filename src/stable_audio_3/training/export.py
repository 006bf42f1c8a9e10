"""Writing trained models in the official layout, so `StableAudioModel.from_pretrained(dir)` loads
them like a released checkpoint: `model_config.json`, `model.safetensors` (official key names) and
the text-encoder folder beside them."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from stable_audio_3.official import hub
from stable_audio_3.official.checkpoint import export_official_state_dict

__all__ = ["text_encoder_folder", "write_checkpoint"]


def text_encoder_folder(base: str | Path, raw: Mapping[str, Any]) -> Path:
    """Where the base checkpoint's text encoder lives (a local folder, or the hub cache)."""
    files = hub.resolve_model(base)
    prompt = next(c for c in raw["model"]["conditioning"]["configs"] if c["type"] == "t5gemma")["config"]
    return hub.resolve_text_encoder(
        files, prompt.get("repo_id"), prompt.get("subfolder"), prompt.get("model_path")
    )


def write_checkpoint(
    networks: torch.nn.Module,
    folder: Path,
    raw_config: Mapping[str, Any],
    encoder_folder: Path,
    *,
    objective: str | None = None,
    text_encoder: object | None = None,
) -> Path:
    """Write `networks` (our Networks tree) as an official checkpoint folder, atomically: built in
    a temporary folder beside it and renamed into place. `objective` overrides the config's
    `diffusion_objective` (post-training turns a rectified_flow model into an rf_denoiser);
    `text_encoder`, when it was trained too, writes its weights into the copied encoder folder."""
    config = copy.deepcopy(dict(raw_config))
    prompt = next(c for c in config["model"]["conditioning"]["configs"] if c["type"] == "t5gemma")["config"]
    subfolder = prompt.get("subfolder") or "text_encoder"
    prompt.update(subfolder=subfolder, repo_id=None)
    prompt.pop("model_path", None)
    if objective is not None:
        config["model"]["diffusion"]["diffusion_objective"] = objective
    tmp = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in export_official_state_dict(networks).items()}
    save_file(state, str(tmp / hub.WEIGHTS_FILE))
    (tmp / hub.CONFIG_FILE).write_text(json.dumps(config, indent=2))
    shutil.copytree(encoder_folder, tmp / subfolder)
    if text_encoder is not None:  # trained with the model: its current weights replace the copied ones
        text_encoder.save_weights(encoder_folder, tmp / subfolder)
    old = folder.with_name(f".{folder.name}.old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder
