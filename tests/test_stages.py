"""The Stable Audio 3 training stages on the tiny fixture config: each runs a few steps, its loss
falls, a resumed run continues with the same step and loss, and the result loads and samples."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from conftest import checkpoint_dir
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from test_training import _write_clips

from stable_audio_3 import StableAudioModel
from stable_audio_3.apps import train as train_app
from stable_audio_3.errors import ArgumentValueError
from stable_audio_3.training import (
    AutoencoderTrainConfig,
    DistillConfig,
    PostTrainConfig,
    PretrainConfig,
    distill,
    ode_gap,
    post_train,
    pretrain,
    teacher_trajectories,
    train_autoencoder,
    validation_loss,
)
from stable_audio_3.training.dataset import LatentCache, find_clips
from stable_audio_3.training.loop import lr_factor
from stable_audio_3.training.objective import augment_valid_lengths, sinkhorn_coupling
from stable_audio_3.training.pretrain import reinitialise

SR = 6000


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_clips(tmp_path_factory.mktemp("stage_data"), SR, n=4)


def _pretrain_config(data: Path, out: Path, **overrides) -> PretrainConfig:
    options = {
        "base": str(checkpoint_dir("A")),
        "data": str(data),
        "output": str(out),
        "from_scratch": True,
        "steps": 30,
        "batch_size": 4,
        "duration": 1.0,
        "lr": 1e-3,
        "seed": 0,
        "checkpoint_every": 10,
        "device": "cpu",
        "progress": False,
    }
    return PretrainConfig(**(options | overrides))


def _losses(out: Path) -> list[tuple[int, float]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [(e["step"], e["loss"]) for e in map(json.loads, lines)]


def test_sinkhorn_pairs_each_latent_with_its_nearest_noise() -> None:
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(6, 4, 8, generator=g)
    order = torch.randperm(6, generator=g)
    x0 = noise[order] + 0.01 * torch.randn(6, 4, 8, generator=g)
    perm = sinkhorn_coupling(x0, noise)
    assert sorted(perm.tolist()) == list(range(6))
    assert torch.equal(perm, order)


def test_padding_augmentation_extends_and_clamps() -> None:
    rng = random.Random(0)
    out = augment_valid_lengths([3, 10, 20], 20, 4.0, rng)
    assert out[0] >= 3 and out[1] >= 10 and out[2] == 20 and max(out) <= 20
    assert augment_valid_lengths([3, 10], 20, 0.0, rng) == [3, 10]


@pytest.mark.slow
def test_pretraining_lowers_the_loss_and_writes_a_loadable_checkpoint(data: Path, tmp_path: Path) -> None:
    cfg = _pretrain_config(data, tmp_path / "run", sample_prompts=("a 220 hertz tone",), sample_steps=3)
    start = StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu")
    reinitialise(start.networks.dit, cfg.seed)
    clips = find_clips(data)
    latents = LatentCache(data / ".sa3_latents", start).encode_all(clips, progress=False)
    before = validation_loss(start, clips, latents, duration=1.0, batch_size=4)

    folder = pretrain(cfg)
    trained = StableAudioModel.from_pretrained(folder, device="cpu")
    after = validation_loss(trained, clips, latents, duration=1.0, batch_size=4)
    assert after < 0.8 * before, (before, after)
    assert trained.config.diffusion.objective == "rectified_flow"
    audio = trained.generate("a 220 hertz tone", duration=1.0, steps=4, seed=0, progress=False)
    assert audio.shape == (1, 2, SR) and torch.isfinite(audio).all()
    assert (tmp_path / "run" / "samples" / "step000030_0.wav").is_file()
    assert [s for s, _ in _losses(tmp_path / "run")] == list(range(1, 31))


@given(st.integers(1, 500), st.integers(0, 100), st.data())
def test_the_learning_rate_warms_up_holds_and_cools_down_to_zero(total: int, warmup: int, data) -> None:
    decay = data.draw(st.integers(0, total))
    f = [lr_factor(step, warmup, total, decay) for step in range(total)]
    assert all(0.0 < x <= 1.0 for x in f)
    if decay:
        tail = f[max(total - decay, warmup) :]  # past the warm-up, which may overlap the cool-down
        assert all(a >= b for a, b in zip(tail, tail[1:], strict=False))
        assert f[-1] <= 1.0 / decay + 1e-12  # the last step ends the cool-down
    if not warmup and not decay:
        assert f == [1.0] * total


@given(st.integers(2, 300), st.integers(0, 50), st.data())
def test_a_cooldown_ending_early_gives_the_schedule_of_a_resumed_run(total: int, warmup: int, data) -> None:
    decay = data.draw(st.integers(1, total // 2))
    end = data.draw(st.integers(decay, total - decay))
    one_run = [lr_factor(step, warmup, total, decay, (end,)) for step in range(total)]
    first = [lr_factor(step, warmup, end, decay) for step in range(end)]  # the run to `end` ...
    resumed = [lr_factor(step, warmup, total, decay) for step in range(end, total)]  # ... resumed
    assert one_run == first + resumed
    assert max(one_run[end - 1], one_run[-1]) <= 1.0 / decay + 1e-12  # both cool-downs end


def test_cooldowns_are_checked_against_the_run(data: Path, tmp_path: Path) -> None:
    config = _pretrain_config(data, tmp_path / "ok", steps=10, decay_steps=2, cooldowns=("4", 7))
    assert config.cooldowns == (4, 7)  # flags give text, config files integers
    for bad, match in ((("x",), "step numbers"), ((1,), r"\[2, 8\]"), ((5, 6), r"\[7, 8\]"), ((9,), "8")):
        with pytest.raises(ArgumentValueError, match=match):
            _pretrain_config(data, tmp_path / "bad", steps=10, decay_steps=2, cooldowns=bad)
    with pytest.raises(ArgumentValueError, match="decay_steps > 0"):
        _pretrain_config(data, tmp_path / "bad", steps=10, cooldowns=(4,))


def test_pretraining_logs_the_cooled_down_learning_rate(data: Path, tmp_path: Path) -> None:
    pretrain(_pretrain_config(data, tmp_path / "run", steps=6, decay_steps=3, batch_size=2))
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    lrs = [json.loads(line)["lr"] for line in lines]
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 1e-3, 2e-3 / 3, 1e-3 / 3])
    with pytest.raises(ArgumentValueError, match="decay_steps"):
        _pretrain_config(data, tmp_path / "bad", steps=6, decay_steps=7)


@pytest.mark.slow
def test_a_resumed_pretraining_run_continues_with_the_same_steps_and_losses(
    data: Path, tmp_path: Path
) -> None:
    pretrain(_pretrain_config(data, tmp_path / "straight", steps=6, checkpoint_every=3, batch_size=2))
    pretrain(_pretrain_config(data, tmp_path / "resumed", steps=3, checkpoint_every=3, batch_size=2))
    pretrain(
        _pretrain_config(data, tmp_path / "resumed", steps=6, checkpoint_every=3, batch_size=2, resume=True)
    )
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "straight")
    a = StableAudioModel.from_pretrained(tmp_path / "straight" / "checkpoint", device="cpu")
    b = StableAudioModel.from_pretrained(tmp_path / "resumed" / "checkpoint", device="cpu")
    args = {"prompt": "tone", "duration": 0.5, "steps": 2, "seed": 1, "progress": False}
    assert torch.equal(a.generate(**args), b.generate(**args))


@pytest.mark.slow
def test_one_run_with_an_early_cooldown_is_the_resumed_run(data: Path, tmp_path: Path) -> None:
    """An early cooldown in one command is the run stopped there and resumed (how an earlier demo
    stage 1 was run: 3500 steps, then resumed to 5500)."""
    # The first of the two runs also writes samples at its end: they must not touch the run's streams.
    options = {"checkpoint_every": 3, "batch_size": 2, "decay_steps": 2, "sample_prompts": ("tone",)}
    pretrain(_pretrain_config(data, tmp_path / "one", steps=6, cooldowns=(3,), **options))
    pretrain(_pretrain_config(data, tmp_path / "two", steps=3, **options))
    pretrain(_pretrain_config(data, tmp_path / "two", steps=6, resume=True, **options))
    logs = [(tmp_path / run / "metrics.jsonl").read_text().splitlines() for run in ("one", "two")]
    one, two = ([(e["step"], e["loss"], e["lr"]) for e in map(json.loads, log)] for log in logs)
    assert one == two
    assert [lr for *_, lr in one] == pytest.approx([1e-3, 1e-3, 1e-3 / 2, 1e-3, 1e-3, 1e-3 / 2])
    a = StableAudioModel.from_pretrained(tmp_path / "one" / "checkpoint", device="cpu")
    b = StableAudioModel.from_pretrained(tmp_path / "two" / "checkpoint", device="cpu")
    args = {"prompt": "tone", "duration": 0.5, "steps": 2, "seed": 1, "progress": False}
    assert torch.equal(a.generate(**args), b.generate(**args))


def test_the_cli_reads_a_toml_file_and_flags_override_it(data: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "pretrain.toml"
    config.write_text(
        f'[pretrain]\nbase = "{checkpoint_dir("A")}"\ndata = "{data}"\noutput = "{tmp_path / "run"}"\n'
        'steps = 50\nbatch_size = 2\nduration = 0.5\ndevice = "cpu"\nprogress = false\n'
    )
    rc = train_app.main(["pretrain", "--config", str(config), "--steps", "2", "--checkpoint-every", "1"])
    assert rc == 0, capsys.readouterr().err
    assert [s for s, _ in _losses(tmp_path / "run")] == [1, 2]
    assert capsys.readouterr().out.strip().endswith("checkpoint")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('steps = "many"', "steps must be int"),
        ("colour = 3", "unknown option\\(s\\) colour"),
        ("steps = [", "is not valid TOML"),
    ],
)
def test_bad_config_files_are_one_line_exit_2(
    data: Path, tmp_path: Path, capsys, text: str, message: str
) -> None:
    import re

    config = tmp_path / "bad.toml"
    config.write_text(f'base = "{checkpoint_dir("A")}"\ndata = "{data}"\n{text}\n')
    rc = train_app.main(["pretrain", "--config", str(config)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and re.search(message, err), err


def test_missing_required_options_are_named(capsys) -> None:
    assert train_app.main(["pretrain", "--steps", "3"]) == 2
    assert "missing required option(s): --base, --data" in capsys.readouterr().err


@pytest.mark.slow
def test_the_distilled_student_lands_nearer_the_teachers_ode_in_8_steps(data: Path, tmp_path: Path) -> None:
    """Teacher: fixture B (rectified_flow, random weights, so its ODE is far from straight). On
    held-out prompts, seeds and durations, the student's 8 Euler steps without CFG end nearer the
    teacher's 50-step result than the teacher's own 8 steps."""
    teacher_dir = checkpoint_dir("B")
    cfg = _distill_config(
        data,
        tmp_path / "run",
        teacher=str(teacher_dir),
        teacher_steps=50,
        trajectories=24,
        duration=1.0,
        steps=120,
        batch_size=4,
        ema_decay=0.0,
        checkpoint_every=60,
        sample_prompts=("a 220 hertz tone",),
    )
    student_dir = distill(cfg)
    assert len(list((tmp_path / "run").glob("trajectories-*.safetensors"))) == 1
    assert (tmp_path / "run" / "samples" / "step000120_0.wav").is_file()
    losses = [loss for _, loss in _losses(tmp_path / "run")]
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    teacher = StableAudioModel.from_pretrained(teacher_dir, device="cpu")
    student = StableAudioModel.from_pretrained(student_dir, device="cpu")
    prompts = ["a 330 hertz tone", "a 110 hertz tone", "a 440 hertz tone", "a 220 hertz tone"]
    held_out = teacher_trajectories(teacher, prompts, [1.0, 0.7, 1.0, 1.2], 50, 1.0, seed=10_000)
    teacher_gap, student_gap = ode_gap(teacher, held_out, 8), ode_gap(student, held_out, 8)
    assert student_gap < teacher_gap, (student_gap, teacher_gap)


@pytest.mark.slow
def test_distillation_reuses_its_cached_trajectories_and_resumes(data: Path, tmp_path: Path) -> None:
    distill(_distill_config(data, tmp_path / "run", steps=2))
    cache = next((tmp_path / "run").glob("trajectories-*.safetensors"))
    stamp = cache.stat().st_mtime_ns
    distill(_distill_config(data, tmp_path / "run", steps=4, resume=True))
    assert cache.stat().st_mtime_ns == stamp
    distill(_distill_config(data, tmp_path / "straight", steps=4))
    assert _losses(tmp_path / "run") == _losses(tmp_path / "straight")


@pytest.mark.slow
def test_a_teacher_retrained_in_place_gets_new_trajectories(data: Path, tmp_path: Path) -> None:
    teacher = tmp_path / "teacher"
    shutil.copytree(checkpoint_dir("B"), teacher)
    options = {"teacher": str(teacher), "steps": 1, "teacher_steps": 2, "trajectories": 2}
    distill(_distill_config(data, tmp_path / "run", **options))
    weights = load_file(str(teacher / "model.safetensors"))
    save_file(
        {k: v * 1.01 if v.is_floating_point() else v for k, v in weights.items()},
        str(teacher / "model.safetensors"),
    )
    distill(_distill_config(data, tmp_path / "run", **options))
    caches = sorted((tmp_path / "run").glob("trajectories-*.safetensors"))
    assert len(caches) == 2
    first, second = (load_file(str(c)) for c in caches)
    assert any(not torch.equal(first[k], second[k]) for k in first)


def _distill_config(data: Path, out: Path, **overrides) -> DistillConfig:
    options = {
        "teacher": str(checkpoint_dir("B")),
        "data": str(data),
        "output": str(out),
        "teacher_steps": 4,
        "trajectories": 4,
        "duration": 0.5,
        "steps": 4,
        "batch_size": 2,
        "lr": 1e-3,
        "seed": 0,
        "checkpoint_every": 2,
        "device": "cpu",
        "progress": False,
    }
    return DistillConfig(**(options | overrides))


def _post_config(data: Path, out: Path, **overrides) -> PostTrainConfig:
    options = {
        "model": str(checkpoint_dir("B")),
        "data": str(data),
        "output": str(out),
        "steps": 30,
        "batch_size": 4,
        "duration": 1.0,
        "lr": 1e-4,
        "lr_discriminator": 3e-3,
        "seed": 0,
        "checkpoint_every": 15,
        "device": "cpu",
        "progress": False,
    }
    return PostTrainConfig(**(options | overrides))


def _metric(out: Path, key: str) -> list[float]:
    return [json.loads(line)[key] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_post_training_gives_a_pingpong_rf_denoiser_and_the_discriminator_learns(
    data: Path, tmp_path: Path
) -> None:
    folder = post_train(
        _post_config(data, tmp_path / "run", sample_prompts=("a 220 hertz tone",), sample_every=20)
    )
    samples = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert samples == ["step000020_0.wav", "step000030_0.wav"]
    loss_d = _metric(tmp_path / "run", "loss_d")
    assert len(loss_d) == 30 and sum(loss_d[-5:]) < sum(loss_d[:5])
    model = StableAudioModel.from_pretrained(folder, device="cpu")
    assert model.config.diffusion.objective == "rf_denoiser"
    audio = model.generate("a 220 hertz tone", duration=1.0, steps=8, seed=0, progress=False)
    assert model.last_record.sampler == "pingpong" and model.last_record.cfg_scale == 1.0
    assert audio.shape == (1, 2, model.sample_rate) and torch.isfinite(audio).all()


@pytest.mark.slow
def test_a_resumed_post_training_run_matches_an_uninterrupted_one(data: Path, tmp_path: Path) -> None:
    post_train(_post_config(data, tmp_path / "straight", steps=4, checkpoint_every=2, batch_size=2))
    post_train(_post_config(data, tmp_path / "resumed", steps=2, checkpoint_every=2, batch_size=2))
    post_train(
        _post_config(data, tmp_path / "resumed", steps=4, checkpoint_every=2, batch_size=2, resume=True)
    )
    for key in ("loss_d", "loss_g"):
        assert _metric(tmp_path / "resumed", key) == _metric(tmp_path / "straight", key)


@pytest.mark.slow
def test_pretraining_under_torchrun_with_two_cpu_processes(data: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "stable_audio_3.apps.train",
        "pretrain",
        "--base",
        str(checkpoint_dir("A")),
        "--data",
        str(data),
        "--output",
        str(tmp_path / "run"),
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--duration",
        "0.5",
        "--device",
        "cpu",
        "--no-progress",
        "--checkpoint-every",
        "3",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [s for s, _ in _losses(tmp_path / "run")] == [1, 2, 3]  # rank 0 logs, once per step
    model = StableAudioModel.from_pretrained(tmp_path / "run" / "checkpoint", device="cpu")
    assert torch.isfinite(model.generate("tone", duration=0.5, steps=2, seed=0, progress=False)).all()


def _autoencoder_json(tmp_path: Path, **changes) -> Path:
    """A standalone autoencoder config: fixture A's SAME section, optionally reshaped."""
    raw = json.loads((checkpoint_dir("A") / "model_config.json").read_text())
    section = raw["model"]["pretransform"]["config"]
    rate = changes.pop("sample_rate", raw["sample_rate"])
    if changes:  # another patch size, stride and latent width, consistently across the sections
        patch, stride, latent = changes["patch_size"], changes["stride"], changes["latent_dim"]
        section["pretransform"]["config"]["patch_size"] = patch
        for side, key in (("encoder", "in_channels"), ("decoder", "out_channels")):
            section[side]["config"].update({key: 2 * patch, "strides": [stride], "latent_dim": latent})
        section["bottleneck"]["config"]["dim"] = latent
        section.update(latent_dim=latent, downsampling_ratio=patch * stride)
    path = tmp_path / "autoencoder.json"
    path.write_text(json.dumps({"sample_rate": rate, "model": section}))
    return path


def _ae_config(tmp_path: Path, data: Path, config: Path, **overrides) -> AutoencoderTrainConfig:
    options = {
        "base": str(config),
        "data": str(data),
        "output": str(tmp_path / "run"),
        "steps": 20,
        "batch_size": 4,
        "duration": 0.5,
        "lr": 2e-3,
        "seed": 0,
        "checkpoint_every": 10,
        "device": "cpu",
        "progress": False,
    }
    return AutoencoderTrainConfig(**(options | overrides))


@pytest.mark.slow
@pytest.mark.parametrize(
    "shape",
    [{}, {"sample_rate": 8000, "patch_size": 8, "stride": 8, "latent_dim": 4}],
    ids=["fixture-shape", "8kHz-patch8-stride8-4ch"],
)
def test_autoencoder_training_lowers_the_reconstruction_loss(data: Path, tmp_path: Path, shape: dict) -> None:
    """Measured on fixed crops, before (the run's seeded initialisation) and after 20 steps: the
    per-step losses are of random crops, too noisy to compare at this length on every CPU."""
    from stable_audio_3 import AutoencoderModel
    from stable_audio_3.training.autoencoder_trainer import (
        _build,
        crop_samples,
        load_waves,
        reconstruction_loss,
        standalone_config,
    )

    config = _autoencoder_json(tmp_path, **shape)
    folder = train_autoencoder(_ae_config(tmp_path, data, config))
    assert len(_metric(tmp_path / "run", "stft")) == 20
    model = AutoencoderModel.from_pretrained(folder, device="cpu")
    rate = shape.get("sample_rate", SR)
    assert model.sample_rate == rate
    assert model.autoencoder.config.latent_dim == shape.get("latent_dim", 8)
    assert float(model.autoencoder.bottleneck.running_std) != 1.0  # measured on the data
    waves = load_waves(find_clips(data, captions=False), rate, 2)
    n = crop_samples(model.autoencoder, 0.5, rate)
    initial = _build(standalone_config(config)[0], None, "cpu", seed=0)
    before = reconstruction_loss(initial, waves, n, rate)
    after = reconstruction_loss(model.autoencoder, waves, n, rate)
    assert after < 0.95 * before
    z = model.encode(waves[0], sample_rate=rate)
    assert torch.isfinite(model.decode(z)).all()


@pytest.mark.slow
def test_adversarial_autoencoder_training_runs_and_resumes_exactly(data: Path, tmp_path: Path) -> None:
    config = _autoencoder_json(tmp_path)
    common = {"adversarial": True, "checkpoint_every": 2, "batch_size": 2}
    train_autoencoder(_ae_config(tmp_path / "a", data, config, steps=4, **common))
    train_autoencoder(_ae_config(tmp_path / "b", data, config, steps=2, **common))
    train_autoencoder(_ae_config(tmp_path / "b", data, config, steps=4, resume=True, **common))
    for key in ("stft", "loss_d", "feature_matching"):
        assert _metric(tmp_path / "b" / "run", key) == _metric(tmp_path / "a" / "run", key)


@pytest.mark.slow
def test_pretraining_can_train_the_text_encoder_too(data: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    folder = pretrain(_pretrain_config(data, tmp_path / "run", steps=6, train_text_encoder=True, lr=1e-3))
    before = load_file(str(checkpoint_dir("A") / "text_encoder" / "model.safetensors"))
    after = load_file(str(folder / "text_encoder" / "model.safetensors"))
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "no text-encoder weight was trained"
    model = StableAudioModel.from_pretrained(folder, device="cpu")
    assert torch.isfinite(
        model.generate("a 110 hertz tone", duration=0.5, steps=2, seed=0, progress=False)
    ).all()
    # loaded for inference, the encoder is frozen again (encodings cached, no gradients)
    prompt = model.networks.conditioners[model.config.prompt.id]
    name = next(iter(prompt.encoder.weights))
    assert not prompt.trains_encoder and prompt.encoder.weights[name].requires_grad is False


def _torchrun(stage: str, out: Path, *flags: str) -> None:
    """A stage under `torchrun` with two CPU processes (gloo)."""
    import subprocess
    import sys

    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "stable_audio_3.apps.train", stage, "--output", str(out), "--batch-size", "2",
        "--duration", "0.5", "--device", "cpu", "--no-progress", "--checkpoint-every", "2", *flags,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def _torchrun_pretrain(data: Path, out: Path, *flags: str) -> None:
    _torchrun("pretrain", out, "--base", str(checkpoint_dir("A")), "--data", str(data), *flags)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


@pytest.mark.slow
def test_fsdp_pretraining_matches_ddp_and_resumes_from_its_shards(data: Path, tmp_path: Path) -> None:
    """Two CPU processes: FSDP (the DiT sharded in two) takes exactly the steps DDP takes (with two
    ranks both average a gradient as (a + b) / 2, exact in floating point whether the halving comes
    before or after the sum), and a run resumed from each rank's saved shards continues exactly as
    the uninterrupted one."""
    _torchrun_pretrain(data, tmp_path / "ddp", "--steps", "4")
    _torchrun_pretrain(data, tmp_path / "fsdp", "--steps", "4", "--sharding", "fsdp")
    ddp, fsdp = _losses(tmp_path / "ddp"), _losses(tmp_path / "fsdp")
    assert [s for s, _ in fsdp] == [1, 2, 3, 4]
    assert fsdp == ddp
    a, b = _weights(tmp_path / "ddp" / "checkpoint"), _weights(tmp_path / "fsdp" / "checkpoint")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(b[key], a[key]), key
    assert sorted(p.name for p in (tmp_path / "fsdp").glob("train_state*")) == [
        "train_state.rank0.pt", "train_state.rank1.pt",
    ]  # fmt: skip
    _torchrun_pretrain(data, tmp_path / "resumed", "--steps", "2", "--sharding", "fsdp")
    _torchrun_pretrain(data, tmp_path / "resumed", "--steps", "4", "--sharding", "fsdp", "--resume")
    assert _losses(tmp_path / "resumed") == fsdp
    resumed = _weights(tmp_path / "resumed" / "checkpoint")
    for key in b:
        assert torch.equal(resumed[key], b[key]), key
    model = StableAudioModel.from_pretrained(tmp_path / "fsdp" / "checkpoint", device="cpu")
    assert torch.isfinite(model.generate("tone", duration=0.5, steps=2, seed=0, progress=False)).all()


def test_an_unknown_sharding_is_refused_by_name(tmp_path: Path) -> None:
    from stable_audio_3.errors import ArgumentValueError

    with pytest.raises(ArgumentValueError, match="sharding must be one of \\('ddp', 'fsdp'\\), got 'zero3'"):
        _pretrain_config(tmp_path, tmp_path / "out", sharding="zero3")


def _assert_same_checkpoints(a: Path, b: Path) -> None:
    first, second = _weights(a / "checkpoint"), _weights(b / "checkpoint")
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


@pytest.mark.slow
def test_fsdp_distillation_and_post_training_take_the_data_parallel_steps(data: Path, tmp_path: Path) -> None:
    """Distillation (DDP vs FSDP) and post-training (gradients averaged by hand vs FSDP, the
    generator's and the discriminator trunk's DiTs sharded) give identical losses and weights with
    two CPU processes; FSDP resumes post-training from its shards exactly."""
    teacher = ["--teacher", str(checkpoint_dir("B")), "--data", str(data), "--teacher-steps", "3"]
    teacher += ["--trajectories", "4", "--steps", "3"]
    _torchrun("distill", tmp_path / "distill_ddp", *teacher)
    _torchrun("distill", tmp_path / "distill_fsdp", *teacher, "--sharding", "fsdp")
    assert _losses(tmp_path / "distill_fsdp") == _losses(tmp_path / "distill_ddp")
    _assert_same_checkpoints(tmp_path / "distill_ddp", tmp_path / "distill_fsdp")
    model = ["--model", str(checkpoint_dir("B")), "--data", str(data), "--lr-discriminator", "3e-3"]
    _torchrun("post-train", tmp_path / "post_dp", *model, "--steps", "4")
    _torchrun("post-train", tmp_path / "post_fsdp", *model, "--steps", "4", "--sharding", "fsdp")
    for key in ("loss_d", "loss_g"):
        assert _metric(tmp_path / "post_fsdp", key) == _metric(tmp_path / "post_dp", key)
    _assert_same_checkpoints(tmp_path / "post_dp", tmp_path / "post_fsdp")
    _torchrun("post-train", tmp_path / "post_resumed", *model, "--steps", "2", "--sharding", "fsdp")
    resumed = ["--steps", "4", "--sharding", "fsdp", "--resume"]
    _torchrun("post-train", tmp_path / "post_resumed", *model, *resumed)
    assert _metric(tmp_path / "post_resumed", "loss_g") == _metric(tmp_path / "post_fsdp", "loss_g")
    _assert_same_checkpoints(tmp_path / "post_resumed", tmp_path / "post_fsdp")
