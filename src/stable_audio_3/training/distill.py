"""Stage 2, ODE-distillation warm-up: the student learns to map noise straight to where the
teacher's ODE takes it.

The stage-1 teacher integrates its ODE (Euler, `teacher_steps`, CFG as configured) from seeded
noise for every caption and duration of the data; the (noise, endpoint) pairs are computed once
and cached on disk. The student (initialised from the teacher) is trained with the flow-matching
loss on those fixed couplings: `x_t = (1 - t) x_end + t noise`, target `noise - x_end`, so its
trajectories become straight and a few Euler steps land near the teacher's many-step result.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from stable_audio_3.checks import check_int, check_number
from stable_audio_3.official import hub
from stable_audio_3.pipeline.lengths import plan_lengths
from stable_audio_3.training import loop
from stable_audio_3.training.configs import DiTRunOptions
from stable_audio_3.training.dataset import find_clips
from stable_audio_3.training.export import text_encoder_folder, write_checkpoint
from stable_audio_3.training.objective import (
    flow_matching_loss,
    sample_training_t,
    shift_each,
    training_shift,
)
from stable_audio_3.training.pretrain import trainable_parameters
from stable_audio_3.training.samples import due, write_samples

__all__ = ["DistillConfig", "Trajectories", "distill", "teacher_trajectories", "ode_gap"]


@dataclass
class DistillConfig(DiTRunOptions):
    """A stage-2 run."""

    teacher: str  # stage-1 checkpoint folder (the student starts from it)
    data: str  # captions (and clip lengths) to distil on: a folder or a manifest
    output: str = "distill_out"
    teacher_steps: int = 50
    teacher_cfg_scale: float = 1.0
    trajectories: int = 0  # pairs to compute (0: one per clip)
    duration: float = 10.0  # generation length (clips shorter than this keep their own duration)
    steps: int = 1000
    batch_size: int = 4
    lr: float = 5e-5
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    sample_every: int = 0  # validation samples every N steps (0: at the end only, when prompts are given)
    sample_prompts: tuple[str, ...] = ()
    sample_steps: int = 8

    HELP: ClassVar[dict[str, str]] = {
        "teacher": "stage-1 checkpoint folder; the student is initialised from it",
        "data": "captions to distil on: a folder of audio + .txt captions, or a .csv/.jsonl manifest",
        "teacher_steps": "Euler steps of the teacher's ODE",
        "teacher_cfg_scale": "classifier-free guidance of the teacher (the student then samples without)",
        "trajectories": "teacher trajectories to compute and cache (0: one per clip)",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("teacher_steps", "steps", "batch_size", "checkpoint_every"):
            check_int(name, getattr(self, name), low=1)
        check_int("trajectories", self.trajectories, low=0)
        check_number("teacher_cfg_scale", self.teacher_cfg_scale)
        check_number("duration", self.duration, low=0.0, low_open=True)
        check_number("lr", self.lr, low=0.0, low_open=True)
        check_number("ema_decay", self.ema_decay, low=0.0, high=1.0)


@dataclass
class Trajectories:
    """Teacher ODE pairs: for each item the noise (C, L_i) and the ODE's endpoint (C, L_i), the seed
    the noise came from (so `generate(seed=...)` replays it) and what conditioned the teacher."""

    noise: list[torch.Tensor]
    endpoints: list[torch.Tensor]
    seeds: list[int]
    prompts: list[str]
    durations: list[float]
    valid: list[int]  # frames attention treated as real (duration + padding)

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        tensors = {f"noise.{i}": n.contiguous() for i, n in enumerate(self.noise)}
        tensors |= {f"endpoint.{i}": e.contiguous() for i, e in enumerate(self.endpoints)}
        fields = {k: json.dumps(getattr(self, k)) for k in ("seeds", "prompts", "durations", "valid")}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")  # every rank writes the same file
        save_file(tensors, str(tmp), fields)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Trajectories:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = {k: json.loads(v) for k, v in f.metadata().items()}
            n = len(meta["seeds"])
            noise = [f.get_tensor(f"noise.{i}") for i in range(n)]
            ends = [f.get_tensor(f"endpoint.{i}") for i in range(n)]
        return cls(noise, ends, meta["seeds"], meta["prompts"], meta["durations"], meta["valid"])


def _valid_frames(model, duration: float) -> int:
    ae = model.config.pretransform.autoencoder
    lengths = plan_lengths(
        [duration],
        6.0,
        model.sample_rate,
        ae.downsampling_ratio,
        ae.latent_multiple,
        model.config.sample_size,
    )
    return lengths.valid[0]


@torch.no_grad()
def teacher_trajectories(
    teacher,
    prompts: list[str],
    durations: list[float],
    steps: int,
    cfg_scale: float,
    seed: int,
    progress: bool = False,
) -> Trajectories:
    """Integrate the teacher's ODE (Euler, `steps`) for each (prompt, duration) from the noise of
    seed `seed + i`: exactly what `teacher.generate(..., seed=seed + i)` starts from."""
    noise, ends, seeds = [], [], []
    bar = loop.progress_bar(progress, len(prompts), 0, "teacher trajectories")
    for i, (prompt, duration) in enumerate(zip(prompts, durations, strict=True)):
        z = teacher.generate(
            prompt,
            duration=duration,
            steps=steps,
            cfg_scale=cfg_scale,
            seed=seed + i,
            sampler="euler",
            return_latents=True,
            progress=False,
        )
        gen = torch.Generator(device=teacher.device).manual_seed(seed + i)
        noise.append(torch.randn(z.shape, generator=gen, device=teacher.device)[0].cpu())
        ends.append(z[0].float().cpu())
        seeds.append(seed + i)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    valid = [_valid_frames(teacher, d) for d in durations]
    return Trajectories(noise, ends, seeds, list(prompts), list(durations), valid)


@torch.no_grad()
def ode_gap(model, pairs: Trajectories, steps: int, cfg_scale: float = 1.0) -> float:
    """Mean squared distance, over valid frames, between the model's `steps`-step Euler result from
    each pair's noise and the pair's endpoint: how closely it lands where the teacher's ODE did."""
    total = 0.0
    for i, prompt in enumerate(pairs.prompts):
        z = model.generate(
            prompt,
            duration=pairs.durations[i],
            steps=steps,
            cfg_scale=cfg_scale,
            seed=pairs.seeds[i],
            sampler="euler",
            return_latents=True,
            progress=False,
        )
        n = pairs.valid[i]
        total += float((z[0, :, :n].float().cpu() - pairs.endpoints[i][:, :n]).pow(2).mean())
    return total / max(1, len(pairs.prompts))


def _weights_digest(teacher: str) -> str:
    """The teacher's weight files by content: a teacher retrained into the same folder is a new
    teacher, and its trajectories are computed afresh."""
    root = hub.resolve_model(teacher).root
    digest = hashlib.sha1()
    for path in sorted(root.rglob("*.safetensors")):
        digest.update(str(path.relative_to(root)).encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):  # noqa: B023 (f is this iteration's)
                digest.update(block)
    return digest.hexdigest()


def _pairs(cfg: DistillConfig, teacher, out: Path, progress: bool) -> Trajectories:
    """The cached trajectories for this teacher and data, computed when missing or stale."""
    clips = find_clips(cfg.data)
    count = cfg.trajectories or len(clips)
    rng = random.Random(cfg.seed)
    picks = [clips[i % len(clips)] if count <= len(clips) else rng.choice(clips) for i in range(count)]
    prompts = [c.caption for c in picks]
    durations = [min(cfg.duration, c.seconds) for c in picks]
    key = {
        "teacher": str(Path(cfg.teacher).resolve()),
        "weights": _weights_digest(cfg.teacher),
        "prompts": prompts,
        "durations": durations,
        "steps": cfg.teacher_steps,
        "cfg": cfg.teacher_cfg_scale,
        "seed": cfg.seed,
        "precision": cfg.precision,
    }
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = out / f"trajectories-{digest}.safetensors"
    if path.is_file():
        return Trajectories.load(path)
    with loop.autocast(cfg.precision, teacher.device):  # bf16 on a CPU when asked: several times faster
        pairs = teacher_trajectories(
            teacher, prompts, durations, cfg.teacher_steps, cfg.teacher_cfg_scale, cfg.seed, progress
        )
    pairs.save(path)
    return pairs


def distill(cfg: DistillConfig) -> Path:
    """Run stage 2; returns the student's checkpoint folder (`<output>/checkpoint`)."""
    from stable_audio_3.model import StableAudioModel

    rank, world, device = loop.start_processes(cfg.device)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    model = StableAudioModel.from_pretrained(cfg.teacher, device=device, model_half=False)
    pairs = _pairs(cfg, model, out, cfg.progress and rank == 0)  # the teacher's, before any sharding
    fsdp = loop.shard_if_asked([model.networks.dit], model.device, world, cfg.sharding)
    params = trainable_parameters(model)
    average = loop.gradient_averaging(params, world) if fsdp else None  # else DDP averages
    run = loop.Optimisation(params, cfg, rank, loop.state_file(out, rank, fsdp), before_step=average)
    if cfg.resume:
        run.resume()
    student = _Student(model, training_shift(model))
    step_fn = student if fsdp else loop.wrap_ddp(student, world, model.device)
    report = loop.Reporter(out, cfg, rank, run.step, "distilling", ("loss",))
    encoder = text_encoder_folder(cfg.teacher, model.config.raw)

    def write(state) -> None:
        write_checkpoint(model.networks, out / "checkpoint", model.config.raw, encoder, state=state)

    model.networks.dit.train()
    try:
        while run.step < cfg.steps:
            picks = [run.rng.randrange(len(pairs.prompts)) for _ in range(cfg.batch_size)]
            with loop.autocast(cfg.precision, model.device):
                loss = step_fn(pairs, picks, run.gen)
            value = run.apply(loss)
            report.step(run.step, loss=value, lr=cfg.lr, **run.logged)
            if run.step % cfg.checkpoint_every == 0 or run.step == cfg.steps:
                save = lambda: run.save(config=asdict(cfg))  # noqa: E731
                loop.save_and_write(rank, fsdp, save, run.averaged(), model.networks, write)
            if rank == 0 and not fsdp and due(run.step, cfg.steps, cfg.sample_every):
                write_samples(
                    model,
                    cfg.sample_prompts,
                    out / "samples",
                    run.step,
                    duration=cfg.duration,
                    steps=cfg.sample_steps,
                    seed=cfg.seed,
                    sampler="euler",
                    weights=run.averaged(),
                )
    finally:
        report.close()
        model.networks.dit.eval()
        loop.stop_processes(world)
    return out / "checkpoint"


class _Student(torch.nn.Module):
    """The flow-matching loss on the teacher's fixed (noise, endpoint) couplings."""

    def __init__(self, model, shift) -> None:
        super().__init__()
        self.networks = model.networks
        self.model = [model]
        self.shift = shift

    def forward(self, pairs: Trajectories, picks: list[int], generator: torch.Generator) -> torch.Tensor:
        model = self.model[0]
        device = model.device
        length = max(pairs.endpoints[i].shape[-1] for i in picks)

        def stacked(items: list[torch.Tensor]) -> torch.Tensor:
            return torch.stack([F.pad(items[i], (0, length - items[i].shape[-1])) for i in picks]).to(device)

        x_end, noise = stacked(pairs.endpoints), stacked(pairs.noise)
        b, c, _ = x_end.shape
        ratio = model.config.pretransform.autoencoder.downsampling_ratio
        effective = torch.tensor([-(-int(pairs.durations[i] * model.sample_rate) // ratio) for i in picks])
        t = shift_each(self.shift, sample_training_t(b, generator), effective.float()).to(device)
        x_t = (1 - t)[:, None, None] * x_end + t[:, None, None] * noise
        valid_n = torch.tensor([pairs.valid[i] for i in picks], device=device)
        valid = torch.arange(length, device=device)[None] < valid_n[:, None]
        cond = model.condition([pairs.prompts[i] for i in picks], None, [pairs.durations[i] for i in picks])
        local = torch.zeros(b, 1 + c, length, device=device, dtype=x_end.dtype)
        v = self.networks.dit(
            x_t,
            t,
            cross_cond=cond.cross_cond,
            global_cond=cond.global_cond,
            local_cond=local,
            padding_mask=valid,
        )
        return flow_matching_loss(v, noise - x_end, torch.zeros(b, 1, length, device=device), valid)
