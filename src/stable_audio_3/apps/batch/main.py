"""`stable-audio batch JOBS --output-dir DIR`: many generations from a .jsonl or .csv file with one
loaded model. Resumable: items already written
from the same line are skipped on a rerun. One file and one record per item, `summary.json` at the
end; exit code 0 when every item is written or skipped, 1 when some failed, 2 for bad input."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from stable_audio_3 import DEMO_MODEL, DEMO_NOTICE
from stable_audio_3.apps.cli import add_run_flags
from stable_audio_3.apps.failures import OneLineParser, run_reporting

__all__ = ["main", "build_parser"]

PROG = "stable-audio batch"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("jobs", help="a .jsonl file (one JSON object per line) or a .csv file with a header")
    p.add_argument("--output-dir", required=True, help="folder or filesystem URI (s3://..., with fsspec)")
    p.add_argument("--format", choices=["wav", "flac", "ogg", "mp3"], default="wav")
    p.add_argument("--max-batch", type=int, default=4, help="items merged into one generate() call at most")
    p.add_argument("--overwrite", action="store_true", help="regenerate items whose line changed")
    p.add_argument("--peak-ceiling-dbfs", type=float, default=None, help="scale down items peaking above")
    add_run_flags(p)
    return p


def _check(args: argparse.Namespace):
    from stable_audio_3.apps.batch.jobs import JobFileError, plan_items
    from stable_audio_3.apps.batch.outputs import Destination
    from stable_audio_3.apps.outputs import checkpoint_sample_rate, plan_outputs

    if args.max_batch < 1:
        raise JobFileError(f"--max-batch must be >= 1, got {args.max_batch}")
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
    outcomes = _run_local(args, pending, dest, say)
    from stable_audio_3.apps.batch.local import summary

    seconds = time.perf_counter() - start
    path = dest.write_summary(summary(outcomes, skipped, str(Path(args.jobs).resolve()), seconds, "local"))
    failed = [o for o in outcomes if o.status == "failed"]
    for o in failed:
        say(f"failed: {o.item.name} (line {o.item.line}): {o.error}")
    say(
        f"{len(outcomes) - len(failed)} written, {len(skipped)} skipped, {len(failed)} failed; "
        f"summary in {path}"
    )
    return 1 if failed else 0


def _run_local(args: argparse.Namespace, pending, dest, say):
    from tqdm.auto import tqdm

    from stable_audio_3.apps.batch.local import item_record_for, run_items
    from stable_audio_3.apps.cli import load_model

    if not pending:
        return []
    model = load_model(args, say)
    bar = tqdm(total=len(pending), desc="items", unit="item", disable=not sys.stderr.isatty())
    try:
        return run_items(
            model,
            pending,
            dest,
            max_batch=args.max_batch,
            ceiling=args.peak_ceiling_dbfs,
            record_for=item_record_for(args, str(Path(args.jobs).resolve())),
            on_done=lambda done: bar.update(len(done)),
        )
    finally:
        bar.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting(PROG, lambda: _run(args), "interrupted; finished items are kept, a rerun resumes")
