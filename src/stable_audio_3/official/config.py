"""Typed view of an official `model_config.json`.

Every field the official loader reads is parsed here (the DiT and SAME sections by their own
modules); unknown or missing values raise `ConfigError` naming the key path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stable_audio_3.errors import ConfigError, MissingFileError, describe
from stable_audio_3.official.conditioner_config import NumberConditionerConfig, PromptConditionerConfig
from stable_audio_3.official.dit_config import DiTConfig
from stable_audio_3.official.same_config import SAMEConfig

__all__ = [
    "ConfigError",
    "ModelConfig",
    "DiffusionConfig",
    "PretransformConfig",
    "load_model_config",
    "read_config_json",
]

OBJECTIVES = ("rf_denoiser", "rectified_flow")
# The reference's hard cap when a config has no `sample_size` (1292 latents, about 120 s).
DEFAULT_SAMPLE_SIZE = 5_292_032


def _check_keys(section: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(unknown)}")


def _require(section: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in section:
        raise ConfigError(f"missing required key {where}.{key}")
    return section[key]


@dataclass(frozen=True)
class PretransformConfig:
    """`model.pretransform`: the SAME autoencoder and how the pipeline calls it."""

    autoencoder: SAMEConfig
    chunked: bool = False
    iterate_batch: bool = False


@dataclass(frozen=True)
class DiffusionConfig:
    """`model.diffusion`: the DiT, its objective and how conditioning reaches it."""

    dit: DiTConfig
    objective: str
    cross_attention_cond_ids: tuple[str, ...]
    global_cond_ids: tuple[str, ...]
    local_add_cond_ids: tuple[str, ...]
    sampling_shift: Mapping[str, Any] | None = None
    training_shift: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ModelConfig:
    """A whole text-to-audio checkpoint config."""

    sample_rate: int
    sample_size: int
    audio_channels: int
    model_type: str | None
    io_channels: int
    pretransform: PretransformConfig
    diffusion: DiffusionConfig
    prompt: PromptConditionerConfig
    seconds: NumberConditionerConfig
    cond_dim: int
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    def check_wiring(self) -> None:
        """The pipeline assumes the released wiring of conditioners into the DiT; say so if it differs."""
        d, prompt, seconds = self.diffusion, self.prompt.id, self.seconds.id
        if d.cross_attention_cond_ids != (prompt, seconds):
            raise ConfigError(f"cross_attention_cond_ids must be [{prompt!r}, {seconds!r}]")
        if d.global_cond_ids != (seconds,):
            raise ConfigError(f"global_cond_ids must be [{seconds!r}]")
        if d.local_add_cond_ids not in ((), ("inpaint_mask", "inpaint_masked_input")):
            raise ConfigError("local_add_cond_ids must be ['inpaint_mask', 'inpaint_masked_input']")

    @property
    def max_duration(self) -> float:
        """Longest generation in seconds this checkpoint allows (`sample_size / sample_rate`)."""
        return self.sample_size / self.sample_rate

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> ModelConfig:
        _check_keys(
            cfg,
            {"model_type", "sample_rate", "sample_size", "audio_channels", "svd_bases_path", "model"},
            "config",
        )
        model = _require(cfg, "model", "config")
        _check_keys(model, {"io_channels", "pretransform", "conditioning", "diffusion"}, "model")
        sample_rate = int(_require(cfg, "sample_rate", "config"))
        if sample_rate <= 0:
            raise ConfigError("config.sample_rate must be positive")
        io_channels = int(_require(model, "io_channels", "model"))

        pre = _require(model, "pretransform", "model")
        _check_keys(
            pre, {"type", "config", "chunked", "iterate_batch", "enable_grad", "scale"}, "model.pretransform"
        )
        if pre.get("type", "autoencoder") != "autoencoder":
            raise ConfigError(
                f"model.pretransform.type {pre.get('type')!r} is not supported (expected 'autoencoder')"
            )
        try:
            ae = SAMEConfig.from_official(_require(pre, "config", "model.pretransform"))
        except ConfigError:
            raise
        except (ValueError, TypeError, KeyError) as err:
            raise ConfigError(f"model.pretransform.config: {err}") from None
        pretransform = PretransformConfig(
            ae, bool(pre.get("chunked", False)), bool(pre.get("iterate_batch", False))
        )

        prompt, seconds, cond_dim = _parse_conditioning(_require(model, "conditioning", "model"))
        diffusion = _parse_diffusion(_require(model, "diffusion", "model"))
        if diffusion.dit.io_channels != io_channels:
            raise ConfigError("model.diffusion.config.io_channels differs from model.io_channels")
        return cls(
            sample_rate=sample_rate,
            sample_size=int(cfg.get("sample_size") or DEFAULT_SAMPLE_SIZE),
            audio_channels=int(cfg.get("audio_channels", 2)),
            model_type=cfg.get("model_type"),
            io_channels=io_channels,
            pretransform=pretransform,
            diffusion=diffusion,
            prompt=prompt,
            seconds=seconds,
            cond_dim=cond_dim,
            raw=cfg,
        )


def _parse_conditioning(
    section: Mapping[str, Any],
) -> tuple[PromptConditionerConfig, NumberConditionerConfig, int]:
    where = "model.conditioning"
    _check_keys(section, {"cond_dim", "configs", "default_keys", "pre_encoded_keys"}, where)
    cond_dim = int(_require(section, "cond_dim", where))
    prompt = seconds = None
    for i, item in enumerate(_require(section, "configs", where)):
        here = f"{where}.configs[{i}]"
        _check_keys(item, {"id", "type", "config"}, here)
        cid, kind, conf = (
            _require(item, "id", here),
            _require(item, "type", here),
            dict(item.get("config", {})),
        )
        try:
            if kind == "t5gemma":
                conf.pop("output_dim", None)
                prompt = PromptConditionerConfig(id=cid, output_dim=cond_dim, **conf)
            elif kind == "number":
                conf.pop("output_dim", None)
                seconds = NumberConditionerConfig(id=cid, output_dim=cond_dim, **conf)
            else:
                raise ConfigError(f"{here}.type {kind!r} is not supported (expected 't5gemma' or 'number')")
        except TypeError as err:
            raise ConfigError(f"{here}.config: {err}") from None
        except ValueError as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"{here}.config: {err}") from None
    if prompt is None or seconds is None:
        raise ConfigError(f"{where}.configs needs one 't5gemma' and one 'number' conditioner")
    return prompt, seconds, cond_dim


def _parse_diffusion(section: Mapping[str, Any]) -> DiffusionConfig:
    where = "model.diffusion"
    _check_keys(
        section,
        {
            "type",
            "diffusion_objective",
            "config",
            "cross_attention_cond_ids",
            "global_cond_ids",
            "local_add_cond_ids",
            "input_concat_ids",
            "prepend_cond_ids",
            "modular_local_cond_configs",
            "distribution_shift_options",
            "sampling_distribution_shift_options",
            "mask_padding_attention",
            "use_effective_length_for_schedule",
        },
        where,
    )
    objective = section.get("diffusion_objective", "v")
    if objective not in OBJECTIVES:
        raise ConfigError(
            f"{where}.diffusion_objective {objective!r} is not supported (expected one of {OBJECTIVES})"
        )
    for key in ("input_concat_ids", "prepend_cond_ids", "modular_local_cond_configs"):
        if section.get(key):
            raise ConfigError(f"{where}.{key} is not supported (the released models leave it empty)")
    try:
        dit = DiTConfig.from_official(_require(section, "config", where))
    except ConfigError:
        raise
    except (ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"{where}.config: {err}") from None
    return DiffusionConfig(
        dit=dit,
        objective=objective,
        cross_attention_cond_ids=tuple(section.get("cross_attention_cond_ids", ())),
        global_cond_ids=tuple(section.get("global_cond_ids", ())),
        local_add_cond_ids=tuple(section.get("local_add_cond_ids", ())),
        sampling_shift=section.get("sampling_distribution_shift_options"),
        training_shift=section.get("distribution_shift_options"),
    )


def read_config_json(path: str | Path) -> dict[str, Any]:
    """A config file's JSON object, or an error naming the file."""
    path = Path(path)
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise MissingFileError(f"no model_config.json at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from None
    except OSError as err:
        raise ConfigError(f"{path} cannot be read: {describe(err)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object, not a {type(raw).__name__}")
    return raw


def load_model_config(path: str | Path) -> ModelConfig:
    """Read and parse a `model_config.json`; every problem is a `ConfigError` naming the file."""
    raw = read_config_json(path)
    try:
        return ModelConfig.from_dict(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise ConfigError(f"{path}: malformed config ({describe(err)})") from None
