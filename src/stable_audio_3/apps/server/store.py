"""Jobs on disk: their state in SQLite, their inputs and results as files under `--data-dir`, so a
restarted server still serves what it finished and reports what it was running as failed.

Layout: `jobs.sqlite3` and `jobs/<id>/` (`init_audio.wav`, `inpaint_audio.wav`, `item_<k>.wav`, float32
at the model's rate). Result files are written and renamed into place before their job is marked done.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Job", "JobStore", "TERMINAL", "STATES", "retention_policy"]

STATES = ("queued", "running", "done", "failed", "cancelled")
TERMINAL = frozenset({"done", "failed", "cancelled"})
RESTART_ERROR = "the server stopped while this job was running; it was not re-run"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, created REAL NOT NULL, started REAL, finished REAL,
    spec TEXT NOT NULL, items INTEGER NOT NULL, step INTEGER NOT NULL DEFAULT 0,
    steps INTEGER NOT NULL DEFAULT 0, record TEXT, error TEXT
)
"""
_COLUMNS = ("state", "started", "finished", "step", "steps", "record", "error")


@dataclass
class Job:
    """One accepted request. `spec` is the JSON form of its `JobSpec` (audio lives in files)."""

    id: str
    spec: dict[str, Any]
    items: int
    state: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    step: int = 0
    steps: int = 0
    record: dict[str, Any] | None = None
    error: str | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


class JobStore:
    """SQLite-backed job table and the job folders; safe to call from any thread."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def folder(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def insert(self, job: Job, audio: dict[str, tuple[np.ndarray, int]]) -> None:
        """Write the job's inputs, then its row (a row never points at missing inputs)."""
        folder = self.folder(job.id)
        folder.mkdir(parents=True, exist_ok=True)
        for name, (wave, rate) in audio.items():
            write_wave(folder / f"{name}.wav", wave, rate)
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, state, created, spec, items) VALUES (?, ?, ?, ?, ?)",
                (job.id, job.state, job.created, json.dumps(job.spec), job.items),
            )

    def update(self, job: Job) -> None:
        values = [getattr(job, c) for c in _COLUMNS]
        values[_COLUMNS.index("record")] = None if job.record is None else json.dumps(job.record)
        with self._lock:
            self._db.execute(
                f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in _COLUMNS)} WHERE id = ?", (*values, job.id)
            )

    def load(self) -> list[Job]:
        """Every stored job, oldest first; jobs left running by a previous process become failed."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state = 'failed', error = ?, finished = ? WHERE state = 'running'",
                (RESTART_ERROR, time.time()),
            )
            rows = self._db.execute(
                "SELECT id, spec, items, state, created, started, finished, step, steps, record, error "
                "FROM jobs ORDER BY created"
            ).fetchall()
        jobs = []
        for r in rows:
            record = None if r[9] is None else json.loads(r[9])
            jobs.append(Job(r[0], json.loads(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], record, r[10]))
        return jobs

    def inputs(self, job: Job) -> dict[str, tuple[np.ndarray, int]]:
        import soundfile as sf

        out = {}
        for path in sorted(self.folder(job.id).glob("*_audio.wav")):
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
            out[path.stem] = (np.ascontiguousarray(data.T), int(rate))
        return out

    def write_results(self, job: Job, waves: list[np.ndarray], rate: int) -> None:
        for k, wave in enumerate(waves):
            write_wave(self.folder(job.id) / f"item_{k}.wav", wave, rate)

    def result(self, job_id: str, item: int) -> Path:
        return self.folder(job_id) / f"item_{item}.wav"

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        shutil.rmtree(self.folder(job_id), ignore_errors=True)


def write_wave(path: Path, wave: np.ndarray, rate: int) -> None:
    """(channels, samples) float32 WAV, written beside and renamed into place."""
    import soundfile as sf

    partial = path.with_name(f".{path.name}.partial")
    sf.write(str(partial), np.asarray(wave, dtype=np.float32).T, rate, subtype="FLOAT", format="WAV")
    os.replace(partial, path)


def retention_policy(max_age_s: float | None, max_count: int | None) -> Callable[[dict[str, Job]], list[str]]:
    """Finished jobs to delete: older than `max_age_s`, or past the newest `max_count` finished ones."""

    def expired(jobs: dict[str, Job]) -> list[str]:
        done = sorted((j for j in jobs.values() if j.terminal), key=lambda j: j.finished or j.created)
        now = time.time()
        old = {j.id for j in done if max_age_s is not None and now - (j.finished or j.created) > max_age_s}
        if max_count is not None and len(done) > max_count:
            old |= {j.id for j in done[: len(done) - max_count]}
        return [j.id for j in done if j.id in old]

    return expired
