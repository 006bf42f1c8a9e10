"""The attention kernels: exact banded attention and the two padding semantics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from stable_audio_3.models.attention import attend, banded_attention


def _dense_band(q, k, v, w, key_valid=None):
    n = q.shape[-2]
    i = torch.arange(n)
    mask = ((i[:, None] - i[None, :]).abs() <= w)[None, None]
    if key_valid is not None:
        mask = mask & key_valid[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 300), w=st.integers(0, 40), block=st.sampled_from([8, 64, 128]), seed=st.integers(0, 99)
)
def test_banded_attention_is_exact(n, w, block, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 3, n, 16, generator=g) for _ in range(3))
    out = banded_attention(q, k, v, w, block=block)
    assert (out - _dense_band(q, k, v, w)).abs().max().item() < 1e-5


def test_banded_attention_with_invalid_keys() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 100, 8, generator=g) for _ in range(3))
    valid = torch.rand(2, 100, generator=g) > 0.3
    valid[:, ::5] = True  # every query keeps at least one key in its band
    out = attend(q, k, v, key_mask=valid, padding="exclude", window=17)
    assert (out - _dense_band(q, k, v, 17, valid)).abs().max().item() < 1e-5


def test_banded_attention_memory_is_linear() -> None:
    # Scores are materialised one group of blocks at a time: a 200k-token sequence would need an
    # 160 GB N x N mask, here it fits in a few hundred MB.
    n = 200_000
    q = torch.randn(1, 1, n, 8)
    out = banded_attention(q, q, q, 17)
    assert out.shape == q.shape and torch.isfinite(out).all()


def test_padding_semantics() -> None:
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 1, 6, 4, generator=g) for _ in range(3))
    valid = torch.tensor([[True, True, True, True, False, False]])
    excl = attend(q, k, v, key_mask=valid, padding="exclude")
    assert torch.allclose(excl, F.scaled_dot_product_attention(q, k[..., :4, :], v[..., :4, :]), atol=1e-6)
    ref = attend(q, k, v, key_mask=valid, padding="reference_cpu")
    zeroed = v.clone()
    zeroed[..., 4:, :] = 0
    assert torch.allclose(ref, F.scaled_dot_product_attention(q, k, zeroed), atol=1e-6)
    # Dropping the padded keys (no mask: flash kernels on CUDA) is exclusion too.
    dropped = attend(q, k, v, key_length=4, padding="exclude")
    assert torch.allclose(dropped, excl, atol=1e-6)
    with pytest.raises(ValueError, match="key_length applies"):
        attend(q, k, v, key_length=4, padding="reference_cpu")
    with pytest.raises(ValueError, match="key_length applies"):
        attend(q, k, v, key_length=4, key_mask=valid)
    with pytest.raises(ValueError, match="attention padding must be one of"):
        attend(q, k, v, padding="zero")
