"""LoRA: official file layout, every adapter type, stacking, strength, unload, merge, PEFT files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from conftest import checkpoint_dir
from safetensors.torch import save_file

from stable_audio_3 import StableAudioModel
from stable_audio_3.lora.adapters import ADAPTER_TYPES, adapter_targets, svd_bases
from stable_audio_3.official.checkpoint import ours_to_lora_key

ARGS = {"prompt": "lofi", "duration": 1.0, "steps": 3, "seed": 7, "progress": False}


@pytest.fixture(scope="module")
def model() -> StableAudioModel:
    return StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu")


@pytest.fixture(scope="module")
def base_audio(model: StableAudioModel) -> torch.Tensor:
    return model.generate(**ARGS)


def _targets(model: StableAudioModel) -> list[tuple[str, torch.nn.Module]]:
    roots = {"dit": model.networks.dit, "conditioners": model.networks.conditioners}
    return [(f"{r}.{n}", m) for r, root in roots.items() for n, m in adapter_targets(root)]


def make_lora_file(
    model: StableAudioModel,
    path: Path,
    kind: str = "lora",
    rank: int = 2,
    seed: int = 0,
    scale: float = 0.05,
    include: list[str] | None = None,
) -> Path:
    """A random LoRA in the official layout, keyed by the spec's names (`...parametrizations.weight.0.*`)."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in _targets(model):
        w = module.weight.detach().reshape(module.weight.shape[0], -1)
        fan_out, fan_in = w.shape
        params: dict[str, torch.Tensor] = {}
        if kind.endswith("-xs"):
            params["M_xs"] = torch.randn(rank, rank, generator=g) * scale * 10
        else:
            params["lora_A"] = torch.randn(rank, fan_in, generator=g) * scale
            params["lora_B"] = torch.randn(fan_out, rank, generator=g) * scale
        base = kind.removesuffix("-xs")
        if base == "dora-rows":
            params["magnitude"] = w.norm(dim=1) * (1 + 0.1 * torch.rand(fan_out, generator=g))
        elif base == "dora-cols":
            params["magnitude"] = w.norm(dim=0) * (1 + 0.1 * torch.rand(fan_in, generator=g))
        elif base == "bora":
            params["magnitude_r"] = w.norm(dim=1)
            params["magnitude_c"] = w.norm(dim=0) * (1 + 0.1 * torch.rand(fan_in, generator=g))
        for param, value in params.items():
            tensors[ours_to_lora_key(name, param)] = value.to(torch.float16)
    config = {"rank": rank, "alpha": rank * 2, "adapter_type": kind, "include": include, "exclude": None}
    save_file(tensors, str(path), metadata={"lora_config": json.dumps(config)})
    return path


def test_official_keys_are_the_spec_names(model: StableAudioModel) -> None:
    names = {ours_to_lora_key(n, "lora_A") for n, _ in _targets(model)}
    assert "model.transformer.layers.0.self_attn.to_qkv.parametrizations.weight.0.lora_A" in names
    assert "model.preprocess_conv.parametrizations.weight.0.lora_A" in names
    assert "conditioners.seconds_total.embedder.embedding.1.parametrizations.weight.0.lora_A" in names


@pytest.mark.parametrize("kind", ADAPTER_TYPES)
def test_every_adapter_type_loads_and_strength_zero_is_the_base(model, base_audio, tmp_path, kind) -> None:
    path = make_lora_file(model, tmp_path / f"{kind}.safetensors", kind=kind)
    try:
        assert model.load_lora(path) == [0]
        changed = model.generate(**ARGS)
        assert (changed - base_audio).abs().max().item() > 1e-3
        model.set_lora_strength(0.0)
        assert torch.equal(model.generate(**ARGS), base_audio)
    finally:
        model.unload_lora()
    assert torch.equal(model.generate(**ARGS), base_audio)


def test_stacked_loras_equal_the_merged_weights(model, base_audio, tmp_path) -> None:
    a, b = 0.7, -1.3
    paths = [make_lora_file(model, tmp_path / f"l{i}.safetensors", seed=i, rank=2 + i) for i in range(2)]
    model.load_lora(paths)
    model.set_lora_strength(a, lora_index=0)
    model.set_lora_strength(b, lora_index=1)
    stacked = model.generate(**ARGS)
    assert model.lora_strengths() == [pytest.approx(a), pytest.approx(b)]
    model.unload_lora()

    reference = StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu")
    from safetensors.torch import load_file

    files = [load_file(str(p)) for p in paths]
    with torch.no_grad():
        for name, module in [(n, m) for n, m in _targets(reference)]:
            w = module.weight
            for strength, tensors, rank in ((a, files[0], 2), (b, files[1], 3)):
                la = tensors[ours_to_lora_key(name, "lora_A")].float()
                lb = tensors[ours_to_lora_key(name, "lora_B")].float()
                w += ((2 * rank / rank) * strength * (lb @ la)).reshape(w.shape)
    merged = reference.generate(**ARGS)
    assert (stacked - merged).abs().max().item() < 1e-5
    assert torch.equal(model.generate(**ARGS), base_audio)


def test_merge_is_exactly_reversible(model, base_audio, tmp_path) -> None:
    model.load_lora(make_lora_file(model, tmp_path / "m.safetensors", kind="dora-rows"))
    try:
        live = model.generate(**ARGS)
        model.merge_lora()
        merged = model.generate(**ARGS)
        assert (merged - live).abs().max().item() < 1e-5
        with pytest.raises(RuntimeError, match="unmerge_lora"):
            model.set_lora_strength(0.5)
        model.unmerge_lora()
        assert torch.equal(model.generate(**ARGS), live)
    finally:
        model.unload_lora()
    assert torch.equal(model.generate(**ARGS), base_audio)


def test_per_call_strength_is_restored(model, base_audio, tmp_path) -> None:
    model.load_lora(make_lora_file(model, tmp_path / "s.safetensors"))
    try:
        full = model.generate(**ARGS)
        assert torch.equal(model.generate(**ARGS, lora_strength=0.0), base_audio)
        assert model.lora_strengths() == [1.0]
        assert torch.equal(model.generate(**ARGS), full)
        with pytest.raises(ValueError, match="lora_strength has 2 values but 1 LoRA"):
            model.generate(**ARGS, lora_strength=[1.0, 2.0])
    finally:
        model.unload_lora()
    with pytest.raises(ValueError, match="no LoRA is loaded"):
        model.generate(**ARGS, lora_strength=0.5)


def test_include_filter_limits_the_adapted_layers(model, base_audio, tmp_path) -> None:
    path = make_lora_file(model, tmp_path / "inc.safetensors", include=["transformer.layers.[1-1]."])
    model.load_lora(path)
    try:
        from stable_audio_3.lora.adapters import iter_adapters

        adapted = [n for n, *_ in iter_adapters(model.networks.dit)]
        assert adapted and all(n.startswith("blocks.1.") for n in adapted)
    finally:
        model.unload_lora()


def test_xs_with_precomputed_bases_matches_recomputed(model, tmp_path) -> None:
    path = make_lora_file(model, tmp_path / "xs.safetensors", kind="lora-xs")
    model.load_lora(path)
    a = model.generate(**ARGS)
    model.unload_lora()
    bases = {}
    from stable_audio_3.official.checkpoint import ours_to_official

    for name, module in _targets(model):
        u, v = svd_bases(module.weight, 8)
        bases[ours_to_official(name + ".weight")] = {"U": u, "V": v}
    torch.save(bases, tmp_path / "bases.pt")
    model.load_lora(path, svd_bases_path=tmp_path / "bases.pt")
    try:
        assert torch.equal(model.generate(**ARGS), a)
    finally:
        model.unload_lora()


def test_ckpt_files_load_with_weights_only_and_pickles_are_refused(model, base_audio, tmp_path) -> None:
    from safetensors.torch import load_file

    src = make_lora_file(model, tmp_path / "x.safetensors")
    torch.save(
        {"state_dict": load_file(str(src)), "lora_config": {"rank": 2, "alpha": 4}}, tmp_path / "x.ckpt"
    )
    model.load_lora(tmp_path / "x.ckpt")
    from_ckpt = model.generate(**ARGS)
    model.unload_lora()
    model.load_lora(src)
    try:
        assert torch.equal(model.generate(**ARGS), from_ckpt)
    finally:
        model.unload_lora()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.ckpt").write_bytes(pickle.dumps({"state_dict": {}, "x": Evil()}))
    with pytest.raises(ValueError, match="LoRA file .* cannot be loaded"):
        model.load_lora(tmp_path / "evil.ckpt")


def test_mismatched_files_name_the_first_offending_key(model, tmp_path) -> None:
    good = make_lora_file(model, tmp_path / "g.safetensors")
    from safetensors.torch import load_file

    tensors = load_file(str(good))
    key = "model.transformer.layers.0.self_attn.to_out.parametrizations.weight.0.lora_A"
    bad_shape = dict(tensors, **{key: torch.zeros(2, 5)})
    save_file(bad_shape, str(tmp_path / "shape.safetensors"))
    with pytest.raises(ValueError, match=r"to_out\.parametrizations\.weight\.0\.lora_A has shape \(2, 5\)"):
        model.load_lora(tmp_path / "shape.safetensors")
    unknown = dict(
        tensors,
        **{"model.transformer.layers.9.ff.ff.0.proj.parametrizations.weight.0.lora_A": torch.zeros(2, 64)},
    )
    save_file(unknown, str(tmp_path / "unknown.safetensors"))
    with pytest.raises(ValueError, match="layers.9.*names no adaptable layer"):
        model.load_lora(tmp_path / "unknown.safetensors")
    assert model.lora_names == []  # nothing half-applied


def test_peft_style_files(model, base_audio, tmp_path) -> None:
    from safetensors.torch import load_file

    official = load_file(str(make_lora_file(model, tmp_path / "o.safetensors", rank=2)))
    peft = {}
    for key, value in official.items():
        module, param = key.split(".parametrizations.weight.0.")
        if module.startswith("model."):
            module = module[len("model.") :]
        peft[f"base_model.model.{module}.{param}.weight"] = value
    save_file(peft, str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 4}))
    model.load_lora(tmp_path / "adapter_model.safetensors")
    peft_audio = model.generate(**ARGS)
    model.unload_lora()
    model.load_lora(tmp_path / "o.safetensors")
    try:
        assert torch.equal(model.generate(**ARGS), peft_audio)
    finally:
        model.unload_lora()


# Layer names exactly as the spec's key inventory writes them (checkpoint-format.md §4.1-4.2),
# relative to the DiT wrapper / the conditioner as official LoRA files use them.
SPEC_DIT_LAYERS = [
    "model.to_timestep_embed.0",
    "model.to_timestep_embed.2",
    "model.to_cond_embed.0",
    "model.to_cond_embed.2",
    "model.to_global_embed.0",
    "model.to_global_embed.2",
    "model.preprocess_conv",
    "model.postprocess_conv",
    "model.transformer.project_in",
    "model.transformer.project_out",
    "model.transformer.global_cond_embedder.0",
    "model.transformer.global_cond_embedder.2",
]
SPEC_BLOCK_LAYERS = [
    "self_attn.to_qkv",
    "self_attn.to_out",
    "cross_attn.to_q",
    "cross_attn.to_kv",
    "cross_attn.to_out",
    "ff.ff.0.proj",
    "ff.ff.2",
    "to_local_embed.0",
    "to_local_embed.2",
]
SPEC_CONDITIONER_LAYERS = ["conditioners.seconds_total.embedder.embedding.1"]


def test_a_file_written_from_the_spec_key_names_loads(model, base_audio, tmp_path) -> None:
    from safetensors.torch import load_file

    depth = len(model.networks.dit.blocks)
    names = SPEC_DIT_LAYERS + [
        f"model.transformer.layers.{i}.{n}" for i in range(depth) for n in SPEC_BLOCK_LAYERS
    ]
    names += SPEC_CONDITIONER_LAYERS
    ours = load_file(str(make_lora_file(model, tmp_path / "ours.safetensors")))
    spec_keys = {f"{n}.parametrizations.weight.0.{p}" for n in names for p in ("lora_A", "lora_B")}
    assert set(ours) == spec_keys  # our exporter writes exactly the spec's names, nothing else
    model.load_lora(tmp_path / "ours.safetensors")
    try:
        from stable_audio_3.lora.adapters import iter_adapters

        count = sum(
            1 for root in (model.networks.dit, model.networks.conditioners) for _ in iter_adapters(root)
        )
        assert count == len(names)
    finally:
        model.unload_lora()


def test_save_then_load_round_trips(model, tmp_path) -> None:
    from stable_audio_3.lora.adapters import LoRAConfig
    from stable_audio_3.lora.files import lora_state_dict, read_lora_file, save_lora_file

    model.load_lora(make_lora_file(model, tmp_path / "src.safetensors", kind="bora", seed=3))
    try:
        live = model.generate(**ARGS)
        roots = {"dit": model.networks.dit, "conditioners": model.networks.conditioners}
        saved = save_lora_file(
            tmp_path / "saved.safetensors",
            lora_state_dict(roots, 0),
            LoRAConfig(rank=2, alpha=4, adapter_type="bora"),
        )
    finally:
        model.unload_lora()
    assert read_lora_file(saved).config.adapter_type == "bora"
    model.load_lora(saved)
    try:
        assert torch.equal(model.generate(**ARGS), live)
    finally:
        model.unload_lora()


# ---------------------------------------------------------------- run-time interval and layer filter


def test_default_interval_and_filter_are_an_exact_no_op(model, tmp_path) -> None:
    model.load_lora(make_lora_file(model, tmp_path / "l.safetensors"))
    try:
        plain = model.generate(**ARGS)
        model.set_lora_interval(0.0, 1.0)
        model.set_lora_layers(None, None)
        assert not model.lora.scheduled
        assert torch.equal(model.generate(**ARGS), plain)
    finally:
        model.unload_lora()


def test_an_interval_no_step_reaches_is_the_base_model(model, base_audio, tmp_path) -> None:
    # DiT layers only: the interval gates the DiT's adapters (conditioners run once, before sampling).
    model.load_lora(make_lora_file(model, tmp_path / "l.safetensors", include=["model."]))
    try:
        full = model.generate(**ARGS)
        levels = [row[:-1] for row in model.last_record.sigmas][0]
        model.set_lora_interval(0.0, min(levels) / 2)  # below every level the DiT is evaluated at
        assert torch.equal(model.generate(**ARGS), base_audio)
        model.set_lora_interval(min(levels), 1.0)  # every level: the LoRA throughout
        assert torch.equal(model.generate(**ARGS), full)
        middle = sorted(levels)[len(levels) // 2]
        model.set_lora_interval(middle, 1.0)  # the noisy half only: neither of the two
        part = model.generate(**ARGS)
        assert not torch.equal(part, base_audio) and not torch.equal(part, full)
        assert torch.equal(model.generate(**ARGS), part)  # and the same again (state is restored)
    finally:
        model.unload_lora()


def test_a_runtime_layer_filter_equals_the_same_filter_in_the_file(model, base_audio, tmp_path) -> None:
    pattern = "transformer.layers.0"
    model.load_lora(make_lora_file(model, tmp_path / "all.safetensors"))
    try:
        model.set_lora_layers(include=pattern)
        filtered = model.generate(**ARGS)
        model.set_lora_layers(exclude="model,conditioner")  # every layer excluded
        assert torch.equal(model.generate(**ARGS), base_audio)
    finally:
        model.unload_lora()
    model.load_lora(make_lora_file(model, tmp_path / "some.safetensors", include=[pattern]))
    try:
        assert torch.equal(model.generate(**ARGS), filtered)
        assert not torch.equal(filtered, base_audio)
    finally:
        model.unload_lora()


def test_interval_and_filter_arguments_are_checked(model, tmp_path) -> None:
    model.load_lora(make_lora_file(model, tmp_path / "l.safetensors"))
    try:
        for low, high in [(0.5, 0.2), (-0.1, 1.0), (0.0, 1.5), ("a", 1.0)]:
            with pytest.raises((ValueError, TypeError), match="interval"):
                model.set_lora_interval(low, high)
        with pytest.raises(ValueError, match="lora_index"):
            model.set_lora_interval(0.0, 1.0, lora_index=3)
        with pytest.raises(TypeError, match="include"):
            model.set_lora_layers(include=[1, 2])
        model.set_lora_interval(0.5, 1.0)
        with pytest.raises(RuntimeError, match="interval"):
            model.merge_lora()
    finally:
        model.unload_lora()
