"""The one place that knows the official state-dict key names.

Official checkpoints (`model.safetensors`) store the reference implementation's module paths, e.g.
`model.model.transformer.layers.3.ff.ff.0.proj.weight`. Our modules use their own names
(`dit.blocks.3.ff.proj_in.weight`). This module translates both ways with a short list of
segment-level rename rules, and loads strictly: every missing, unexpected or wrongly shaped tensor
is reported by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from stable_audio_3.errors import CheckpointError, MissingFileError, describe

__all__ = [
    "CheckpointError",
    "official_to_ours",
    "ours_to_official",
    "read_safetensors",
    "load_official_state_dict",
    "export_official_state_dict",
    "lora_key_to_ours",
    "ours_to_lora_key",
    "lora_filter_name",
]


# Official top-level prefixes of a full model file -> our component names.
_COMPONENTS: tuple[tuple[str, str], ...] = (
    ("model.model.", "dit."),
    ("conditioner.conditioners.", "conditioners."),
    ("pretransform.model.", "autoencoder."),
)

# Segment-level renames inside each component, (official, ours). `{i}` matches a layer index and
# `{id}` a conditioner id. Applied in order official -> ours and in reverse order ours -> official.
_DIT_RULES: tuple[tuple[str, str], ...] = (
    ("transformer.layers.{i}", "blocks.{i}"),
    ("transformer.project_in", "project_in"),
    ("transformer.project_out", "project_out"),
    ("transformer.memory_tokens", "memory_tokens"),
    ("transformer.rotary_pos_emb", "rotary"),
    ("transformer.pos_emb", "positions"),
    ("transformer.global_cond_embedder.0", "adaln_embed.fc1"),
    ("transformer.global_cond_embedder.2", "adaln_embed.fc2"),
    ("to_timestep_embed.0", "timestep_embed.fc1"),
    ("to_timestep_embed.2", "timestep_embed.fc2"),
    ("to_cond_embed.0", "cond_embed.fc1"),
    ("to_cond_embed.2", "cond_embed.fc2"),
    ("to_global_embed.0", "global_embed.fc1"),
    ("to_global_embed.2", "global_embed.fc2"),
    ("pre_norm", "attn_norm"),
    ("cross_attend_norm", "cross_norm"),
    ("ff.ff.0.proj", "ff.proj_in"),
    ("ff.ff.2", "ff.proj_out"),
    ("to_local_embed.0", "local_embed.fc1"),
    ("to_local_embed.2", "local_embed.fc2"),
    ("to_scale_shift_gate", "scale_shift_gate"),
)

_CONDITIONER_RULES: tuple[tuple[str, str], ...] = (("{id}.embedder.embedding.1", "{id}.proj"),)

_SAME_RULES: tuple[tuple[str, str], ...] = (
    ("encoder.layers.0", "encoder.block"),
    ("encoder.layers.2", "encoder.proj_out"),
    ("decoder.layers.1", "decoder.proj_in"),
    ("decoder.layers.3", "decoder.block"),
    ("transformers.{i}", "layers.{i}"),
    ("pre_norm", "attn_norm"),
    ("ff.ff.0.proj", "ff.proj_in"),
    ("ff.ff.2", "ff.proj_out"),
    ("rope", "rotary"),
)

_RULES = {"dit.": _DIT_RULES, "conditioners.": _CONDITIONER_RULES, "autoencoder.": _SAME_RULES}


def _compile(pattern: str) -> tuple[re.Pattern[str], list[str]]:
    names: list[str] = []
    parts = re.split(r"(\{i\}|\{id\})", pattern)
    regex = ""
    for part in parts:
        if part == "{i}":
            regex += r"(\d+)"
            names.append("i")
        elif part == "{id}":
            regex += r"([^.]+)"
            names.append("id")
        else:
            regex += re.escape(part)
    return re.compile(r"(?:(?<=\.)|^)" + regex + r"(?=\.|$)"), names


def _fill(template: str, values: Iterable[str]) -> str:
    it = iter(values)
    return re.sub(r"\{i\}|\{id\}", lambda _: next(it), template)


def _rewrite(key: str, rules: tuple[tuple[str, str], ...], reverse: bool) -> str:
    ordered = reversed(rules) if reverse else rules
    for official, ours in ordered:
        src, dst = (ours, official) if reverse else (official, ours)
        regex, _ = _compile(src)
        key = regex.sub(lambda m, dst=dst: _fill(dst, m.groups()), key)
    return key


def _component_rules(prefix: str) -> tuple[tuple[str, str], ...]:
    for official, ours in _COMPONENTS:
        if official == prefix:
            return _RULES[ours]
    raise ValueError(f"unknown checkpoint component prefix {prefix!r}")


def official_to_ours(key: str, *, autoencoder_only: bool = False) -> str:
    """Translate one official key. `autoencoder_only`: keys of a standalone SAME-S/SAME-L file."""
    if autoencoder_only:
        return _rewrite(key, _SAME_RULES, reverse=False)
    for official, ours in _COMPONENTS:
        if key.startswith(official):
            return ours + _rewrite(key[len(official) :], _RULES[ours], reverse=False)
    return key  # unknown top-level key: reported as unexpected by the loader


def ours_to_official(key: str, *, autoencoder_only: bool = False) -> str:
    """Inverse of `official_to_ours` (used to save in the official layout)."""
    if autoencoder_only:
        return _rewrite(key, _SAME_RULES, reverse=True)
    for official, ours in _COMPONENTS:
        if key.startswith(ours):
            return official + _rewrite(key[len(ours) :], _RULES[ours], reverse=True)
    return key


def read_safetensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read every tensor of a safetensors file (memory-mapped where the backend allows)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint file not found: {path}")
    try:
        return load_file(str(path), device=str(device))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for broken files
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({describe(err)}); it may be truncated or corrupt"
        ) from None


def _listing(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_official_state_dict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    autoencoder_only: bool = False,
    strip_prefix: str | None = None,
) -> None:
    """Strictly load an official state dict into `module` (ours), assigning tensors in place.

    `module` may live on the meta device: tensors are assigned, not copied, so nothing is allocated
    twice. `strip_prefix` (one of the official component prefixes `model.model.`,
    `conditioner.conditioners.`, `pretransform.model.`) loads one component on its own: only keys
    under that prefix are kept and translated with that component's rules. Raises `CheckpointError`
    naming every problem.
    """
    if strip_prefix is not None:
        rules = _component_rules(strip_prefix)
        state_dict = {k[len(strip_prefix) :]: v for k, v in state_dict.items() if k.startswith(strip_prefix)}

        def to_ours(key: str) -> str:
            return _rewrite(key, rules, reverse=False)

        def to_official(key: str) -> str:
            return strip_prefix + _rewrite(key, rules, reverse=True)
    else:

        def to_ours(key: str) -> str:
            return official_to_ours(key, autoencoder_only=autoencoder_only)

        def to_official(key: str) -> str:
            return ours_to_official(key, autoencoder_only=autoencoder_only)

    expected = module.state_dict(keep_vars=True)
    ours: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, tensor in state_dict.items():
        name = to_ours(key)
        ours[name] = tensor
        origin[name] = key if strip_prefix is None else strip_prefix + key
    missing = sorted(to_official(k) for k in expected if k not in ours)
    unexpected = sorted(origin[k] for k in ours if k not in expected)
    wrong = [
        f"{origin[k]} (file {tuple(t.shape)}, model {tuple(expected[k].shape)})"
        for k, t in ours.items()
        if k in expected and tuple(t.shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensor(s): {_listing(unexpected)}")
    if wrong:
        problems.append(f"wrong shape for {len(wrong)} tensor(s): {_listing(wrong)}")
    kinds = [
        f"{origin[k]} ({str(t.dtype).removeprefix('torch.')}, model "
        f"{str(expected[k].dtype).removeprefix('torch.')})"
        for k, t in ours.items()
        if k in expected and t.is_floating_point() != expected[k].is_floating_point()
    ]
    if kinds:
        problems.append(f"wrong dtype for {len(kinds)} tensor(s): {_listing(kinds)}")
    if problems:
        raise CheckpointError("checkpoint does not match the model config: " + "; ".join(problems))
    target_dtypes = {k: v.dtype for k, v in expected.items()}
    module.load_state_dict(
        {k: t.to(target_dtypes[k]) if t.is_floating_point() else t for k, t in ours.items()},
        strict=True,
        assign=True,
    )


def export_official_state_dict(
    module: nn.Module, *, autoencoder_only: bool = False, state: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Our state dict (`module`'s, or `state` given in its names, e.g. gathered from shards) under
    the official key names (the inverse of `load_official_state_dict`)."""
    state = module.state_dict() if state is None else state
    return {ours_to_official(k, autoencoder_only=autoencoder_only): v.detach() for k, v in state.items()}


# ---------------------------------------------------------------------------------------- LoRA
# Official LoRA files name adapters by module paths relative to the DiT wrapper (`model.<dit path>`)
# and to the conditioner (`conditioners.<id>...`), then `.parametrizations.weight.<n>.<param>`.
_LORA_KEY = re.compile(r"^(?P<module>.+)\.parametrizations\.weight\.(?P<n>\d+)\.(?P<param>[A-Za-z_]+)$")
_LORA_ROOTS = (("model.", "model."), ("conditioners.", "conditioner."))


def lora_key_to_ours(key: str) -> tuple[str, int, str]:
    """`model.transformer.layers.0.self_attn.to_qkv.parametrizations.weight.0.lora_A` ->
    (`dit.blocks.0.self_attn.to_qkv`, 0, `lora_A`). Raises ValueError for a malformed key."""
    m = _LORA_KEY.match(key)
    if m is None:
        raise ValueError(f"not an official LoRA key: {key!r}")
    module = m["module"]
    for relative, full in _LORA_ROOTS:
        if module.startswith(relative):
            ours = official_to_ours(full + module + ".weight")
            if ours.startswith(("dit.", "conditioners.")) and ours.endswith(".weight"):
                return ours[: -len(".weight")], int(m["n"]), m["param"]
    raise ValueError(f"LoRA key {key!r} names no DiT or conditioner layer")


def lora_filter_name(module: str) -> str:
    """Our module path -> the official name include/exclude filters are matched against."""
    full = ours_to_official(module + ".weight")[: -len(".weight")]
    if full.startswith("model.model."):
        return full[len("model.") :]
    if full.startswith("conditioner."):
        return full[len("conditioner.") :]
    return module


def ours_to_lora_key(module: str, param: str, n: int = 0) -> str:
    """Inverse of `lora_key_to_ours` (files always store n = 0)."""
    return f"{lora_filter_name(module)}.parametrizations.weight.{n}.{param}"
