"""Stage 1, flow-matching pre-training: the DiT (and the conditioners' small projections) trained
with the objective of spec §3 on variable-length batches, EMA weights, resumable, one process or
many under `torchrun`. The autoencoder and the text encoder come from a base checkpoint and stay
frozen. The result is a `rectified_flow` checkpoint folder in the official layout."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from stable_audio_3.checks import check_int, check_number
from stable_audio_3.errors import ArgumentValueError
from stable_audio_3.training import loop
from stable_audio_3.training.configs import DiTRunOptions
from stable_audio_3.training.dataset import (
    LatentCache,
    caption_weights,
    find_clips,
    length_order,
    sample_batch,
    silence_frame,
)
from stable_audio_3.training.export import text_encoder_folder, write_checkpoint
from stable_audio_3.training.objective import FlowMatchingObjective, training_shift
from stable_audio_3.training.samples import due, write_samples

__all__ = ["PretrainConfig", "pretrain", "trainable_parameters", "reinitialise"]


@dataclass
class PretrainConfig(DiTRunOptions):
    """A stage-1 run; the defaults follow the official recipe where the spec gives one."""

    base: str  # checkpoint folder: config, autoencoder and text encoder (and the DiT to start from)
    data: str  # folder of audio + captions, or a .csv / .jsonl manifest
    output: str = "pretrain_out"
    from_scratch: bool = False  # re-initialise the DiT instead of continuing the base's weights
    train_text_encoder: bool = False  # also train the T5Gemma encoder (needed at demo scale)
    steps: int = 1000
    batch_size: int = 4
    duration: float = 10.0  # crop length in seconds
    lr: float = 1e-4
    warmup_steps: int = 0
    decay_steps: int = 0  # linear cool-down of the learning rate to zero over the last N steps
    cooldowns: tuple[int, ...] = ()  # earlier steps where a cool-down of decay_steps also ends
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    cfg_dropout: float = 0.1
    ot_coupling: bool = True
    padding_augment_seconds: float = 4.0  # mean of the exponential valid-length extension
    context_share: float = 0.2  # items that keep context (a prefix or all but gaps), official 0.2
    group_by_length: bool = False  # batches of clips of similar length (less padding, faster)
    oversample: tuple[str, ...] = ()  # "TEXT=FACTOR": clips whose caption contains TEXT, FACTOR x as often
    checkpoint_every: int = 500
    sample_every: int = 0  # write validation samples every N steps (0: only at the end)
    sample_prompts: tuple[str, ...] = ()
    sample_steps: int = 20
    cache_dir: str | None = None

    HELP: ClassVar[dict[str, str]] = {
        "base": "checkpoint folder or registry name giving the config, autoencoder and text encoder",
        "data": "folder of audio + .txt captions, or a .csv/.jsonl manifest",
        "output": "run folder: checkpoint/, samples/, metrics.jsonl, train_state.pt",
        "from_scratch": "re-initialise the DiT instead of continuing the base checkpoint's weights",
        "train_text_encoder": "also train the T5Gemma encoder (our port only; one process)",
        "duration": "crop length in seconds (shorter clips are padded, variable length)",
        "warmup_steps": "linear learning-rate warm-up over this many steps (0: none)",
        "decay_steps": "linear learning-rate cool-down to zero over the last N steps (0: none)",
        "cooldowns": "earlier steps where a cool-down of decay_steps also ends, the rate back at its peak "
        "after each (one run follows the schedule of a run resumed with more steps)",
        "ema_decay": "EMA of the weights written to the checkpoint (0: no EMA)",
        "ot_coupling": "pair noise to latents by minibatch optimal transport (Sinkhorn)",
        "padding_augment_seconds": "mean of the exponential extension of each valid length",
        "context_share": "share of items that keep context (half a prefix, half all but random gaps)",
        "group_by_length": "draw each batch from clips of similar length: less padding, faster steps",
        "oversample": "TEXT=FACTOR: draw clips whose caption contains TEXT about FACTOR times as often "
        "(several may be given; factors multiply)",
        "sample_every": "write validation samples every N steps (0: at the end only)",
        "sample_prompts": "prompts of the validation samples",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("steps", "batch_size", "checkpoint_every", "sample_steps"):
            check_int(name, getattr(self, name), low=1)
        check_int("sample_every", self.sample_every, low=0)
        check_int("warmup_steps", self.warmup_steps, low=0)
        check_int("decay_steps", self.decay_steps, low=0, high=self.steps)
        check_number("duration", self.duration, low=0.0, low_open=True)
        check_number("lr", self.lr, low=0.0, low_open=True)
        check_number("ema_decay", self.ema_decay, low=0.0, high=1.0)
        check_number("cfg_dropout", self.cfg_dropout, low=0.0, high=1.0)
        check_number("padding_augment_seconds", self.padding_augment_seconds, low=0.0)
        check_number("context_share", self.context_share, low=0.0, high=1.0)
        self.sample_prompts = tuple(self.sample_prompts)
        self.oversample = tuple(self.oversample)
        self.cooldowns = parse_cooldowns(self.cooldowns, self.decay_steps, self.steps)
        parse_oversample(self.oversample)  # checked here, so a bad value fails before any work

    @property
    def oversample_factors(self) -> dict[str, float]:
        """`oversample` as {text: factor}."""
        return parse_oversample(self.oversample)


def parse_cooldowns(items: tuple, decay_steps: int, steps: int) -> tuple[int, ...]:
    """`cooldowns` as increasing step numbers, each with room for a whole cool-down before it and
    before the run's end; flags give them as text ("3500"), config files as integers."""
    out: list[int] = []
    for item in items:
        try:
            value = int(str(item), 10)
        except ValueError:
            raise ArgumentValueError(f"cooldowns: expected step numbers, got {item!r}") from None
        low = (out[-1] if out else 0) + decay_steps
        if not low <= value <= steps - decay_steps:
            raise ArgumentValueError(
                f"cooldowns: {item!r} must lie in [{low}, {steps - decay_steps}] (a whole cool-down of "
                f"decay_steps={decay_steps} after the previous end and before the run's end at {steps})"
            )
        out.append(value)
    if out and not decay_steps:
        raise ArgumentValueError("cooldowns needs decay_steps > 0 (the length of each cool-down)")
    return tuple(out)


def parse_oversample(items: tuple[str, ...]) -> dict[str, float]:
    """{"drum kit": 2.0} from ("drum kit=2",); a malformed item raises ArgumentValueError naming it."""
    out: dict[str, float] = {}
    for item in items:
        text, sep, factor = str(item).rpartition("=")
        try:
            value = float(factor)
        except ValueError:
            value = float("nan")
        if not sep or not text or not value >= 0 or value == float("inf"):
            raise ArgumentValueError(f"oversample: expected TEXT=FACTOR with a factor >= 0, got {item!r}")
        out[text] = value
    return out


def trainable_parameters(model) -> list[nn.Parameter]:
    """The DiT and the conditioners' own layers (the T5Gemma encoder is outside them)."""
    params = [*model.networks.dit.parameters(), *model.networks.conditioners.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


def reinitialise(module: nn.Module, seed: int) -> None:
    """Fresh default initialisation of every layer under `module`, reproducible from `seed`."""
    with loop.forked_rng(seed), torch.no_grad():
        for layer in module.modules():
            if hasattr(layer, "reset_parameters") and layer is not module:
                layer.reset_parameters()


@dataclass
class _Run:
    """The state of one stage-1 run between steps."""

    cfg: PretrainConfig
    rank: int
    world: int
    model: Any
    clips: list
    latents: list[torch.Tensor]
    optim: loop.Optimisation
    step_fn: nn.Module
    out: Path
    silence: torch.Tensor
    encoder: Path
    by_length: list[int] | None = None
    weights: list[float] | None = None
    fsdp: bool = False


def _text_encoder_weights(model, world: int) -> list[torch.Tensor]:
    encoder = model.networks.conditioners[model.config.prompt.id].encoder
    if not hasattr(encoder, "trainable_weights"):
        raise ArgumentValueError(
            "train_text_encoder needs a text encoder our T5Gemma port loads (text_encoder_backend 'native')"
        )
    if world > 1:
        raise ArgumentValueError("train_text_encoder is not supported under torchrun yet (one process only)")
    return encoder.trainable_weights()


def _setup(cfg: PretrainConfig) -> _Run:
    from stable_audio_3.model import StableAudioModel

    rank, world, device = loop.start_processes(cfg.device)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    model = StableAudioModel.from_pretrained(cfg.base, device=device, model_half=False)
    if cfg.from_scratch:
        reinitialise(model.networks.dit, cfg.seed)
    clips = find_clips(cfg.data)
    cache = LatentCache.for_data(cfg.data, cfg.cache_dir, model)
    latents = cache.encode_all(clips, progress=cfg.progress and rank == 0)
    fsdp = loop.shard_if_asked([model.networks.dit], model.device, world, cfg.sharding)
    params = trainable_parameters(model)  # after sharding, which replaces the DiT's parameters
    if cfg.train_text_encoder:
        params += _text_encoder_weights(model, world)
    if fsdp and cfg.sample_prompts and rank == 0:
        warnings.warn(
            "sharding='fsdp' writes no validation samples; generate from the checkpoint", stacklevel=2
        )
    frames_per_second = model.sample_rate / model.config.pretransform.autoencoder.downsampling_ratio
    objective = FlowMatchingObjective(
        model,
        training_shift(model),
        cfg_dropout=cfg.cfg_dropout,
        ot_coupling=cfg.ot_coupling,
        padding_mean_frames=cfg.padding_augment_seconds * frames_per_second,
        context_share=cfg.context_share,
    )
    run = _Run(
        cfg=cfg,
        rank=rank,
        world=world,
        model=model,
        clips=clips,
        latents=latents,
        optim=_optimisation(cfg, params, rank, world, out, fsdp),
        step_fn=objective if fsdp else loop.wrap_ddp(objective, world, model.device),
        out=out,
        silence=silence_frame(model),
        encoder=text_encoder_folder(cfg.base, model.config.raw),
        by_length=length_order(latents) if cfg.group_by_length else None,
        weights=caption_weights(clips, cfg.oversample_factors),
        fsdp=fsdp,
    )
    if cfg.resume:
        run.optim.resume()
    return run


def _optimisation(cfg: PretrainConfig, params, rank: int, world: int, out: Path, fsdp: bool):
    """Under FSDP each rank saves its own shards, and averages the gradients FSDP does not hold."""
    average = loop.gradient_averaging(params, world) if fsdp else None  # else DDP averages
    path = loop.state_file(out, rank, fsdp)
    return loop.Optimisation(
        params,
        cfg,
        rank,
        path,
        cfg.warmup_steps,
        before_step=average,
        decay_steps=cfg.decay_steps,
        cooldowns=cfg.cooldowns,
    )


def _train_step(run: _Run) -> float:
    cfg, model, optim = run.cfg, run.model, run.optim
    ratio = model.config.pretransform.autoencoder.downsampling_ratio
    max_frames = max(1, int(cfg.duration * model.sample_rate) // ratio)
    frame_rate = (model.sample_rate, ratio)
    batch = sample_batch(
        run.clips,
        run.latents,
        cfg.batch_size,
        max_frames,
        frame_rate,
        optim.rng,
        model.device,
        run.silence,
        run.by_length,
        run.weights,
    )
    with loop.autocast(cfg.precision, model.device):
        loss = run.step_fn(batch, optim.gen, optim.rng)
    return optim.apply(loss)


def _checkpoint(run: _Run) -> None:
    """Resume state and checkpoint folder, then samples, at their cadences (samples on rank 0, and
    not under FSDP, whose weights only exist in shards)."""
    cfg, step = run.cfg, run.optim.step
    if step % cfg.checkpoint_every == 0 or step == cfg.steps:
        networks = run.model.networks
        averaged = run.optim.averaged()
        loop.save_and_write(run.rank, run.fsdp, run.optim.save, averaged, networks, lambda s: _write(run, s))
    if run.rank != 0 or run.fsdp:
        return
    if due(step, cfg.steps, cfg.sample_every):
        write_samples(
            run.model,
            cfg.sample_prompts,
            run.out / "samples",
            step,
            duration=cfg.duration,
            steps=cfg.sample_steps,
            seed=cfg.seed,
            sampler="euler",
            weights=run.optim.averaged(),
        )


def _write(run: _Run, state: dict[str, torch.Tensor] | None) -> None:
    trained = run.model.networks.conditioners[run.model.config.prompt.id].encoder
    write_checkpoint(
        run.model.networks,
        run.out / "checkpoint",
        run.model.config.raw,
        run.encoder,
        objective="rectified_flow",
        text_encoder=trained if run.cfg.train_text_encoder else None,
        state=state,
    )


def pretrain(cfg: PretrainConfig) -> Path:
    """Run stage 1; returns the checkpoint folder (`<output>/checkpoint`)."""
    run = _setup(cfg)
    report = loop.Reporter(run.out, cfg, run.rank, run.optim.step, "pre-training", ("loss",))
    run.model.networks.dit.train()
    try:
        while run.optim.step < cfg.steps:
            value = _train_step(run)
            report.step(run.optim.step, loss=value, lr=run.optim.current_lr, **run.optim.logged)
            _checkpoint(run)
    finally:
        report.close()
        run.model.networks.dit.eval()
        loop.stop_processes(run.world)
    return run.out / "checkpoint"
