"""The Stable Audio 3 flow-matching objective (spec, training §3), shared by every stage and LoRA.

One step: noise levels from a truncated logit-normal, shifted by each item's effective length;
noise paired to latents by minibatch optimal transport (Sinkhorn); valid lengths extended by an
exponential padding augmentation; an inpainting keep-mask; caption dropout; the velocity target
`noise - x0`, its squared error averaged over generated and over kept frames.
"""

from __future__ import annotations

import math
import random

import torch
from torch import nn

from stable_audio_3.pipeline.schedules import IdentityShift, Shift, shift_from_config
from stable_audio_3.training.dataset import Batch, Clip, sample_batch

__all__ = [
    "one_step_estimate",
    "sample_training_t",
    "random_inpaint_mask",
    "flow_matching_loss",
    "shift_each",
    "sinkhorn_coupling",
    "augment_valid_lengths",
    "Batch",
    "FlowMatchingObjective",
    "training_shift",
    "validation_loss",
]


def sample_training_t(n: int, generator: torch.Generator, low: float = 0.075) -> torch.Tensor:
    """Truncated logit-normal noise levels in (0, 1], concentrated towards noise (official recipe)."""
    z = torch.randn(n, generator=generator)
    lo = torch.special.ndtr(torch.logit(torch.tensor(low)))
    u = lo + torch.special.ndtr(z) * (1 - lo)
    t0 = torch.sigmoid(torch.special.ndtri(u.clamp(max=1 - 1e-7)))
    return 1 - (t0 - low) / (1 - low)


def random_inpaint_mask(
    valid: list[int], length: int, rng: random.Random, context_share: float = 0.2
) -> torch.Tensor:
    """(B, 1, L) keep-masks: a `context_share` of the items keep context, half of them a prefix
    (continuation), half all but random gaps (inpainting); the rest generate everything (the
    official recipe's 80 / 10 / 10 at 0.2). Nothing past an item's valid length is ever kept, and as
    in the official recipe a gap item's random gaps may cover all of it (0.04 % of them at 40 frames)."""
    out = torch.zeros(len(valid), 1, length)
    for b, n in enumerate(valid):
        r = rng.random()
        if r < 1 - context_share or n < 2:
            continue
        if r < 1 - context_share / 2:
            out[b, 0, : rng.randrange(1, n)] = 1
        else:
            out[b, 0, :n] = 1
            for _ in range(rng.randint(1, 10)):
                s = rng.randrange(0, n)
                out[b, 0, s : min(n, s + rng.randint(1, max(1, n // 4)))] = 0
    return out


def flow_matching_loss(
    v: torch.Tensor,
    target: torch.Tensor,
    keep: torch.Tensor,
    valid: torch.Tensor,
    context_weight: float = 1.0,
) -> torch.Tensor:
    """Mean squared velocity error over valid generated frames per item, plus `context_weight` x the
    same over valid kept (context) frames. v, target: (B, C, L); keep: (B, 1, L); valid: (B, L)."""
    err = (v.float() - target.float()).pow(2).mean(dim=1)  # (B, L)
    keep = keep[:, 0].float()
    valid = valid.float()
    gen_w, ctx_w = (1 - keep) * valid, keep * valid
    gen = (err * gen_w).sum(1) / gen_w.sum(1).clamp(min=1)
    ctx = (err * ctx_w).sum(1) / ctx_w.sum(1).clamp(min=1)
    return (gen + context_weight * ctx).mean()


def shift_each(shift: Shift, t: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The training shift applied to each item's noise level with its own effective length."""
    return torch.stack([shift(t[i : i + 1], lengths[i : i + 1])[0, 0] for i in range(len(t))])


def sinkhorn_coupling(x0: torch.Tensor, noise: torch.Tensor, iterations: int = 20) -> torch.Tensor:
    """Minibatch OT pairing: the noise index for each latent (a permutation).

    Cost `|x0_i|^2 + |e_j|^2 - 2<x0_i, e_j>`; the plan is `-C / mean(C)` normalised alternately over
    rows and columns in log space; then each row, in order, takes its best column still free."""
    a, b = x0.flatten(1).double(), noise.flatten(1).double()
    cost = a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None] - 2 * a @ b.T
    plan = -cost / cost.mean().clamp(min=1e-12)
    for _ in range(iterations):
        plan = plan - plan.logsumexp(dim=1, keepdim=True)
        plan = plan - plan.logsumexp(dim=0, keepdim=True)
    free = torch.ones(len(a), dtype=torch.bool)
    perm = torch.empty(len(a), dtype=torch.long)
    for i in range(len(a)):
        j = int(torch.where(free, plan[i], torch.tensor(-math.inf, dtype=plan.dtype)).argmax())
        perm[i], free[j] = j, False
    return perm


def augment_valid_lengths(valid: list[int], length: int, mean_frames: float, rng: random.Random) -> list[int]:
    """Each valid length extended by floor(Exp(mean)) frames, at most to `length`: the model learns
    to end a clip in silence rather than rely on the padding mask's exact edge."""
    if mean_frames <= 0:
        return list(valid)
    return [min(length, n + int(rng.expovariate(1.0 / mean_frames))) for n in valid]


class FlowMatchingObjective(nn.Module):
    """The loss of one batch for a model (`condition()` + `networks.dit`), as one module for DDP."""

    def __init__(
        self,
        model,
        shift: Shift,
        *,
        cfg_dropout: float = 0.1,
        ot_coupling: bool = True,
        padding_mean_frames: float = 0.0,
        context_share: float = 0.2,
    ) -> None:
        super().__init__()
        self.networks = model.networks
        self.model = [model]  # not a submodule
        self.shift = shift
        self.cfg_dropout = cfg_dropout
        self.ot_coupling = ot_coupling
        self.padding_mean_frames = padding_mean_frames
        self.context_share = context_share

    def forward(self, batch: Batch, generator: torch.Generator, rng: random.Random) -> torch.Tensor:
        model = self.model[0]
        x0 = batch.latents
        b, _, length = x0.shape
        device = x0.device
        lengths = torch.tensor(batch.effective, dtype=torch.float32)
        t = shift_each(self.shift, sample_training_t(b, generator), lengths).to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        if self.ot_coupling and b > 1:
            noise = noise[sinkhorn_coupling(x0.detach().cpu(), noise.cpu()).to(device)]
        x_t = (1 - t)[:, None, None] * x0 + t[:, None, None] * noise
        valid_n = augment_valid_lengths(batch.valid, length, self.padding_mean_frames, rng)
        keep = random_inpaint_mask(valid_n, length, rng, self.context_share).to(device)
        valid = torch.arange(length, device=device)[None] < torch.tensor(valid_n, device=device)[:, None]
        cond = model.condition(batch.prompts, None, batch.seconds)
        cross = cond.cross_cond.to(x0.dtype)
        drop = torch.tensor([rng.random() < self.cfg_dropout for _ in range(b)], device=device)
        cross = torch.where(drop[:, None, None], torch.zeros_like(cross), cross)
        local = torch.cat([keep, x0 * keep], dim=1)
        v = self.networks.dit(
            x_t, t, cross_cond=cross, global_cond=cond.global_cond, local_cond=local, padding_mask=valid
        )
        return flow_matching_loss(v, noise - x0, keep, valid)


def one_step_estimate(model, x_t: torch.Tensor, t: torch.Tensor, cond, valid: torch.Tensor) -> torch.Tensor:
    """The DiT's estimate of the clean latents from `x_t` at level `t` in one step (x0 = x_t - t v),
    unconditioned on any inpainting input: what ping-pong sampling and stage 3 denoise with."""
    local = torch.zeros(x_t.shape[0], 1 + x_t.shape[1], x_t.shape[-1], device=x_t.device, dtype=x_t.dtype)
    kwargs = {"cross_cond": cond.cross_cond, "global_cond": cond.global_cond, "local_cond": local}
    v = model.networks.dit(x_t, t, padding_mask=valid, **kwargs)
    return x_t - t[:, None, None] * v.to(x_t.dtype)


def training_shift(model) -> Shift:
    options = model.config.diffusion.training_shift
    return shift_from_config(options) if options else IdentityShift()


@torch.no_grad()
def validation_loss(
    model,
    clips: list[Clip],
    latents: list[torch.Tensor],
    duration: float,
    seed: int = 0,
    batches: int = 4,
    batch_size: int = 2,
) -> float:
    """The objective on fixed crops, noise levels, noise and masks (no caption dropout): comparable
    across training steps, so it shows whether training is lowering the loss."""
    sr, ratio = model.sample_rate, model.config.pretransform.autoencoder.downsampling_ratio
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    objective = FlowMatchingObjective(model, training_shift(model), cfg_dropout=0.0, ot_coupling=False)
    total = 0.0
    for _ in range(batches):
        batch = sample_batch(
            clips, latents, batch_size, max(1, int(duration * sr) // ratio), (sr, ratio), rng, model.device
        )
        total += float(objective(batch, gen, rng))
    return total / batches
