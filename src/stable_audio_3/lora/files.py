"""Reading, applying and writing LoRA files (official layout or PEFT-style), and merging adapters."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.utils.parametrize as parametrize
from torch import nn

from stable_audio_3.lora.adapters import PARAM_NAMES, Adapter, LoRAConfig, iter_adapters, layer_selected
from stable_audio_3.official.checkpoint import (
    lora_key_to_ours,
    official_to_ours,
    ours_to_lora_key,
    ours_to_official,
)

__all__ = ["LoRAFile", "read_lora_file", "apply_lora_file", "lora_state_dict", "save_lora_file"]

_PEFT_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<which>lora_[AB])(?:\.[^.]+)?\.weight$")


class LoRAFileError(ValueError):
    """A LoRA file does not fit the model or is malformed."""


@dataclass
class LoRAFile:
    """A LoRA file translated to our module names: {module: {param: tensor}} plus its config."""

    name: str
    config: LoRAConfig
    tensors: dict[str, dict[str, torch.Tensor]]
    origin: dict[str, str]  # our module -> first official key naming it (for error messages)


def _load_raw(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        raw_cfg = meta.get("lora_config")
        cfg = (
            json.loads(raw_cfg)
            if raw_cfg
            else {k: _number(v) for k, v in meta.items() if k in ("r", "lora_alpha")}
        )
        return tensors, cfg
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)  # never unpickle arbitrary code
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad or unsafe files
        raise LoRAFileError(f"{path}: not a loadable LoRA checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise LoRAFileError(f"{path}: expected a dict of tensors")
    if "state_dict" in obj:
        return dict(obj["state_dict"]), dict(obj.get("lora_config") or {})
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, {}


def _number(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def _peft_module(path: str) -> str:
    """A PEFT module path -> our module name. Paths may be relative to the conditioner
    (`conditioners.<id>...`), to the DiT wrapper (`model.transformer...`), to the DiT itself
    (`transformer...`), or already ours (`dit....`)."""
    if path.startswith("dit."):
        return path
    if path.startswith("conditioners."):
        full = "conditioner." + path
    elif path.startswith("model."):
        full = "model." + path
    else:
        full = "model.model." + path
    ours = official_to_ours(full + ".weight")
    if not ours.startswith(("dit.", "conditioners.")):
        raise LoRAFileError(f"PEFT LoRA key names no DiT or conditioner layer: {path}")
    return ours[: -len(".weight")]


def read_lora_file(path: str | Path) -> LoRAFile:
    """Read a `.safetensors` / `.ckpt` LoRA in the official layout, or a PEFT-style file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file not found: {path}")
    raw, cfg = _load_raw(path)
    if not raw:
        raise LoRAFileError(f"{path}: contains no tensors")
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    origin: dict[str, str] = {}
    peft = any(_PEFT_KEY.match(k) for k in raw) and not any(".parametrizations." in k for k in raw)
    for key, value in raw.items():
        if peft:
            m = _PEFT_KEY.match(key)
            if m is None:
                raise LoRAFileError(f"{path}: unexpected key {key!r} in a PEFT-style LoRA")
            module, param = _peft_module(m["module"]), m["which"]
        else:
            try:
                module, n, param = lora_key_to_ours(key)
            except ValueError as err:
                raise LoRAFileError(f"{path}: {err}") from None
            if n != 0:
                raise LoRAFileError(f"{path}: key {key!r} has stack index {n}; LoRA files store index 0")
        if param not in PARAM_NAMES:
            raise LoRAFileError(f"{path}: unknown LoRA parameter {param!r} in key {key!r}")
        tensors.setdefault(module, {})[param] = value
        origin.setdefault(module, key)
    if peft:
        side = path.with_name("adapter_config.json")
        if side.is_file():
            extra = json.loads(side.read_text())
            cfg = {"rank": extra.get("r"), "alpha": extra.get("lora_alpha"), **cfg}
        cfg = {"rank": cfg.get("rank", cfg.get("r")), "alpha": cfg.get("alpha", cfg.get("lora_alpha"))}
        cfg["adapter_type"] = "lora"
    config = _config_from(cfg, tensors, path)
    return LoRAFile(path.stem, config, tensors, origin)


def _config_from(cfg: dict, tensors: dict[str, dict[str, torch.Tensor]], path: Path) -> LoRAConfig:
    rank = cfg.get("rank")
    if rank is None:
        first = next(iter(tensors.values()))
        if "lora_A" in first:
            rank = first["lora_A"].shape[0]
        elif "lora_B" in first:
            rank = first["lora_B"].shape[1]
        elif "M_xs" in first:
            rank = first["M_xs"].shape[0]
        else:
            raise LoRAFileError(f"{path}: cannot infer the LoRA rank")
    kind = cfg.get("adapter_type", "lora")
    if kind == "dora":  # legacy name: the magnitude shape tells rows from columns
        kind = "dora-rows"
        for params in tensors.values():
            mag = params.get("magnitude")
            if mag is not None and mag.dim() == 2:
                kind = "dora-cols" if mag.shape[0] == 1 else "dora-rows"
                break
    known = {"rank", "alpha", "adapter_type", "include", "exclude", "dropout"}
    try:
        return LoRAConfig(
            rank=int(rank),
            alpha=cfg.get("alpha"),
            adapter_type=kind,
            include=cfg.get("include"),
            exclude=cfg.get("exclude"),
            dropout=float(cfg.get("dropout") or 0.0),
            extra={k: v for k, v in cfg.items() if k not in known},
        )
    except ValueError as err:
        raise LoRAFileError(f"{path}: {err}") from None


def apply_lora_file(
    roots: dict[str, nn.Module],
    lora: LoRAFile,
    index: int,
    bases: dict[str, dict[str, torch.Tensor]] | None = None,
) -> int:
    """Attach one adapter per layer named in the file and load its tensors; returns the layer count.

    `roots` maps our top-level names (`dit`, `conditioners`) to modules. Everything is checked
    before anything is attached, so a bad file leaves the model untouched.
    """
    modules: dict[str, nn.Module] = {}
    for name in lora.tensors:
        root_name, _, rest = name.partition(".")
        try:
            module = roots[root_name].get_submodule(rest)
        except (KeyError, AttributeError):
            module = None
        if not isinstance(module, (nn.Linear, nn.Conv1d)):
            raise LoRAFileError(
                f"{lora.name}: key {lora.origin[name]!r} names no adaptable layer of this model"
            )
        if layer_selected(name, lora.config.include, lora.config.exclude):
            modules[name] = module
    staged = []
    for name, module in modules.items():
        weight = (
            module.parametrizations.weight.original if parametrize.is_parametrized(module) else module.weight
        )
        layer_bases = None
        if bases is not None and lora.config.adapter_type.endswith("-xs"):
            entry = bases.get(ours_to_official(name + ".weight"))
            if entry is not None:
                layer_bases = (entry["U"][:, : lora.config.rank], entry["V"][:, : lora.config.rank])
        with torch.device("cpu"):
            adapter = Adapter(weight.detach().cpu(), lora.config, index, layer_bases)
        own = dict(adapter.named_parameters())
        for param, value in lora.tensors[name].items():
            if param not in own:
                raise LoRAFileError(
                    f"{lora.name}: {lora.origin[name]!r}: parameter {param!r} does not belong to a "
                    f"{lora.config.adapter_type} adapter"
                )
            value = value.squeeze() if param == "magnitude" and value.dim() == 2 else value
            if tuple(value.shape) != tuple(own[param].shape):
                raise LoRAFileError(
                    f"{lora.name}: {ours_to_lora_key(name, param)} has shape {tuple(value.shape)}, "
                    f"the model needs {tuple(own[param].shape)}"
                )
            own[param].data.copy_(value.float())
        staged.append((module, adapter.to(weight.device)))
    for module, adapter in staged:
        parametrize.register_parametrization(module, "weight", adapter, unsafe=True)
    return len(staged)


def lora_state_dict(roots: dict[str, nn.Module], index: int = 0) -> dict[str, torch.Tensor]:
    """The adapter tensors of one LoRA under official key names (stack index 0, as files store)."""
    out = {}
    for root_name, root in roots.items():
        for name, _, _, adapter in iter_adapters(root):
            if adapter.index != index:
                continue
            for param, value in adapter.named_parameters():
                out[ours_to_lora_key(f"{root_name}.{name}", param)] = value.detach().cpu()
    return out


def save_lora_file(path: str | Path, tensors: dict[str, torch.Tensor], config: LoRAConfig) -> Path:
    """Write the official safetensors layout: fp16 tensors, config JSON in metadata `lora_config`."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    data = {k: v.to(torch.float16).contiguous() for k, v in tensors.items()}
    save_file(data, str(tmp), metadata={"lora_config": json.dumps(config.to_metadata())})
    tmp.replace(path)
    return path
