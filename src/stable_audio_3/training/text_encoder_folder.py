"""A new, small T5Gemma-shaped text encoder for a model trained from scratch (the demo model): a
word-level tokenizer trained on the captions and a randomly initialised encoder, written as a
folder our T5Gemma port loads (`config.json`, `model.safetensors`, `tokenizer.json`,
`tokenizer_config.json`). `pretrain --train-text-encoder` then trains it with the DiT."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from stable_audio_3.checks import check_int
from stable_audio_3.training import loop

__all__ = ["SPECIAL_TOKENS", "train_caption_tokenizer", "write_text_encoder_folder"]

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")  # ids 0..3, as T5Gemma numbers them


def train_caption_tokenizer(captions: Sequence[str], vocab_size: int = 512, split_digits: bool = False):
    """A lowercase word-level tokenizer over the captions' words and punctuation; every caption
    ends with `<eos>`. Deterministic for the same captions. `split_digits` cuts a word where
    letters meet digits ("c4" -> "c", "4"), so a note is its pitch class and octave, each shared
    with every other note and chord that names it, as "c#4" already is ("c", "#", "4")."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    words = pre_tokenizers.Whitespace()
    digits = pre_tokenizers.Digits(individual_digits=False)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([words, digits]) if split_digits else words
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS))
    tokenizer.train_from_iterator(sorted(set(captions)), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="$A <eos>", special_tokens=[("<eos>", 1)])
    return tokenizer


def _config(vocab: int, width: int, layers: int, heads: int, head_dim: int, ff: int, max_length: int) -> dict:
    encoder = {
        "attention_bias": False,
        "attn_logit_softcapping": 50.0,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "pad_token_id": 0,
        "head_dim": head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": width,
        "intermediate_size": ff,
        "is_decoder": False,
        "layer_types": ["full_attention"] * layers,
        "max_position_embeddings": max(512, max_length),
        "model_type": "t5_gemma_module",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": heads,
        "query_pre_attn_scalar": head_dim,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "sliding_window": max(512, max_length),
        "vocab_size": vocab,
    }
    return {
        "architectures": ["T5GemmaEncoderModel"],
        "model_type": "t5gemma",
        "encoder": encoder,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
        "dtype": "float32",
    }


def _weights(vocab: int, width: int, layers: int, heads: int, head_dim: int, ff: int, seed: int) -> dict:
    """Random weights under the encoder-only file's key names (`encoder.` + T5Gemma's names)."""
    with loop.forked_rng(seed):

        def linear(out: int, inp: int) -> torch.Tensor:
            return torch.randn(out, inp) / math.sqrt(inp)

        w = {"embed_tokens.weight": torch.randn(vocab, width) * 0.02, "norm.weight": torch.zeros(width)}
        for i in range(layers):
            p = f"layers.{i}."
            w |= {p + f"self_attn.{n}_proj.weight": linear(heads * head_dim, width) for n in ("q", "k", "v")}
            w[p + "self_attn.o_proj.weight"] = linear(width, heads * head_dim)
            w[p + "mlp.gate_proj.weight"] = linear(ff, width)
            w[p + "mlp.up_proj.weight"] = linear(ff, width)
            w[p + "mlp.down_proj.weight"] = linear(width, ff)
            for norm in ("pre_self_attn", "post_self_attn", "pre_feedforward", "post_feedforward"):
                w[p + f"{norm}_layernorm.weight"] = torch.zeros(width)  # Gemma norms scale by (1 + w)
    return {f"encoder.{k}": v.contiguous() for k, v in w.items()}


def write_text_encoder_folder(
    folder: str | Path,
    captions: Sequence[str],
    *,
    width: int = 768,
    layers: int = 2,
    heads: int = 4,
    head_dim: int = 32,
    ff: int = 512,
    vocab_size: int = 512,
    max_length: int = 32,
    seed: int = 0,
    split_digits: bool = False,
) -> Path:
    """Write the folder; `width` must be the one the model config's prompt conditioner names."""
    from safetensors.torch import save_file

    for name, value in (("width", width), ("layers", layers), ("heads", heads), ("head_dim", head_dim)):
        check_int(name, value, low=1)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = train_caption_tokenizer(captions, vocab_size, split_digits)
    vocab = tokenizer.get_vocab_size()
    tokenizer.save(str(folder / "tokenizer.json"))
    special = {
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "model_max_length": max_length,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(special, indent=2))
    config = _config(vocab, width, layers, heads, head_dim, ff, max_length)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file(_weights(vocab, width, layers, heads, head_dim, ff, seed), str(folder / "model.safetensors"))
    return folder
