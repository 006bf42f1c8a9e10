"""`stable-audio batch JOBS --output-dir DIR`: many generations from a .jsonl or .csv file, with one
loaded model here or, with `--ray [ADDRESS]`, a pool of them on a Ray cluster. Resumable: items
already written from the same line are skipped on a rerun. One file and one record per item,
`summary.json` at the end; exit code 0 when every item is written or skipped, 1 when some failed,
2 for bad input."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from stable_audio_3 import DEMO_MODEL, DEMO_NOTICE
from stable_audio_3.apps.cli import add_run_flags
from stable_audio_3.apps.failures import DefaultsHelpFormatter, OneLineParser, run_reporting

__all__ = ["main", "build_parser"]

PROG = "stable-audio batch"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("jobs", help="a .jsonl file (one JSON object per line) or a .csv file with a header")
    p.add_argument("--output-dir", required=True, help="folder or filesystem URI (s3://..., with fsspec)")
    p.add_argument("--format", choices=["wav", "flac", "ogg", "mp3"], default="wav")
    p.add_argument("--max-batch", type=int, default=4, help="items merged into one generate() call at most")
    p.add_argument("--overwrite", action="store_true", help="regenerate items whose line changed")
    p.add_argument("--peak-ceiling-dbfs", type=float, default=None, help="scale down items peaking above")
    p.add_argument("--retries", type=int, default=1, help="more attempts for an item whose call failed")
    _ray_flags(p.add_argument_group("Ray (pip install 'stable-audio-3[ray]')"))
    add_run_flags(p)
    return p


def _ray_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on Ray: the cluster at ADDRESS (e.g. auto, ray://head:10001), else RAY_ADDRESS or a "
        "local instance; --output-dir must be reachable from every node",
    )
    g.add_argument("--workers", type=int, default=None, help="actors (default: one per GPU, else per CPUs)")
    g.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs reserved by each actor")
    g.add_argument(
        "--gpus-per-worker", type=float, default=None, help="GPUs per actor (default: 1 if there are any)"
    )


def _check(args: argparse.Namespace):
    from stable_audio_3.apps.batch.jobs import JobFileError, plan_items
    from stable_audio_3.apps.batch.outputs import Destination
    from stable_audio_3.apps.outputs import checkpoint_sample_rate, plan_outputs

    for flag, value, low in [
        ("--max-batch", args.max_batch, 1),
        ("--retries", args.retries, 0),
        ("--workers", args.workers, 1),
        ("--cpus-per-worker", args.cpus_per_worker, 0),
        ("--gpus-per-worker", args.gpus_per_worker, 0),
    ]:
        if value is not None and value < low:
            raise JobFileError(f"{flag} must be >= {low}, got {value}")
    if args.ray is None and any(v is not None for v in (args.workers, args.gpus_per_worker)):
        raise JobFileError("--workers and --gpus-per-worker need --ray")
    if args.model is None:
        args.model = DEMO_MODEL
        print(f"{PROG}: {DEMO_NOTICE}", file=sys.stderr, flush=True)
    # the CLI's own check of format vs sample rate (a scratch name, never written)
    if "://" not in args.output_dir:
        scratch = str(Path(args.output_dir) / f"check.{args.format}")
        plan_outputs(scratch, 1, args.format, checkpoint_sample_rate(args.model), True)
    items = plan_items(Path(args.jobs), args)
    dest = Destination(args.output_dir, args.format)
    pending = [i for i in items if not dest.finished(i, args.overwrite)]
    return items, pending, dest


def _run(args: argparse.Namespace) -> int:
    items, pending, dest = _check(args)
    skipped = [i for i in items if i not in pending]
    say = lambda line: print(f"{PROG}: {line}", file=sys.stderr, flush=True)  # noqa: E731
    say(f"{len(items)} items, {len(skipped)} already written, {len(pending)} to generate")
    start = time.perf_counter()
    outcomes = _run_pending(args, pending, dest, say)
    from stable_audio_3.apps.batch.local import summary

    seconds = time.perf_counter() - start
    mode = "local" if args.ray is None else "ray"
    path = dest.write_summary(summary(outcomes, skipped, str(Path(args.jobs).resolve()), seconds, mode))
    failed = [o for o in outcomes if o.status == "failed"]
    for o in failed:
        say(f"failed: {o.item.name} (line {o.item.line}): {o.error}")
    say(
        f"{len(outcomes) - len(failed)} written, {len(skipped)} skipped, {len(failed)} failed; "
        f"summary in {path}"
    )
    return 1 if failed else 0


def _run_pending(args: argparse.Namespace, pending, dest, say):
    """The pending items here or on Ray, with a progress bar over items."""
    from tqdm.auto import tqdm

    if not pending:
        return []
    jobs_file = str(Path(args.jobs).resolve())
    bar = tqdm(total=len(pending), desc="items", unit="item", disable=not sys.stderr.isatty())
    on_done = lambda done: bar.update(len(done))  # noqa: E731
    try:
        if args.ray is not None:
            from stable_audio_3.apps.batch.cluster import run_on_ray

            return run_on_ray(args, pending, dest, jobs_file, say, on_done)
        return _run_here(args, pending, dest, jobs_file, say, on_done)
    finally:
        bar.close()


def _run_here(args: argparse.Namespace, pending, dest, jobs_file: str, say, on_done):
    from stable_audio_3.apps.batch.local import item_record_for, run_items
    from stable_audio_3.apps.cli import load_model

    model = load_model(args, say)
    return run_items(
        model,
        pending,
        dest,
        max_batch=args.max_batch,
        ceiling=args.peak_ceiling_dbfs,
        retries=args.retries,
        record_for=item_record_for(args, jobs_file),
        on_done=on_done,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting(PROG, lambda: _run(args), "interrupted; finished items are kept, a rerun resumes")
