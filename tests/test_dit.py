"""The diffusion transformer and CFG/APG guidance on their own: config parsing, the official key
layout, every `dit_forward_*` fixture entry (DiT built from `model_config.json` and loaded strictly
from the fixture checkpoint), the two attention padding semantics, and the guidance arithmetic."""

from __future__ import annotations

import dataclasses
import json
from functools import cache

import pytest
import torch
from conftest import assert_stage_close, checkpoint_dir, entry, manifest, pin_fixture_host_frequencies, stage

from stable_audio_3.models.dit import DiffusionTransformer
from stable_audio_3.official.checkpoint import load_official_state_dict, official_to_ours, read_safetensors
from stable_audio_3.official.dit_config import DiTConfig
from stable_audio_3.pipeline.guidance import apg_project, guided_velocity

PREFIX = "model.model."


@cache
def official_config(config: str) -> dict:
    cfg = json.loads((checkpoint_dir(config) / "model_config.json").read_text())
    return cfg["model"]["diffusion"]["config"]


@cache
def weights(config: str) -> dict[str, torch.Tensor]:
    return read_safetensors(checkpoint_dir(config) / "model.safetensors")


def build(config: str, padding: str = "reference_cpu", cfg: DiTConfig | None = None) -> DiffusionTransformer:
    """Built on the meta device, then the checkpoint tensors are assigned (as the model loader does)."""
    with torch.device("meta"):
        dit = DiffusionTransformer(cfg or DiTConfig.from_official(official_config(config)), padding)
    load_official_state_dict(dit, weights(config), strip_prefix=PREFIX)
    return pin_fixture_host_frequencies(dit.eval())


def fixture_call(config: str, name: str) -> tuple[dict, torch.Tensor]:
    """Keyword arguments of `guided_velocity` for a manifest entry, and the reference velocity."""
    e = entry(config, name)
    args, inputs = e["args"], e["inputs"]

    def get(role: str) -> torch.Tensor | None:
        return stage(config, inputs[role]) if role in inputs else None

    local = None  # text-to-audio: the DiT feeds zeros itself
    if args["with_inpaint_condition"]:
        local = torch.cat([get("inpaint_mask"), get("inpaint_masked_input")], dim=1)
    padding = get("padding_mask") if args["padding_mask"] else None
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


def plain_kwargs(kwargs: dict) -> dict:
    """The subset of `fixture_call` kwargs that one DiT evaluation takes."""
    keys = ("cross_cond", "global_cond", "local_cond", "padding_mask")
    return {k: kwargs[k] for k in keys}


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize("config", ["A", "B", "E"])
def test_fixture_configs_parse(config: str) -> None:
    cfg = DiTConfig.from_official(official_config(config))
    raw = official_config(config)
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads) == (raw["embed_dim"], raw["depth"], raw["num_heads"])
    assert cfg.num_memory_tokens == raw["num_memory_tokens"]
    assert cfg.differential is (config == "E")
    assert cfg.qk_norm == "rms" and cfg.qk_norm_eps == 1e-6
    assert cfg.norm_eps == 1e-5 and cfg.norm_force_fp32 is False  # reference defaults
    assert cfg.rotary_dim == max(cfg.dim_head // 2, 32)


def test_unknown_keys_are_named() -> None:
    raw = dict(official_config("A"), mystery_knob=3)
    with pytest.raises(ValueError, match="mystery_knob"):
        DiTConfig.from_official(raw)
    raw = dict(official_config("A"), attn_kwargs={"qk_norm": "rms", "flash": True})
    with pytest.raises(ValueError, match=r"attn_kwargs\.flash"):
        DiTConfig.from_official(raw)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("global_cond_type", "prepend"),
        ("patch_size", 2),
        ("transformer_type", "mm_transformer"),
        ("timestep_features_type", "learned"),
        ("sliding_window", [4, 4]),
        ("prepend_cond_dim", 16),
        ("input_concat_dim", 16),
        ("norm_type", "layer_norm"),
        ("final_cross_attn_ix", 0),
        ("attn_kwargs", {"qk_norm": "l2"}),
        ("ff_kwargs", {"mult": 4, "glu": False}),
    ],
)
def test_unsupported_values_are_rejected(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=key):
        DiTConfig.from_official(dict(official_config("A"), **{key: value}))


def test_missing_keys_take_the_reference_defaults() -> None:
    raw = dict(official_config("A"))
    del raw["global_cond_type"]  # reference default "prepend": not what the checkpoints use
    with pytest.raises(ValueError, match="global_cond_type='prepend'"):
        DiTConfig.from_official(raw)
    raw = dict(official_config("A"))
    del raw["num_memory_tokens"], raw["ff_kwargs"]
    cfg = DiTConfig.from_official(raw)
    assert cfg.num_memory_tokens == 0 and cfg.ff_mult == 4.0


def test_settings_without_effect_at_inference_are_accepted() -> None:
    raw = official_config("B")
    extra = {
        "timestep_embed_dim": 999,  # the reference overrides it with embed_dim
        "zero_init_branch_outputs": False,
        "abs_pos_emb_max_length": 5,
        "final_cross_attn_ix": raw["depth"] - 1,
        "norm_kwargs": {"fix_scale": True},
        "ff_kwargs": {"mult": 4, "conv_kernel_size": 5},
    }
    assert DiTConfig.from_official(dict(raw, **extra)) == DiTConfig.from_official(raw)


# ----------------------------------------------------------------------------------- construction


@pytest.mark.parametrize("config", ["A", "B", "E"])
def test_module_names_are_the_official_layout(config: str) -> None:
    with torch.device("meta"):
        dit = DiffusionTransformer(DiTConfig.from_official(official_config(config)))
    ours = {k: tuple(v.shape) for k, v in dit.state_dict().items()}
    official = {
        official_to_ours(k).removeprefix("dit."): tuple(v.shape)
        for k, v in weights(config).items()
        if k.startswith(PREFIX)
    }
    assert ours == official
    # Everything that lives on the module is in the state dict, so a meta build can be filled in.
    assert {n for n, _ in dit.named_buffers()} <= set(ours)
    assert all(t.is_meta for t in dit.state_dict().values())


def test_strict_load_fills_every_tensor() -> None:
    dit = build("E")
    assert not any(t.is_meta for t in dit.state_dict().values())
    head = dit.config.dim_head
    assert dit.blocks[0].self_attn.to_qkv.weight.shape == (5 * dit.config.embed_dim, dit.config.embed_dim)
    assert dit.blocks[0].self_attn.q_norm.gamma.shape == (head,)


# -------------------------------------------------------------------------------------- parity


def _dit_entries() -> list[tuple[str, str]]:
    return [(c, e["name"]) for c in "ABE" for e in manifest(c)["entries"] if e["kind"] == "dit_forward"]


@pytest.mark.parametrize(("config", "name"), _dit_entries())
def test_forward_matches_reference(config: str, name: str) -> None:
    dit = build(config, "reference_cpu")
    kwargs, ref = fixture_call(config, name)
    with torch.inference_mode():
        if kwargs["cfg_scale"] == 1.0:
            v = dit(kwargs["x"], kwargs["t"], **plain_kwargs(kwargs))
        else:
            v = guided_velocity(dit, **kwargs)
    assert v.dtype == torch.float32
    assert_stage_close(v, ref, f"{config}/{name}")


@pytest.mark.parametrize("config", ["A", "E"])
def test_missing_local_condition_means_zeros(config: str) -> None:
    dit = build(config)
    kwargs, _ = fixture_call(config, "dit_forward_plain")
    zeros = stage(config, "conditioning_inputs/local_add_cond_no_inpaint")
    assert not zeros.any()
    with torch.inference_mode():
        a = dit(kwargs["x"], kwargs["t"], **plain_kwargs(kwargs))
        b = dit(kwargs["x"], kwargs["t"], **dict(plain_kwargs(kwargs), local_cond=zeros))
    assert torch.equal(a, b)


def test_logsnr_timestep_features_use_the_normalised_logsnr() -> None:
    base = DiTConfig.from_official(official_config("A"))
    plain = build("A")
    logsnr = build("A", cfg=dataclasses.replace(base, timestep_features_logsnr=True))
    kwargs, _ = fixture_call("A", "dit_forward_plain")
    t = torch.tensor([1e-9, 0.3, 0.9, 1.0])[: kwargs["t"].shape[0]]
    tc = t.clamp(1e-7, 1 - 1e-7)
    mapped = (5 - torch.log((1 - tc) / tc).clamp(-12, 5)) / 17
    with torch.inference_mode():
        a = logsnr(kwargs["x"], t, **plain_kwargs(kwargs))
        b = plain(kwargs["x"], mapped, **plain_kwargs(kwargs))
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------ padding semantics


@pytest.mark.parametrize("config", ["A", "B", "E"])
def test_padding_modes_agree_exactly_without_padding(config: str) -> None:
    kwargs, _ = fixture_call(config, "dit_forward_padding_mask")
    x, t, plain = kwargs["x"], kwargs["t"], plain_kwargs(kwargs)
    all_valid = dict(plain, padding_mask=torch.ones_like(plain["padding_mask"]))
    with torch.inference_mode():
        none = build(config, "exclude")(x, t, **dict(plain, padding_mask=None))
        exclude = build(config, "exclude")(x, t, **all_valid)
        reference = build(config, "reference_cpu")(x, t, **all_valid)
    assert torch.equal(none, exclude)
    assert torch.equal(exclude, reference)


@pytest.mark.parametrize("config", ["A", "B", "E"])
def test_exclude_mode_makes_valid_frames_independent_of_padded_ones(config: str) -> None:
    kwargs, _ = fixture_call(config, "dit_forward_padding_mask")
    x, t, plain = kwargs["x"], kwargs["t"], plain_kwargs(kwargs)
    mask = plain["padding_mask"]
    assert not bool(mask.all())
    valid = mask[:, None, :].expand_as(x)
    noisy = torch.where(valid, x, 5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
    exclude, reference = build(config, "exclude"), build(config, "reference_cpu")
    with torch.inference_mode():
        a, b = exclude(x, t, **plain), exclude(noisy, t, **plain)
        c, d = reference(x, t, **plain), reference(noisy, t, **plain)
    assert torch.equal(a[valid], b[valid])  # excluded keys contribute exact zeros
    # Without exclusion the padded keys keep softmax mass, so valid frames see the change.
    assert (c - d)[valid].abs().max().item() > 1e-3
    assert (a - c)[valid].abs().max().item() > 1e-3


# -------------------------------------------------------------------------------------- guidance


def _guidance_case(config: str = "A") -> tuple[DiffusionTransformer, dict]:
    kwargs, _ = fixture_call(config, "dit_forward_cfg_negative_inpaint_padmask")
    return build(config), kwargs


def test_scale_one_or_outside_the_interval_is_one_plain_forward() -> None:
    dit, kwargs = _guidance_case()
    with torch.inference_mode():
        plain = dit(kwargs["x"], kwargs["t"], **plain_kwargs(kwargs))
        one = guided_velocity(dit, **dict(kwargs, cfg_scale=1.0))
        t0 = float(kwargs["t"][0])
        outside = guided_velocity(dit, **kwargs, cfg_interval=(0.0, t0 / 2))
        inside = guided_velocity(dit, **kwargs, cfg_interval=(0.0, t0))
    assert torch.equal(one, plain) and torch.equal(outside, plain)
    assert not torch.allclose(inside, plain)


def test_interval_bounds_compare_in_float32() -> None:
    dit, kwargs = _guidance_case()
    t = torch.full_like(kwargs["t"], 0.3)  # float32(0.3) > 0.3 as a double
    with torch.inference_mode():
        plain = dit(kwargs["x"], t, **plain_kwargs(kwargs))
        v = guided_velocity(dit, **dict(kwargs, t=t), cfg_interval=(0.0, 0.3))
    assert not torch.allclose(v, plain)


def _separate_branches(dit: DiffusionTransformer, kwargs: dict, uncond: torch.Tensor) -> tuple:
    x, t, plain = kwargs["x"], kwargs["t"], plain_kwargs(kwargs)
    v_c = dit(x, t, **plain)
    v_u = dit(x, t, **dict(plain, cross_cond=uncond))
    sigma = t[:, None, None]
    return x - v_c * sigma, x - v_u * sigma, sigma, v_c


@pytest.mark.parametrize("negative", [False, True])
def test_vanilla_cfg_is_the_difference_of_two_branches(negative: bool) -> None:
    dit, kwargs = _guidance_case()
    if negative:  # a negative prompt whose last tokens are padding: those become zeros
        mask = kwargs["negative_cross_mask"].clone()
        mask[:, -6:-1] = 0
        kwargs = dict(kwargs, negative_cross_mask=mask)
        uncond = torch.where(mask.bool()[..., None], kwargs["negative_cross_cond"], 0.0)
        assert kwargs["negative_cross_cond"][:, -6:-1].abs().min() > 0
    else:
        kwargs = dict(kwargs, negative_cross_cond=None, negative_cross_mask=None)
        uncond = torch.zeros_like(kwargs["cross_cond"])  # the seconds token is zeroed too
    scale = kwargs["cfg_scale"]
    with torch.inference_mode():
        v = guided_velocity(dit, **dict(kwargs, apg_scale=0.0))
        d_c, d_u, sigma, _ = _separate_branches(dit, kwargs, uncond)
    expected = (kwargs["x"] - (d_c + (scale - 1) * (d_c - d_u))) / sigma
    assert_stage_close(v, expected, "vanilla CFG")


def test_full_apg_guides_only_valid_frames_orthogonally() -> None:
    dit, kwargs = _guidance_case()
    mask = kwargs["padding_mask"]
    keep = kwargs["negative_cross_mask"].bool()[..., None]
    with torch.inference_mode():
        v = guided_velocity(dit, **dict(kwargs, apg_scale=1.0))
        uncond = torch.where(keep, kwargs["negative_cross_cond"], 0.0)
        d_c, _, sigma, v_c = _separate_branches(dit, kwargs, uncond)
    guide = (kwargs["x"] - v * sigma - d_c) / (kwargs["cfg_scale"] - 1)
    padded = ~mask[:, None, :].expand_as(v)
    assert_stage_close(v[padded], v_c[padded], "padded frames: no guidance")
    overlap = (guide * d_c * mask[:, None, :]).sum(dim=(1, 2)) / (d_c * mask[:, None, :]).norm(dim=(1, 2))
    assert overlap.abs().max().item() < 1e-4 * guide.abs().max().item()


def test_apg_projection_splits_the_difference() -> None:
    gen = torch.Generator().manual_seed(1)
    diff, direction = torch.randn(3, 4, 10, generator=gen), torch.randn(3, 4, 10, generator=gen)
    parallel, orthogonal = apg_project(diff, direction)
    torch.testing.assert_close(parallel + orthogonal, diff)
    assert (orthogonal * direction).sum(dim=(1, 2)).abs().max().item() < 1e-5
    mask = torch.arange(10)[None, :] < torch.tensor([[10], [6], [3]])
    parallel, orthogonal = apg_project(diff, direction, mask)
    padded = ~mask[:, None, :].expand_as(diff)
    assert not orthogonal[padded].any() and not parallel[padded].any()
    assert (orthogonal * direction * mask[:, None, :]).sum(dim=(1, 2)).abs().max().item() < 1e-5


def test_norm_threshold_caps_the_guidance_difference() -> None:
    dit, kwargs = _guidance_case()
    kwargs = dict(kwargs, padding_mask=None, apg_scale=0.0)
    with torch.inference_mode():
        free = guided_velocity(dit, **kwargs)
        v_c = dit(kwargs["x"], kwargs["t"], **plain_kwargs(kwargs))
        sigma, scale = kwargs["t"][:, None, None], kwargs["cfg_scale"]
        norms = ((v_c - free) * sigma / (scale - 1)).norm(dim=(1, 2))
        threshold = 0.5 * norms.min().item()
        capped = guided_velocity(dit, **kwargs, cfg_norm_threshold=threshold)
    capped_norms = ((v_c - capped) * sigma / (scale - 1)).norm(dim=(1, 2))
    torch.testing.assert_close(capped_norms, torch.full_like(capped_norms, threshold))


def test_rescale_matches_the_conditional_std_per_frame() -> None:
    dit, kwargs = _guidance_case()
    with torch.inference_mode():
        v = guided_velocity(dit, **kwargs, scale_phi=1.0)
        v_c = dit(kwargs["x"], kwargs["t"], **plain_kwargs(kwargs))
    torch.testing.assert_close(v.std(dim=1), v_c.std(dim=1))


def test_half_precision_dtype_flow() -> None:
    dit = build("A").half()
    assert dit.rotary.inv_freq.dtype == torch.float16  # fp16-rounded frequencies, as the reference
    kwargs, _ = fixture_call("A", "dit_forward_cfg_null")
    with torch.inference_mode():
        plain = dit(kwargs["x"], kwargs["t"].half(), **plain_kwargs(kwargs))
        guided = guided_velocity(dit, **dict(kwargs, t=kwargs["t"].half()))
    assert plain.dtype == torch.float16 and guided.dtype == torch.float32
    assert torch.isfinite(guided).all()
