"""Classifier-free guidance with adaptive projected guidance (APG), as the released models use it.

With `cfg_scale != 1` the DiT runs once on the batch [conditional; unconditional]. Guidance works on
denoised estimates `D = x - t v`: the difference `D_c - D_u` is (optionally) norm-limited and
projected orthogonally to `D_c` (APG), then `D = D_c + (cfg_scale - 1) G` is turned back into a
velocity. Everything after the network runs in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from stable_audio_3.models.dit import DiffusionTransformer, Prepared

__all__ = ["Guidance", "Denoiser", "apg_project", "guided_velocity"]


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


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance settings of one generation (the released models' defaults)."""

    cfg_scale: float = 1.0
    apg_scale: float = 1.0
    interval: tuple[float, float] = (0.0, 1.0)
    norm_threshold: float = 0.0
    scale_phi: float = 0.0

    def applies_at(self, t: torch.Tensor) -> bool:
        """Whether a step evaluated at noise levels `t` (B,) is guided: `cfg_scale != 1` and the first
        item's level inside `interval`, compared as float32 like the reference (a float64 comparison
        can flip at the edges). Reads `t`: give it a CPU tensor to avoid waiting for a device."""
        if self.cfg_scale == 1.0:
            return False
        sigma = t.float()[0]
        lo, hi = self.interval
        return bool((sigma >= lo) & (sigma <= hi))


class Denoiser:
    """The (guided) velocity model of one generation, `v = D(x, t)`.

    The conditioning is the same at every step, so what depends on it alone (per DiT block the text
    keys/values and local-add embeddings, the unconditional context) is prepared once per branch.
    With the branch given (`guided=`) a call reads no tensor on the host, so it never waits for the
    device and can be captured in a CUDA graph (`cudagraphs.py`).

    The unconditional branch sees an all-zero context (seconds token included), or the negative
    prompt's context with its padded positions zeroed. Both branches share the global conditioning.
    """

    def __init__(
        self,
        dit: DiffusionTransformer,
        *,
        cross_cond: torch.Tensor,
        global_cond: torch.Tensor,
        local_cond: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        valid_lengths: Sequence[int] | None = None,
        negative_cross_cond: torch.Tensor | None = None,
        negative_cross_mask: torch.Tensor | None = None,
        guidance: Guidance = Guidance(),
    ) -> None:
        self.dit = dit
        self.guidance = guidance
        self.cross_cond = cross_cond
        self.local_cond = local_cond
        self.negative_cross_cond = negative_cross_cond
        self.negative_cross_mask = negative_cross_mask
        # Owned copies: a captured graph reads these buffers, and later generations copy into them.
        self.global_cond = global_cond.to(dit.dtype).clone()
        self.padding_mask = None if padding_mask is None else padding_mask.bool().clone()
        self.valid_lengths = None if valid_lengths is None else tuple(int(n) for n in valid_lengths)
        self._prepared: dict[bool, tuple[Prepared, torch.Tensor]] = {}

    def prepare(self, guided: bool, length: int) -> tuple[Prepared, torch.Tensor]:
        """The branch's per-block conditioning and global conditioning (made on first use)."""
        if guided not in self._prepared:
            dit, local = self.dit, self.local_cond
            if not guided:
                self._prepared[guided] = (dit.prepare(self.cross_cond, local, length), self.global_cond)
            else:
                cond = self.cross_cond.to(dit.dtype)
                if self.negative_cross_cond is None:
                    uncond = torch.zeros_like(cond)
                else:
                    uncond = self.negative_cross_cond.to(dit.dtype)
                    if self.negative_cross_mask is not None:
                        keep = self.negative_cross_mask.bool()[..., None]
                        uncond = torch.where(keep, uncond, torch.zeros_like(uncond))
                both = torch.cat([cond, uncond], dim=0)
                prepared = dit.prepare(both, None if local is None else _twice(local), length)
                self._prepared[guided] = (prepared, _twice(self.global_cond))
        return self._prepared[guided]

    def state(self, guided: bool, length: int) -> list[torch.Tensor]:
        """Every tensor a call of this branch reads besides x and t (in a fixed order)."""
        prepared, glob = self.prepare(guided, length)
        tensors = [glob]
        for ks, v in prepared.kv:
            tensors += [*ks, v]
        tensors += [e for e in prepared.local if e is not None]
        if self.padding_mask is not None:
            tensors.append(self.padding_mask)
        return tensors

    def inputs(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, t) as every branch uses them: x in the DiT dtype, t in float32. A call depends on its
        inputs only through these, so samplers whose x turns float32 after a guided step (guidance
        math is float32) still feed a captured graph the same input layout."""
        return x.to(self.dit.dtype), t.float()

    def __call__(self, x: torch.Tensor, t: torch.Tensor, guided: bool | None = None) -> torch.Tensor:
        """The velocity at (x, t). `guided=None` decides from `t` (reading it on the host)."""
        x, t = self.inputs(x, t)
        if guided is None:
            guided = self.guidance.applies_at(t)
        prepared, glob = self.prepare(guided, x.shape[-1])
        if not guided:
            return self.dit(x, t, global_cond=glob, prepared=prepared, **self._keys(1))
        g = self.guidance
        out = self.dit(_twice(x), _twice(t), global_cond=glob, prepared=prepared, **self._keys(2))
        v_cond, v_uncond = out.chunk(2, dim=0)
        s = t[:, None, None]  # float32 (see `inputs`)
        d_cond = x - v_cond * s
        d_uncond = x - v_uncond * s
        diff = d_cond - d_uncond
        mask = self.padding_mask
        if g.norm_threshold > 0:
            masked = diff if mask is None else diff * mask[:, None, :].float()
            norm = masked.norm(p=2, dim=(-1, -2), keepdim=True)
            diff = diff * torch.minimum(torch.ones_like(diff), g.norm_threshold / norm)
        if g.apg_scale == 0.0:
            guide = diff
        else:
            _, orthogonal = apg_project(diff, d_cond, mask)
            guide = orthogonal if g.apg_scale == 1.0 else g.apg_scale * orthogonal + (1 - g.apg_scale) * diff
        denoised = d_cond + (g.cfg_scale - 1) * guide
        v = (x - denoised) / s
        if g.scale_phi != 0.0:
            ratio = v_cond.std(dim=1, keepdim=True) / v.std(dim=1, keepdim=True)
            v = g.scale_phi * (v * ratio) + (1 - g.scale_phi) * v
        return v

    def _keys(self, copies: int) -> dict:
        """The DiT's padding arguments for `copies` stacked copies of the batch."""
        if self.valid_lengths is not None:
            return {"valid_lengths": self.valid_lengths * copies}
        if self.padding_mask is None:
            return {}
        return {"padding_mask": self.padding_mask if copies == 1 else _twice(self.padding_mask)}


def _twice(v: torch.Tensor) -> torch.Tensor:
    return torch.cat([v, v], dim=0)


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
) -> torch.Tensor:
    """One (guided) velocity evaluation; `Denoiser` is the same for many steps. Without guidance
    (`cfg_scale == 1` or `t` outside `cfg_interval`) this is one plain DiT evaluation."""
    guidance = Guidance(cfg_scale, apg_scale, tuple(cfg_interval), cfg_norm_threshold, scale_phi)
    denoiser = Denoiser(
        dit,
        cross_cond=cross_cond,
        global_cond=global_cond,
        local_cond=local_cond,
        padding_mask=padding_mask,
        negative_cross_cond=negative_cross_cond,
        negative_cross_mask=negative_cross_mask,
        guidance=guidance,
    )
    return denoiser(x, t)
