"""Running batch items on this machine: one loaded model, compatible items merged into one
`generate()` call of up to `max_batch` items (per-item seeds: each item's audio is what it would be
alone), every result written as soon as its call returns. A failing call fails only its items."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stable_audio_3.apps.batch.jobs import Item, merged_arguments
from stable_audio_3.apps.batch.outputs import Destination, item_record

__all__ = ["Outcome", "group_items", "run_group", "run_retrying", "run_items"]


@dataclass
class Outcome:
    item: Item
    status: str  # written / skipped / failed
    path: str | None = None
    error: str | None = None
    attempts: int = 1
    note: str | None = None


def group_items(items: list[Item], max_batch: int) -> list[list[Item]]:
    """Items in file order, each group of equal keys and at most `max_batch` long."""
    groups: list[list[Item]] = []
    open_groups: dict[str, list[Item]] = {}
    for item in items:
        group = open_groups.get(item.key())
        if group is None or len(group) >= max_batch:
            group = open_groups[item.key()] = []
            groups.append(group)
        group.append(item)
    return groups


def run_group(
    model: Any, group: list[Item], dest: Destination, record_for: Callable[[Any, Item, Any], dict], ceiling
) -> list[Outcome]:
    """One generate() call for a group; each item written, or every item failed with the error."""
    from stable_audio_3 import StableAudioError

    for item in group:  # no duration asked: 30 s, or the checkpoint's maximum if that is shorter
        if item.arguments["duration"] is None:
            item.arguments["duration"] = model.default_duration
    try:
        audio = model.generate(**merged_arguments(group), progress=False)  # uncut: cut per item below
    except (StableAudioError, RuntimeError, MemoryError) as err:
        return [Outcome(i, "failed", error=f"{type(err).__name__}: {err}") for i in group]
    rate = model.sample_rate
    out = []
    for k, item in enumerate(group):
        wave = audio[k, :, : int(item.arguments["duration"] * rate)]
        if ceiling is not None:
            from stable_audio_3.apps.outputs import peak_limited

            wave = peak_limited(wave, ceiling)
        record = record_for(model, item, model.last_record.for_items(k, k + 1))
        out.append(Outcome(item, "written", path=dest.write(item, wave.cpu().numpy(), rate, record)))
    return out


def run_retrying(
    model: Any,
    group: list[Item],
    dest: Destination,
    record_for: Callable[[Any, Item, Any], dict],
    ceiling: float | None,
    retries: int,
) -> list[Outcome]:
    """A group's call, then each failed item alone, up to `retries` more times (a merged call that
    ran out of memory may fit one item at a time; a transient device error may pass)."""
    outcomes = run_group(model, group, dest, record_for, ceiling)
    for n, outcome in enumerate(outcomes):
        attempts = 1
        while outcome.status == "failed" and attempts <= retries:
            attempts += 1
            outcome = run_group(model, [outcome.item], dest, record_for, ceiling)[0]
        outcome.attempts = attempts
        outcomes[n] = outcome
    return outcomes


def run_items(
    model: Any,
    items: list[Item],
    dest: Destination,
    *,
    max_batch: int,
    record_for: Callable[[Any, Item, Any], dict],
    ceiling: float | None = None,
    retries: int = 0,
    on_done: Callable[[list[Outcome]], None] = lambda outcomes: None,
) -> list[Outcome]:
    """Every pending item, in groups; `on_done` after each group (progress)."""
    outcomes = []
    for group in group_items(items, max_batch):
        done = run_retrying(model, group, dest, record_for, ceiling, retries)
        outcomes += done
        on_done(done)
    return outcomes


def summary(outcomes: list[Outcome], skipped: list[Item], jobs_file: str, seconds: float, mode: str) -> dict:
    """What a run did, item by item, and its rate."""
    written = [o for o in outcomes if o.status == "written"]
    failed = [o for o in outcomes if o.status == "failed"]
    return {
        "jobs": jobs_file,
        "mode": mode,
        "items": len(outcomes) + len(skipped),
        "written": len(written),
        "skipped": len(skipped),
        "failed": len(failed),
        "seconds": round(seconds, 3),
        "items_per_minute": round(len(written) / seconds * 60, 3) if seconds > 0 and written else 0.0,
        "outputs": [
            {
                "name": o.item.name,
                "line": o.item.line,
                "path": o.path,
                "seed": o.item.arguments["seed"],
                "attempts": o.attempts,
                **({"note": o.note} if o.note else {}),
            }
            for o in written
        ],
        "skipped_items": [{"name": i.name, "line": i.line} for i in skipped],
        "failures": [
            {"name": o.item.name, "line": o.item.line, "error": o.error, "attempts": o.attempts}
            for o in failed
        ],
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def item_record_for(args: Any, jobs_file: str) -> Callable[[Any, Item, Any], dict]:
    """The sidecar builder: the CLI's record for the item's own arguments and narrowed record."""
    from stable_audio_3.apps.cli import file_record

    def build(model: Any, item: Item, record: Any) -> dict:
        return item_record(file_record(args, model, item.arguments, record), item, jobs_file)

    return build
