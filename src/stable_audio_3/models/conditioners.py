"""Conditioners: the T5Gemma prompt encoder and the `seconds_total` number embedding."""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from stable_audio_3.errors import (
    ArgumentValueError,
    CheckpointError,
    MissingFileError,
    StableAudioError,
    describe,
)
from stable_audio_3.models.layers import ExpoFourierFeatures, Linear
from stable_audio_3.models.t5gemma import NativeT5Gemma
from stable_audio_3.official.conditioner_config import NumberConditionerConfig, PromptConditionerConfig

__all__ = [
    "TextEncoder",
    "load_text_encoder",
    "TEXT_ENCODER_BACKENDS",
    "PromptConditioner",
    "NumberConditioner",
]


class _Detached:
    """Holds a module outside the parent's module tree (no state_dict, no `.to`, no LoRA)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module


class TextEncoder:
    """A frozen T5Gemma encoder and its tokenizer, loaded with `transformers` from a local folder."""

    def __init__(self, folder: str | Path, dtype: torch.dtype | str | None = None) -> None:
        from transformers import AutoConfig, AutoTokenizer, T5GemmaEncoderModel
        from transformers.utils import logging as hf_logging

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"text encoder folder {folder} has no config.json")
        previous = hf_logging.get_verbosity()
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
                config = AutoConfig.from_pretrained(str(folder))
                config.is_encoder_decoder = False
                self.model = T5GemmaEncoderModel.from_pretrained(
                    str(folder), config=config, dtype=dtype if dtype is not None else "auto"
                )
        finally:
            hf_logging.set_verbosity(previous)
            if bars:
                hf_logging.enable_progress_bar()
        self.model.eval().requires_grad_(False)
        logging.getLogger(__name__).debug("loaded text encoder from %s", folder)

    def tokenize(self, prompts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(
            list(prompts), truncation=True, max_length=max_length, padding="max_length", return_tensors="pt"
        )
        return enc["input_ids"], enc["attention_mask"].bool()

    def to(self, device: torch.device | str) -> TextEncoder:
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        out = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device))
        return out["last_hidden_state"]


TEXT_ENCODER_BACKENDS = ("auto", "native", "transformers")


def load_text_encoder(
    folder: str | Path, max_length: int, dtype: torch.dtype | None = None, backend: str = "auto"
) -> TextEncoder | NativeT5Gemma:
    """The prompt encoder of a T5Gemma folder: our own port when it reproduces the folder's model
    ("auto": checked from its configs; it starts seconds faster), else `transformers`."""
    if backend not in TEXT_ENCODER_BACKENDS:
        raise ArgumentValueError(
            f"text_encoder_backend must be one of {TEXT_ENCODER_BACKENDS}, got {backend!r}"
        )
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise MissingFileError(f"text encoder folder {folder} has no config.json")
    try:
        native = NativeT5Gemma.supports(folder, max_length)
        if backend == "native" and not native:
            raise ArgumentValueError(
                f"text_encoder_backend='native' does not support the encoder in {folder}"
            )
        if backend == "transformers" or not native:
            return TextEncoder(folder, dtype=dtype)
        return NativeT5Gemma(folder, dtype=dtype)
    except (StableAudioError, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001 - json, tokenizers, safetensors and transformers each raise their own
        raise CheckpointError(f"text encoder folder {folder} cannot be loaded ({describe(err)})") from None


class PromptConditioner(nn.Module):
    """Prompt strings -> (B, max_length, width) token embeddings and a (B, max_length) bool mask.

    The T5Gemma encoder is frozen and kept outside this module's parameters; encodings of recent
    prompts are cached, so repeated prompts (CFG, batch items, later calls) are encoded once.
    """

    def __init__(self, cfg: PromptConditionerConfig, cache_size: int = 64) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.width != cfg.output_dim or cfg.project_out:
            self.proj_out: nn.Module = Linear(cfg.width, cfg.output_dim)
        else:
            self.proj_out = nn.Identity()
        if cfg.padding_mode == "learned":
            self.padding_embedding = nn.Parameter(torch.zeros(cfg.output_dim))
        self._encoder: _Detached | None = None
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._cache_size = cache_size

    def attach_encoder(self, encoder: TextEncoder | NativeT5Gemma) -> None:
        self._encoder = _Detached(encoder)  # type: ignore[arg-type]
        self._cache.clear()

    @property
    def encoder(self) -> TextEncoder:
        if self._encoder is None:
            raise RuntimeError("no text encoder attached to the prompt conditioner")
        return self._encoder.module  # type: ignore[return-value]

    def move_encoder(self, device: torch.device | str) -> None:
        self.encoder.to(device)
        self._cache.clear()

    @property
    def trains_encoder(self) -> bool:
        """True once the encoder's weights are trainable: encodings are then never cached."""
        return self._encoder is not None and getattr(self.encoder, "trainable", False)

    def clear_cache(self) -> None:
        """Forget cached prompt encodings (e.g. ones made under inference mode, before training)."""
        self._cache.clear()

    def _encode_unique(self, prompts: list[str]) -> None:
        """Encode the prompts not cached yet; evict the least recently used others (never one of
        `prompts`, however many there are)."""
        unique = list(dict.fromkeys(prompts))
        for p in unique:  # this call's cached prompts become the most recent: never evicted below
            if p in self._cache:
                self._cache.move_to_end(p)
        todo = [p for p in unique if p not in self._cache]
        if todo:
            ids, mask = self.encoder.tokenize(todo, self.cfg.max_length)
            hidden = self.encoder(ids, mask)
            for i, p in enumerate(todo):
                self._cache[p] = (hidden[i], mask[i])
        while len(self._cache) > max(self._cache_size, len(unique)):
            self._cache.popitem(last=False)

    def forward(
        self, prompts: Sequence[str], device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = list(prompts)
        if self.trains_encoder:  # fresh encodings: the weights change between calls
            ids, mask = self.encoder.tokenize(prompts, self.cfg.max_length)
            return self._project(self.encoder(ids, mask).to(device), mask.to(device))
        self._encode_unique(prompts)
        hidden = torch.stack([self._cache[p][0] for p in prompts]).to(device)
        mask = torch.stack([self._cache[p][1] for p in prompts]).to(device)
        return self._project(hidden, mask)

    def _project(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(self.proj_out, nn.Identity):
            hidden = self.proj_out(hidden.to(self.proj_out.weight.dtype))
        if self.cfg.padding_mode == "zero":
            hidden = hidden * mask[..., None].float()
        elif self.cfg.padding_mode == "learned":
            hidden = torch.where(mask[..., None], hidden, self.padding_embedding.expand_as(hidden))
        return hidden, mask


class NumberConditioner(nn.Module):
    """Numbers -> (B, 1, output_dim) embeddings (expo Fourier features + Linear) and a ones mask."""

    def __init__(self, cfg: NumberConditionerConfig, features: int = 256) -> None:
        super().__init__()
        self.cfg = cfg
        self.features = ExpoFourierFeatures(features)
        self.proj = Linear(features, cfg.output_dim)

    def forward(
        self, values: Sequence[float], device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.tensor([float(v) for v in values], dtype=torch.float32, device=device)
        x = x.clamp(self.cfg.min_val, self.cfg.max_val)
        u = (x - self.cfg.min_val) / (self.cfg.max_val - self.cfg.min_val)
        dtype = self.proj.weight.dtype
        # As the reference, the normalised value is rounded to fp16 in half mode; bf16 keeps fp32.
        emb = self.proj(self.features(u.to(dtype) if dtype == torch.float16 else u).to(dtype))
        return emb[:, None, :], torch.ones(len(values), 1, device=device)
