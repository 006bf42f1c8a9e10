"""Gradient clipping (`max_grad_norm`): one huge batch loss moves the weights by a bounded step, and
the norm every rank measures is the global one, whether the gradients are whole or FSDP shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_stages import _post_config, _pretrain_config, _torchrun_pretrain
from test_training import _write_clips

from stable_audio_3.errors import ArgumentValueError
from stable_audio_3.training import post_train, pretrain
from stable_audio_3.training.sharding import clip_grad_norm


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_clips(tmp_path_factory.mktemp("clip_data"), 6000, n=4)


def _params(shapes: list[tuple[int, ...]], scale: float, seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * scale
    return params


@settings(deadline=None, max_examples=40)
@given(
    st.lists(st.tuples(st.integers(1, 5), st.integers(1, 7)), min_size=1, max_size=4),
    st.floats(1e-3, 1e3),
    st.floats(1e-2, 1e2),
    st.integers(0, 2**16),
)
def test_clipping_matches_torch_and_bounds_the_norm(shapes, scale: float, max_norm: float, seed: int) -> None:
    ours, theirs = _params(shapes, scale, seed), _params(shapes, scale, seed)
    norm = clip_grad_norm(ours, max_norm)
    expected = float(torch.nn.utils.clip_grad_norm_(theirs, max_norm))
    assert norm == pytest.approx(expected, rel=1e-5)
    after = torch.cat([p.grad.flatten() for p in ours]).norm()
    assert float(after) <= max_norm * (1 + 1e-5)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    if norm <= max_norm:  # small gradients are left exactly as they were
        fresh = _params(shapes, scale, seed)
        assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours, fresh, strict=True))


def test_parameters_without_gradients_are_skipped() -> None:
    p, q = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    q.grad = torch.tensor([3.0, 4.0])
    assert clip_grad_norm([p, q], 1.0) == pytest.approx(5.0)
    assert p.grad is None
    torch.testing.assert_close(q.grad, torch.tensor([0.6, 0.8]), rtol=1e-5, atol=0)
    assert clip_grad_norm([p], 1.0) == 0.0


def test_pretraining_clips_and_logs_the_gradient_norm(data: Path, tmp_path: Path) -> None:
    pretrain(_pretrain_config(data, tmp_path / "run", steps=3, batch_size=2, max_grad_norm=1e-3))
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    norms = [json.loads(line)["grad_norm"] for line in lines]
    assert len(norms) == 3 and all(n > 1e-3 for n in norms)  # so every step was clipped
    plain = tmp_path / "plain"
    pretrain(_pretrain_config(data, plain, steps=1, batch_size=2))
    assert "grad_norm" not in json.loads((plain / "metrics.jsonl").read_text().splitlines()[0])
    with pytest.raises(ArgumentValueError, match="max_grad_norm"):
        _pretrain_config(data, tmp_path / "bad", max_grad_norm=-1.0)


def test_post_training_clips_the_generator_and_logs_its_norm(data: Path, tmp_path: Path) -> None:
    post_train(_post_config(data, tmp_path / "run", steps=2, batch_size=2, max_grad_norm=1e-4))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["grad_norm"] > 1e-4 and "loss_d" in r for r in rows)


@pytest.mark.slow
def test_fsdp_clipping_measures_the_same_global_norm_as_ddp(data: Path, tmp_path: Path) -> None:
    """Under FSDP each rank holds part of the gradients: the clipped step must still use the norm of
    all of them, so losses and logged norms follow DDP's (up to the order of the float sums)."""
    flags = ("--steps", "3", "--max-grad-norm", "1e-3")
    _torchrun_pretrain(data, tmp_path / "ddp", *flags)
    _torchrun_pretrain(data, tmp_path / "fsdp", *flags, "--sharding", "fsdp")

    def logged(out: Path) -> list[dict]:
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    ddp, fsdp = logged(tmp_path / "ddp"), logged(tmp_path / "fsdp")
    assert [e["step"] for e in fsdp] == [1, 2, 3]
    for a, b in zip(ddp, fsdp, strict=True):
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
