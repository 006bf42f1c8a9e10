"""LoRA training with the models' own objective (rectified flow, velocity target).

Pipeline: find audio + captions -> encode every clip once with SAME (cached on disk) -> train
adapters on the DiT and conditioners with random crops, padding masks, inpainting masks and caption
dropout -> write LoRA files in the official layout. Runs on CPU, CUDA (bf16/fp16 autocast) and
multi-GPU under `torchrun` (DDP) without code changes.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stable_audio_3.errors import ArgumentValueError
from stable_audio_3.lora.adapters import (
    ADAPTER_TYPES,
    LoRAConfig,
)
from stable_audio_3.lora.files import lora_state_dict, save_lora_file
from stable_audio_3.pipeline.schedules import IdentityShift, Shift, shift_from_config
from stable_audio_3.training.dataset import Clip, LatentCache, find_clips

__all__ = [
    "TrainConfig",
    "train_lora",
    "validation_loss",
    "sample_training_t",
    "random_inpaint_mask",
    "flow_matching_loss",
]


@dataclass
class TrainConfig:
    """Everything a LoRA training run needs; the defaults follow the official recipe."""

    model: str
    data: str
    output: str = "lora_out"
    rank: int = 16
    alpha: float | None = None
    adapter_type: str = "lora"
    include: list[str] | None = None
    exclude: list[str] | None = None
    lr: float = 1e-4
    weight_decay: float = 0.01
    steps: int = 1000
    batch_size: int = 1
    duration: float = 30.0
    seed: int = 42
    cfg_dropout: float = 0.1
    checkpoint_every: int = 500
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    device: str | None = None
    cache_dir: str | None = None
    resume: bool = False
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.adapter_type not in ADAPTER_TYPES:
            raise ArgumentValueError(
                f"adapter_type must be one of {ADAPTER_TYPES}, got {self.adapter_type!r}"
            )
        for name in ("rank", "steps", "batch_size", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ArgumentValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ArgumentValueError(f"lr must be > 0, got {self.lr}")
        if not self.duration > 0:
            raise ArgumentValueError(f"duration must be > 0, got {self.duration}")
        if not 0 <= self.cfg_dropout < 1:
            raise ArgumentValueError(f"cfg_dropout must be in [0, 1), got {self.cfg_dropout}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ArgumentValueError(f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")


# ------------------------------------------------------------------------------ objective pieces


def sample_training_t(n: int, generator: torch.Generator, low: float = 0.075) -> torch.Tensor:
    """Truncated logit-normal noise levels in (0, 1], concentrated towards noise (official recipe)."""
    z = torch.randn(n, generator=generator)
    lo = torch.special.ndtr(torch.logit(torch.tensor(low)))
    u = lo + torch.special.ndtr(z) * (1 - lo)
    t0 = torch.sigmoid(torch.special.ndtri(u.clamp(max=1 - 1e-7)))
    return 1 - (t0 - low) / (1 - low)


def random_inpaint_mask(valid: list[int], length: int, rng: random.Random) -> torch.Tensor:
    """(B, 1, L) keep-masks: 80 % generate everything, 10 % keep a prefix, 10 % keep random segments.
    Nothing past an item's valid length is ever kept."""
    out = torch.zeros(len(valid), 1, length)
    for b, n in enumerate(valid):
        r = rng.random()
        if r < 0.8 or n < 2:
            continue
        if r < 0.9:
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


def _shift_each(shift: Shift, t: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return torch.stack([shift(t[i : i + 1], lengths[i : i + 1])[0, 0] for i in range(len(t))])


# ------------------------------------------------------------------------------ the trainer


class _Objective(nn.Module):
    """Wraps the networks so that DDP sees one module whose forward returns the loss."""

    def __init__(self, model, cfg_dropout: float) -> None:
        super().__init__()
        self.networks = model.networks
        self.model = [model]  # not a submodule
        self.cfg_dropout = cfg_dropout

    def forward(self, batch: dict, generator: torch.Generator, rng: random.Random) -> torch.Tensor:
        model = self.model[0]
        x0 = batch["latents"]
        b, c, length = x0.shape
        device = x0.device
        t = batch["t"].to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        x_t = (1 - t)[:, None, None] * x0 + t[:, None, None] * noise
        keep = random_inpaint_mask(batch["valid"], length, rng).to(device)
        valid = (
            torch.arange(length, device=device)[None] < torch.tensor(batch["valid"], device=device)[:, None]
        )
        cond = model.condition(batch["prompts"], None, batch["seconds"])
        cross = cond.cross_cond.to(x0.dtype)
        drop = torch.tensor([rng.random() < self.cfg_dropout for _ in range(b)], device=device)
        cross = torch.where(drop[:, None, None], torch.zeros_like(cross), cross)
        local = torch.cat([keep, x0 * keep], dim=1)
        v = self.networks.dit(
            x_t, t, cross_cond=cross, global_cond=cond.global_cond, local_cond=local, padding_mask=valid
        )
        return flow_matching_loss(v, noise - x0, keep, valid)


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
    objective = _Objective(model, cfg_dropout=0.0)
    total = 0.0
    for _ in range(batches):
        batch = _make_batch(
            clips, latents, batch_size, max(1, int(duration * sr) // ratio), sr, ratio, rng, model.device
        )
        batch["t"] = sample_training_t(batch_size, gen)
        total += float(objective(batch, gen, rng))
    return total / batches


def _distributed() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def train_lora(cfg: TrainConfig, on_step: Callable[[int, float], None] | None = None) -> Path:
    """Train a LoRA; returns the path of the final `.safetensors` (official layout)."""
    rank, world, device = _start_processes(cfg)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    model, clips, latents = _load(cfg, device, rank)
    dev = model.device

    lcfg = LoRAConfig(
        rank=cfg.rank,
        alpha=cfg.alpha,
        adapter_type=cfg.adapter_type,
        include=cfg.include,
        exclude=cfg.exclude,
    )
    params = model.lora.attach_trainable(lcfg)
    if not params:
        raise ArgumentValueError("include/exclude left no layer to train")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    objective: nn.Module = _Objective(model, cfg.cfg_dropout)
    if world > 1:
        objective = nn.parallel.DistributedDataParallel(objective, device_ids=_device_ids(dev))
    gen = torch.Generator().manual_seed(cfg.seed + rank)
    rng = random.Random(cfg.seed + rank)
    step = _resume(out / "train_state.pt", params, opt, gen, rng) if cfg.resume else 0

    sr, ratio = model.sample_rate, model.config.pretransform.autoencoder.downsampling_ratio
    max_frames = max(1, int(cfg.duration * sr) // ratio)
    shift = _training_shift(model)
    autocast = _autocast(cfg.precision, dev)
    model.networks.dit.train()
    bar = _bar(cfg, step, rank)
    try:
        while step < cfg.steps:
            batch = _make_batch(clips, latents, cfg.batch_size, max_frames, sr, ratio, rng, dev)
            lengths = torch.tensor(batch["effective"], dtype=torch.float32)
            batch["t"] = _shift_each(shift, sample_training_t(cfg.batch_size, gen), lengths)
            with autocast:
                loss = objective(batch, gen, rng)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            _report(bar, on_step, step, float(loss.detach()))
            if rank == 0 and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
                _save(model, lcfg, out, step, params, opt, gen, cfg)
    finally:
        if bar is not None:
            bar.close()
        model.networks.dit.eval()
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    return out / "lora.safetensors"


def _load(cfg: TrainConfig, device, rank: int) -> tuple[Any, list[Clip], list[torch.Tensor]]:
    """The model, the clips and their (cached) latents."""
    from stable_audio_3.model import StableAudioModel

    model = StableAudioModel.from_pretrained(
        cfg.model, device=device, model_half=False, attention_padding="exclude"
    )
    clips = find_clips(cfg.data)
    cache = LatentCache(Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.data) / ".sa3_latents", model)
    return model, clips, cache.encode_all(clips, progress=cfg.progress and rank == 0)


def _device_ids(device: torch.device) -> list[int] | None:
    return [device.index] if device.type == "cuda" else None


def _start_processes(cfg: TrainConfig) -> tuple[int, int, str | torch.device | None]:
    """(rank, world size, device); joins the process group when launched by torchrun."""
    rank, world, local_rank = _distributed()
    if world == 1:
        return rank, world, cfg.device
    import torch.distributed as dist

    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return rank, world, f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"


def _resume(
    state_path: Path, params: list[nn.Parameter], opt, gen: torch.Generator, rng: random.Random
) -> int:
    """Restore adapters, optimiser and random streams from `train_state.pt`; the step reached."""
    if not state_path.is_file():
        return 0
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    with torch.no_grad():
        for p, saved in zip(params, state["adapters"], strict=True):
            p.copy_(saved)
    opt.load_state_dict(state["optimizer"])
    step = int(state["step"])
    gen.set_state(state["generator"])
    rng.seed(state["rng_seed"] + step)
    return step


def _training_shift(model) -> Shift:
    options = model.config.diffusion.training_shift
    return shift_from_config(options) if options else IdentityShift()


def _report(bar, on_step: Callable[[int, float], None] | None, step: int, loss: float) -> None:
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
    if on_step is not None:
        on_step(step, loss)


def _autocast(precision: str, device: torch.device):
    import contextlib

    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast("cuda", dtype=dtype)


def _bar(cfg: TrainConfig, start: int, rank: int):
    if not cfg.progress or rank != 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=cfg.steps, initial=start, desc="training LoRA", unit="step")


def _make_batch(
    clips: list[Clip],
    latents: list[torch.Tensor],
    batch_size: int,
    max_frames: int,
    sr: int,
    ratio: int,
    rng: random.Random,
    device: torch.device,
) -> dict:
    picks = [rng.randrange(len(clips)) for _ in range(batch_size)]
    crops, valid = [], []
    for i in picks:
        z = latents[i]
        n = z.shape[-1]
        start = rng.randrange(0, n - max_frames + 1) if n > max_frames else 0
        crop = z[:, start : start + max_frames]
        crops.append(crop)
        valid.append(crop.shape[-1])
    length = max(valid)
    x0 = torch.stack([F.pad(c, (0, length - c.shape[-1])) for c in crops]).to(device)
    seconds = [math.ceil(clips[i].seconds) for i in picks]
    return {
        "latents": x0,
        "valid": valid,
        "prompts": [clips[i].caption for i in picks],
        "seconds": [float(s) for s in seconds],
        "effective": [math.ceil(int(s * sr) / ratio) for s in seconds],
    }


def _save(model, lcfg: LoRAConfig, out: Path, step: int, params: list[nn.Parameter], opt, gen, cfg) -> None:
    roots = {"dit": model.networks.dit, "conditioners": model.networks.conditioners}
    tensors = lora_state_dict(roots, index=0)
    save_lora_file(out / f"lora-step{step:06d}.safetensors", tensors, lcfg)
    save_lora_file(out / "lora.safetensors", tensors, lcfg)
    state = {
        "adapters": [p.detach().cpu() for p in params],
        "optimizer": opt.state_dict(),
        "step": step,
        "generator": gen.get_state(),
        "rng_seed": cfg.seed,
        "config": {
            k: v for k, v in asdict(cfg).items() if isinstance(v, (int, float, str, bool, type(None)))
        },
    }
    tmp = out / ".train_state.pt.partial"
    torch.save(state, tmp)
    tmp.replace(out / "train_state.pt")
