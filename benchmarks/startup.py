"""Time to first sound: process start to a written file for a tiny generation, and `--help`.

python benchmarks/startup.py [--repeats 3] [--json out.json]

Each run is a fresh `python -m stable_audio_3` process on the bundled tiny checkpoint (2 s, 8 steps),
so the figure is dominated by imports and loading, which is what a user waits for on a short job.
The import breakdown (`python -X importtime`) says where the time goes.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "config_a_small_rf_denoiser" / "checkpoint"


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def _imports(cmd: list[str], top: tuple[str, ...]) -> dict[str, float]:
    """Cumulative import seconds of the given top-level packages in one run."""
    run = subprocess.run([sys.executable, "-X", "importtime", *cmd[1:]], capture_output=True, text=True)
    err = run.stderr
    found: dict[str, float] = {}
    for line in err.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)$", line)
        if m and m.group(3) in top and m.group(3) not in found:
            found[m.group(3)] = int(m.group(1)) / 1e6
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        gen = [
            sys.executable,
            "-m",
            "stable_audio_3",
            "--model",
            str(TINY),
            "-p",
            "lofi house loop",
            "--duration",
            "2",
            "--seed",
            "0",
            "--overwrite",
            "-o",
            f"{tmp}/smoke.wav",
        ]
        helps = [_timed([sys.executable, "-m", "stable_audio_3", "--help"]) for _ in range(args.repeats)]
        runs = [_timed(gen) for _ in range(args.repeats)]
        imports = _imports(gen, ("torch", "transformers", "stable_audio_3.model", "safetensors", "soundfile"))
    result = {
        "help_s": statistics.median(helps),
        "start_to_file_s": statistics.median(runs),
        "runs_s": runs,
        "imports_s": imports,
    }
    print("| what | seconds (median) |\n|---|---|")
    print(f"| `--help` | {result['help_s']:.2f} |")
    print(f"| process start to file, tiny 2 s generation | {result['start_to_file_s']:.2f} |")
    for name, seconds in imports.items():
        print(f"| import {name} (cumulative, one run) | {seconds:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
