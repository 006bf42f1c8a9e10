"""CUDA-graph sampling, checked on CPU with a capture emulator (`graph_emulator.py`).

The emulator replays recorded operators on the captured tensors and runs no Python, as a CUDA graph
does, and refuses host reads of tensor data and random draws. So these tests prove, without a GPU,
that the sampling step is capturable (no host synchronisation), that every input reaches the graph
through its static buffers (a new generation's conditioning included), and that replayed generations
equal eager ones bit for bit. What they cannot prove is the CUDA driver side (`capture_cuda_graph`),
which has not run on a GPU yet (none was lent to this project so far).
"""

from __future__ import annotations

import pytest
import torch
from conftest import checkpoint_dir
from graph_emulator import NotCapturable, capture_emulated
from test_lora import make_lora_file

from stable_audio_3 import StableAudioModel
from stable_audio_3.pipeline.cudagraphs import StepGraphs
from stable_audio_3.pipeline.guidance import Denoiser

_MODELS: dict[tuple[str, str], StableAudioModel] = {}


def load(config: str, padding: str = "exclude") -> StableAudioModel:
    if (config, padding) not in _MODELS:
        _MODELS[config, padding] = StableAudioModel.from_pretrained(
            checkpoint_dir(config), device="cpu", attention_padding=padding
        )
    model = _MODELS[config, padding]
    model._step_graphs = None
    return model


def emulate_graphs(model: StableAudioModel, max_graphs: int = 4) -> StepGraphs:
    model._step_graphs = StepGraphs(capture=capture_emulated, max_graphs=max_graphs)
    return model._step_graphs


def both_ways(model: StableAudioModel, **args) -> tuple[torch.Tensor, torch.Tensor]:
    """(eager, replayed) latents of the same call."""
    graphs = model._step_graphs
    model._step_graphs = None
    eager = model.generate(**args, return_latents=True)
    model._step_graphs = graphs
    return eager, model.generate(**args, return_latents=True)


BASE = {"prompt": "dub techno", "duration": 2.0, "steps": 4, "seed": 3, "progress": False}
CASES = {
    "plain": {},
    "guided-part-of-the-way": {"cfg_scale": 3.0, "cfg_interval": (0.0, 0.8)},
    "negative-apg-threshold": {
        "cfg_scale": 2.5,
        "negative_prompt": "noise",
        "apg_scale": 0.5,
        "cfg_norm_threshold": 5.0,
        "scale_phi": 0.3,
    },
    "per-item-durations": {"prompt": ["a", "b"], "duration": [1.0, 2.5], "cfg_scale": 2.0},
    "inpainting": {
        "inpaint_audio": (torch.zeros(2, 44100 * 2).uniform_(-0.5, 0.5, generator=torch.Generator()), 44100),
        "inpaint_mask_start_seconds": 0.5,
        "inpaint_mask_end_seconds": 1.2,
        "cfg_scale": 2.0,
    },
}


@pytest.mark.parametrize("padding", ["exclude", "reference_cpu"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_replayed_generation_equals_eager(case: str, padding: str) -> None:
    model = load("A", padding)
    graphs = emulate_graphs(model)
    args = dict(BASE, **CASES[case])
    if case == "per-item-durations":
        args["truncate_output_to_duration"] = False
    eager, replayed = both_ways(model, **args)
    assert torch.equal(eager, replayed)
    guided = args.get("cfg_scale", 1.0) != 1.0
    interval = "cfg_interval" in args
    assert graphs.captures == (1 + interval if guided else 1)
    assert model.last_record.extra["cuda_graphs"] is True


@pytest.mark.parametrize("config", ["B", "E"])
def test_other_architectures_replay_exactly(config: str) -> None:
    """Euler sampling (B), differential attention with memory tokens (E)."""
    model = load(config)
    emulate_graphs(model)
    eager, replayed = both_ways(model, **dict(BASE, cfg_scale=2.0, negative_prompt="hiss"))
    assert torch.equal(eager, replayed)


def test_float16_needs_one_graph_per_branch() -> None:
    """In float16 the guided velocity is float32, so x (and t) turn float32 after the first guided
    step; the graph's inputs are taken in one layout, so that is still one capture, and exact."""
    model = StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu", dtype="float16")
    graphs = emulate_graphs(model)
    eager, replayed = both_ways(model, **dict(BASE, cfg_scale=2.0))
    assert torch.equal(eager, replayed)
    assert graphs.captures == 1


def test_graphs_are_reused_and_refilled_across_generations() -> None:
    model = load("A")
    graphs = emulate_graphs(model, max_graphs=2)
    args = dict(BASE, cfg_scale=2.0)
    both_ways(model, **args)
    assert graphs.captures == 1
    # Same shapes, new prompt, negative prompt and seed: the captured graph reads the new conditioning.
    other = dict(args, prompt="choir", negative_prompt="drums", seed=9)
    eager, replayed = both_ways(model, **other)
    assert torch.equal(eager, replayed) and graphs.captures == 1
    # Back to the first prompt: refilled again, still exact.
    eager, replayed = both_ways(model, **args)
    assert torch.equal(eager, replayed) and graphs.captures == 1
    # A new length is a new graph; the least recently used one goes past max_graphs.
    for duration in (3.0, 4.0):
        eager, replayed = both_ways(model, **dict(args, duration=duration))
        assert torch.equal(eager, replayed)
    assert graphs.captures == 3 and len(graphs) == 2


def test_callbacks_and_cancel_still_run_every_step() -> None:
    model = load("A")
    emulate_graphs(model)
    seen: list[int] = []
    model.generate(**BASE, callback=lambda info: seen.append(info.step))
    assert seen == [0, 1, 2, 3]
    from stable_audio_3 import GenerationCancelled

    with pytest.raises(GenerationCancelled):
        model.generate(**BASE, cancel=lambda: len(seen) >= 6, callback=lambda info: seen.append(info.step))


def test_unmerged_loras_run_eagerly_and_merged_ones_replay(tmp_path) -> None:
    model = load("A")
    graphs = emulate_graphs(model)
    both_ways(model, **BASE)
    assert len(graphs) == 1
    model.load_lora(make_lora_file(model, tmp_path / "l.safetensors"))
    try:
        assert len(graphs) == 0  # weights changed: captured graphs dropped
        with pytest.warns(UserWarning, match="merge_lora"):
            live = model.generate(**BASE, return_latents=True)
        assert model.last_record.extra["cuda_graphs"] is False
        model.merge_lora()
        eager, replayed = both_ways(model, **BASE)
        assert torch.equal(eager, replayed) and model.last_record.extra["cuda_graphs"] is True
        assert (replayed - live).abs().max().item() < 1e-4
    finally:
        model.unload_lora()
    assert len(graphs) == 0


def test_switch_is_checked() -> None:
    model = load("A")
    assert model.cuda_graphs is False
    with pytest.raises(ValueError, match="CUDA device"):
        model.cuda_graphs = True
    with pytest.raises(TypeError, match="cuda_graphs must be True or False"):
        model.cuda_graphs = "yes"
    model.cuda_graphs = False
    with pytest.raises(ValueError, match="max_graphs"):
        StepGraphs(max_graphs=0)


# ------------------------------------------------------------------ what makes a step capturable


def _dit_inputs(model: StableAudioModel, batch: int = 2, length: int = 12):
    cfg = model.dit.config
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cfg.io_channels, length, generator=g)
    t = torch.rand(batch, generator=g)
    cross = torch.randn(batch, 5, cfg.cond_token_dim, generator=g)
    glob = torch.randn(batch, cfg.global_cond_dim, generator=g)
    return x, t, cross, glob


@pytest.mark.parametrize("padding", ["exclude", "reference_cpu"])
@pytest.mark.parametrize("lengths", [(12, 12), (9, 9), (7, 12)])
def test_valid_lengths_equal_the_padding_mask_without_host_reads(padding: str, lengths) -> None:
    model = load("E", padding)
    dit = model.dit
    x, t, cross, glob = _dit_inputs(model)
    mask = torch.arange(12)[None, :] < torch.tensor(lengths)[:, None]
    with torch.inference_mode():
        prepared = dit.prepare(cross, None, 12)
        by_mask = dit(x, t, global_cond=glob, prepared=prepared, padding_mask=mask)
        by_lengths = dit(x, t, global_cond=glob, prepared=prepared, valid_lengths=lengths)
        # One shared length in "exclude" mode drops the padded keys instead of masking them: the
        # same attention up to float32 rounding; every other case is the same computation.
        if padding == "exclude" and len(set(lengths)) == 1 and lengths[0] < 12:
            assert (by_mask - by_lengths).abs().max().item() <= 1e-5
        else:
            assert torch.equal(by_mask, by_lengths)
        capture_emulated(lambda: dit(x, t, global_cond=glob, prepared=prepared, valid_lengths=lengths))
        if min(lengths) < 12:  # a mask tensor must be read once to learn whether anything is padded
            with pytest.raises(NotCapturable):
                capture_emulated(lambda: dit(x, t, global_cond=glob, prepared=prepared, padding_mask=mask))


def test_denoiser_needs_the_branch_to_be_capturable() -> None:
    model = load("A")
    x, t, cross, glob = _dit_inputs(model)
    from stable_audio_3.pipeline.guidance import Guidance

    denoiser = Denoiser(
        model.dit, cross_cond=cross, global_cond=glob, valid_lengths=(12, 12), guidance=Guidance(2.0)
    )
    with torch.inference_mode():
        capture_emulated(lambda: denoiser(x, t, guided=True))
        with pytest.raises(NotCapturable, match="host"):
            capture_emulated(lambda: denoiser(x, t))  # deciding the branch reads t


def test_the_emulator_behaves_like_a_graph() -> None:
    """Sanity of the test tool itself: replays see copied-in data, not replaced tensors or Python."""
    x = torch.randn(4)
    scale = [2.0]
    replay, out = capture_emulated(lambda: (x * scale[0]).contiguous().exp())
    x.copy_(torch.arange(4.0))
    scale[0] = 100.0  # Python state is frozen at capture
    replay()
    assert torch.equal(out, (torch.arange(4.0) * 2.0).exp())
    with pytest.raises(NotCapturable, match="host"):
        capture_emulated(lambda: x * float(x.sum()))
    with pytest.raises(NotCapturable, match="random"):
        capture_emulated(lambda: x + torch.randn(4))
