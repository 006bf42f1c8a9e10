"""Classifier-free guidance with adaptive projected guidance (APG), as the released models use it.

With `cfg_scale != 1` the DiT runs once on the batch [conditional; unconditional]. Guidance works on
denoised estimates `D = x - t v`: the difference `D_c - D_u` is (optionally) norm-limited and
projected orthogonally to `D_c` (APG), then `D = D_c + (cfg_scale - 1) G` is turned back into a
velocity. Everything after the network runs in float32.
"""

from __future__ import annotations

import torch

from .dit import DiffusionTransformer

__all__ = ["apg_project", "guided_velocity"]


def apg_project(
    diff: torch.Tensor, direction: torch.Tensor, padding_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split `diff` into parts parallel and orthogonal to `direction` (per item, over C x L).

    With a padding mask only valid frames define the direction, and the orthogonal part is zero on
    padded frames.
    """
    dtype = diff.dtype
    v0, v1 = diff.float(), direction.float()
    dims = (-1, -2)
    if padding_mask is None:
        unit = torch.nn.functional.normalize(v1, dim=dims)
        parallel = (v0 * unit).sum(dim=dims, keepdim=True) * unit
        orthogonal = v0 - parallel
    else:
        m = padding_mask[:, None, :].float()
        v1m = v1 * m
        unit = v1m / v1m.norm(dim=dims, keepdim=True).clamp(min=1e-8)
        parallel = ((v0 * m) * unit).sum(dim=dims, keepdim=True) * unit
        orthogonal = (v0 - (v0 * unit).sum(dim=dims, keepdim=True) * unit) * m
    return parallel.to(dtype), orthogonal.to(dtype)


def guided_velocity(
    dit: DiffusionTransformer,
    x: torch.Tensor,
    t: torch.Tensor,
    *,
    cross_cond: torch.Tensor,
    global_cond: torch.Tensor,
    local_cond: torch.Tensor | None = None,
    padding_mask: torch.Tensor | None = None,
    cfg_scale: float = 1.0,
    apg_scale: float = 1.0,
    negative_cross_cond: torch.Tensor | None = None,
    negative_cross_mask: torch.Tensor | None = None,
    cfg_interval: tuple[float, float] = (0.0, 1.0),
    cfg_norm_threshold: float = 0.0,
    scale_phi: float = 0.0,
    cache: dict | None = None,
) -> torch.Tensor:
    """The (guided) velocity at (x, t). Without guidance this is one plain DiT evaluation.

    The unconditional branch sees an all-zero context (seconds token included), or the negative
    prompt's context with its padded positions zeroed. Both branches share the global conditioning.
    `cache`: a dict kept for one generation (the conditioning is the same at every step), so the
    text keys/values and local embeddings are computed once.
    """
    sigma = t.float()
    lo, hi = cfg_interval
    length = x.shape[-1]
    # Compared as float32 tensors, like the reference (a float64 comparison can flip at the edges).
    in_interval = bool((sigma[0] >= lo) & (sigma[0] <= hi))
    if cfg_scale == 1.0 or not in_interval:
        prepared = _cached(cache, "plain", lambda: dit.prepare(cross_cond, local_cond, length))
        return dit(x, t, global_cond=global_cond, padding_mask=padding_mask, prepared=prepared)

    dtype = dit.dtype
    x = x.to(dtype)
    cond = cross_cond.to(dtype)
    if negative_cross_cond is None:
        uncond = torch.zeros_like(cond)
    else:
        uncond = negative_cross_cond.to(dtype)
        if negative_cross_mask is not None:
            uncond = torch.where(negative_cross_mask.bool()[..., None], uncond, torch.zeros_like(uncond))

    def twice(v: torch.Tensor | None) -> torch.Tensor | None:
        return None if v is None else torch.cat([v, v], dim=0)

    prepared = _cached(
        cache, "guided", lambda: dit.prepare(torch.cat([cond, uncond], dim=0), twice(local_cond), length)
    )
    out = dit(
        twice(x),
        twice(t),
        global_cond=twice(global_cond),
        padding_mask=twice(padding_mask),
        prepared=prepared,
    )
    v_cond, v_uncond = out.chunk(2, dim=0)
    s = sigma[:, None, None]
    d_cond = x - v_cond * s
    d_uncond = x - v_uncond * s
    diff = d_cond - d_uncond
    if cfg_norm_threshold > 0:
        masked = diff if padding_mask is None else diff * padding_mask[:, None, :].float()
        norm = masked.norm(p=2, dim=(-1, -2), keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(diff), cfg_norm_threshold / norm)
    if apg_scale == 0.0:
        guide = diff
    else:
        _, orthogonal = apg_project(diff, d_cond, padding_mask)
        guide = orthogonal if apg_scale == 1.0 else apg_scale * orthogonal + (1 - apg_scale) * diff
    denoised = d_cond + (cfg_scale - 1) * guide
    v = (x - denoised) / s
    if scale_phi != 0.0:
        ratio = v_cond.std(dim=1, keepdim=True) / v.std(dim=1, keepdim=True)
        v = scale_phi * (v * ratio) + (1 - scale_phi) * v
    return v


def _cached(cache: dict | None, key: str, make):
    if cache is None:
        return make()
    if key not in cache:
        cache[key] = make()
    return cache[key]
