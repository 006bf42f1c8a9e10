"""Prometheus metrics of one server (its own registry, no global state): queue depth, jobs by
state, sampler step and request latencies, generate() runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from stable_audio_3.apps.server.store import STATES

if TYPE_CHECKING:
    from stable_audio_3.apps.server.scheduler import Scheduler

__all__ = ["Metrics"]


class Metrics:
    def __init__(self, scheduler: Scheduler) -> None:
        self.registry = CollectorRegistry()
        self.scheduler = scheduler
        self.queue_depth = Gauge("stable_audio_queue_depth", "jobs waiting to run", registry=self.registry)
        self.jobs = Gauge(
            "stable_audio_jobs", "jobs known to the server by state", ["state"], registry=self.registry
        )
        self.runs = Gauge(
            "stable_audio_generate_runs",
            "generate() calls made (merged jobs count once)",
            registry=self.registry,
        )
        self.step_seconds = Histogram(
            "stable_audio_step_seconds",
            "wall time of one sampler step",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.request_seconds = Histogram(
            "stable_audio_request_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.requests = Counter(
            "stable_audio_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        scheduler.on_step = self.step_seconds.observe

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.request_seconds.labels(*labels).observe(seconds)
        self.requests.labels(*labels).inc()

    def render(self) -> bytes:
        counts = self.scheduler.counts()
        for state in STATES:
            self.jobs.labels(state).set(counts.get(state, 0))
        self.queue_depth.set(counts.get("queued", 0))
        self.runs.set(self.scheduler.runs)
        return generate_latest(self.registry)
