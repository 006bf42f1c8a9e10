"""Absolute positions in the DiT (the official schema's `use_sinusoidal_emb` and `use_abs_pos_emb`):
the embeddings' formulas, the config flags, the official key names, and what enters the first block
(rotary angles alone make the DiT shift-equivariant)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import checkpoint_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from stable_audio_3.models.dit import DiffusionTransformer
from stable_audio_3.models.layers import LearnedPositions, ScaledSinusoidalPositions
from stable_audio_3.official.checkpoint import official_to_ours, ours_to_official
from stable_audio_3.official.dit_config import DiTConfig


def _official(**extra) -> dict:
    cfg = json.loads((checkpoint_dir("A") / "model_config.json").read_text())
    return dict(cfg["model"]["diffusion"]["config"], **extra)


@settings(max_examples=25, deadline=None)
@given(dim=st.integers(1, 48).map(lambda k: 2 * k), n=st.integers(1, 40))
def test_embedding_is_scaled_sin_then_cos(dim: int, n: int) -> None:
    emb = ScaledSinusoidalPositions(dim)(n)
    assert emb.shape == (n, dim) and emb.dtype == torch.float32
    half = dim // 2
    for p in {0, n // 2, n - 1}:
        for k in {0, half // 2, half - 1}:
            angle = p * 10000.0 ** (-k / half)
            assert emb[p, k].item() == pytest.approx(math.sin(angle) / math.sqrt(dim), abs=1e-5)
            assert emb[p, half + k].item() == pytest.approx(math.cos(angle) / math.sqrt(dim), abs=1e-5)


def test_odd_width_is_refused() -> None:
    with pytest.raises(ValueError, match="even width"):
        ScaledSinusoidalPositions(7)


def test_config_flag_and_key_name() -> None:
    assert not DiTConfig.from_official(_official()).sinusoidal_positions
    cfg = DiTConfig.from_official(_official(use_sinusoidal_emb=True))
    assert cfg.sinusoidal_positions
    with pytest.raises(ValueError, match="use_sinusoidal_emb and use_abs_pos_emb"):
        DiTConfig.from_official(_official(use_sinusoidal_emb=True, use_abs_pos_emb=True))
    with torch.device("meta"):
        dit = DiffusionTransformer(cfg)
    keys = set(dit.state_dict())
    assert "positions.scale" in keys  # the frequencies are not stored, as in the reference
    official = "model.model.transformer.pos_emb.scale"
    assert ours_to_official("dit.positions.scale") == official
    assert official_to_ours(official) == "dit.positions.scale"


def test_positions_are_added_from_the_first_memory_token() -> None:
    """What enters the first block: [memory tokens, projected frames] + positions 0..M+L-1."""
    dit = DiffusionTransformer(DiTConfig.from_official(_official(use_sinusoidal_emb=True))).eval()
    cfg = dit.config
    assert cfg.num_memory_tokens > 0
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        dit.positions.scale.fill_(0.7)
        dit.memory_tokens.normal_(generator=g)
    x = torch.randn(2, cfg.io_channels, 9, generator=g)
    seen: list[torch.Tensor] = []
    dit.blocks[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    cross = torch.randn(2, 3, cfg.cond_token_dim, generator=g)
    with torch.no_grad():
        dit(x, torch.tensor([0.3, 0.8]), cross_cond=cross, global_cond=torch.randn(2, cfg.global_cond_dim))
        frames = dit.project_in((dit.preprocess_conv(x) + x).transpose(1, 2))
        tokens = torch.cat([dit.memory_tokens.expand(2, -1, -1), frames], dim=1)
        expected = tokens + dit.positions(tokens.shape[1])
    torch.testing.assert_close(seen[0], expected)


def test_learned_positions_config_and_key_name() -> None:
    base = _official()
    assert DiTConfig.from_official(base).learned_positions == 0
    cfg = DiTConfig.from_official(_official(use_abs_pos_emb=True, abs_pos_emb_max_length=20))
    assert cfg.learned_positions == 20 + base["num_memory_tokens"]  # memory tokens have rows too
    with torch.device("meta"):
        dit = DiffusionTransformer(cfg)
    assert dit.state_dict()["positions.emb.weight"].shape == (cfg.learned_positions, cfg.embed_dim)
    official = "model.model.transformer.pos_emb.emb.weight"
    assert ours_to_official("dit.positions.emb.weight") == official
    assert official_to_ours(official) == "dit.positions.emb.weight"


@settings(max_examples=20, deadline=None)
@given(dim=st.integers(1, 64), rows=st.integers(1, 30), data=st.data())
def test_learned_positions_are_the_table_scaled(dim: int, rows: int, data) -> None:
    n = data.draw(st.integers(1, rows))
    positions = LearnedPositions(dim, rows)
    emb = positions(n)
    assert emb.shape == (n, dim) and emb.dtype == torch.float32
    torch.testing.assert_close(emb, positions.emb.weight[:n].detach() / math.sqrt(dim))


def test_a_sequence_longer_than_the_table_is_refused() -> None:
    with pytest.raises(ValueError, match="cover 5 tokens, the sequence has 6"):
        LearnedPositions(8, 5)(6)


def test_learned_positions_are_added_from_the_first_memory_token() -> None:
    cfg = DiTConfig.from_official(_official(use_abs_pos_emb=True, abs_pos_emb_max_length=16))
    dit = DiffusionTransformer(cfg).eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        dit.memory_tokens.normal_(generator=g)
    x = torch.randn(1, cfg.io_channels, 7, generator=g)
    seen: list[torch.Tensor] = []
    dit.blocks[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    cross = torch.randn(1, 3, cfg.cond_token_dim, generator=g)
    with torch.no_grad():
        dit(x, torch.tensor([0.5]), cross_cond=cross, global_cond=torch.randn(1, cfg.global_cond_dim))
        frames = dit.project_in((dit.preprocess_conv(x) + x).transpose(1, 2))
        tokens = torch.cat([dit.memory_tokens.expand(1, -1, -1), frames], dim=1)
        expected = tokens + dit.positions.emb.weight[: tokens.shape[1]] / math.sqrt(cfg.embed_dim)
    torch.testing.assert_close(seen[0], expected)
