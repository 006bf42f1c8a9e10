"""The three stages and the export, run twice with the same seeds, give the same bytes: what lets the
demo model's recipe be checked by rerunning it (configs/demo/README.md)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from test_stages import _distill_config, _post_config, _pretrain_config
from test_training import _write_clips

from stable_audio_3.training import ExportConfig, distill, export_checkpoint, post_train, pretrain


def _chain(data: Path, out: Path, seed: int) -> Path:
    small = {"steps": 2, "batch_size": 2, "checkpoint_every": 2, "seed": seed}
    teacher = pretrain(_pretrain_config(data, out / "pretrain", **small))
    student = distill(
        _distill_config(data, out / "distill", teacher=str(teacher), teacher_steps=2, trajectories=2, **small)
    )
    final = post_train(_post_config(data, out / "post_train", model=str(student), **small))
    return export_checkpoint(ExportConfig(model=str(final), output=str(out / "export")))


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_the_recipe_run_twice_exports_the_same_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    data = _write_clips(tmp_path / "data", 6000, n=4)
    first = _digests(_chain(data, tmp_path / "first", seed=0))
    assert any(name.endswith("model.safetensors") for name in first)
    assert _digests(_chain(data, tmp_path / "again", seed=0)) == first
    other = _digests(_chain(data, tmp_path / "other", seed=1))
    assert other.keys() == first.keys()
    assert any(other[name] != first[name] for name in first if name.endswith(".safetensors"))
