"""Items per minute of `stable-audio batch`: on this machine (one process, one model) against a local
Ray instance with N actors, on the same batch file, each mode a fresh process.

    pip install ".[ray]"
    python benchmarks/batch_throughput.py [--items 32] [--workers 2] [--model demo] [--repeats 2]

Each run writes into a new folder; the wall time is the command's, from process start to the summary
(model loading and, for Ray, starting the instance and its actors included); items/min is also given
as the command's summary counts it (from after the checks, so without the process start and imports).
Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _jobs(path: Path, items: int, duration: float, steps: int) -> Path:
    words = ["piano", "drums", "rain", "strings", "bass", "wind", "bells", "guitar"]
    lines = [
        {"prompt": f"{words[i % len(words)]}, take {i}", "duration": duration, "steps": steps, "seed": i}
        for i in range(items)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _run(jobs: Path, out: Path, model: str, max_batch: int, extra: list[str]) -> dict:
    argv = ["batch", str(jobs), "--output-dir", str(out), "--model", model, "--max-batch", str(max_batch)]
    code = "import sys; from stable_audio_3.apps.entry import main; sys.exit(main(sys.argv[1:]))"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *argv, *extra], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"batch failed ({done.returncode}):\n{done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return {
        "wall_s": round(wall, 2),
        "items_per_min_wall": round(summary["written"] / wall * 60, 2),
        "items_per_min_summary": summary["items_per_minute"],
        "written": summary["written"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo")
    p.add_argument("--items", type=int, default=32)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=HERE / "results" / "batch_throughput.json")
    args = p.parse_args()
    cores = os.cpu_count() or 1
    modes = {
        f"local (1 process, {cores} threads)": [],
        f"Ray ({args.workers} actors x {cores // args.workers} CPU)": [
            "--ray", "--workers", str(args.workers), "--cpus-per-worker", str(cores // args.workers),
        ],
    }  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = _jobs(Path(tmp) / "jobs.jsonl", args.items, args.duration, args.steps)
        for r in range(args.repeats):
            for name, extra in modes.items():
                result = _run(jobs, Path(tmp) / f"out-{len(rows)}", args.model, args.max_batch, extra)
                rows.append({"mode": name, "repeat": r, **result})
                print(json.dumps(rows[-1]), file=sys.stderr)
    print(f"\n{args.items} items of {args.duration:g} s, {args.steps} steps, --max-batch {args.max_batch}")
    print("| mode | wall | items/min (wall) | items/min (summary) |\n|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['mode']} | {row['wall_s']:.1f} s | {row['items_per_min_wall']:.1f} "
            f"| {row['items_per_min_summary']:.1f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    host = {"machine": platform.machine(), "processor": platform.processor(), "cores": cores}
    args.out.write_text(
        json.dumps({"host": host, "settings": vars(args) | {"out": str(args.out)}, "rows": rows})
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
