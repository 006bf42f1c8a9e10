"""Batch items on a Ray cluster (`stable-audio batch --ray [ADDRESS]`): the same groups as on one
machine, mapped by Ray Data over an actor pool (one loaded model per GPU, or per N CPUs). Each actor
writes its items straight to the output folder or URI, so the folder must be one every node reaches
(a shared filesystem or `s3://...`). Reliability rests on two layers: an item whose generate() call
fails is retried alone by its actor (`--retries`), and a task whose actor dies is re-run by Ray on a
restarted actor (Ray Data's default for actor pools, without limit), which first skips the items the
lost actor had already written (their sidecars say so), so every item is written exactly once.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from stable_audio_3.apps.batch.jobs import Item
from stable_audio_3.apps.batch.local import Outcome, group_items, item_record_for, run_retrying
from stable_audio_3.apps.batch.outputs import Destination

__all__ = ["GroupWorker", "RayMissingError", "run_on_ray"]

LOST = "written by an earlier attempt whose worker was lost"


class RayMissingError(ValueError):
    """`--ray` without Ray installed."""

    is_usage_error = True


class GroupWorker:
    """One actor of the pool: a model loaded once, then one group of items per call."""

    def __init__(self, run: dict[str, Any], root: str, fmt: str, jobs_file: str, threads: int) -> None:
        import torch

        from stable_audio_3.apps.cli import load_model

        if threads > 0:
            torch.set_num_threads(threads)  # this process is the actor's own
        args = argparse.Namespace(**run)
        self.model = load_model(args, lambda line: None)
        self.dest = Destination(root, fmt)
        self.record_for = item_record_for(args, jobs_file)
        self.ceiling, self.retries = args.peak_ceiling_dbfs, args.retries

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        return {"outcomes": [json.dumps(self._run(json.loads(text))) for text in batch["items"]]}

    def _run(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        group = [Item(**row) for row in rows]
        done = [i for i in group if self.dest.finished(i, overwrite=True)]  # a retried task
        outcomes = [Outcome(i, "written", path=self.dest.path(i), note=LOST) for i in done]
        todo = [i for i in group if i not in done]
        if todo:
            outcomes += run_retrying(self.model, todo, self.dest, self.record_for, self.ceiling, self.retries)
        return [_outcome_row(o) for o in outcomes]


def _outcome_row(o: Outcome) -> dict[str, Any]:
    fields = ("status", "path", "error", "attempts", "note")
    return {"name": o.item.name, **{k: getattr(o, k) for k in fields}}


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayMissingError("--ray needs Ray Data: pip install 'stable-audio-3[ray]'") from None
    return ray


def _connect(ray, address: str | None) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS, or the one this machine runs); with none,
    start a local instance. True when this process started it (and shuts it down)."""
    if ray.is_initialized():
        return False
    ray.init(address=address, log_to_driver=False, logging_level="ERROR", configure_logging=True)
    ray.data.DataContext.get_current().enable_progress_bars = False
    return True


def pool_size(resources: dict[str, float], args: argparse.Namespace) -> tuple[int, float, float]:
    """(workers, CPUs per worker, GPUs per worker): by default one worker per GPU when the cluster
    has GPUs, otherwise one per `--cpus-per-worker` CPUs."""
    gpus = args.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    cpus = float(args.cpus_per_worker)
    if args.workers is not None:
        return args.workers, cpus, gpus
    free = resources.get("GPU", 0) / gpus if gpus > 0 else resources.get("CPU", 1) / cpus
    return max(1, int(free)), cpus, gpus


def run_on_ray(
    args: argparse.Namespace,
    pending: list[Item],
    dest: Destination,
    jobs_file: str,
    say: Callable[[str], None],
    on_done: Callable[[list[Outcome]], None],
) -> list[Outcome]:
    """Every pending item through the actor pool; items a failed run never reported are failed."""
    ray = _import_ray()
    started = _connect(ray, args.ray or None)
    try:
        workers, cpus, gpus = pool_size(ray.cluster_resources(), args)
        each = f"{cpus:g} CPU(s)" + (f" and {gpus:g} GPU(s)" if gpus else "")
        say(f"Ray: {workers} worker(s), {each} each")
        groups = group_items(pending, args.max_batch)
        rows = [{"items": json.dumps([asdict(i) for i in g])} for g in groups]
        results = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            GroupWorker,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
            num_cpus=cpus,
            num_gpus=gpus,
            fn_constructor_kwargs={
                "run": vars(args),
                "root": dest.root,
                "fmt": dest.format,
                "jobs_file": jobs_file,
                "threads": int(cpus) if not gpus else 0,
            },
        )  # Ray Data restarts a lost actor and re-runs its task (max_restarts = max_task_retries = -1)
        return _collect(results, pending, on_done)
    finally:
        if started:
            ray.shutdown()


def _collect(results: Any, pending: list[Item], on_done: Callable[[list[Outcome]], None]) -> list[Outcome]:
    by_name = {i.name: i for i in pending}
    outcomes: dict[str, Outcome] = {}
    try:
        for row in results.iter_rows():
            done = [Outcome(by_name[o.pop("name")], **o) for o in json.loads(row["outcomes"])]
            outcomes.update((o.item.name, o) for o in done)
            on_done(done)
    except Exception as err:  # Ray gave up on a task: report what never came back
        error = f"the Ray run stopped: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        lost = [Outcome(i, "failed", error=error) for i in pending if i.name not in outcomes]
        outcomes.update((o.item.name, o) for o in lost)
        on_done(lost)
    return [outcomes[i.name] for i in pending]
