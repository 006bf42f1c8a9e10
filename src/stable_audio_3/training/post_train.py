"""Stage 3, adversarial post-training: turns a stage-1/2 model into an `rf_denoiser` checkpoint
sampled with ping-pong in ~8 steps without CFG.

The generator denoises real latents noised to a random level in one step (`x0 = x_t - t v`). A
discriminator built on a copy of the pre-trained DiT trunk (frozen by default) with a small head
scores latents re-noised to a shared level, conditioned on the prompt. Losses: relativistic
(real against generated, both directions) and contrastive (a latent must score higher with its
own prompt than with another item's). The paper's CLAP text-alignment loss is left out: at demo
scale there is no CLAP model to use; the contrastive term is what aligns text here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from stable_audio_3.checks import check_int, check_number
from stable_audio_3.training import loop
from stable_audio_3.training.audio_losses import MultiResolutionSTFTLoss, stft_sizes
from stable_audio_3.training.configs import DiTRunOptions
from stable_audio_3.training.dataset import Batch, LatentCache, find_clips, sample_batch, silence_frame
from stable_audio_3.training.export import text_encoder_folder, write_checkpoint
from stable_audio_3.training.objective import (
    one_step_estimate,
    sample_training_t,
    shift_each,
    training_shift,
)
from stable_audio_3.training.pretrain import trainable_parameters
from stable_audio_3.training.samples import due, write_samples

__all__ = ["PostTrainConfig", "post_train", "Discriminator", "decoded_audio_loss"]


@dataclass
class PostTrainConfig(DiTRunOptions):
    """A stage-3 run."""

    model: str  # stage-2 (or stage-1) checkpoint: the generator's start and the discriminator's trunk
    data: str
    output: str = "post_train_out"
    steps: int = 1000
    batch_size: int = 4
    duration: float = 10.0
    lr: float = 1e-5
    lr_discriminator: float = 1e-4
    discriminator_warmup: int = 0  # steps training only the discriminator before the generator's steps
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    contrastive_weight: float = 1.0
    audio_weight: float = 0.0  # MR-STFT of the decoded estimate against the decoded real latents
    train_trunk: bool = False
    checkpoint_every: int = 500
    sample_every: int = 0  # validation samples every N steps (0: at the end only, when prompts are given)
    sample_prompts: tuple[str, ...] = ()
    sample_steps: int = 8
    cache_dir: str | None = None

    HELP: ClassVar[dict[str, str]] = {
        "model": "stage-2 (or stage-1) checkpoint: generator start and discriminator trunk",
        "lr_discriminator": "learning rate of the discriminator's head (and trunk with --train-trunk)",
        "discriminator_warmup": "steps that train only the discriminator, before the generator's `steps`, "
        "so the generator's first updates follow a discriminator that already tells real from generated "
        "(its head starts random)",
        "contrastive_weight": "weight of the matched-vs-mismatched prompt loss",
        "audio_weight": "weight of a generator term on audio: the multi-resolution STFT distance of its "
        "decoded one-step estimate to the decoded real latents (not in the paper; it makes latent frames "
        "whose decoded phases join up, where a small autoencoder's decoder cannot)",
        "train_trunk": "also train the discriminator's DiT trunk (frozen by default)",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("steps", "batch_size", "checkpoint_every"):
            check_int(name, getattr(self, name), low=1)
        check_int("discriminator_warmup", self.discriminator_warmup, low=0)
        for name in ("lr", "lr_discriminator", "duration"):
            check_number(name, getattr(self, name), low=0.0, low_open=True)
        check_number("ema_decay", self.ema_decay, low=0.0, high=1.0)
        check_number("contrastive_weight", self.contrastive_weight, low=0.0)
        check_number("audio_weight", self.audio_weight, low=0.0)


class Discriminator(nn.Module):
    """A score per item: the trunk DiT's hidden states at its middle block, through a small head
    (norm, linear to one logit per frame), averaged over valid frames."""

    def __init__(self, trunk_model, train_trunk: bool, seed: int = 0) -> None:
        super().__init__()
        self.trunk_model = [trunk_model]
        self.trunk = trunk_model.networks.dit
        self.trunk.requires_grad_(train_trunk)
        width = self.trunk.config.embed_dim
        with loop.forked_rng(seed):  # the head's initialisation is part of the run's seed
            layers = (nn.LayerNorm(width), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 1))
            self.head = nn.Sequential(*layers)
        self._features: torch.Tensor | None = None
        block = self.trunk.blocks[len(self.trunk.blocks) // 2]
        block.register_forward_hook(lambda _m, _i, out: setattr(self, "_features", out))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond, valid: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        local = torch.zeros(x.shape[0], 1 + x.shape[1], length, device=x.device, dtype=x.dtype)
        self.trunk(
            x,
            t,
            cross_cond=cond.cross_cond,
            global_cond=cond.global_cond,
            local_cond=local,
            padding_mask=valid,
        )
        h = self._features[:, -length:].float()  # drop memory tokens
        logits = self.head(h)[..., 0]
        w = valid.float()
        return (logits * w).sum(1) / w.sum(1).clamp(min=1)


def _relativistic(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean softplus(-(a - b)): low when `a` scores above `b`."""
    return F.softplus(b - a).mean()


def _denoise(model, batch: Batch, gen: torch.Generator, shift) -> tuple[torch.Tensor, torch.Tensor, object]:
    """The generator's one-step estimate from the real latents noised to a random level."""
    x0 = batch.latents
    t = shift_each(shift, sample_training_t(len(x0), gen), torch.tensor(batch.effective, dtype=torch.float32))
    t = t.to(x0.device)
    noise = torch.randn(x0.shape, generator=gen).to(x0.device)
    x_t = (1 - t)[:, None, None] * x0 + t[:, None, None] * noise
    valid = _valid(batch)
    cond = model.condition(batch.prompts, None, batch.seconds)
    return one_step_estimate(model, x_t, t, cond, valid), valid, cond


def _valid(batch: Batch) -> torch.Tensor:
    length = batch.latents.shape[-1]
    device = batch.latents.device
    return torch.arange(length, device=device)[None] < torch.tensor(batch.valid, device=device)[:, None]


def _renoise(x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return (1 - t)[:, None, None] * x + t[:, None, None] * noise


def _discriminator_loss(d: Discriminator, real_n, fake_n, t_d, cond, rolled, valid, weight: float):
    """Relativistic real-above-generated plus contrastive matched-above-mismatched (real latents)."""
    s_real = d(real_n, t_d, cond, valid)
    contrast = _relativistic(s_real, d(real_n, t_d, rolled, valid))
    return _relativistic(s_real, d(fake_n, t_d, cond, valid)) + weight * contrast, contrast


def _generator_loss(d: Discriminator, real_n, fake_n, t_d, cond, rolled, valid, weight: float):
    """Relativistic generated-above-real plus generated-with-own-prompt above mismatched."""
    s_fake = d(fake_n, t_d, cond, valid)
    with torch.no_grad():
        s_real = d(real_n, t_d, cond, valid)
    return _relativistic(s_fake, s_real) + weight * _relativistic(s_fake, d(fake_n, t_d, rolled, valid))


@dataclass
class _Run:
    """The state of one stage-3 run between steps."""

    cfg: PostTrainConfig
    rank: int
    world: int
    model: object
    disc: Discriminator
    clips: list
    latents: list[torch.Tensor]
    generator: loop.Optimisation
    discriminator: loop.Optimisation
    silence: torch.Tensor
    encoder: Path
    out: Path
    fsdp: bool = False


def _setup(cfg: PostTrainConfig) -> _Run:
    from stable_audio_3.model import StableAudioModel

    rank, world, device = loop.start_processes(cfg.device)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    model = StableAudioModel.from_pretrained(cfg.model, device=device, model_half=False)
    trunk = StableAudioModel.from_pretrained(cfg.model, device=device, model_half=False)
    # The generator is sharded; the discriminator's trunk stays whole on every rank (frozen: weights
    # alone; trained: averaged like the head), as FSDP2 crashed (SIGSEGV, torch 2.13 on CPU) in the
    # backward through a sharded trunk that runs three times a step.
    fsdp = loop.shard_if_asked([model.networks.dit], model.device, world, cfg.sharding)
    disc = Discriminator(trunk, cfg.train_trunk, cfg.seed)
    disc.head.to(model.device)
    clips = find_clips(cfg.data)
    cache = LatentCache.for_data(cfg.data, cfg.cache_dir, model)
    d_cfg = SimpleNamespace(
        lr=cfg.lr_discriminator, weight_decay=cfg.weight_decay, ema_decay=0.0, seed=cfg.seed
    )
    g_params, d_params = trainable_parameters(model), [p for p in disc.parameters() if p.requires_grad]
    run = _Run(
        cfg=cfg,
        rank=rank,
        world=world,
        model=model,
        disc=disc,
        clips=clips,
        latents=cache.encode_all(clips, progress=cfg.progress and rank == 0),
        generator=_optimisation(g_params, cfg, rank, world, loop.state_file(out, rank, fsdp)),
        discriminator=_optimisation(
            d_params, d_cfg, rank, world, loop.state_file(out, rank, fsdp, "train_state_discriminator")
        ),
        silence=silence_frame(model),
        encoder=text_encoder_folder(cfg.model, model.config.raw),
        out=out,
        fsdp=fsdp,
    )
    if cfg.resume:
        run.generator.resume()
        run.discriminator.resume()
    return run


def _optimisation(params, cfg, rank: int, world: int, path: Path) -> loop.Optimisation:
    """No DDP wrapper here (two models, two updates a step): gradients averaged before each step."""
    return loop.Optimisation(params, cfg, rank, path, before_step=loop.gradient_averaging(params, world))


def post_train(cfg: PostTrainConfig) -> Path:
    """Run stage 3; returns the `rf_denoiser` checkpoint folder (`<output>/checkpoint`).

    The first `discriminator_warmup` steps update the discriminator only; metrics count every step."""
    run = _setup(cfg)
    model, g, d = run.model, run.generator, run.discriminator
    shift = training_shift(model)
    ratio = model.config.pretransform.autoencoder.downsampling_ratio
    max_frames = max(1, int(cfg.duration * model.sample_rate) // ratio)
    total = cfg.discriminator_warmup + cfg.steps
    report = loop.Reporter(run.out, cfg, run.rank, d.step, "post-training", ("loss_d", "loss_g"), total)
    model.networks.dit.train()
    try:
        while d.step < total:
            batch = sample_batch(
                run.clips,
                run.latents,
                cfg.batch_size,
                max_frames,
                (model.sample_rate, ratio),
                g.rng,
                model.device,
                run.silence,
            )
            with loop.autocast(cfg.precision, model.device):
                weights = (cfg.contrastive_weight, cfg.audio_weight)
                train_generator = d.step >= cfg.discriminator_warmup
                values = _step(model, run.disc, batch, (g, d), shift, weights, train_generator)
            report.step(d.step, **values, **g.logged)
            sampling = (
                train_generator and bool(cfg.sample_prompts) and due(g.step, cfg.steps, cfg.sample_every)
            )
            if sampling or d.step % cfg.checkpoint_every == 0 or d.step == total:
                _save(run)  # samples are made from the saved checkpoint
            if sampling and run.rank == 0:
                _samples(run)
    finally:
        report.close()
        model.networks.dit.eval()
        loop.stop_processes(run.world)
    return run.out / "checkpoint"


def _save(run: _Run) -> None:
    def save() -> None:
        run.generator.save(config=asdict(run.cfg))
        run.discriminator.save()

    def write(state) -> None:
        networks, raw, folder = run.model.networks, run.model.config.raw, run.out / "checkpoint"
        write_checkpoint(networks, folder, raw, run.encoder, objective="rf_denoiser", state=state)

    averaged = run.generator.averaged()
    loop.save_and_write(run.rank, run.fsdp, save, averaged, run.model.networks, write)


def _step(model, disc, batch, runs, shift, weights: tuple[float, float], train_generator: bool = True):
    """One discriminator update, then (unless warming the discriminator up) one generator update
    against the updated discriminator. `runs`: the generator's and the discriminator's optimisation;
    `weights`: contrastive, audio. Returns the step's logged values."""
    (gen_run, d_run), (weight, audio_weight) = runs, weights
    with torch.set_grad_enabled(train_generator):
        fake, valid, _ = _denoise(model, batch, gen_run.gen, shift)
    b = len(batch.prompts)
    trunk = disc.trunk_model[0]  # the discriminator conditions with its own (frozen) conditioners
    cond = trunk.condition(batch.prompts, None, batch.seconds)
    rolled = trunk.condition([batch.prompts[(i + 1) % b] for i in range(b)], None, batch.seconds)
    t_d = sample_training_t(b, gen_run.gen).to(fake.device)
    noise = torch.randn(fake.shape, generator=gen_run.gen).to(fake.device)
    real_n, fake_n = _renoise(batch.latents, t_d, noise), _renoise(fake, t_d, noise)
    loss_d, contrast = _discriminator_loss(disc, real_n, fake_n.detach(), t_d, cond, rolled, valid, weight)
    values = {"loss_d": d_run.apply(loss_d), "contrastive": float(contrast.detach())}
    if not train_generator:
        return values
    loss_g = _generator_loss(disc, real_n, fake_n, t_d, cond, rolled, valid, weight)
    if audio_weight > 0:
        audio = decoded_audio_loss(model, fake, batch.latents, valid)
        loss_g = loss_g + audio_weight * audio
        values["audio"] = float(audio.detach())
    values["loss_g"] = gen_run.apply(loss_g)
    return values


def decoded_audio_loss(model, fake: torch.Tensor, real: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Multi-resolution STFT distance of the decoded estimate to the decoded real latents (frames
    past each clip's end zeroed in both); the frozen decoder passes gradients to the estimate."""
    mask = valid[:, None].to(fake)
    with torch.no_grad():
        target = model.autoencoder.decode(real * mask).float()
    rate = model.sample_rate
    return MultiResolutionSTFTLoss(stft_sizes(rate))(model.autoencoder.decode(fake * mask).float(), target)


def _samples(run: _Run) -> None:
    """Samples of the saved rf_denoiser, loaded as users load it: ping-pong, no CFG."""
    from stable_audio_3.model import StableAudioModel

    cfg = run.cfg
    saved = StableAudioModel.from_pretrained(run.out / "checkpoint", device=run.model.device)
    write_samples(
        saved,
        cfg.sample_prompts,
        run.out / "samples",
        run.generator.step,
        duration=cfg.duration,
        steps=cfg.sample_steps,
        seed=cfg.seed,
        sampler="pingpong",
    )
