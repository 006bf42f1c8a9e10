"""Every speed optimisation keeps the output equal to the plain (reference-plan) path within tolerance."""

from __future__ import annotations

import shutil

import pytest
from conftest import checkpoint_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from stable_audio_3 import StableAudioModel

_MODELS: dict[str, StableAudioModel] = {}


def load(config: str) -> StableAudioModel:
    if config not in _MODELS:
        _MODELS[config] = StableAudioModel.from_pretrained(checkpoint_dir(config), device="cpu")
    return _MODELS[config]


@pytest.mark.parametrize("config", ["A", "B", "E"])
@pytest.mark.parametrize("duration", [0.7, 3.0, 9.5])
def test_partial_decode_equals_decoding_everything(config: str, duration: float) -> None:
    model = load(config)
    args = {"prompt": "x", "duration": duration, "steps": 2, "seed": 3, "progress": False}
    fast = model.generate(**args)
    plain = model.generate(**args, decode_all_latents=True)
    assert fast.shape == plain.shape
    assert (fast - plain).abs().max().item() <= 1e-4


def test_partial_decode_with_per_item_durations() -> None:
    model = load("A")
    args = {"prompt": ["a", "b"], "duration": [2.0, 6.5], "steps": 2, "seed": 5, "progress": False}
    with pytest.warns(UserWarning, match="durations differ"):
        fast = model.generate(**args)
    with pytest.warns(UserWarning, match="durations differ"):
        plain = model.generate(**args, decode_all_latents=True)
    assert fast.shape == plain.shape
    assert (fast - plain).abs().max().item() <= 1e-4
    # Past each item's duration + padding the audio is silent in both.
    assert (
        fast[
            0,
            :,
            int((2.0 + 6.0) * model.sample_rate) + model.config.pretransform.autoencoder.downsampling_ratio :,
        ]
        .abs()
        .max()
        == 0
    )


# Half-precision DiT SNR floors against float32 (bfloat16 keeps 8 mantissa bits, float16 11).
HALF_SNR_DB = {"bfloat16": 30.0, "float16": 40.0}


@pytest.mark.parametrize("dtype", sorted(HALF_SNR_DB))
@pytest.mark.parametrize("config", ["A", "E"])
def test_half_precision_tracks_float32(config: str, dtype: str) -> None:
    """Half-precision readiness on CPU (float16 is the CUDA default): half weights and activations with
    float32 islands (norms, RoPE, Fourier features, guidance) stay close to float32 at the network
    level, and whole generations run. For float16 the timestep is put on the float16 grid first: in
    float16 mode the reference rounds t to float16 before the Fourier features (kept for parity:
    features at up to 1e4 Hz turn that rounding into large phase changes, so a float32 t would give
    another velocity); bfloat16 keeps t in float32."""
    import torch
    from conftest import stage

    from stable_audio_3.pipeline.guidance import guided_velocity

    exact = load(config)
    half = StableAudioModel.from_pretrained(checkpoint_dir(config), device="cpu", dtype=dtype)
    assert half.dtype == getattr(torch, dtype) and half.dit.dtype == getattr(torch, dtype)
    t = stage(config, "dit_forward/t")
    kwargs = {
        "x": stage(config, "dit_forward/x"),
        "t": t.half().float() if dtype == "float16" else t,
        "cross_cond": stage(config, "conditioning_inputs/cross_attn_cond"),
        "global_cond": stage(config, "conditioning_inputs/global_cond"),
        "cfg_scale": 2.0,
        "negative_cross_cond": stage(config, "conditioning_inputs/negative_cross_attn_cond"),
        "negative_cross_mask": stage(config, "conditioning_inputs/negative_cross_attn_mask"),
    }
    with torch.inference_mode():
        a = guided_velocity(exact.dit, **kwargs)
        b = guided_velocity(half.dit, **kwargs)
    snr = 10 * torch.log10(a.pow(2).sum() / (a - b.float()).pow(2).sum())
    assert snr > HALF_SNR_DB[dtype], f"{dtype} DiT SNR {snr:.1f} dB"
    audio = half.generate("x", duration=1.0, steps=2, cfg_scale=2.0, seed=0, progress=False)
    assert audio.dtype == torch.float32 and torch.isfinite(audio).all()


def test_unknown_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="dtype must be one of"):
        StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu", dtype="int8")


@pytest.mark.parametrize("config", ["A", "B"])
def test_window_grouping_does_not_change_the_autoencoder(config: str, monkeypatch) -> None:
    import torch

    import stable_audio_3.models.same as same

    ae = load(config).autoencoder
    z = torch.randn(1, ae.config.latent_dim, 40, generator=torch.Generator().manual_seed(0))
    audio = torch.randn(1, 2, 40 * ae.config.downsampling_ratio, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        whole = ae.decode(z), ae.encode(audio)
        monkeypatch.setattr(same, "WINDOW_GROUP_TOKENS", 3 * 34)  # three windows per group
        grouped = ae.decode(z), ae.encode(audio)
    for a, b in zip(whole, grouped, strict=True):
        assert (a - b).abs().max().item() <= 1e-5 * max(1.0, a.abs().max().item())


@pytest.mark.parametrize("config", ["A", "B"])
@settings(max_examples=12, deadline=None)
@given(
    frames=st.integers(1, 70),
    cut=st.integers(0, 10_000),
    span=st.integers(1, 40),
    batch=st.integers(1, 2),
    iterate=st.booleans(),
)
def test_streamed_decode_equals_one_pass(
    config: str, frames: int, cut: int, span: int, batch: int, iterate: bool
) -> None:
    """Streaming window-aligned spans into the output equals decoding everything at once (SAME-S)."""
    import torch

    ae = load(config).autoencoder
    ratio = ae.config.downsampling_ratio
    samples = max(1, frames * ratio - cut % (frames * ratio))
    z = torch.randn(batch, ae.config.latent_dim, frames, generator=torch.Generator().manual_seed(frames))
    ae.iterate_batch = iterate
    try:
        with torch.inference_mode():
            whole = ae.decode(z)[..., :samples]
            out = torch.full((batch, 2, samples), float("nan"))
            ae.decode_into(z, out, span=span)
    finally:
        ae.iterate_batch = False
    assert (whole - out).abs().max().item() <= 1e-5 * max(1.0, whole.abs().max().item())


def test_streamed_decode_rejects_bad_arguments() -> None:
    import torch

    ae = load("A").autoencoder
    z = torch.zeros(1, ae.config.latent_dim, 4)
    ratio = ae.config.downsampling_ratio
    with pytest.raises(ValueError, match="span"):
        ae.decode_into(z, torch.zeros(1, 2, ratio), span=0)
    with pytest.raises(ValueError, match="out must have shape"):
        ae.decode_into(z, torch.zeros(2, 2, ratio))
    with pytest.raises(ValueError, match="out holds"):
        ae.decode_into(z, torch.zeros(1, 2, 5 * ratio))
    with pytest.raises(ValueError, match="window-local"):
        load("E").autoencoder.decode_into(torch.zeros(1, load("E").autoencoder.config.latent_dim, 4), z)


def test_onednn_linear_equals_f_linear_and_keeps_autograd() -> None:
    """The oneDNN CPU path is float32 `F.linear` up to summation order, for every input layout the
    models use; with gradients required it falls back to `F.linear` (training still works)."""
    import torch
    import torch.nn.functional as F

    from stable_audio_3.models.kernels import linear, onednn_linear_available

    assert onednn_linear_available()  # CPU x86 PyTorch builds ship oneDNN
    gen = torch.Generator().manual_seed(0)
    w, b = torch.randn(96, 64, generator=gen), torch.randn(96, generator=gen)
    inputs = [
        torch.randn(7, 64, generator=gen),
        torch.randn(2, 33, 64, generator=gen),
        torch.randn(2, 64, 33, generator=gen).transpose(1, 2),  # non-contiguous
        torch.randn(1, 1, 64, generator=gen),
    ]
    with torch.inference_mode():
        for x in inputs:
            for bias in (b, None):
                got, want = linear(x, w, bias), F.linear(x, w, bias)
                assert got.shape == want.shape
                assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    wp = w.clone().requires_grad_(True)
    linear(inputs[1], wp, b).square().sum().backward()
    assert wp.grad is not None and wp.grad.abs().sum() > 0


@pytest.mark.parametrize("config", ["A", "B", "E"])
def test_onednn_matmul_equals_plain_torch_matmul(config: str) -> None:
    """Whole generations (DiT, conditioners and SAME decoder) with oneDNN linear layers stay within the
    end-to-end parity bound of the plain `F.linear` path."""
    model = StableAudioModel.from_pretrained(checkpoint_dir(config), device="cpu")
    assert model.cpu_matmul == "onednn"
    args = {"prompt": "a test", "duration": 3.0, "steps": 4, "seed": 11, "progress": False}
    fast = model.generate(**args)
    fast_latents = model.generate(**args, return_latents=True)
    model.cpu_matmul = "torch"
    assert model.cpu_matmul == "torch"
    plain = model.generate(**args)
    plain_latents = model.generate(**args, return_latents=True)
    bound = 2e-3 if config == "E" else 1e-3
    assert (fast_latents - plain_latents).abs().max().item() <= bound
    assert (fast - plain).abs().max().item() <= bound
    with pytest.raises(ValueError, match="cpu_matmul"):
        model.cpu_matmul = "mkl"


@pytest.mark.parametrize("config", ["A", "E"])
def test_zero_local_condition_is_embedded_once_and_broadcast(config: str) -> None:
    """Text-to-audio's all-zero local condition is embedded as one frame per block; it equals
    embedding every frame, and any non-zero condition keeps its per-frame embedding."""
    import torch

    dit = load(config).dit
    cfg = dit.config
    gen = torch.Generator().manual_seed(0)
    cross = torch.randn(2, 5, cfg.cond_token_dim, generator=gen)
    zeros = torch.zeros(2, cfg.local_add_cond_dim, 12)
    with torch.inference_mode():
        for local in (None, zeros):
            prepared = dit.prepare(cross, local, 12)
            for block, emb in zip(dit.blocks, prepared.local, strict=True):
                assert emb.shape == (2, 1, cfg.embed_dim)
                full = block.local_embed(zeros.transpose(1, 2))
                assert torch.allclose(emb.expand_as(full), full, rtol=1e-6, atol=1e-6)
        edited = zeros.clone()
        edited[:, 0, 3] = 1.0
        assert dit.prepare(cross, edited, 12).local[0].shape == (2, 12, cfg.embed_dim)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++ compiler")
@pytest.mark.slow
def test_compiled_dit_generates_the_same_audio() -> None:
    """`model.compile()` (torch.compile, inductor, dynamic shapes): generations at two lengths equal the
    eager ones within the parity bound, and a new length does not recompile from scratch. (Inductor
    re-associating the Fourier-feature angles once moved them by 8e-3; they stay eager.)"""
    model = StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu")
    runs = [{"prompt": "x", "duration": d, "steps": 2, "seed": 4, "progress": False} for d in (1.0, 2.5)]
    eager = [model.generate(**args, return_latents=True) for args in runs]
    model.compile()
    for args, want in zip(runs, eager, strict=True):
        got = model.generate(**args, return_latents=True)
        assert got.shape == want.shape
        assert (got - want).abs().max().item() <= 1e-4


@pytest.mark.parametrize("config", ["A", "E"])
def test_feed_forward_in_row_pieces_equals_one_piece(config: str, monkeypatch) -> None:
    """Long sequences run the feed-forward layers in pieces of rows at inference (bounded hidden
    activation); DiT velocities and SAME decoding are unchanged, and training still backpropagates."""
    import torch

    import stable_audio_3.models.layers as layers

    model = load(config)
    dit, ae = model.dit, model.autoencoder
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, dit.config.io_channels, 40, generator=gen)
    t = torch.tensor([0.3, 0.8])
    cross = torch.randn(2, 6, dit.config.cond_token_dim, generator=gen)
    glob = torch.randn(2, dit.config.global_cond_dim, generator=gen)
    z = torch.randn(1, ae.config.latent_dim, 24, generator=gen)
    with torch.inference_mode():
        whole = dit(x, t, cross_cond=cross, global_cond=glob), ae.decode(z)
        monkeypatch.setattr(layers, "FF_CHUNK_ROWS", 7)
        pieces = dit(x, t, cross_cond=cross, global_cond=glob), ae.decode(z)
    for a, b in zip(whole, pieces, strict=True):
        assert (a - b).abs().max().item() <= 1e-5 * max(1.0, a.abs().max().item())
    ff = dit.blocks[0].ff
    inp = torch.randn(3, 20, dit.config.embed_dim, requires_grad=True)
    ff(inp).square().sum().backward()
    assert inp.grad is not None and inp.grad.abs().sum() > 0
