"""Time true-size random-weight checkpoints end to end, ours and (optionally) the reference, side by side.

    python benchmarks/bench.py --size small --durations 5 30 120 --repeats 3 [--reference PATH]

Each (implementation, duration) runs in a fresh process, so its peak RSS is its own. `--reference` is
a source checkout of the public reference implementation (`Stability-AI/stable-audio-3`); nothing of
it is part of this repository. Checkpoints are written once under `benchmarks/results/ckpt-<size>`.
Prints a table and writes `benchmarks/results/bench-<size>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _run_worker(impl: str, ckpt: Path, duration: float, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(HERE / "workers.py"), impl, str(ckpt), str(duration),
           "--steps", str(args.steps), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
           "--device", args.device, "--mode", args.mode]  # fmt: skip
    if impl == "reference":
        cmd += ["--reference", args.reference]
    if args.dtype:
        cmd += ["--dtype", args.dtype]
    if impl == "ours":
        cmd += ["--cuda-graphs"] * args.cuda_graphs + ["--compile"] * args.compile
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads)) if args.threads else dict(os.environ)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return {
            "error": done.stderr.strip().splitlines()[-1]
            if done.stderr.strip()
            else f"exit {done.returncode}"
        }
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["small", "medium"], default="small")
    p.add_argument("--durations", type=float, nargs="+", default=[5.0, 30.0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the workers")
    p.add_argument(
        "--mode", choices=["exact", "fast"], default="exact", help="fast = int8 dynamic linear layers"
    )
    p.add_argument("--warmup", type=int, default=0, help="untimed generations per worker first")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    p.add_argument("--cuda-graphs", action="store_true", help="ours: replay sampling steps as CUDA graphs")
    p.add_argument("--compile", action="store_true", help="ours: torch.compile the DiT")
    p.add_argument("--reference", default=None, help="path to a reference source checkout to time as well")
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)

    sys.path.insert(0, str(HERE))
    from checkpoints import write_random_checkpoint

    ckpt = write_random_checkpoint(RESULTS / f"ckpt-{args.size}", args.size)
    rows = []
    for duration in args.durations:
        row = {"duration_s": duration, "ours": _run_worker("ours", ckpt, duration, args)}
        if args.reference:
            row["reference"] = _run_worker("reference", ckpt, duration, args)
        rows.append(row)
        _print_row(row)
    result = {"size": args.size, "steps": args.steps, "device": args.device, "mode": args.mode,
              "dtype": args.dtype, "cuda_graphs": args.cuda_graphs, "compile": args.compile,
              "repeats": args.repeats, "warmup": args.warmup, "machine": platform.machine(),
              "processor": platform.processor(), "cpu_count": os.cpu_count(), "rows": rows}  # fmt: skip
    out = args.output or RESULTS / f"bench-{args.size}-{args.mode}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


def _print_row(row: dict) -> None:
    ours, ref = row["ours"], row.get("reference")
    if "error" in ours:
        print(f"{row['duration_s']:>6.0f}s  ours failed: {ours['error']}")
        return
    t = ours["timings"]
    parts = ", ".join(f"{k} {t.get(k, 0):.2f}" for k in ("conditioning", "sampling", "decoding"))
    line = f"{row['duration_s']:>6.0f}s  ours {ours['wall_s']:7.2f}s (load {ours['load_s']:.1f}, {parts})"
    line += f"  text encoding {ours.get('text_encoding_s', 0):.2f}s uncached"
    line += f"  {_memory(ours)}"
    if "dit_time_over_floor" in ours:
        line += f"  DiT/floor {ours['dit_time_over_floor']:.2f}"
        if "dit_time_over_own_floor" in ours:
            line += f" (own work {ours['dit_time_over_own_floor']:.2f})"
    if "snr_db_vs_exact" in ours:
        line += f"  latents SNR vs exact {ours['snr_db_vs_exact']:.1f} dB"
    if ref and "error" not in ref:
        key = "peak_gpu_allocated_gb" if "peak_gpu_allocated_gb" in ours else "peak_rss_gb"
        ratio_t = ours["wall_s"] / ref["wall_s"]
        ratio_m = ours[key] / ref[key]
        line += f" | ref {ref['wall_s']:7.2f}s {_memory(ref)}"
        line += f" | ratio time {ratio_t:.2f} memory {ratio_m:.2f}"
    elif ref:
        line += f" | ref failed: {ref['error']}"
    print(line, flush=True)


def _memory(result: dict) -> str:
    if "peak_gpu_allocated_gb" in result:
        return f"GPU peak allocated {result['peak_gpu_allocated_gb']:.2f} GB"
    return f"RSS {result['peak_rss_gb']:.2f} GB"


if __name__ == "__main__":
    raise SystemExit(main())
