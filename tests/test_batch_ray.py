"""`stable-audio batch --ray`: a local Ray instance with two 1-CPU actors over the tiny model. Every
item is written exactly once (one audio file and one sidecar, nothing staged left behind), equal to
the item generated on this machine, and killing an actor in the middle of a run loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import checkpoint_dir

from stable_audio_3.apps.entry import main

pytest.importorskip("ray.data")
pytestmark = pytest.mark.slow

MODEL = str(checkpoint_dir("A"))
ATOL = 2e-4  # merged vs batch-1 matmuls (tests/test_item_seeds.py); both sides are 16-bit WAVs


def _jobs(path: Path, count: int, **fields) -> Path:
    lines = [
        {"prompt": f"item {i}", "seed": 100 + i, "steps": 3, "duration_padding": 0.2, **fields}
        for i in range(count)
    ]
    path.write_text("".join(json.dumps({"duration": 0.4, **line}) + "\n" for line in lines))
    return path


def _assert_each_item_once(out: Path, count: int) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    counts = (summary["items"], summary["written"], summary["failed"])
    assert summary["mode"] == "ray" and counts == (count, count, 0)
    names = [o["name"] for o in summary["outputs"]]
    assert sorted(names) == sorted(f"line{n:05d}" for n in range(1, count + 1))
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted([f"{n}.wav" for n in names] + [f"{n}.wav.json" for n in names] + ["summary.json"])
    return summary


def test_ray_actors_write_every_item_once_as_this_machine_would(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path / "jobs.jsonl", 6)
    flags = ["--model", MODEL, "--max-batch", "2"]
    assert (
        main(["batch", str(jobs), "--output-dir", str(tmp_path / "ray"), *flags, "--ray", "--workers", "2"])
        == 0
    )
    _assert_each_item_once(tmp_path / "ray", 6)
    assert main(["batch", str(jobs), "--output-dir", str(tmp_path / "here"), *flags]) == 0
    for n in range(1, 7):
        ray_audio, rate = sf.read(tmp_path / "ray" / f"line{n:05d}.wav", dtype="float32")
        here, _ = sf.read(tmp_path / "here" / f"line{n:05d}.wav", dtype="float32")
        np.testing.assert_allclose(ray_audio, here, atol=ATOL, rtol=0)
        record = json.loads((tmp_path / "ray" / f"line{n:05d}.wav.json").read_text())
        assert record["seed"] == 99 + n and record["batch"]["line"] == n
    # a rerun on Ray finds everything written
    assert main(["batch", str(jobs), "--output-dir", str(tmp_path / "ray"), *flags, "--ray"]) == 0
    assert json.loads((tmp_path / "ray" / "summary.json").read_text())["skipped"] == 6


def _actor_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if proc.name.isdigit() and cmdline.startswith("ray::MapWorker") and "GroupWorker" in cmdline:
            pids.append(int(proc.name))
    return pids


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_killing_an_actor_mid_run_loses_nothing(tmp_path: Path) -> None:
    count = 16
    jobs = _jobs(tmp_path / "jobs.jsonl", count, steps=40, duration=2.0)  # ~1 s an item on one core
    out = tmp_path / "out"
    argv = ["batch", str(jobs), "--output-dir", str(out), "--model", MODEL, "--max-batch", "1"]
    log_file = tmp_path / "log.txt"
    code = "import sys; from stable_audio_3.apps.entry import main; sys.exit(main(sys.argv[1:]))"
    with log_file.open("w") as log:
        run = subprocess.Popen(
            [sys.executable, "-c", code, *argv, "--ray", "--workers", "2"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RAY_ADDRESS": ""},
        )
    try:
        written = lambda: len(list(out.glob("*.wav.json")))  # noqa: E731
        _wait_for(lambda: written() >= 2, 240, "the first items")
        first = _wait_for(lambda: len(pids := _actor_pids()) == 2 and pids, 30, "both actors")
        before = written()
        os.kill(first[0], signal.SIGKILL)
        seen = set(first)
        while run.poll() is None:  # Ray restarts the lost actor to re-run its task
            seen.update(_actor_pids())
            time.sleep(0.1)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, log_file.read_text()
    assert before < count  # the kill came mid-run
    assert len(seen - set(first)) >= 1, "no actor was restarted"
    for output in _assert_each_item_once(out, count)["outputs"]:
        audio, rate = sf.read(out / f"{output['name']}.wav", dtype="float32")
        assert audio.shape[0] == 2 * rate and np.isfinite(audio).all() and np.abs(audio).max() > 0
