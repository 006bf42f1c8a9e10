"""A self-contained T5Gemma encoder (and its tokenizer) for the prompt conditioner.

`transformers` imports several seconds of code (its T5Gemma module pulls in `torch._dynamo`) to run
what is, for a prompt, a small bidirectional Gemma-2 style encoder. This module runs the same maths
from the same files: token embedding x sqrt(width); per layer
`x += post_norm(attn(pre_norm(x)))`, `x += post_ff_norm(ff(pre_ff_norm(x)))`; a final norm. Norms are
Gemma RMSNorms `x / rms(x) * (1 + w)` in float32; attention is bidirectional with rotary positions,
scores scaled by `query_pre_attn_scalar ** -0.5`, soft-capped, padded keys masked additively, softmax
in float32; the feed-forward is `down(gelu_tanh(gate(x)) * up(x))`.

`NativeT5Gemma.supports(folder, max_length)` says whether a folder is one this port reproduces
(checked against `transformers` in the tests); anything else falls back to `transformers`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["NativeT5Gemma"]

_TOKENIZER_KEYS = {
    "backend",
    "bos_token",
    "eos_token",
    "pad_token",
    "unk_token",
    "model_max_length",
    "tokenizer_class",
    "added_tokens_decoder",
    "padding_side",
    "clean_up_tokenization_spaces",
}


_ENCODER_PREFIXES = ("encoder.", "model.encoder.")  # encoder-only files; the released encoder-decoder


def _encoder_keys(keys: Any) -> dict[str, str]:
    """File key -> our name for every encoder tensor among `keys`."""
    return {k: k[len(p) :] for k in keys for p in _ENCODER_PREFIXES if k.startswith(p)}


def _encoder_config(folder: Path) -> dict[str, Any]:
    config = json.loads((folder / "config.json").read_text())
    return config.get("encoder", config)


def _supported_config(enc: dict[str, Any], max_length: int) -> bool:
    rope = enc.get("rope_parameters") or {
        "rope_type": "default",
        "rope_theta": enc.get("rope_theta", 10000.0),
    }
    window = enc.get("sliding_window")
    return (
        enc.get("hidden_activation") in ("gelu_pytorch_tanh",)
        and not enc.get("attention_bias", False)
        and not enc.get("is_decoder", False)
        and rope.get("rope_type", "default") == "default"
        and (window is None or max_length <= window)  # the window then covers every prompt token
        and set(enc.get("layer_types", [])) <= {"sliding_attention", "full_attention"}
    )


class NativeT5Gemma:
    """Tokenizer + encoder of a T5Gemma folder, without `transformers`."""

    def __init__(self, folder: str | Path, dtype: torch.dtype | None = None) -> None:
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        special = json.loads((folder / "tokenizer_config.json").read_text())
        self.pad_token = special.get("pad_token", "<pad>")
        self.pad_id = self.tokenizer.token_to_id(self.pad_token)
        enc = _encoder_config(folder)
        self.heads, self.kv_heads = int(enc["num_attention_heads"]), int(enc["num_key_value_heads"])
        self.head_dim, self.width = int(enc["head_dim"]), int(enc["hidden_size"])
        self.eps = float(enc.get("rms_norm_eps", 1e-6))
        self.softcap = enc.get("attn_logit_softcapping")
        self.scaling = float(enc["query_pre_attn_scalar"]) ** -0.5
        rope = enc.get("rope_parameters") or {}
        self.theta = float(rope.get("rope_theta", enc.get("rope_theta", 10000.0)))
        self.layers = int(enc["num_hidden_layers"])
        weights = {}
        for file in sorted(folder.glob("*.safetensors")):
            tensors = load_file(str(file))
            weights.update({name: tensors[key] for key, name in _encoder_keys(tensors).items()})
        self.weights = {k: v if dtype is None else v.to(dtype) for k, v in weights.items()}
        self.dtype = self.weights["embed_tokens.weight"].dtype
        self.trainable = False  # set by `trainable_weights`; inference never builds a graph

    @staticmethod
    def supports(folder: str | Path, max_length: int) -> bool:
        folder = Path(folder)
        try:
            special = json.loads((folder / "tokenizer_config.json").read_text())
            enc = _encoder_config(folder)
        except (OSError, ValueError):
            return False
        from safetensors import safe_open

        names: set[str] = set()
        for file in folder.glob("*.safetensors"):
            with safe_open(str(file), "pt") as f:
                names |= set(_encoder_keys(f.keys()).values())
        files = (folder / "tokenizer.json").is_file() and {"embed_tokens.weight", "norm.weight"} <= names
        side = special.get("padding_side", "right") == "right"
        return files and side and set(special) <= _TOKENIZER_KEYS and _supported_config(enc, max_length)

    def to(self, device: torch.device | str) -> NativeT5Gemma:
        self.weights = {k: v.to(device) for k, v in self.weights.items()}
        return self

    @property
    def device(self) -> torch.device:
        return self.weights["embed_tokens.weight"].device

    def tokenize(self, prompts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(input ids, bool mask), truncated and right-padded to `max_length` like `transformers`."""
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding(length=max_length, pad_id=self.pad_id, pad_token=self.pad_token)
        encodings = self.tokenizer.encode_batch(prompts)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.bool)
        return ids, mask

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * (1.0 + self.weights[name].float())).to(x.dtype)

    def _rotary(self, n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        dim = self.head_dim
        inv = 1.0 / (
            self.theta ** (torch.arange(0, dim, 2, dtype=torch.int64, device=self.device).float() / dim)
        )
        angles = torch.arange(n, device=self.device).float()[:, None] * inv[None, :]
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def _attention(
        self, x: torch.Tensor, i: int, rot: tuple[torch.Tensor, torch.Tensor], bias: torch.Tensor
    ) -> torch.Tensor:
        w = self.weights
        b, n, _ = x.shape

        def heads(name: str, count: int) -> torch.Tensor:
            return (
                F.linear(x, w[f"layers.{i}.self_attn.{name}.weight"])
                .view(b, n, count, self.head_dim)
                .transpose(1, 2)
            )

        cos, sin = rot
        q, k, v = heads("q_proj", self.heads), heads("k_proj", self.kv_heads), heads("v_proj", self.kv_heads)
        q, k = (
            t * cos + torch.cat([-t[..., self.head_dim // 2 :], t[..., : self.head_dim // 2]], -1) * sin
            for t in (q, k)
        )
        groups = self.heads // self.kv_heads
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scaling
        if self.softcap is not None:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        probs = torch.softmax(scores + bias, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, n, self.heads * self.head_dim)
        return F.linear(out, w[f"layers.{i}.self_attn.o_proj.weight"])

    def _feed_forward(self, x: torch.Tensor, i: int) -> torch.Tensor:
        w = self.weights
        gate = F.gelu(F.linear(x, w[f"layers.{i}.mlp.gate_proj.weight"]), approximate="tanh")
        return F.linear(
            gate * F.linear(x, w[f"layers.{i}.mlp.up_proj.weight"]), w[f"layers.{i}.mlp.down_proj.weight"]
        )

    def trainable_weights(self) -> list[torch.Tensor]:
        """The encoder's tensors, made trainable (gradients flow while grad mode is on)."""
        for w in self.weights.values():
            w.requires_grad_(True)
        self.trainable = True
        return list(self.weights.values())

    def save_weights(self, source: str | Path, destination: str | Path) -> None:
        """Write the current weights into a copy of the folder's safetensors files (same keys)."""
        from safetensors.torch import load_file, save_file

        for file in sorted(Path(source).glob("*.safetensors")):
            tensors = load_file(str(file))
            for key, name in _encoder_keys(tensors).items():
                tensors[key] = self.weights[name].detach().to("cpu", tensors[key].dtype).contiguous()
            save_file(tensors, str(Path(destination) / file.name))

    def __call__(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`last_hidden_state` (B, N, width) of the encoder (differentiable once weights are
        trainable; inference callers run it under `torch.inference_mode`/`no_grad`)."""
        if not self.trainable:
            with torch.no_grad():
                return self._encode(input_ids, mask)
        return self._encode(input_ids, mask)

    def _encode(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ids, mask = input_ids.to(self.device), mask.to(self.device)
        x = F.embedding(ids, self.weights["embed_tokens.weight"])
        x = x * torch.tensor(math.sqrt(self.width), dtype=x.dtype)
        bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device)
        bias = bias.masked_fill(~mask, torch.finfo(x.dtype).min)[:, None, None, :]
        rot = self._rotary(x.shape[1], x.dtype)
        for i in range(self.layers):
            h = self._norm(x, f"layers.{i}.pre_self_attn_layernorm.weight")
            x = x + self._norm(
                self._attention(h, i, rot, bias), f"layers.{i}.post_self_attn_layernorm.weight"
            )
            h = self._norm(x, f"layers.{i}.pre_feedforward_layernorm.weight")
            x = x + self._norm(self._feed_forward(h, i), f"layers.{i}.post_feedforward_layernorm.weight")
        return self._norm(x, "norm.weight")
