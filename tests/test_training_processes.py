"""Leaving the process group: a run that ends cleanly waits for its peers first (so none tears its
connections down under a peer's last collective); a run that failed leaves at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch.distributed as dist

from stable_audio_3.training import loop


@pytest.fixture
def barriers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A one-process gloo group standing in for a run's group, and the barriers it is asked for."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    calls: list[str] = []
    monkeypatch.setattr(dist, "barrier", lambda *args, **kwargs: calls.append("barrier"))
    yield calls
    if dist.is_initialized():
        dist.destroy_process_group()


def test_a_clean_run_meets_its_peers_before_leaving(barriers: list[str]) -> None:
    try:
        pass
    finally:
        loop.stop_processes(2)
    assert barriers == ["barrier"] and not dist.is_initialized()


def test_a_failed_run_leaves_without_waiting(barriers: list[str]) -> None:
    with pytest.raises(RuntimeError, match="step failed"):
        try:
            raise RuntimeError("step failed")
        finally:
            loop.stop_processes(2)
    assert barriers == [] and not dist.is_initialized()


def test_a_single_process_run_has_no_group_to_leave(barriers: list[str]) -> None:
    loop.stop_processes(1)
    assert barriers == [] and dist.is_initialized()
