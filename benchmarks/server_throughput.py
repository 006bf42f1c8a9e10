"""Server throughput with request batching on vs off: N concurrent short requests against a real
`stable-audio-server` app on loopback (uvicorn in this process), one model, same settings.

    python benchmarks/server_throughput.py [--model demo] [--requests 16] [--max-batch 8] [--out F]

Prints a table and writes JSON (requests per minute, wall time, latency, generate() runs).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import platform
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch
import uvicorn

from stable_audio_3 import StableAudioModel
from stable_audio_3.apps.server.main import build_server, parse_args


def _cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one(base: str, body: dict) -> float:
    """Submit, wait, fetch; returns the request's latency in seconds."""
    start = time.perf_counter()
    with httpx.Client(base_url=base, timeout=600) as http:
        r = http.post("/v1/generations", json=body)
        r.raise_for_status()
        job = r.json()["id"]
        with http.stream("GET", f"/v1/generations/{job}/events") as events:  # no polling load
            last = [line for line in events.iter_lines() if line.startswith("event: ")][-1]
        assert last == "event: done", last
        http.get(f"/v1/generations/{job}/audio").raise_for_status()
    return time.perf_counter() - start


def measure(model: StableAudioModel, name: str, max_batch: int, requests: int, body: dict) -> dict:
    with tempfile.TemporaryDirectory() as data:
        args = parse_args(["--model", name, "--data-dir", data, "--max-batch", str(max_batch),
                           "--queue-size", str(requests)])  # fmt: skip
        _, scheduler, app = build_server(args, model=model)
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        scheduler.start()
        base = f"http://127.0.0.1:{port}"
        try:
            _one(base, {**body, "seed": 0})  # warm-up, not timed
            runs_before = scheduler.runs
            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(requests) as pool:
                latencies = list(pool.map(lambda i: _one(base, {**body, "seed": i + 1}), range(requests)))
            wall = time.perf_counter() - start
            runs = scheduler.runs - runs_before
        finally:
            server.should_exit = True
            thread.join(30)
            scheduler.stop()
            scheduler.store.close()
    return {
        "max_batch": max_batch,
        "requests": requests,
        "wall_s": wall,
        "requests_per_min": requests / wall * 60,
        "latency_median_s": statistics.median(latencies),
        "latency_max_s": max(latencies),
        "generate_runs": runs,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo")
    p.add_argument("--device", default=None)
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--out", default="benchmarks/results/server_throughput.json")
    a = p.parse_args()
    model = StableAudioModel.from_pretrained(a.model, device=a.device)
    body = {"prompt": "drum kit, rock beat, 120 BPM", "duration": a.duration, "steps": a.steps}
    rows = [measure(model, a.model, b, a.requests, body) for b in (1, a.max_batch)]
    print(
        f"{a.requests} concurrent requests, {a.duration} s each, {a.steps} steps, "
        f"model {a.model} on {model.device}"
    )
    print("| batching | max batch | wall | requests/min | median latency | max latency | generate() runs |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        label = "off" if r["max_batch"] == 1 else "on"
        print(
            f"| {label} | {r['max_batch']} | {r['wall_s']:.2f} s | {r['requests_per_min']:.1f} | "
            f"{r['latency_median_s']:.2f} s | {r['latency_max_s']:.2f} s | {r['generate_runs']} |"
        )
    print(f"speed-up: {rows[1]['requests_per_min'] / rows[0]['requests_per_min']:.2f}x")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    host = {"cpu": _cpu_name(), "threads": torch.get_num_threads(), "device": str(model.device)}
    out.write_text(json.dumps({"host": host, "body": body, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
