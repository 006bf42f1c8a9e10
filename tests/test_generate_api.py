"""The engine around generate(): records, seeds, callbacks, cancellation and argument errors."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import checkpoint_dir

from stable_audio_3 import GenerationCancelled, StableAudioModel, StepInfo

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model() -> StableAudioModel:
    return StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu")


def test_default_padding_mode_is_exclude(model: StableAudioModel) -> None:
    assert model.attention_padding == "exclude"


def test_padding_modes_give_the_same_audio_when_nothing_is_padded(model: StableAudioModel) -> None:
    ref = StableAudioModel.from_pretrained(
        checkpoint_dir("A"), device="cpu", attention_padding="reference_cpu"
    )
    args = {"prompt": "lofi", "duration": 1.5, "steps": 3, "seed": 11, "progress": False}
    a = model.generate(**args)
    assert model.last_record.latent_length == 176  # duration + 6 s padding covers every latent frame
    assert torch.equal(a, ref.generate(**args))


def test_same_seed_same_audio_and_random_seed_is_recorded(model: StableAudioModel) -> None:
    a = model.generate("drums", duration=1.0, steps=2, seed=5, progress=False)
    b = model.generate("drums", duration=1.0, steps=2, seed=5, progress=False)
    assert torch.equal(a, b)
    c = model.generate("drums", duration=1.0, steps=2, seed=-1, progress=False)
    seed = model.last_record.seed
    assert seed >= 0
    d = model.generate("drums", duration=1.0, steps=2, seed=seed, progress=False)
    assert torch.equal(c, d)


def test_no_duration_means_30_s_or_the_longest_the_call_allows(model: StableAudioModel) -> None:
    assert model.default_duration == 30.0 < model.max_duration
    latents = model.generate("x", steps=1, seed=0, return_latents=True, progress=False)
    assert model.last_record.durations == [30.0]
    short = model.generate("x", steps=1, seed=0, sample_size=4096, return_latents=True, progress=False)
    assert model.last_record.durations == [4096 / model.sample_rate] and short.shape[-1] < latents.shape[-1]
    demo = StableAudioModel.from_pretrained("demo", device="cpu")
    assert demo.default_duration == demo.max_duration < 30
    demo.check_arguments(prompt="rain")  # 30 s would be refused


def test_record_holds_settings_and_timings(model: StableAudioModel) -> None:
    with pytest.warns(UserWarning, match="durations differ"):
        model.generate(
            ["a", "b"],
            negative_prompt="c",
            duration=[1.0, 0.5],
            steps=3,
            cfg_scale=2.0,
            seed=1,
            progress=False,
        )
    rec = model.last_record
    assert rec.prompts == ["a", "b"] and rec.negative_prompts == ["c", "c"]
    assert rec.durations == [1.0, 0.5] and rec.steps == 3 and rec.cfg_scale == 2.0
    assert rec.sampler == "pingpong" and len(rec.sigmas) == 2 and len(rec.sigmas[0]) == 4
    assert {"conditioning", "sampling", "decoding", "total"} <= set(rec.timings)
    assert rec.to_dict()["seed"] == 1


def test_callback_sees_every_step(model: StableAudioModel) -> None:
    seen: list[StepInfo] = []
    model.generate("x", duration=0.5, steps=4, seed=0, callback=seen.append, progress=False)
    assert [s.step for s in seen] == [0, 1, 2, 3]
    assert all(s.steps == 4 for s in seen)
    assert float(seen[-1].t_next[0]) == 0.0


def test_cancel_stops_generation(model: StableAudioModel) -> None:
    ev = threading.Event()
    calls = []

    def cb(info: StepInfo) -> None:
        calls.append(info.step)
        if info.step == 1:
            ev.set()

    with pytest.raises(GenerationCancelled, match="after step 2 of 6"):
        model.generate("x", duration=0.5, steps=6, seed=0, callback=cb, cancel=ev, progress=False)
    assert calls == [0, 1]


def test_return_latents_and_explicit_sigmas(model: StableAudioModel) -> None:
    sig = [1.0, 0.6, 0.2, 0.0]
    z = model.generate("x", duration=0.5, steps=3, seed=2, sigmas=sig, return_latents=True, progress=False)
    assert z.shape == (1, model.config.io_channels, model.last_record.latent_length)
    assert model.last_record.sigmas == [pytest.approx(sig)]


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"prompt": None}, ValueError, "prompt"),
        ({"prompt": 3}, TypeError, "prompt must be a string"),
        ({"prompt": ["a", "b"], "batch_size": 3}, ValueError, "prompt has 2 items but batch_size is 3"),
        ({"duration": -1}, ValueError, "duration must be > 0"),
        ({"duration": float("nan")}, ValueError, "duration must be finite"),
        ({"duration": 10_000}, ValueError, "duration must be <="),
        ({"duration": "5"}, TypeError, "duration must be a number"),
        ({"steps": 0}, ValueError, "steps must be >= 1"),
        ({"steps": 2.5}, TypeError, "steps must be an int"),
        ({"cfg_scale": "high"}, TypeError, "cfg_scale must be a number"),
        ({"apg_scale": 2}, ValueError, "apg_scale must be <= 1"),
        ({"seed": "1"}, TypeError, "seed must be an int"),
        ({"sampler": "ddim"}, ValueError, "sampler must be one of"),
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        ({"negative_prompt": ["a", "b"]}, ValueError, "negative_prompt has 2 items"),
        ({"sigmas": [1.0, 0.5]}, ValueError, "sigmas has 2 values per item but steps \\+ 1 = 3"),
        ({"sigmas": [1.0, 0.5, 0.1]}, ValueError, "sigmas must end at 0"),
        ({"duration_padding_sec": -1}, ValueError, "duration_padding_sec must be >= 0"),
        ({"cancel": 5}, TypeError, "cancel must be"),
        ({"cfg_interval": (0.5,)}, TypeError, "cfg_interval must be a pair"),
        ({"cfg_interval": (0.8, 0.2)}, ValueError, "low <= high"),
    ],
)
def test_bad_arguments_are_named(model: StableAudioModel, kwargs: dict, error: type, pattern: str) -> None:
    args = {"prompt": "x", "duration": 0.5, "steps": 2, "seed": 0, "progress": False} | kwargs
    with pytest.raises(error, match=pattern):
        model.generate(**args)


def test_base_model_rejects_pingpong() -> None:
    base = StableAudioModel.from_pretrained(checkpoint_dir("B"), device="cpu")
    with pytest.raises(ValueError, match="pingpong sampler needs an rf_denoiser"):
        base.generate("x", duration=0.5, steps=2, sampler="pingpong", progress=False)
    assert base.generate("x", duration=0.5, steps=2, sampler="dpmpp", seed=0, progress=False).isfinite().all()


def _readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "tests/fixtures" in b]


@pytest.mark.parametrize("block", _readme_blocks(), ids=lambda b: f"block{_readme_blocks().index(b)}")
def test_readme_examples_run(block: str, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    exec(compile(block, "README.md", "exec"), {})


@pytest.mark.slow
def test_cli_writes_audio_and_exits_2_on_bad_input(tmp_path: Path) -> None:
    ckpt = str(checkpoint_dir("A"))
    out = tmp_path / "x.wav"
    cmd = [
        sys.executable,
        "-m",
        "stable_audio_3",
        "--model",
        ckpt,
        "-p",
        "hi",
        "--duration",
        "0.5",
        "--steps",
        "2",
        "--seed",
        "1",
        "-o",
        str(out),
    ]
    ok = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert out.exists() and out.stat().st_size > 1000
    bad = subprocess.run(
        cmd[:-2] + ["--duration", "-3", "-o", str(tmp_path / "y.wav")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "duration" in bad.stderr  # refused before loading
    assert not (tmp_path / "y.wav").exists()
    # Speed options: a dtype runs; CUDA graphs on a CPU-only machine are one readable line, exit 2.
    half = subprocess.run(
        cmd[:-2] + ["--dtype", "bfloat16", "-o", str(tmp_path / "h.wav")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert half.returncode == 0, half.stderr
    for flags, words in [
        (["--device", "cpu", "--cuda-graphs"], "needs a CUDA device"),
        (["--dtype", "bfloat16", "--cpu-int8"], "needs a float32 model"),
    ]:
        refused = subprocess.run(
            cmd[:-2] + flags + ["-o", str(tmp_path / "g.wav")], capture_output=True, text=True, check=False
        )
        assert refused.returncode == 2 and words in refused.stderr.strip().splitlines()[-1]
        assert "Traceback" not in refused.stderr
        assert not (tmp_path / "g.wav").exists()


def test_sampling_shift_overrides_the_checkpoint_schedule(model) -> None:
    args = {"prompt": "x", "duration": 1.0, "steps": 4, "seed": 1, "progress": False}
    plain = model.generate(**args)
    default = model.last_record.sigmas
    same = {"type": "logsnr", "anchor_length": 2000, "anchor_logsnr": -6.2, "rate": 0.0, "logsnr_end": 2.0}
    assert torch.equal(model.generate(**args, sampling_shift=same), plain)  # A's config default, spelled out
    model.generate(**args, sampling_shift="none")
    assert model.last_record.sigmas[0] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert model.last_record.sigmas != default
    with pytest.raises(ValueError, match="sampling_shift"):
        model.generate(**args, sampling_shift={"type": "zzz"})
    with pytest.raises(TypeError, match="sampling_shift"):
        model.generate(**args, sampling_shift=3)
