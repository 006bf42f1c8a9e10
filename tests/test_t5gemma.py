"""Our T5Gemma encoder port: the same tokens and the same hidden states as `transformers` on every
fixture encoder (bit for bit in float32), on a full encoder-decoder folder as released, and a fallback
to `transformers` for any folder it does not reproduce."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import checkpoint_dir, entry, full_t5gemma_folder, stage

from stable_audio_3.models.conditioners import TextEncoder, load_text_encoder
from stable_audio_3.models.t5gemma import NativeT5Gemma


def _max_length(config: str) -> int:
    cfg = json.loads((checkpoint_dir(config) / "model_config.json").read_text())
    return cfg["model"]["conditioning"]["configs"][0]["config"]["max_length"]


@pytest.mark.parametrize("config", ["A", "B", "E"])
def test_native_encoder_equals_transformers(config: str) -> None:
    folder = checkpoint_dir(config) / "text_encoder"
    e = entry(config, "text_conditioner")
    prompts, length = e["args"]["prompts"], _max_length(config)
    ours = load_text_encoder(folder, length)
    theirs = load_text_encoder(folder, length, backend="transformers")
    assert isinstance(ours, NativeT5Gemma) and isinstance(theirs, TextEncoder)
    ids, mask = ours.tokenize(prompts, length)
    ref_ids, ref_mask = theirs.tokenize(prompts, length)
    assert torch.equal(ids, ref_ids) and torch.equal(mask, ref_mask)
    assert torch.equal(ids, stage(config, e["outputs"]["input_ids"]))
    assert torch.equal(ours(ids, mask), theirs(ids, mask))


def test_bfloat16_tracks_transformers() -> None:
    folder, length = checkpoint_dir("A") / "text_encoder", _max_length("A")
    ours = load_text_encoder(folder, length, torch.bfloat16)
    theirs = load_text_encoder(folder, length, torch.bfloat16, backend="transformers")
    ids, mask = ours.tokenize(["warm pads, slow tempo", ""], length)
    a, b = ours(ids, mask).float(), theirs(ids, mask).float()
    assert a.dtype == b.dtype and ((a - b).norm() / b.norm()).item() < 1e-2  # bf16 rounding order only


def test_native_encoder_reads_a_full_encoder_decoder_folder(tmp_path: Path) -> None:
    full = full_t5gemma_folder(tmp_path)
    encoder = load_text_encoder(tmp_path, 24)
    assert isinstance(encoder, NativeT5Gemma)
    ids, mask = encoder.tokenize(["warm pads, slow tempo"], 24)
    with torch.no_grad():
        expected = full.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(encoder(ids, mask), expected)


def _variant(tmp_path: Path, *, tokenizer: dict | None = None, encoder: dict | None = None) -> Path:
    src = checkpoint_dir("A") / "text_encoder"
    shutil.copytree(src, tmp_path / "te")
    folder = tmp_path / "te"
    if tokenizer:
        t = json.loads((folder / "tokenizer_config.json").read_text())
        (folder / "tokenizer_config.json").write_text(json.dumps({**t, **tokenizer}))
    if encoder:
        c = json.loads((folder / "config.json").read_text())
        c["encoder"].update(encoder)
        (folder / "config.json").write_text(json.dumps(c))
    return folder


@pytest.mark.parametrize(
    "change",
    [
        {"tokenizer": {"add_bos_token": True}},
        {"tokenizer": {"padding_side": "left"}},
        {"encoder": {"sliding_window": 8}},
        {"encoder": {"hidden_activation": "silu"}},
        {"encoder": {"attention_bias": True}},
    ],
    ids=lambda c: next(iter(next(iter(c.values())))),
)
def test_folders_it_does_not_reproduce_use_transformers(tmp_path: Path, change: dict) -> None:
    folder = _variant(tmp_path, **change)
    assert not NativeT5Gemma.supports(folder, 24)
    with pytest.raises(ValueError, match="native"):
        load_text_encoder(folder, 24, backend="native")
    if "attention_bias" not in change.get("encoder", {}) and "hidden_activation" not in change.get(
        "encoder", {}
    ):
        assert isinstance(load_text_encoder(folder, 24), TextEncoder)


def test_backend_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="text_encoder_backend"):
        load_text_encoder(checkpoint_dir("A") / "text_encoder", 24, backend="fast")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_text_encoder(tmp_path, 24)
