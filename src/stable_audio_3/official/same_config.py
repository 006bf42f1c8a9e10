"""`model.pretransform.config` of an official checkpoint: the SAME autoencoder's encoder/decoder settings."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SAMESideConfig", "SAMEConfig", "with_decoder_window", "same_but_decoder_window"]

# Keys the reference accepts in an encoder/decoder config; the ones we do not implement must keep
# their defaults. `causal` and `conv_bias` are swallowed by the reference, so we accept them too.
_SIDE_KEYS = {
    "in_channels",
    "out_channels",
    "channels",
    "latent_dim",
    "c_mults",
    "strides",
    "transformer_depths",
    "sliding_window",
    "differential",
    "variable_stride",
    "mask_noise",
    "conv_mapping",
    "sinusoidal_blocks",
    "chunk_size",
    "chunk_midpoint_shift",
    "dim_heads",
    "ff_mult",
    "dyt",
    "mapping_bias",
    "feat_scale",
    "layer_scale",
    "conformer",
    "cross_attn",
    "checkpointing",
    "freeze_backbone",
    "causal",
    "conv_bias",
}
_SIDE_FIXED = {"feat_scale": False, "layer_scale": False, "conformer": False, "cross_attn": False}


@dataclass(frozen=True)
class SAMESideConfig:
    """One side (encoder or decoder) of a single-stage SAME autoencoder."""

    io_channels: int  # patch channels (encoder input / decoder output)
    width: int  # transformer width D = channels * c_mult
    latent_dim: int
    stride: int
    depth: int
    dim_heads: int = 128
    chunk_size: int | None = 128
    chunk_midpoint_shift: bool = False
    sliding_window: tuple[int, int] | None = None
    differential: bool = True
    variable_stride: bool = False
    mask_noise: float = 0.0
    conv_mapping: bool = False
    sinusoidal_blocks: int = 0
    ff_mult: float = 3.0
    dyt: bool = True
    mapping_bias: bool = True

    @classmethod
    def from_official(cls, cfg: Mapping[str, Any], side: str) -> SAMESideConfig:
        unknown = sorted(set(cfg) - _SIDE_KEYS)
        if unknown:
            raise ValueError(f"unknown {side} config key(s): {', '.join(unknown)}")
        for key, value in _SIDE_FIXED.items():
            if cfg.get(key, value) != value:
                raise ValueError(f"{side} config {key}={cfg[key]!r} is not supported")
        c_mults, strides = list(cfg.get("c_mults", [1, 2, 4, 8])), list(cfg.get("strides", [2, 4, 8, 8]))
        depths = list(cfg.get("transformer_depths", [3, 3, 3, 3]))
        if len(c_mults) != 1 or len(strides) != 1 or len(depths) < 1:
            raise ValueError(
                f"{side} config: only single-stage SAME autoencoders are supported (one c_mult/stride)"
            )
        if side == "encoder" and "sinusoidal_blocks" in cfg:
            raise ValueError("encoder config must not contain sinusoidal_blocks")
        sinus = cfg.get("sinusoidal_blocks", [0, 0, 0, 0]) if side == "decoder" else [0]
        window = cfg.get("sliding_window")
        if window is not None:
            if len(window) != 2 or window[0] != window[1]:
                raise ValueError(f"{side} config sliding_window must be a symmetric pair, got {window}")
            window = (int(window[0]), int(window[1]))
        chunk = None if "chunk_size" not in cfg else int(cfg["chunk_size"])
        stride = int(strides[0])
        if window is None and (chunk or 128) % stride:
            raise ValueError(f"{side} config chunk_size must be a multiple of the stride {stride}")
        io_key = "in_channels" if side == "encoder" else "out_channels"
        return cls(
            io_channels=int(cfg.get(io_key, 2)),
            width=int(cfg.get("channels", 128)) * int(c_mults[0]),
            latent_dim=int(cfg.get("latent_dim", 32)),
            stride=stride,
            depth=int(depths[0]),
            dim_heads=int(cfg.get("dim_heads", 128)),
            chunk_size=chunk,
            chunk_midpoint_shift=bool(cfg.get("chunk_midpoint_shift", False)),
            sliding_window=window,
            differential=bool(cfg.get("differential", True)),
            variable_stride=bool(cfg.get("variable_stride", False)),
            mask_noise=float(cfg.get("mask_noise", 0.0)),
            conv_mapping=bool(cfg.get("conv_mapping", False)),
            sinusoidal_blocks=int(sinus[0]),
            ff_mult=float(cfg.get("ff_mult", 3)),
            dyt=bool(cfg.get("dyt", True)),
            mapping_bias=bool(cfg.get("mapping_bias", True)),
        )

    @property
    def window_chunk(self) -> int:
        """Patch tokens per attention window when chunked (the reference's default is 128)."""
        return self.chunk_size if self.chunk_size is not None else 128


@dataclass(frozen=True)
class SAMEConfig:
    """The SAME autoencoder section of a config (`model.pretransform.config` or an AE-only `model`)."""

    encoder: SAMESideConfig
    decoder: SAMESideConfig
    patch_size: int
    io_channels: int
    latent_dim: int
    downsampling_ratio: int
    soft_clip: bool = False
    noise_regularize: bool = False
    auto_scale: bool = False
    noise_augment_dim: int = 0

    @property
    def encoder_chunk_size(self) -> int | None:
        return self.encoder.chunk_size

    @property
    def strides(self) -> list[int]:
        return [self.encoder.stride]

    @property
    def latent_multiple(self) -> int:
        """Latent lengths are rounded up to a multiple of this: `chunk_size // stride`, with the
        reference's default chunk size of 32 when the encoder has none (sliding-window SAME-L too),
        so 2 for every released autoencoder."""
        return max(1, (self.encoder_chunk_size or 32) // self.strides[0])

    @classmethod
    def from_official(cls, cfg: Mapping[str, Any]) -> SAMEConfig:
        known = {
            "encoder",
            "decoder",
            "bottleneck",
            "pretransform",
            "latent_dim",
            "downsampling_ratio",
            "io_channels",
            "in_channels",
            "out_channels",
            "sample_rate",
        }
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"unknown autoencoder config key(s): {', '.join(unknown)}")
        for key in ("encoder", "decoder", "bottleneck", "pretransform", "latent_dim", "downsampling_ratio"):
            if key not in cfg:
                raise ValueError(f"autoencoder config is missing {key!r}")
        enc = SAMESideConfig.from_official(cfg["encoder"].get("config", {}), "encoder")
        dec_section = cfg["decoder"]
        dec = SAMESideConfig.from_official(dec_section.get("config", {}), "decoder")
        bottleneck = cfg["bottleneck"]
        if bottleneck.get("type", "softnorm") != "softnorm":
            raise ValueError(f"bottleneck type {bottleneck.get('type')!r} is not supported (only 'softnorm')")
        bcfg = bottleneck.get("config", {})
        extra = set(bcfg) - {"dim", "noise_augment_dim", "noise_regularize", "auto_scale", "freeze"}
        if extra:
            raise ValueError(f"unknown bottleneck config key(s): {', '.join(sorted(extra))}")
        if int(bcfg.get("noise_augment_dim", 0)):
            raise ValueError("bottleneck noise_augment_dim > 0 is not supported")
        pre = cfg["pretransform"]
        if pre.get("type") != "patched":
            raise ValueError(
                f"autoencoder pretransform type {pre.get('type')!r} is not supported (only 'patched')"
            )
        pcfg = pre.get("config", {})
        if int(pcfg.get("oversampling", 1)) != 1 or int(pcfg.get("postfilter_channels", 0)) != 0:
            raise ValueError("patched pretransform oversampling/postfilter are not supported")
        patch = int(pcfg.get("patch_size", 256))
        io = int(cfg.get("io_channels", 2))
        latent = int(cfg["latent_dim"])
        out = cls(
            encoder=enc,
            decoder=dec,
            patch_size=patch,
            io_channels=io,
            latent_dim=latent,
            downsampling_ratio=int(cfg["downsampling_ratio"]),
            soft_clip=bool(dec_section.get("soft_clip", False)),
            noise_regularize=bool(bcfg.get("noise_regularize", False)),
            auto_scale=bool(bcfg.get("auto_scale", False)),
        )
        if enc.io_channels != io * patch or dec.io_channels != io * patch:
            raise ValueError("encoder in_channels / decoder out_channels must equal io_channels * patch_size")
        if out.downsampling_ratio != patch * enc.stride:
            raise ValueError("downsampling_ratio must equal patch_size * stride")
        if enc.latent_dim != latent or dec.latent_dim != latent:
            raise ValueError("encoder/decoder latent_dim must equal the autoencoder latent_dim")
        return out


# Decoder keys that change where its attention looks but no weight: a decoder trained with other
# values decodes the same latents, so only these may differ between a model and its new decoder.
_WINDOW_KEYS = ("chunk_size", "chunk_midpoint_shift")


def with_decoder_window(section: Mapping[str, Any], latents: int, midpoint_shift: bool) -> dict[str, Any]:
    """A copy of the autoencoder config `section` whose (window-local) decoder attends over windows
    of `latents` latent frames, shifted by half a window in the second half of its stack when
    `midpoint_shift`: frame edges are then decoded with their neighbours in view."""
    out = copy.deepcopy(dict(section))
    dec = out.get("decoder", {}).get("config")
    if not isinstance(dec, dict) or dec.get("sliding_window") is not None:
        raise ValueError("the decoder window can only be set on a window-local (SAME-S-like) decoder")
    stride = int(dec.get("strides", [2])[0])
    dec.update(chunk_size=latents * stride, chunk_midpoint_shift=bool(midpoint_shift))
    return out


def same_but_decoder_window(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two autoencoder config sections are equal except for the decoder's window keys."""

    def strip(section: Mapping[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(dict(section))
        dec = out.get("decoder", {}).get("config")
        if isinstance(dec, dict):
            for key in _WINDOW_KEYS:
                dec.pop(key, None)
        return out

    return isinstance(a, Mapping) and isinstance(b, Mapping) and strip(a) == strip(b)
