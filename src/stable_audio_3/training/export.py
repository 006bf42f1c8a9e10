"""Writing trained models in the official layout, so `StableAudioModel.from_pretrained(dir)` loads
them like a released checkpoint: `model_config.json`, `model.safetensors` (official key names) and
the text-encoder folder beside them."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from stable_audio_3.errors import ConfigError
from stable_audio_3.generation_config import FILENAME as GENERATION_CONFIG
from stable_audio_3.generation_config import load_generation_config
from stable_audio_3.official import hub
from stable_audio_3.official.checkpoint import (
    export_official_state_dict,
    official_to_ours,
    ours_to_official,
    read_safetensors,
)
from stable_audio_3.official.config import read_config_json
from stable_audio_3.official.same_config import same_but_decoder_window

__all__ = ["text_encoder_folder", "write_checkpoint", "ExportConfig", "export_checkpoint"]


def text_encoder_folder(base: str | Path, raw: Mapping[str, Any]) -> Path:
    """Where the base checkpoint's text encoder lives (a local folder, or the hub cache)."""
    files = hub.resolve_model(base)
    prompt = next(c for c in raw["model"]["conditioning"]["configs"] if c["type"] == "t5gemma")["config"]
    return hub.resolve_text_encoder(
        files, prompt.get("repo_id"), prompt.get("subfolder"), prompt.get("model_path")
    )


def replace_folder(built: Path, folder: Path) -> Path:
    """Put the finished folder `built` at `folder`, replacing what was there only once it is
    complete (the old one is moved aside first and removed last)."""
    old = folder.with_name(f".{folder.name}.old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    built.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def write_checkpoint(
    networks: torch.nn.Module,
    folder: Path,
    raw_config: Mapping[str, Any],
    encoder_folder: Path,
    *,
    objective: str | None = None,
    text_encoder: object | None = None,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write `networks` (our Networks tree) as an official checkpoint folder, atomically: built in
    a temporary folder beside it and renamed into place. `objective` overrides the config's
    `diffusion_objective` (post-training turns a rectified_flow model into an rf_denoiser);
    `text_encoder`, when it was trained too, writes its weights into the copied encoder folder;
    `state`, when given, is `networks`' state dict gathered whole (a sharded run's)."""
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

    official = export_official_state_dict(networks, state=state)
    save_file({k: v.contiguous() for k, v in official.items()}, str(tmp / hub.WEIGHTS_FILE))
    (tmp / hub.CONFIG_FILE).write_text(json.dumps(config, indent=2))
    shutil.copytree(encoder_folder, tmp / subfolder)
    if text_encoder is not None:  # trained with the model: its current weights replace the copied ones
        text_encoder.save_weights(encoder_folder, tmp / subfolder)
    return replace_folder(tmp, folder)


@dataclass
class ExportConfig:
    """What `stable-audio-train export` writes: a trained checkpoint folder, smaller."""

    model: str  # a checkpoint folder (a stage's `<output>/checkpoint`)
    output: str  # the folder to write (replaced atomically)
    dtype: str = "float16"  # storage type of floating-point weights: float16, bfloat16 or float32
    autoencoder: str | None = None  # a decoder fine-tuned on the model's latents, to ship instead
    generation_config: str | None = None  # recommended guidance to ship (generation_config.json)

    HELP: ClassVar[dict[str, str]] = {
        "model": "trained checkpoint folder",
        "output": "folder to write: config, weights in --dtype, text encoder",
        "dtype": "storage type of the floating-point weights (loading casts them back)",
        "autoencoder": "autoencoder folder whose decoder replaces the model's (its encoder and "
        "bottleneck must be the model's own: `autoencoder --no-train-encoder`)",
        "generation_config": "JSON file of the guidance `generate()` uses when the caller gives none "
        "(cfg_scale, cfg_interval, apg_scale), written into the folder as generation_config.json",
    }

    def __post_init__(self) -> None:
        from stable_audio_3.errors import ArgumentValueError

        if self.dtype not in _DTYPES:
            raise ArgumentValueError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if self.generation_config is not None:
            load_generation_config(self.generation_config)  # a bad file fails before any work


_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def _cast_file(source: Path, target: Path, dtype: torch.dtype) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    cast = {k: (t.to(dtype) if t.is_floating_point() else t).contiguous() for k, t in tensors.items()}
    save_file(cast, str(target), metadata)


def export_checkpoint(cfg: ExportConfig) -> Path:
    """Copy a checkpoint folder with its floating-point weights (the model's and the text
    encoder's) stored as `cfg.dtype`; built beside the target and renamed into place."""
    files = hub.resolve_model(cfg.model)
    source, out = files.root, Path(cfg.output)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("*.safetensors"))
    for weights in source.rglob("*.safetensors"):
        _cast_file(weights, tmp / weights.relative_to(source), _DTYPES[cfg.dtype])
    try:
        if cfg.autoencoder is not None:
            config = tmp / files.config.relative_to(source)
            _swap_decoder(tmp / files.weights.relative_to(source), config, Path(cfg.autoencoder))
        if cfg.generation_config is not None:
            recommended = load_generation_config(cfg.generation_config)
            (tmp / GENERATION_CONFIG).write_text(json.dumps(recommended, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return replace_folder(tmp, out)


_AE = "pretransform.model."


def _swap_decoder(weights: Path, model_config: Path, autoencoder: Path) -> None:
    """Put the decoder of the standalone autoencoder folder `autoencoder` into `weights` (and its
    config section into `model_config`), after checking that it is the model's autoencoder with
    only its decoder changed: the same config but for the decoder's attention windows, and an
    encoder and bottleneck equal as stored, so the DiT's latents mean what they meant."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    files = hub.resolve_autoencoder(autoencoder)
    ae_raw, raw = read_config_json(files.config), read_config_json(model_config)
    same_rate = ae_raw.get("sample_rate") == raw.get("sample_rate")
    pretransform = raw["model"].get("pretransform", {})
    if not same_rate or not same_but_decoder_window(ae_raw.get("model"), pretransform.get("config")):
        raise ConfigError(f"autoencoder: {files.config} is not the model's autoencoder config")
    new = {
        ours_to_official("autoencoder." + official_to_ours(k, autoencoder_only=True)): v
        for k, v in read_safetensors(files.weights).items()
    }
    with safe_open(str(weights), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    if set(new) != {k for k in tensors if k.startswith(_AE)}:
        raise ConfigError(f"autoencoder: {files.weights} does not hold the model's autoencoder weights")
    for key, value in new.items():
        value = value.to(tensors[key].dtype)
        if not key.startswith(_AE + "decoder.") and not torch.equal(value, tensors[key]):
            raise ConfigError(
                f"autoencoder: {files.weights} changes {key}: the DiT was trained on other latents "
                "(fine-tune the decoder alone, train_encoder = false)"
            )
        tensors[key] = value.contiguous()
    save_file(tensors, str(weights), metadata)
    pretransform["config"] = copy.deepcopy(ae_raw["model"])
    model_config.write_text(json.dumps(raw, indent=2))
