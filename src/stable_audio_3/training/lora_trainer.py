"""LoRA training with the models' own objective (rectified flow, velocity target).

Pipeline: find audio + captions -> encode every clip once with SAME (cached on disk) -> train
adapters on the DiT and conditioners with random crops, padding masks, inpainting masks and caption
dropout -> write LoRA files in the official layout. Runs on CPU, CUDA (bf16/fp16 autocast) and
multi-GPU under `torchrun` (DDP) without code changes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from stable_audio_3.errors import ArgumentValueError
from stable_audio_3.lora.adapters import (
    ADAPTER_TYPES,
    LoRAConfig,
)
from stable_audio_3.lora.files import lora_state_dict, save_lora_file
from stable_audio_3.training import loop
from stable_audio_3.training.dataset import Clip, LatentCache, find_clips, sample_batch, silence_frame
from stable_audio_3.training.objective import (
    FlowMatchingObjective,
    flow_matching_loss,
    random_inpaint_mask,
    sample_training_t,
    training_shift,
    validation_loss,
)

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


# ------------------------------------------------------------------------------ the trainer


def train_lora(cfg: TrainConfig, on_step: Callable[[int, float], None] | None = None) -> Path:
    """Train a LoRA; returns the path of the final `.safetensors` (official layout)."""
    rank, world, device = loop.start_processes(cfg.device)
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
    objective = FlowMatchingObjective(model, training_shift(model), cfg_dropout=cfg.cfg_dropout)
    step_fn = loop.wrap_ddp(objective, world, dev)
    gen = torch.Generator().manual_seed(cfg.seed + rank)
    rng = random.Random(cfg.seed + rank)
    state_path = out / "train_state.pt"
    resumed = cfg.resume and state_path.is_file()
    step = loop.load_state(state_path, params, opt, None, gen, rng)["step"] if resumed else 0
    sr, ratio = model.sample_rate, model.config.pretransform.autoencoder.downsampling_ratio
    max_frames = max(1, int(cfg.duration * sr) // ratio)
    silence = silence_frame(model)
    model.networks.dit.train()
    bar = loop.progress_bar(cfg.progress and rank == 0, cfg.steps, step, "training LoRA")
    try:
        while step < cfg.steps:
            batch = sample_batch(clips, latents, cfg.batch_size, max_frames, (sr, ratio), rng, dev, silence)
            with loop.autocast(cfg.precision, dev):
                loss = step_fn(batch, gen, rng)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            value = float(loss.detach())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}")
            if on_step is not None:
                on_step(step, value)
            if rank == 0 and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
                _save(model, lcfg, out, step)
                loop.save_state(state_path, step, params, opt, None, gen, rng, config=_plain(cfg))
    finally:
        if bar is not None:
            bar.close()
        model.networks.dit.eval()
        loop.stop_processes(world)
    return out / "lora.safetensors"


def _load(cfg: TrainConfig, device, rank: int) -> tuple[Any, list[Clip], list[torch.Tensor]]:
    """The model, the clips and their (cached) latents."""
    from stable_audio_3.model import StableAudioModel

    model = StableAudioModel.from_pretrained(
        cfg.model, device=device, model_half=False, attention_padding="exclude"
    )
    clips = find_clips(cfg.data)
    cache = LatentCache.for_data(cfg.data, cfg.cache_dir, model)
    return model, clips, cache.encode_all(clips, progress=cfg.progress and rank == 0)


def _plain(cfg: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in asdict(cfg).items() if isinstance(v, (int, float, str, bool, type(None)))}


def _save(model, lcfg: LoRAConfig, out: Path, step: int) -> None:
    roots = {"dit": model.networks.dit, "conditioners": model.networks.conditioners}
    tensors = lora_state_dict(roots, index=0)
    save_lora_file(out / f"lora-step{step:06d}.safetensors", tensors, lcfg)
    save_lora_file(out / "lora.safetensors", tensors, lcfg)
