"""Reading, applying and writing LoRA files (official layout or PEFT-style), and merging adapters."""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.utils.parametrize as parametrize
from torch import nn

from stable_audio_3.errors import LoRAFileError, MissingFileError, as_path, describe
from stable_audio_3.lora.adapters import PARAM_NAMES, Adapter, LoRAConfig, iter_adapters, layer_selected
from stable_audio_3.official.checkpoint import (
    lora_key_to_ours,
    official_to_ours,
    ours_to_lora_key,
    ours_to_official,
)

__all__ = [
    "LoRAFile",
    "LoRAFileError",
    "read_lora_file",
    "read_svd_bases",
    "stage_lora_file",
    "attach_staged",
    "apply_lora_file",
    "lora_state_dict",
    "save_lora_file",
]

_PEFT_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<which>lora_[AB])(?:\.[^.]+)?\.weight$")


@dataclass
class LoRAFile:
    """A LoRA file translated to our module names: {module: {param: tensor}} plus its config."""

    name: str
    config: LoRAConfig
    tensors: dict[str, dict[str, torch.Tensor]]
    origin: dict[str, str]  # our module -> first official key naming it (for error messages)


def _json_object(text: str | bytes, what: str, path: Path) -> dict:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LoRAFileError(f"LoRA file {path}: {what} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise LoRAFileError(f"LoRA file {path}: {what} must be a JSON object, not {type(value).__name__}")
    return value


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta  # noqa: SIM118
    except Exception as err:  # noqa: BLE001 - safetensors raises its own types for broken files
        raise LoRAFileError(f"LoRA file {path}: not a readable safetensors file ({describe(err)})") from None


def _torch_load(path: Path, what: str) -> object:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols; failures are raised
            return torch.load(str(path), map_location="cpu", weights_only=True)  # never unpickle code
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad or unsafe files
        reason = (
            "it holds objects other than tensors" if "Weights only load failed" in str(err) else describe(err)
        )
        raise LoRAFileError(
            f"{what} {path} cannot be loaded ({reason}; only tensor files are read)"
        ) from None


def _load_raw(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    if path.suffix == ".safetensors":
        tensors, meta = _read_safetensors(path)
        raw_cfg = meta.get("lora_config")
        if raw_cfg:
            return tensors, _json_object(raw_cfg, "its lora_config metadata", path)
        return tensors, {k: _number(v) for k, v in meta.items() if k in ("r", "lora_alpha")}
    obj = _torch_load(path, "LoRA file")
    if not isinstance(obj, dict):
        raise LoRAFileError(f"LoRA file {path}: expected a dict of tensors, got {type(obj).__name__}")
    if "state_dict" in obj:
        state, cfg = obj["state_dict"], obj.get("lora_config") or {}
        if not isinstance(state, dict) or not isinstance(cfg, dict):
            raise LoRAFileError(f"LoRA file {path}: state_dict and lora_config must be dicts")
        return dict(state), dict(cfg)
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, {}


def read_svd_bases(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """The SVD bases file of LoRA-XS adapters: {official weight key: {"U": ..., "V": ...}}."""
    path = as_path("svd_bases_path", path)
    if not path.is_file():
        raise MissingFileError(f"svd_bases_path: file not found: {path}")
    obj = _torch_load(path, "svd_bases_path: SVD bases file")
    ok = isinstance(obj, dict) and all(
        isinstance(v, dict) and all(isinstance(v.get(k), torch.Tensor) for k in ("U", "V"))
        for v in obj.values()
    )
    if not ok:
        raise LoRAFileError(
            f"LoRA file {path}: svd_bases_path must map weight names to {{'U': tensor, 'V': tensor}}"
        )
    return obj


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
    path = as_path("paths", path)
    if not path.is_file():
        raise MissingFileError(f"LoRA file not found: {path}")
    raw, cfg = _load_raw(path)
    if not raw:
        raise LoRAFileError(f"LoRA file {path}: contains no tensors")
    for key, value in raw.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise LoRAFileError(f"LoRA file {path}: {key!r} is not a floating-point tensor")
        if not torch.isfinite(value).all():
            raise LoRAFileError(f"LoRA file {path}: {key!r} contains NaN or infinite values")
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    origin: dict[str, str] = {}
    peft = any(_PEFT_KEY.match(k) for k in raw) and not any(".parametrizations." in k for k in raw)
    for key, value in raw.items():
        if peft:
            m = _PEFT_KEY.match(key)
            if m is None:
                raise LoRAFileError(f"LoRA file {path}: unexpected key {key!r} in a PEFT-style LoRA")
            module, param = _peft_module(m["module"]), m["which"]
        else:
            try:
                module, n, param = lora_key_to_ours(key)
            except ValueError as err:
                raise LoRAFileError(f"LoRA file {path}: {err}") from None
            if n != 0:
                raise LoRAFileError(
                    f"LoRA file {path}: key {key!r} has stack index {n}; LoRA files store index 0"
                )
        if param not in PARAM_NAMES:
            raise LoRAFileError(f"LoRA file {path}: unknown LoRA parameter {param!r} in key {key!r}")
        tensors.setdefault(module, {})[param] = value
        origin.setdefault(module, key)
    if peft:
        side = path.with_name("adapter_config.json")
        if side.is_file():
            extra = _json_object(side.read_bytes(), "its adapter_config.json", side)
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
            raise LoRAFileError(f"LoRA file {path}: cannot infer the LoRA rank")
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
        raise LoRAFileError(f"LoRA file {path}: {err}") from None


Staged = list[tuple[nn.Module, Adapter]]


def apply_lora_file(
    roots: dict[str, nn.Module],
    lora: LoRAFile,
    index: int,
    bases: dict[str, dict[str, torch.Tensor]] | None = None,
) -> int:
    """Attach one adapter per layer named in the file and load its tensors; returns the layer count."""
    staged = stage_lora_file(roots, lora, index, bases)
    attach_staged(staged)
    return len(staged)


def attach_staged(staged: Staged) -> None:
    """Register staged adapters as weight parametrizations (cannot fail on checked input)."""
    for module, adapter in staged:
        parametrize.register_parametrization(module, "weight", adapter, unsafe=True)


def stage_lora_file(
    roots: dict[str, nn.Module],
    lora: LoRAFile,
    index: int,
    bases: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Staged:
    """Build (without attaching) one adapter per layer named in the file, loaded with its tensors.

    `roots` maps our top-level names (`dit`, `conditioners`) to modules. Everything is checked
    here, so attaching the result cannot fail and a bad file leaves the model untouched.
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
    return staged


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
