"""Broken and hostile files for the bad-input table: audio, checkpoints, configs, LoRAs, pickles.

Built once per session from the tiny fixture checkpoint A, each a realistic accident (a zero-byte
download, a truncated copy, the wrong file renamed) or an attack (a pickle that runs code).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from conftest import FIXTURES, checkpoint_dir
from safetensors import safe_open
from safetensors.torch import load_file, save_file

GOOD_LORA = FIXTURES / "golden" / "lora.safetensors"
SR = 6000


class Exploit:
    """Unpickling this would run a shell command: it must never be unpickled."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/sa3-pwned",))


def _random_bytes(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _audio(root: Path) -> None:
    t = np.arange(SR) / SR
    sf.write(root / "good.wav", np.stack([np.sin(2 * np.pi * 220 * t)] * 2, 1).astype(np.float32), SR)
    (root / "empty.wav").write_bytes(b"")
    (root / "noise_bytes.wav").write_bytes(_random_bytes(2000, 1))
    (root / "text.wav").write_text("this is not audio\n")
    (root / "truncated.wav").write_bytes((root / "good.wav").read_bytes()[:40])
    (root / "folder.wav").mkdir()
    (root / "image.flac").write_bytes(b"\x89PNG\r\n\x1a\n" + _random_bytes(300, 2))


def _checkpoint(root: Path, name: str) -> Path:
    folder = root / name
    shutil.copytree(checkpoint_dir("A"), folder)
    return folder


def _checkpoints(root: Path) -> None:
    weights = (checkpoint_dir("A") / "model.safetensors").read_bytes()
    state = load_file(str(checkpoint_dir("A") / "model.safetensors"))
    first_float = next(k for k, v in state.items() if v.is_floating_point())
    _checkpoint(root, "zero_weights").joinpath("model.safetensors").write_bytes(b"")
    _checkpoint(root, "truncated_weights").joinpath("model.safetensors").write_bytes(weights[:50_000])
    _checkpoint(root, "random_weights").joinpath("model.safetensors").write_bytes(_random_bytes(5000, 3))
    _checkpoint(root, "pickle_weights").joinpath("model.safetensors").write_bytes(
        pickle.dumps({"x": Exploit()})
    )
    save_file(
        {**state, first_float: state[first_float].to(torch.int32)},
        _checkpoint(root, "int_tensor") / "model.safetensors",
    )
    save_file(
        {**state, first_float: torch.full_like(state[first_float], float("nan"))},
        _checkpoint(root, "nan_weights") / "model.safetensors",
    )
    missing = dict(state)
    missing.pop(first_float)
    save_file(missing, _checkpoint(root, "missing_tensor") / "model.safetensors")
    _checkpoint(root, "bad_json").joinpath("model_config.json").write_text("{not json")
    _checkpoint(root, "list_json").joinpath("model_config.json").write_text("[1, 2]")
    _checkpoint(root, "binary_json").joinpath("model_config.json").write_bytes(_random_bytes(100, 4))
    cfg = json.loads((checkpoint_dir("A") / "model_config.json").read_text())
    cfg["sample_rate"] = "fast"
    _checkpoint(root, "bad_value_json").joinpath("model_config.json").write_text(json.dumps(cfg))
    del cfg["model"]
    _checkpoint(root, "no_model_json").joinpath("model_config.json").write_text(json.dumps(cfg))
    (_checkpoint(root, "no_weights") / "model.safetensors").unlink()
    no_te = _checkpoint(root, "no_text_encoder")
    shutil.rmtree(no_te / "text_encoder")
    local = (
        (no_te / "model_config.json").read_text().replace('"sa3-fixtures/config_a_small_rf_denoiser"', "null")
    )
    (no_te / "model_config.json").write_text(local)  # no hub repo to fall back on: offline and online alike
    _checkpoint(root, "bad_te_config").joinpath("text_encoder", "config.json").write_text("{x")
    _checkpoint(root, "bad_te_weights").joinpath("text_encoder", "model.safetensors").write_bytes(b"abc")
    _checkpoint(root, "bad_tokenizer").joinpath("text_encoder", "tokenizer.json").write_text("{x")


def _lora(root: Path, name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> None:
    save_file(tensors, str(root / name), metadata=metadata)


def _loras(root: Path) -> None:
    with safe_open(str(GOOD_LORA), framework="pt") as f:
        meta = f.metadata()
        good = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    first = next(iter(good))
    _lora(root, "nan.safetensors", {**good, first: torch.full_like(good[first], float("nan"))}, meta)
    _lora(root, "inf.safetensors", {**good, first: torch.full_like(good[first], float("inf"))}, meta)
    _lora(root, "int.safetensors", {**good, first: good[first].to(torch.int16)}, meta)
    _lora(root, "bad_config.safetensors", good, {"lora_config": "{rank: 4"})
    _lora(root, "list_config.safetensors", good, {"lora_config": "[4]"})
    _lora(root, "bad_rank.safetensors", good, {"lora_config": json.dumps({"rank": 0})})
    _lora(root, "wrong_shape.safetensors", {**good, first: torch.zeros(3, 3, dtype=torch.float16)}, meta)
    _lora(
        root,
        "unknown_layer.safetensors",
        {"model.nowhere.parametrizations.weight.0.lora_A": good[first]},
        meta,
    )
    _lora(root, "not_lora_keys.safetensors", {"weight": good[first]}, meta)
    _lora(root, "empty.safetensors", {}, meta)
    (root / "zero.safetensors").write_bytes(b"")
    (root / "random.safetensors").write_bytes(_random_bytes(700, 5))
    (root / "random.ckpt").write_bytes(_random_bytes(700, 6))
    (root / "exploit.ckpt").write_bytes(pickle.dumps({"state_dict": Exploit()}))
    torch.save([1, 2, 3], root / "list.ckpt")
    peft = root / "peft"
    peft.mkdir()
    save_file(
        {"base_model.model.transformer.layers.0.self_attn.to_qkv.lora_A.weight": torch.zeros(2, 8)},
        str(peft / "adapter_model.safetensors"),
    )
    (peft / "adapter_config.json").write_text("{r: 2")
    (root / "bases_exploit.pt").write_bytes(pickle.dumps(Exploit()))
    torch.save({"layer": {"U": torch.zeros(2, 2)}}, root / "bases_incomplete.pt")


def make_bad_files(root: Path) -> Path:
    """Every broken file of the table under `root` (returned)."""
    for part in (_audio, _checkpoints, _loras):
        part(root)
    return root
