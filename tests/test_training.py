"""LoRA training on a tiny model: the loss goes down and the saved LoRA loads and changes audio."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import checkpoint_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from stable_audio_3 import StableAudioModel
from stable_audio_3.training.dataset import LatentCache, find_clips
from stable_audio_3.training.lora_trainer import (
    TrainConfig,
    flow_matching_loss,
    random_inpaint_mask,
    sample_training_t,
    train_lora,
    validation_loss,
)


def _write_clips(folder: Path, sr: int, n: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        t = np.arange(int(sr * (1.0 + 0.25 * i))) / sr
        wave = 0.4 * np.sin(2 * np.pi * (110 * (i + 1)) * t)[:, None] * np.array([[1.0, 0.6]])
        sf.write(str(folder / f"clip{i}.wav"), wave.astype(np.float32), sr)
        (folder / f"clip{i}.txt").write_text(f"a {110 * (i + 1)} hertz tone")
    return folder


@pytest.mark.slow
def test_training_lowers_the_loss_and_the_lora_changes_generation(tmp_path: Path) -> None:
    ckpt = checkpoint_dir("A")
    sr = json.loads((ckpt / "model_config.json").read_text())["sample_rate"]
    data = _write_clips(tmp_path / "data", sr)
    cfg = TrainConfig(
        model=str(ckpt),
        data=str(data),
        output=str(tmp_path / "out"),
        rank=4,
        lr=3e-3,
        steps=30,
        batch_size=2,
        duration=1.0,
        seed=0,
        checkpoint_every=15,
        device="cpu",
        progress=False,
    )

    probe = StableAudioModel.from_pretrained(ckpt, device="cpu")
    clips = find_clips(data)
    latents = LatentCache(data / ".sa3_latents", probe).encode_all(clips, progress=False)
    before = validation_loss(probe, clips, latents, duration=1.0)

    losses: list[float] = []
    path = train_lora(cfg, on_step=lambda step, loss: losses.append(loss))
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert (tmp_path / "out" / "lora-step000015.safetensors").is_file()

    probe.load_lora(path)
    after = validation_loss(probe, clips, latents, duration=1.0)
    assert after < before * 0.95, (before, after)

    args = {"prompt": "a 220 hertz tone", "duration": 1.0, "steps": 3, "seed": 1, "progress": False}
    with_lora = probe.generate(**args)
    assert (with_lora - probe.generate(**args, lora_strength=0.0)).abs().max().item() > 1e-3


@pytest.mark.slow
def test_resume_continues_from_the_saved_state(tmp_path: Path) -> None:
    ckpt = checkpoint_dir("B")
    sr = json.loads((ckpt / "model_config.json").read_text())["sample_rate"]
    data = _write_clips(tmp_path / "data", sr, n=2)
    common = {
        "model": str(ckpt),
        "data": str(data),
        "output": str(tmp_path / "out"),
        "rank": 2,
        "lr": 1e-3,
        "duration": 1.0,
        "checkpoint_every": 3,
        "device": "cpu",
        "progress": False,
    }
    train_lora(TrainConfig(steps=3, **common))
    steps: list[int] = []
    train_lora(TrainConfig(steps=5, resume=True, **common), on_step=lambda s, _: steps.append(s))
    assert steps == [4, 5]


def test_manifests_and_bad_data(tmp_path: Path) -> None:
    data = _write_clips(tmp_path / "d", 6000, n=2)
    (tmp_path / "m.jsonl").write_text(
        "\n".join(json.dumps({"path": f"d/clip{i}.wav", "caption": f"c{i}"}) for i in range(2))
    )
    assert [c.caption for c in find_clips(tmp_path / "m.jsonl")] == ["c0", "c1"]
    (tmp_path / "m.csv").write_text("file,prompt\nd/clip1.wav,hello\n")
    clips = find_clips(tmp_path / "m.csv")
    assert clips[0].caption == "hello" and clips[0].seconds == pytest.approx(1.25)
    (data / "clip1.txt").unlink()
    with pytest.raises(ValueError, match="clip1.wav has no caption file"):
        find_clips(data)
    with pytest.raises(FileNotFoundError):
        find_clips(tmp_path / "nope")
    (tmp_path / "bad.csv").write_text("path\nd/clip0.wav\n")
    with pytest.raises(ValueError, match="no caption column"):
        find_clips(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="adapter_type must be one of"):
        TrainConfig(model="x", data="y", adapter_type="qlora")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        TrainConfig(model="x", data="y", steps=0)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 64), st.integers(0, 10_000))
def test_training_noise_levels_lie_in_the_unit_interval(n: int, seed: int) -> None:
    t = sample_training_t(n, torch.Generator().manual_seed(seed))
    assert t.shape == (n,) and bool((t >= 0).all()) and bool((t <= 1).all())


def test_inpaint_masks_never_keep_padding_and_loss_weights() -> None:
    import random

    masks = random_inpaint_mask([5, 10, 3], 12, random.Random(0))
    for _ in range(50):
        masks = random_inpaint_mask([5, 10, 3], 12, random.Random(_))
        assert masks[0, 0, 5:].sum() == 0 and masks[2, 0, 3:].sum() == 0
    v = torch.zeros(1, 2, 4)
    target = torch.tensor([[[1.0, 1.0, 2.0, 9.0], [1.0, 1.0, 2.0, 9.0]]])
    keep = torch.tensor([[[0.0, 0.0, 1.0, 0.0]]])
    valid = torch.tensor([[True, True, True, False]])
    assert flow_matching_loss(v, target, keep, valid).item() == pytest.approx(1.0 + 4.0)


def _recipe_draw(count: int, n: int, seed: int, share: float) -> torch.Tensor:
    """The official recipe's keep-mask draw (thresholds 0.8 / 0.9 at share 0.2), written out."""
    rng, out = random.Random(seed), torch.zeros(count, 1, n)
    for b in range(count):
        r = rng.random()
        if r < 1 - share:
            continue
        if r < 1 - share / 2:
            out[b, 0, : rng.randrange(1, n)] = 1
        else:
            out[b, 0, :] = 1
            for _ in range(rng.randint(1, 10)):
                s = rng.randrange(0, n)
                out[b, 0, s : min(n, s + rng.randint(1, n // 4))] = 0
    return out


@settings(max_examples=30, deadline=None)
@given(share=st.sampled_from([0.0, 0.2, 0.5, 1.0]), seed=st.integers(0, 2**31))
def test_the_context_share_is_the_share_of_items_that_keep_context(share: float, seed: int) -> None:
    masks = random_inpaint_mask([40] * 400, 40, random.Random(seed), share)
    kept = (masks.sum(dim=(1, 2)) > 0).float().mean().item()
    assert kept == pytest.approx(share, abs=0.1)
    # exactly the recipe's draw; so at share 1.0 the only items keeping nothing are gap items whose
    # random gaps covered every frame (0.04 % of them), as in the official recipe
    assert torch.equal(masks, _recipe_draw(400, 40, seed, share))
    if share == 0.0:
        assert kept == 0.0
    # 0.2, the default, is the official recipe's split, drawn as before the option existed
    default = random_inpaint_mask([40] * 50, 40, random.Random(seed))
    assert torch.equal(default, _recipe_draw(50, 40, seed, 0.2))


def test_pretrain_rejects_a_context_share_outside_the_unit_interval() -> None:
    from stable_audio_3.training.pretrain import PretrainConfig

    with pytest.raises(ValueError, match="context_share"):
        PretrainConfig(base="demo", data="d", output="o", context_share=1.5)


@pytest.mark.slow
def test_train_cli_reports_bad_arguments(tmp_path: Path) -> None:
    from stable_audio_3.apps.train_cli import main

    assert main(["--model", str(checkpoint_dir("A")), "--data", str(tmp_path / "missing")]) == 2


@pytest.mark.slow
def test_two_process_ddp_training_with_torchrun(tmp_path: Path) -> None:
    """`torchrun` with no code change: two CPU processes (gloo) train one LoRA together."""
    import shutil
    import subprocess
    import sys

    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not on PATH")
    data = _write_clips(tmp_path / "data", 6000, n=2)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "stable_audio_3.apps.train_cli",
        "--model",
        str(checkpoint_dir("A")),
        "--data",
        str(data),
        "--output",
        str(tmp_path / "out"),
        "--steps",
        "2",
        "--rank",
        "2",
        "--duration",
        "1",
        "--no-progress",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = [line for line in done.stdout.splitlines() if line.strip()]
    assert printed[-1] == str(tmp_path / "out" / "lora.safetensors")
    assert printed.count(printed[-1]) == 1  # only rank 0 reports
    model = StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu")
    assert model.load_lora(tmp_path / "out" / "lora.safetensors") == [0]


@pytest.mark.slow
def test_two_node_training_with_a_c10d_rendezvous(tmp_path: Path) -> None:
    """Multi-node as torchrun does it: two launchers (one per "node", here both on loopback) meet
    at a c10d rendezvous and train one LoRA as a world of two; only global rank 0 writes."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = _write_clips(tmp_path / "data", 6000, n=2)
    launcher = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "sa3-test",
        "-m", "stable_audio_3.apps.train_cli", "--model", str(checkpoint_dir("A")), "--data", str(data),
        "--output", str(tmp_path / "out"), "--steps", "2", "--rank", "2", "--duration", "1", "--no-progress",
    ]  # fmt: skip
    nodes = [
        subprocess.Popen(launcher, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [node.communicate(timeout=300) for node in nodes]
    for node, (_, err) in zip(nodes, results, strict=True):
        assert node.returncode == 0, err[-2000:]
    outputs = [line for out, _ in results for line in out.splitlines() if line.strip()]
    lora = str(tmp_path / "out" / "lora.safetensors")
    assert outputs.count(lora) == 1  # one world of two processes, one writer
    model = StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu")
    assert model.load_lora(lora) == [0]
