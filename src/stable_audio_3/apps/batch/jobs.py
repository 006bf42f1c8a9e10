"""A batch file and the items it asks for. Each line (JSON Lines) or row (CSV) is one request with
the command line's generation fields (`prompt`, `duration`, `steps`, `cfg_scale`, `seed`,
`inpaint_audio`, ...; names as the flags', `-` or `_`) and an optional output `name`. Every line is
parsed and checked by the `stable-audio` parser itself, so a batch line accepts exactly what the
command line does, and every error names the file and the line before any model loads.

A line of n items becomes n items, item k with seed `seed + k` (`apps.items`; a random start for -1), so
that any item can be reproduced alone and items can be merged with others into one call.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stable_audio_3.apps.cli import build_job_parser, check_generation
from stable_audio_3.apps.items import item_seeds

__all__ = ["Item", "JobFileError", "read_requests", "plan_items", "job_fields", "merged_arguments"]

# Per-item values; everything else an item asks for must be equal for items to share a call.
PER_ITEM = ("prompt", "negative_prompt", "duration", "seed", "batch_size")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")


class JobFileError(ValueError):
    """A batch file that cannot be read or a line that cannot work; names the file and line."""

    is_usage_error = True


@dataclass(frozen=True)
class Item:
    line: int  # 1-based line (JSONL) or row (CSV, after the header)
    index: int  # item within its line
    name: str  # output file stem
    request: dict[str, Any]  # the line as written (recorded; a rerun compares it)
    arguments: dict[str, Any]  # generate() arguments for this item alone (batch_size 1, its seed)

    def key(self) -> str:
        """Items with equal keys can run in one generate() call."""
        shared = {k: v for k, v in self.arguments.items() if k not in PER_ITEM}
        return json.dumps([shared, self.arguments.get("negative_prompt") is not None], sort_keys=True)


def job_fields() -> dict[str, argparse.Action]:
    """Field name -> its flag in the `stable-audio` parser."""
    return {a.dest: a for a in build_job_parser()._actions if a.option_strings and a.dest != "help"}


def read_requests(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line, fields) of every request in a .jsonl or .csv file; blank lines are skipped."""
    if not path.is_file():
        raise JobFileError(f"{path}: no such batch file")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        return [
            (i + 1, {k: _cell(v) for k, v in row.items() if k and v not in (None, "")})
            for i, row in enumerate(rows)
        ]
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
        except json.JSONDecodeError as err:
            raise JobFileError(f"{path} line {n}: not valid JSON ({err.msg})") from None
        if not isinstance(fields, dict):
            raise JobFileError(f"{path} line {n}: each line must be a JSON object")
        out.append((n, fields))
    return out


def _cell(value: str) -> str | list[str]:
    """A CSV cell: several values are separated by `|` (e.g. `inpaint_start` = `0|4`)."""
    return value.split("|") if "|" in value else value


def _argv(fields: dict[str, Any], known: dict[str, argparse.Action], where: str) -> list[str]:
    argv: list[str] = []
    for raw, value in fields.items():
        name = raw.replace("-", "_")
        if name == "name":
            continue
        if name not in known:
            hint = " (set it for the whole run on the command line)" if name in _RUN_LEVEL else ""
            raise JobFileError(f"{where}: unknown field {raw!r}{hint}")
        action = known[name]
        if action.nargs == 0:  # a switch such as --chunked-decode
            if value in (True, "true", "True", "1"):
                argv.append(action.option_strings[-1])
            continue
        values = value if isinstance(value, list) else [value]
        argv += [action.option_strings[-1], *(str(v) for v in values)]
    return argv


_RUN_LEVEL = {"model", "device", "dtype", "lora_ckpt_path", "lora_strength", "output", "format"}


def plan_items(path: Path, run: argparse.Namespace) -> list[Item]:
    """Every item of the file, checked; output names unique."""
    known, parser = job_fields(), build_job_parser()
    items: list[Item] = []
    names: dict[str, int] = {}
    for line, fields in read_requests(path):
        where = f"{path} line {line}"
        try:
            job = parser.parse_args(_argv(fields, known, where))
            batch, arguments = check_generation(argparse.Namespace(**{**vars(run), **vars(job)}))
        except JobFileError:
            raise
        except ValueError as err:
            raise JobFileError(f"{where}: {err}") from None
        stem = str(fields.get("name", f"line{line:05d}"))
        if not _NAME.match(stem):
            raise JobFileError(f"{where}: name {stem!r} must be a plain file name (letters, digits, . _ -)")
        seeds = item_seeds(arguments["seed"], batch)
        for k in range(batch):
            name = stem if batch == 1 else f"{stem}_{k}"
            if name in names:
                raise JobFileError(f"{where}: output name {name!r} is also used on line {names[name]}")
            names[name] = line
            items.append(Item(line, k, name, fields, _item_arguments(arguments, k, seeds)))
    return items


def _item_arguments(arguments: dict[str, Any], k: int, seeds: list[int]) -> dict[str, Any]:
    def pick(value: Any) -> Any:
        return value[k] if isinstance(value, list) else value

    out = dict(arguments)
    for name in ("prompt", "negative_prompt", "duration"):
        out[name] = pick(arguments[name])
    out["seed"] = seeds[k]
    out["batch_size"] = 1
    return out


def merged_arguments(items: list[Item]) -> dict[str, Any]:
    """One generate() call for items with equal keys: their own prompts, durations and seeds."""
    first = items[0].arguments
    args = {k: v for k, v in first.items() if k not in PER_ITEM}
    args["prompt"] = [i.arguments["prompt"] for i in items]
    args["duration"] = [i.arguments["duration"] for i in items]
    args["seed"] = [i.arguments["seed"] for i in items]
    if first["negative_prompt"] is not None:
        args["negative_prompt"] = [i.arguments["negative_prompt"] for i in items]
    return args
