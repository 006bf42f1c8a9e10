"""Scaled dot-product attention kernels: padding semantics and exact sliding-window attention.

Everything here is plain PyTorch, so it runs unchanged on CPU, CUDA and MPS; on CUDA,
`F.scaled_dot_product_attention` picks the flash / memory-efficient kernels by itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PADDING_MODES = ("exclude", "reference_cpu")

# Upper bound on the number of score elements materialised at once by the banded kernel.
_BAND_SCORE_BUDGET = 1 << 25


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    key_mask: torch.Tensor | None = None,
    padding: str = "exclude",
    window: int | None = None,
    key_length: int | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for (B, H, N, d) heads.

    key_mask: (B, N) bool, True where a key is valid. How invalid keys are treated:
      * ``"exclude"``: they get no softmax mass (what the released models were trained with, and
        what the reference computes with flash-attn on CUDA);
      * ``"reference_cpu"``: their values are zeroed but they keep their softmax mass (what the
        reference computes without flash-attn, e.g. on CPU).
    key_length: every item's keys past this position are padding ("exclude" only). They are dropped
      instead of masked, so SDPA runs without a mask (flash kernels on CUDA).
    window: if given, query i only sees keys j with |i - j| <= window, computed blockwise in memory
      linear in N (never an N x N mask).

    Nothing here reads tensor values on the host, so a call never waits for the device (and can be
    captured in a CUDA graph); callers that know nothing is padded pass no mask.
    """
    if padding not in PADDING_MODES:
        raise ValueError(f"attention padding must be one of {PADDING_MODES}, got {padding!r}")
    if key_length is not None:
        if padding != "exclude" or key_mask is not None or window is not None:
            raise ValueError("key_length applies to unwindowed 'exclude' attention without a key_mask")
        k, v = k[..., :key_length, :], v[..., :key_length, :]
    valid = None
    if key_mask is not None:
        key_mask = key_mask.to(device=q.device, dtype=torch.bool)
        if padding == "reference_cpu":
            v = v * key_mask[:, None, :, None].to(v.dtype)
        else:
            valid = key_mask
    if window is not None:
        return banded_attention(q, k, v, window, key_valid=valid)
    mask = None if valid is None else valid[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def banded_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    key_valid: torch.Tensor | None = None,
    block: int = 64,
) -> torch.Tensor:
    """Exact attention restricted to the band |i - j| <= window, in O(N * (block + 2 window)) memory.

    Queries are cut into blocks of `block`; each block attends to its own keys plus `window` keys on
    either side, gathered with `unfold` and masked to the exact band.
    """
    b, h, n, d = q.shape
    w = int(window)
    if w < 0:
        raise ValueError(f"sliding window must be >= 0, got {window}")
    nblk = -(-n // block)
    n_pad = nblk * block
    span = block + 2 * w
    pad_q = n_pad - n

    q_p = F.pad(q, (0, 0, 0, pad_q)).view(b, h, nblk, block, d)
    k_p = F.pad(k, (0, 0, w, pad_q + w))
    v_p = F.pad(v, (0, 0, w, pad_q + w))

    # Key position for (block, slot), and whether it lies in the sequence and in the band.
    dev = q.device
    key_pos = torch.arange(nblk, device=dev)[:, None] * block - w + torch.arange(span, device=dev)[None, :]
    qry_pos = torch.arange(nblk, device=dev)[:, None] * block + torch.arange(block, device=dev)[None, :]
    in_seq = (key_pos >= 0) & (key_pos < n)  # (nblk, span)
    band = (key_pos[:, None, :] - qry_pos[:, :, None]).abs() <= w  # (nblk, block, span)
    allowed = band & in_seq[:, None, :]
    if key_valid is not None:
        kv_valid = F.pad(key_valid, (w, pad_q + w), value=False).unfold(1, span, block)  # (b, nblk, span)
        allowed = allowed[None] & kv_valid[:, :, None, :]
        allowed = allowed[:, None]  # (b, 1, nblk, block, span)
    # Queries past the end of the sequence are discarded; let them see everything so no row is empty.
    allowed = allowed | (qry_pos >= n)[..., None]

    out = torch.empty(b, h, nblk, block, d, dtype=q.dtype, device=dev)
    per_block = b * h * block * span
    group = max(1, _BAND_SCORE_BUDGET // max(per_block, 1))
    for s in range(0, nblk, group):
        e = min(nblk, s + group)
        ks = k_p[:, :, s * block : (e - 1) * block + span].unfold(2, span, block).transpose(-1, -2)
        vs = v_p[:, :, s * block : (e - 1) * block + span].unfold(2, span, block).transpose(-1, -2)
        m = allowed[..., s:e, :, :]
        out[:, :, s:e] = F.scaled_dot_product_attention(q_p[:, :, s:e], ks, vs, attn_mask=m)
    return out.view(b, h, n_pad, d)[:, :, :n]
