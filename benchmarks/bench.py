"""Time a true-size random-weight checkpoint end to end; print a table and write JSON.

    python benchmarks/bench.py --size small --durations 5 30 --steps 8

Checkpoints are written once under `benchmarks/results/ckpt-<size>` (a few GB).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkpoints import write_random_checkpoint  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["small", "medium"], default="small")
    p.add_argument("--durations", type=float, nargs="+", default=[5.0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)

    from stable_audio_3 import StableAudioModel

    ckpt = write_random_checkpoint(RESULTS / f"ckpt-{args.size}", args.size)
    t0 = time.perf_counter()
    model = StableAudioModel.from_pretrained(ckpt, device=args.device)
    load_s = time.perf_counter() - t0
    rows = []
    for duration in args.durations:
        walls = []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            audio = model.generate(
                "benchmark prompt", duration=duration, steps=args.steps, seed=r, progress=False
            )
            walls.append(time.perf_counter() - t0)
        rec = model.last_record
        rows.append(
            {
                "duration_s": duration,
                "wall_s_median": sorted(walls)[len(walls) // 2],
                "walls_s": walls,
                "timings": rec.timings if rec else {},
                "latent_length": rec.latent_length if rec else None,
                "audio_shape": list(audio.shape),
                "finite": bool(torch.isfinite(audio).all()),
            }
        )
    result = {
        "size": args.size,
        "steps": args.steps,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "load_s": load_s,
        "peak_rss_gb": _peak_rss_gb(),
        "rows": rows,
    }
    print(f"{args.size} on {args.device} ({torch.get_num_threads()} threads), load {load_s:.1f} s")
    print(f"{'duration':>8} {'wall':>8} {'cond':>7} {'sample':>8} {'decode':>8}")
    for r in rows:
        t = r["timings"]
        print(
            f"{r['duration_s']:>7.0f}s {r['wall_s_median']:>7.2f}s {t.get('conditioning', 0):>6.2f}s "
            f"{t.get('sampling', 0):>7.2f}s {t.get('decoding', 0):>7.2f}s"
        )
    print(f"peak RSS {result['peak_rss_gb']:.2f} GB")
    out = args.output or RESULTS / f"bench-{args.size}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
