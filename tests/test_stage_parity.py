"""Stage parity: every DiT forward and SAME encode/decode entry of the fixtures, through the public
`from_pretrained(local_dir)`, within max|Δ| <= 1e-4 * max(1, max|ref|)."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_stage_close, checkpoint_dir, entry, manifest, pin_fixture_host_frequencies, stage

from stable_audio_3 import StableAudioModel
from stable_audio_3.pipeline.guidance import guided_velocity

_MODELS: dict[tuple[str, str], StableAudioModel] = {}


def load(config: str, padding: str = "reference_cpu") -> StableAudioModel:
    key = (config, padding)
    if key not in _MODELS:
        _MODELS[key] = StableAudioModel.from_pretrained(
            checkpoint_dir(config), device="cpu", attention_padding=padding
        )
        pin_fixture_host_frequencies(_MODELS[key].networks)
    return _MODELS[key]


def _dit_cases() -> list[tuple[str, str]]:
    return [(c, e["name"]) for c in "ABE" for e in manifest(c)["entries"] if e["kind"] == "dit_forward"]


def _dit_inputs(config: str, name: str) -> tuple[dict, torch.Tensor]:
    e = entry(config, name)
    args, inputs = e["args"], e["inputs"]

    def get(role: str) -> torch.Tensor | None:
        return stage(config, inputs[role]) if role in inputs else None

    local = None
    if args["with_inpaint_condition"]:
        local = torch.cat([get("inpaint_mask"), get("inpaint_masked_input")], dim=1)
    padding = get("padding_mask")
    kwargs = {
        "x": get("x"),
        "t": get("t"),
        "cross_cond": get("cross_attn_cond"),
        "global_cond": get("global_cond"),
        "local_cond": local,
        "padding_mask": None if padding is None else padding.bool(),
        "cfg_scale": args["cfg_scale"],
        "apg_scale": args["apg_scale"],
        "negative_cross_cond": get("negative_cross_attn_cond"),
        "negative_cross_mask": get("negative_cross_attn_mask"),
    }
    return kwargs, stage(config, e["outputs"]["v"])


@pytest.mark.parametrize(("config", "name"), _dit_cases())
def test_dit_forward_matches_reference(config: str, name: str) -> None:
    model = load(config)
    kwargs, ref = _dit_inputs(config, name)
    with torch.inference_mode():
        v = guided_velocity(model.dit, **kwargs)
    assert v.dtype == torch.float32
    assert_stage_close(v, ref, name)


@pytest.mark.parametrize("config", ["A", "B", "E"])
def test_padding_modes_agree_when_nothing_is_padded(config: str) -> None:
    kwargs, _ = _dit_inputs(config, "dit_forward_cfg_negative_inpaint_padmask")
    kwargs["padding_mask"] = torch.ones_like(kwargs["padding_mask"])
    with torch.inference_mode():
        a = guided_velocity(load(config, "exclude").dit, **kwargs)
        b = guided_velocity(load(config, "reference_cpu").dit, **kwargs)
    assert torch.equal(a, b)


@pytest.mark.parametrize("config", ["A", "E"])
def test_exclude_mode_ignores_padded_frames(config: str) -> None:
    kwargs, _ = _dit_inputs(config, "dit_forward_padding_mask")
    mask = kwargs["padding_mask"]
    assert not bool(mask.all())
    dit = load(config, "exclude").dit
    changed = dict(kwargs, x=torch.where(mask[:, None, :], kwargs["x"], torch.randn_like(kwargs["x"]) * 5))
    with torch.inference_mode():
        a = guided_velocity(dit, **kwargs)
        b = guided_velocity(dit, **changed)
        c = guided_velocity(load(config, "reference_cpu").dit, **changed)
    valid = mask[:, None, :].expand_as(a)
    assert (a - b)[valid].abs().max().item() < 1e-4  # exact up to float summation order
    assert (b - c)[valid].abs().max().item() > 1e-3  # the two semantics really differ


@pytest.mark.parametrize("config", ["A", "B", "E"])
def test_same_encode_matches_reference(config: str) -> None:
    model = load(config)
    ae = model.autoencoder
    e = entry(config, "same_encode")
    audio = stage(config, e["inputs"]["audio_preprocessed"])
    out = e["outputs"]
    with torch.inference_mode():
        assert_stage_close(ae.encode(audio), stage(config, out["latents_unchunked"]), "unchunked")
        assert_stage_close(
            ae.encode_chunked(audio, 16, 4), stage(config, out["latents_chunked"]), "chunked 16/4"
        )
        z = ae.encode_chunked(audio) if model.config.pretransform.chunked else ae.encode(audio)
        assert_stage_close(z, stage(config, out["latents_pretransform_encode"]), "pretransform encode")


@pytest.mark.parametrize("config", ["A", "B", "E"])
def test_same_decode_matches_reference(config: str) -> None:
    ae = load(config).autoencoder
    e = entry(config, "same_decode")
    latents = stage(config, e["inputs"]["latents"])
    out = e["outputs"]
    with torch.inference_mode():
        assert_stage_close(ae.decode(latents), stage(config, out["audio_unchunked"]), "unchunked")
        assert_stage_close(ae.decode_chunked(latents), stage(config, out["audio_chunked"]), "chunked 128/32")
        assert_stage_close(
            ae.decode_chunked(latents, 32, 8), stage(config, out["audio_chunked_small"]), "chunked 32/8"
        )


def test_the_text_encoder_is_not_part_of_the_model_weights() -> None:
    model = load("A")
    names = [n for n, _ in model.networks.named_parameters()]
    assert not any("encoder.model" in n or "t5" in n.lower() for n in names)
