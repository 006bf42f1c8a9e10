"""Training a SAME-shaped autoencoder for any configuration the official schema allows (another
sample rate, latent width, patch size or stride): multi-resolution STFT reconstruction, an optional
multi-scale STFT discriminator with feature matching, a soft-norm penalty that keeps the latents
near zero mean and unit variance per channel, and the bottleneck's `running_std` measured on the
data at every checkpoint. The output is a standalone autoencoder folder in the official layout
(`AutoencoderModel.from_pretrained(dir)` loads it)."""

from __future__ import annotations

import copy
import json
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar, NamedTuple

import torch

from stable_audio_3.audio import read_audio, to_waveform
from stable_audio_3.checks import check_bool, check_int, check_number
from stable_audio_3.errors import ConfigError
from stable_audio_3.models.same import SAMEAutoencoder
from stable_audio_3.official import hub
from stable_audio_3.official.checkpoint import (
    export_official_state_dict,
    load_official_state_dict,
    read_safetensors,
)
from stable_audio_3.official.config import read_config_json
from stable_audio_3.official.same_config import SAMEConfig, with_decoder_window
from stable_audio_3.training import loop
from stable_audio_3.training.audio_losses import (
    MultiResolutionSTFTLoss,
    MultiScaleSTFTDiscriminator,
    hinge_d,
    hinge_g,
    stft_sizes,
)
from stable_audio_3.training.configs import RunOptions
from stable_audio_3.training.dataset import find_clips
from stable_audio_3.training.decoder_alignment import OneStepDenoiser
from stable_audio_3.training.export import replace_folder

__all__ = [
    "AutoencoderTrainConfig",
    "train_autoencoder",
    "reconstruction_loss",
    "crop_samples",
    "load_waves",
    "standalone_config",
    "load_autoencoder_weights",
    "waveform_loss",
]


@dataclass
class AutoencoderTrainConfig(RunOptions):
    """An autoencoder training run."""

    base: str  # a model_config.json (standalone or full checkpoint), or a checkpoint folder to continue
    data: str  # a folder of audio files (captions not needed) or a manifest
    output: str = "autoencoder_out"
    steps: int = 10000
    batch_size: int = 8
    duration: float = 1.0  # crop length in seconds
    lr: float = 1e-4
    warmup_steps: int = 0
    weight_decay: float = 0.0
    ema_decay: float = 0.0
    adversarial: bool = False
    adversarial_weight: float = 0.1
    feature_matching_weight: float = 1.0
    lr_discriminator: float = 1e-4
    latent_weight: float = 0.01  # soft-norm penalty: per-channel mean 0, std 1
    waveform_weight: float = 0.0  # squared waveform error over signal power
    train_encoder: bool = True  # False: fine-tune the decoder on the fixed latents of a trained model
    latent_noise: float = 0.0  # the decoder sees latents + N(0, s^2), s uniform in [0, this] per clip
    latent_shrink: float = 0.0  # the decoder sees latents x s and learns audio x s, s in [1 - this, 1]
    decoder_window: int = 0  # latent frames per decoder attention window (0: the base's)
    decoder_midpoint_shift: bool = True  # with decoder_window: shift the windows in the stack's 2nd half
    denoiser: str | None = None  # a model whose DiT's one-step estimates the decoder learns to decode
    denoise_t_min: float = 0.1
    denoise_t_max: float = 0.7
    denoise_fraction: float = 0.75  # the share of clips the decoder sees as estimates, not latents
    stft_sizes: tuple[int, ...] = ()  # FFT sizes of the reconstruction loss (empty: ~46 ms, halving)
    checkpoint_every: int = 1000

    HELP: ClassVar[dict[str, str]] = {
        "base": "model_config.json with an autoencoder section (random init), or a checkpoint folder",
        "stft_sizes": "FFT sizes of the multi-resolution STFT loss (default: about 46 ms and four halvings); "
        "longer ones resolve low notes and the patch-rate comb",
        "data": "folder of audio files (captions not needed), or a .csv/.jsonl manifest",
        "warmup_steps": "linear learning-rate warm-up over this many steps (0: none)",
        "adversarial": "add the multi-scale STFT discriminator and feature matching",
        "latent_weight": "weight of the soft-norm penalty (latent mean 0, std 1 per channel)",
        "waveform_weight": "weight of the waveform error over signal power (speeds up training from scratch)",
        "train_encoder": "false: train only the decoder; the latents (and a DiT trained on them) stay valid",
        "latent_noise": "largest std of the noise added to the latents the decoder sees (robustness to "
        "generated latents); the noise std is drawn per clip",
        "latent_shrink": "the decoder learns that latents scaled by s (drawn per clip from [1 - this, 1]) "
        "decode to the audio scaled by s, so a generator's shrunken latents decode quieter instead of "
        "to the decoder's own patch-rate pattern (its output for zero latents)",
        "decoder_window": "latent frames per decoder attention window, so that frame edges are decoded "
        "in context (needs train_encoder = false; 0 keeps the base's windows)",
        "decoder_midpoint_shift": "with decoder_window: shift the windows by half in the second half "
        "of the decoder's layers, so no frame edge is a window edge throughout",
        "denoiser": "a model whose autoencoder is the base: the decoder learns to decode its DiT's one-step "
        "estimates of clips' latents (what generation decodes) to their audio (needs train_encoder = "
        "false and captions; crops start at each clip's start)",
        "denoise_t_min": "with denoiser: the lowest noise level latents are denoised from",
        "denoise_t_max": "with denoiser: the highest noise level latents are denoised from",
        "denoise_fraction": "with denoiser: the share of clips seen as estimates (the rest as their "
        "latents, which alone get the waveform term: an estimate has lost the phase)",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("steps", "batch_size", "checkpoint_every"):
            check_int(name, getattr(self, name), low=1)
        check_int("warmup_steps", self.warmup_steps, low=0)
        for name in ("duration", "lr", "lr_discriminator"):
            check_number(name, getattr(self, name), low=0.0, low_open=True)
        names = ("adversarial_weight", "feature_matching_weight", "latent_weight", "waveform_weight")
        for name in (*names, "latent_noise"):
            check_number(name, getattr(self, name), low=0.0)
        check_bool("train_encoder", self.train_encoder)
        check_number("latent_shrink", self.latent_shrink, low=0.0, high=1.0)
        check_int("decoder_window", self.decoder_window, low=0)
        sizes = (int(n) if isinstance(n, str) and n.strip().isdigit() else n for n in self.stft_sizes)
        self.stft_sizes = tuple(check_int("stft_sizes", n, low=16) for n in sizes)  # the CLI gives str
        check_bool("decoder_midpoint_shift", self.decoder_midpoint_shift)
        self._check_denoiser()
        if self.decoder_window and self.train_encoder:
            raise ConfigError(
                "decoder_window needs train_encoder = false (a new decoder on the base's fixed latents)"
            )

    def _check_denoiser(self) -> None:
        check_number("denoise_t_min", self.denoise_t_min, low=0.0, high=1.0)
        check_number("denoise_t_max", self.denoise_t_max, low=self.denoise_t_min, high=1.0)
        check_number("denoise_fraction", self.denoise_fraction, low=0.0, high=1.0)
        if self.denoiser is not None and self.train_encoder:
            raise ConfigError("denoiser needs train_encoder = false (its DiT knows only the base's latents)")


def standalone_config(source: str | Path) -> tuple[dict[str, Any], Path | None]:
    """The standalone config ({"model": <autoencoder section>, ...}) and the weights to start from."""
    path = Path(source)
    weights = None
    if path.is_dir():
        files = hub.resolve_autoencoder(path)
        path, weights = files.config, files.weights
    raw = read_config_json(path)
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    pre = model.get("pretransform")
    section = model if "encoder" in model else pre.get("config") if isinstance(pre, dict) else None
    if not isinstance(section, dict):
        raise ConfigError(f"{path} holds no autoencoder config")
    rate = raw.get("sample_rate", 44100)
    config = {
        "model_type": "autoencoder",
        "sample_rate": rate,
        "audio_channels": section.get("io_channels", 2),
        "model": copy.deepcopy(section),
    }
    return config, weights


def _build(config: dict[str, Any], weights: Path | None, device, seed: int) -> SAMEAutoencoder:
    cfg = SAMEConfig.from_official(config["model"])
    with loop.forked_rng(seed):
        ae = SAMEAutoencoder(cfg)
    if weights is not None:
        load_autoencoder_weights(ae, weights)
    return ae.to(device)


def load_autoencoder_weights(ae: SAMEAutoencoder, weights: Path) -> None:
    """Weights from a standalone autoencoder file or from a full checkpoint's pretransform."""
    state = read_safetensors(weights)
    prefix = "pretransform.model."
    if any(k.startswith(prefix) for k in state):
        load_official_state_dict(ae, state, strip_prefix=prefix)
    else:
        load_official_state_dict(ae, state, autoencoder_only=True)


def load_waves(clips, sample_rate: int, channels: int) -> list[torch.Tensor]:
    return [
        to_waveform(read_audio(c.path, argument="data"), str(c.path), sample_rate, channels) for c in clips
    ]


def _crops(waves: list[torch.Tensor], batch: int, samples: int, rng: random.Random, device) -> torch.Tensor:
    """Random crops of `samples` (zero-padded when a clip is shorter), with a random polarity."""
    out = []
    for _ in range(batch):
        w = waves[rng.randrange(len(waves))]
        start = rng.randrange(0, w.shape[-1] - samples + 1) if w.shape[-1] > samples else 0
        crop = torch.nn.functional.pad(w[:, start : start + samples], (0, max(0, samples - w.shape[-1])))
        out.append(crop * (-1.0 if rng.random() < 0.5 else 1.0))
    return torch.stack(out).to(device)


def crop_samples(ae: SAMEAutoencoder, duration: float, sample_rate: int) -> int:
    """Samples per training crop: `duration` rounded down to whole latent windows (at least one)."""
    granule = ae.config.downsampling_ratio * ae.config.latent_multiple
    return max(granule, int(duration * sample_rate) // granule * granule)


def waveform_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Squared error over the signal's power: a direct, convex signal that gets a freshly initialised
    autoencoder reconstructing waveforms (phase included) far sooner than STFT magnitudes alone."""
    return (fake.float() - real.float()).pow(2).mean() / real.float().pow(2).mean().clamp(min=1e-8)


def _soft_norm_penalty(z: torch.Tensor) -> torch.Tensor:
    mean = z.float().mean(dim=(0, 2))
    std = z.float().std(dim=(0, 2))
    return (mean.pow(2) + (std - 1).pow(2)).mean()


class Decoded(NamedTuple):
    fake: torch.Tensor  # the decoder's output
    z: torch.Tensor  # the encoder's latents
    target: torch.Tensor  # the audio the output is compared with
    exact: torch.Tensor  # (B,) bool: decoded from its own latents, not a denoiser's estimate


def _forward(
    ae: SAMEAutoencoder,
    audio: torch.Tensor,
    gen: torch.Generator,
    latent_noise: float = 0.0,
    latent_shrink: float = 0.0,
    denoise: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> Decoded:
    """During training the latents get the bottleneck's 5e-2 noise; with `latent_noise` a per-clip
    amount of noise the decoder learns to see through, with `latent_shrink` a per-clip scale s < 1
    on the latents and on the target audio (a generator's latents are never exactly on the
    encoder's manifold, and an underfit one's are shrunk towards the mean), and with `denoise` a
    DiT's one-step estimates in place of some clips' latents."""
    z = ae.encode(audio)
    seen, exact = denoise(z) if denoise is not None else (z, torch.ones(len(z), dtype=torch.bool))
    shape = (z.shape[0], 1, 1)
    std = torch.full(shape, 0.05 if ae.config.noise_regularize else 0.0)
    if latent_noise > 0:
        std += latent_noise * torch.rand(shape, generator=gen)
    scale = 1.0 - latent_shrink * torch.rand(shape, generator=gen) if latent_shrink > 0 else None
    seen = seen if scale is None else seen * scale.to(z)
    if std.any():
        seen = seen + std.to(z.device) * torch.randn(z.shape, generator=gen).to(z)
    target = audio if scale is None else audio * scale.to(audio)
    return Decoded(ae.decode(seen)[..., : audio.shape[-1]], z, target, exact.to(audio.device))


@torch.no_grad()
def reconstruction_loss(
    ae: SAMEAutoencoder, waves: list[torch.Tensor], samples: int, sample_rate: int, seed: int = 0
) -> float:
    """The multi-resolution STFT loss of the autoencoder on fixed crops (eval mode, no noise)."""
    rng = random.Random(seed)
    audio = _crops(waves, min(8, 2 * len(waves)), samples, rng, next(ae.parameters()).device)
    was = ae.training
    ae.eval()
    fake = ae.decode(ae.encode(audio))[..., : audio.shape[-1]]
    ae.train(was)
    return float(MultiResolutionSTFTLoss(stft_sizes(sample_rate))(fake, audio))


@torch.no_grad()
def _measure_running_std(ae: SAMEAutoencoder, waves: list[torch.Tensor], samples: int) -> None:
    """Set `running_std` (auto_scale configs) to the latents' standard deviation on the data."""
    if ae.bottleneck.running_std is None:
        return
    audio = _crops(waves, min(16, 4 * len(waves)), samples, random.Random(0), next(ae.parameters()).device)
    z = ae.encode(audio) * ae.bottleneck.running_std
    ae.bottleneck.running_std.copy_(z.float().std().clamp(min=1e-4).reshape(1))


def _save(ae: SAMEAutoencoder, config: dict[str, Any], folder: Path) -> None:
    from safetensors.torch import save_file

    tmp = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in export_official_state_dict(ae, autoencoder_only=True).items()}
    save_file(state, str(tmp / hub.WEIGHTS_FILE))
    (tmp / hub.CONFIG_FILE).write_text(json.dumps(config, indent=2))
    replace_folder(tmp, folder)


def train_autoencoder(cfg: AutoencoderTrainConfig) -> Path:
    """Train; returns the autoencoder checkpoint folder (`<output>/checkpoint`)."""
    rank, world, device = loop.start_processes(cfg.device)
    config, weights = _run_config(cfg)
    ae = _build(config, weights, device or "cpu", cfg.seed)
    rate = int(config["sample_rate"])
    denoiser, dev = _denoiser(cfg, config, device or "cpu"), ae.bottleneck.bias.device
    clips = find_clips(cfg.data, captions=denoiser is not None)
    waves = load_waves(clips, rate, ae.config.io_channels)
    samples = crop_samples(ae, cfg.duration, rate)
    sizes = list(cfg.stft_sizes) or stft_sizes(rate)
    recon = MultiResolutionSTFTLoss(sizes)
    if ae.bottleneck.running_std is not None:  # measured, never trained; saved and resumed with the rest
        ae.bottleneck.running_std.requires_grad_(False)
    if not cfg.train_encoder:  # the latents stay exactly what the encoder made of the data
        _freeze_encoder(ae, weights)
    # running_std stays in the list (without gradients) so that it is saved and resumed with the rest
    params = list(ae.parameters()) if cfg.train_encoder else list(ae.decoder.parameters())
    average = loop.gradient_averaging(params, world)  # data parallel under torchrun
    out = Path(cfg.output)  # created only once the inputs have been checked
    out.mkdir(parents=True, exist_ok=True)
    g = loop.Optimisation(params, cfg, rank, out / "train_state.pt", cfg.warmup_steps, before_step=average)
    disc = d = None
    if cfg.adversarial:
        with loop.forked_rng(cfg.seed + 1):
            disc = MultiScaleSTFTDiscriminator(sizes).to(ae.bottleneck.bias.device)
        d_cfg = SimpleNamespace(lr=cfg.lr_discriminator, weight_decay=0.0, ema_decay=0.0, seed=cfg.seed)
        d_params = list(disc.parameters())
        d_path, d_average = out / "train_state_discriminator.pt", loop.gradient_averaging(d_params, world)
        d = loop.Optimisation(d_params, d_cfg, rank, d_path, before_step=d_average)
    if cfg.resume:
        g.resume()
        if d is not None:
            d.resume()
    report = loop.Reporter(out, cfg, rank, g.step, "training autoencoder", ("stft",))
    ae.train()
    try:
        while g.step < cfg.steps:
            if denoiser is None:
                audio, denoise = _crops(waves, cfg.batch_size, samples, g.rng, dev), None
            else:  # clip openings, with the function that denoises their latents
                audio, denoise = denoiser.batch(waves, clips, cfg.batch_size, (samples, rate, ae), g)
            with loop.autocast(cfg.precision, audio.device):
                values = _step(ae, audio, recon, disc, g, d, cfg, denoise)
            report.step(g.step, **values)
            if rank == 0 and (g.step % cfg.checkpoint_every == 0 or g.step == cfg.steps):
                if cfg.train_encoder:
                    _measure_running_std(ae, waves, samples)
                g.save(config=asdict(cfg))
                if d is not None:
                    d.save()
                with g.averaged():
                    _save(ae, config, out / "checkpoint")
    finally:
        report.close()
        ae.eval()
        loop.stop_processes(world)
    return out / "checkpoint"


def _run_config(cfg: AutoencoderTrainConfig) -> tuple[dict[str, Any], Path | None]:
    """The base's standalone config (with the decoder's new windows, if asked) and weights."""
    config, weights = standalone_config(cfg.base)
    if cfg.decoder_window:
        try:
            shift = cfg.decoder_midpoint_shift
            config["model"] = with_decoder_window(config["model"], cfg.decoder_window, shift)
        except ValueError as e:
            raise ConfigError(f"decoder_window: {e}") from None
    return config, weights


def _denoiser(cfg: AutoencoderTrainConfig, config: dict[str, Any], device) -> OneStepDenoiser | None:
    if cfg.denoiser is None:
        return None
    sections = (standalone_config(cfg.denoiser)[0]["model"], config["model"])
    t_range = (cfg.denoise_t_min, cfg.denoise_t_max)
    return OneStepDenoiser(cfg.denoiser, sections, t_range, cfg.denoise_fraction, device)


def _freeze_encoder(ae: SAMEAutoencoder, weights: Path | None) -> None:
    if weights is None:
        raise ConfigError("train_encoder = false needs a trained autoencoder as base, not a config file")
    ae.encoder.requires_grad_(False)
    ae.bottleneck.requires_grad_(False)


def _step(ae, audio, recon, disc, g: loop.Optimisation, d, cfg, denoise=None) -> dict[str, float]:
    fake, z, audio, exact = _forward(ae, audio, g.gen, cfg.latent_noise, cfg.latent_shrink, denoise)
    stft = recon(fake, audio)
    loss = stft + cfg.latent_weight * _soft_norm_penalty(z) if cfg.train_encoder else stft
    values = {"stft": float(stft.detach())}
    if cfg.waveform_weight > 0 and exact.any():  # an estimate has lost the phase: the decoder picks one
        wave = waveform_loss(fake[exact], audio[exact])
        loss = loss + cfg.waveform_weight * wave
        values["waveform"] = float(wave.detach())
    if disc is not None and d is not None:
        values["loss_d"] = d.apply(hinge_d(disc(audio), disc(fake.detach())))
        adv, match = hinge_g(disc(audio), disc(fake))
        loss = loss + cfg.adversarial_weight * adv + cfg.feature_matching_weight * match
        values["feature_matching"] = float(match.detach())
    values["loss"] = g.apply(loss)
    return values
