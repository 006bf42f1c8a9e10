"""One model, one worker thread, a bounded queue. Queued jobs that can share a sampling run (same
controls, no audio inputs) are merged into one `generate()` call of up to `max_batch` items, each
item with its own prompt, duration and seed (per-item seeds make its audio what it would be alone).

Cancelling a queued job removes it; cancelling a running job stops the run through the engine's
cancel hook once every job in it is cancelled (the others in a merged run still finish).
"""

from __future__ import annotations

import collections
import inspect
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from stable_audio_3 import GenerationCancelled, StableAudioError, StableAudioModel
from stable_audio_3.apps.server.schema import JobSpec, merged_arguments
from stable_audio_3.apps.server.store import Job, JobStore

__all__ = ["Scheduler", "QueueFull", "STOPPED_ERROR"]

STOPPED_ERROR = "the server was stopped while this job was running; it was not re-run"
DEFAULT_STEPS = inspect.signature(StableAudioModel.generate).parameters["steps"].default


class QueueFull(RuntimeError):
    """The queue holds `max_queue` jobs; the client should retry later (429)."""


class Scheduler:
    """Accepts jobs, runs them in order (merging compatible ones) and keeps their state."""

    def __init__(
        self,
        model: StableAudioModel,
        store: JobStore,
        *,
        max_queue: int,
        max_batch: int,
        lora_names: list[str],
        retention: Callable[[dict[str, Job]], list[str]] | None = None,
        on_step: Callable[[float], None] | None = None,
    ) -> None:
        self.model, self.store = model, store
        self.max_queue, self.max_batch, self.lora_names = max_queue, max_batch, lora_names
        self.retention, self.on_step = retention, on_step
        self.jobs: dict[str, Job] = {}
        self.specs: dict[str, JobSpec] = {}
        self.queue: collections.deque[str] = collections.deque()
        self.changed = threading.Condition()
        self.runs = 0  # generate() calls made (a merged batch counts once)
        self._stop = False
        self._thread: threading.Thread | None = None
        for job in store.load():
            self.jobs[job.id] = job
            if job.state == "queued":
                self.specs[job.id] = JobSpec.from_json(job.spec, store.inputs(job))
                self.queue.append(job.id)
        self._apply_retention()

    # ---------------------------------------------------------------- client side
    def submit(self, spec: JobSpec) -> Job:
        with self.changed:
            if len(self.queue) >= self.max_queue:
                raise QueueFull(f"the queue is full ({self.max_queue} jobs)")
            job = Job(uuid.uuid4().hex, spec.to_json(), len(spec.items))
            job.steps = int(spec.shared.get("steps", DEFAULT_STEPS))  # "step 0 of n" while queued
            self.store.insert(job, spec.audio)
            self.jobs[job.id], self.specs[job.id] = job, spec
            self.queue.append(job.id)
            self.changed.notify_all()
        return job

    def cancel(self, job_id: str) -> Job:
        with self.changed:
            job = self.jobs[job_id]
            if job.state == "queued":
                self.queue.remove(job_id)
                self.specs.pop(job_id, None)
                self._finish(job, "cancelled")
            elif job.state == "running":
                job.cancel_requested.set()
            return job

    def position(self, job: Job) -> int | None:
        """0 = next to run; None when not queued."""
        with self.changed:
            return self.queue.index(job.id) if job.state == "queued" else None

    def counts(self) -> dict[str, int]:
        with self.changed:
            return dict(collections.Counter(j.state for j in self.jobs.values()))

    # ---------------------------------------------------------------- worker side
    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="stable-audio-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker: a running generation stops at its next step and its jobs are reported
        failed (the queued ones stay queued on disk for the next start)."""
        with self.changed:
            self._stop = True
            self.changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _work(self) -> None:
        while True:
            with self.changed:
                while not self.queue and not self._stop:
                    self.changed.wait()
                if self._stop:
                    return
                batch = self._take_batch()
                for job in batch:
                    job.state, job.started, job.steps = "running", time.time(), self._steps(job)
                    self.store.update(job)
                self.changed.notify_all()
            self._run(batch)

    def _take_batch(self) -> list[Job]:
        """The first queued job and the queued jobs after it that can join its run."""
        first = self.queue.popleft()
        batch, key = [self.jobs[first]], self.specs[first].batch_key()
        items = batch[0].items
        if key is not None:
            for job_id in list(self.queue):
                spec = self.specs[job_id]
                if spec.batch_key() == key and items + len(spec.items) <= self.max_batch:
                    self.queue.remove(job_id)
                    batch.append(self.jobs[job_id])
                    items += len(spec.items)
        return batch

    def _steps(self, job: Job) -> int:
        return int(self.specs[job.id].shared.get("steps", DEFAULT_STEPS))

    def _run(self, batch: list[Job]) -> None:
        specs = [self.specs.pop(j.id) for j in batch]
        last = [time.perf_counter()]

        def on_step(info: Any) -> None:
            now = time.perf_counter()
            if self.on_step is not None:
                self.on_step(now - last[0])
            last[0] = now
            with self.changed:
                for job in batch:
                    job.step, job.steps = info.step + 1, info.steps
                self.changed.notify_all()

        try:
            audio = self.model.generate(
                **merged_arguments(specs),
                lora_strength=self._strengths(specs[0]),
                truncate_output_to_duration=False,
                callback=on_step,
                cancel=lambda: self._stop or all(j.cancel_requested.is_set() for j in batch),
                progress=False,
            )
            self.runs += 1
        except GenerationCancelled:
            for job in batch:
                if job.cancel_requested.is_set():
                    self._finish(job, "cancelled")
                else:
                    self._finish(job, "failed", error=STOPPED_ERROR)
            return
        except StableAudioError as err:
            for job in batch:
                self._finish(job, "failed", error=str(err))
            return
        except Exception as err:  # the server keeps serving whatever one job did
            for job in batch:
                self._finish(job, "failed", error=f"{type(err).__name__}: {err}")
            return
        self._store_results(batch, specs, audio.cpu().numpy())

    def _store_results(self, batch: list[Job], specs: list[JobSpec], audio: np.ndarray) -> None:
        rate = self.model.sample_rate
        record = self.model.last_record
        start = 0
        for job, spec in zip(batch, specs, strict=True):
            n = len(spec.items)
            waves = [
                audio[start + k, :, : min(audio.shape[-1], int(item.duration * rate))]
                for k, item in enumerate(spec.items)
            ]
            if job.cancel_requested.is_set():
                self._finish(job, "cancelled")
            else:
                self.store.write_results(job, waves, rate)
                item = record.for_items(start, start + n).to_dict()
                self._finish(job, "done", record={**item, "lora": spec.lora})
            start += n

    def _strengths(self, spec: JobSpec) -> list[float] | None:
        if not self.lora_names:
            return None
        current = self.model.lora_strengths()
        return [float(spec.lora.get(name, s)) for name, s in zip(self.lora_names, current, strict=True)]

    def _finish(self, job: Job, state: str, *, error: str | None = None, record: dict | None = None) -> None:
        with self.changed:
            job.state, job.finished, job.error, job.record = state, time.time(), error, record
            self.store.update(job)
            self._apply_retention()  # in the same step, so no client sees more than the limit
            self.changed.notify_all()

    def _apply_retention(self) -> None:
        if self.retention is None:
            return
        for job_id in self.retention(self.jobs):
            self.store.delete(job_id)
            del self.jobs[job_id]
