"""Peak memory and time of SAME decoding against audio length, each length in a fresh process.

    python benchmarks/ae_memory.py --size medium --seconds 30 120 380 --modes whole chunked [--device cuda]

`whole` decodes every latent in one pass (memory grows linearly with length: the sliding-window
attention is banded, never N x N); `chunked` uses 128-latent chunks with 32 overlap (bounded memory).
On CUDA the peak is PyTorch's peak allocated GPU memory (`AutoencoderModel` runs in float32).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _worker(ckpt: str, seconds: float, mode: str, device: str) -> None:
    import torch

    from stable_audio_3 import AutoencoderModel

    ae = AutoencoderModel.from_pretrained(ckpt, device=device)
    cuda = ae.device.type == "cuda"
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    if cuda:
        base = torch.cuda.memory_allocated() / 1024**3
        torch.cuda.reset_peak_memory_stats()
    frames = -(-int(seconds * ae.sample_rate) // ae.downsampling_ratio)
    frames += frames % 2
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1, ae.autoencoder.config.latent_dim, frames, generator=gen).to(ae.device)
    t0 = time.perf_counter()
    audio = ae.decode(z, chunked=(mode == "chunked"))
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    if cuda:
        memory = {"peak_gpu_allocated_gb": torch.cuda.max_memory_allocated() / 1024**3, "after_load_gb": base}
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        memory = {"peak_rss_gb": peak, "after_load_gb": base}
    print(json.dumps({"seconds": seconds, "mode": mode, "frames": frames, "wall_s": wall, **memory,
                      "finite": bool(torch.isfinite(audio).all())}))  # fmt: skip


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5])
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["small", "medium"], default="medium")
    p.add_argument("--seconds", type=float, nargs="+", default=[30.0, 120.0, 380.0])
    p.add_argument("--modes", nargs="+", choices=["whole", "chunked"], default=["whole", "chunked"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args()
    sys.path.insert(0, str(HERE))
    from checkpoints import write_random_checkpoint

    ckpt = write_random_checkpoint(HERE / "results" / f"ckpt-{args.size}", args.size)
    rows = []
    for mode in args.modes:
        for seconds in args.seconds:
            cmd = [sys.executable, __file__, "--worker", str(ckpt), str(seconds), mode, args.device]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"{mode} {seconds}s failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            kind = "GPU peak allocated" if "peak_gpu_allocated_gb" in row else "peak RSS"
            peak = row.get("peak_gpu_allocated_gb", row.get("peak_rss_gb"))
            mem = f"{kind} {peak:.2f} GB (after load {row['after_load_gb']:.2f} GB)"
            print(
                f"{mode:8} {seconds:6.0f}s ({row['frames']} latents): {row['wall_s']:7.1f} s, {mem}",
                flush=True,
            )
    out = args.output or HERE / "results" / f"ae-memory-{args.size}.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
