"""Stage 3's discriminator warm-up: steps that train only the discriminator's head before the
generator's steps, so the generator does not start by following a random head."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_stages import _post_config, data  # noqa: F401 (the fixture)

from stable_audio_3.training import PostTrainConfig, post_train
from stable_audio_3.training.dataset import sample_batch
from stable_audio_3.training.objective import training_shift
from stable_audio_3.training.post_train import _setup, _step


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_negative_warmup_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="discriminator_warmup"):
        PostTrainConfig(model="m", data="d", discriminator_warmup=-1)


def test_a_warmup_step_moves_the_discriminator_head_and_not_the_generator(
    data: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    run = _setup(_post_config(data, tmp_path / "run", batch_size=2))
    model = run.model
    generator = [p.detach().clone() for p in run.generator.params]
    head = [p.detach().clone() for p in run.disc.head.parameters()]
    ratio = model.config.pretransform.autoencoder.downsampling_ratio
    frames, rate, rng = model.sample_rate // ratio, (model.sample_rate, ratio), run.generator.rng
    batch = sample_batch(run.clips, run.latents, 2, frames, rate, rng, model.device, run.silence)
    runs = (run.generator, run.discriminator)
    values = _step(model, run.disc, batch, runs, training_shift(model), (1.0, 0.0), train_generator=False)
    assert set(values) == {"loss_d", "contrastive"}
    assert (run.generator.step, run.discriminator.step) == (0, 1)
    assert all(torch.equal(a, p) for a, p in zip(generator, run.generator.params, strict=True))
    assert any(not torch.equal(a, p) for a, p in zip(head, run.disc.head.parameters(), strict=True))


@pytest.mark.slow
def test_a_warmed_up_run_logs_every_step_and_resumes_across_the_warmup(
    data: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    options = {"batch_size": 2, "checkpoint_every": 1, "discriminator_warmup": 2}
    post_train(_post_config(data, tmp_path / "straight", steps=2, **options))
    lines = _lines(tmp_path / "straight")
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    assert ["loss_g" in line for line in lines] == [False, False, True, True]
    post_train(_post_config(data, tmp_path / "resumed", steps=1, **options))
    post_train(_post_config(data, tmp_path / "resumed", steps=2, resume=True, **options))
    resumed = _lines(tmp_path / "resumed")
    for key in ("step", "loss_d", "contrastive", "loss_g"):
        assert [line.get(key) for line in resumed] == [line.get(key) for line in lines]
