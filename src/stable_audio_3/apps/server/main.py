"""`stable-audio-server`: one model behind a local HTTP API (see `apps.server.app`).

Safe by default: binds 127.0.0.1; any other address needs `--token` (bearer auth) or an explicit
`--insecure-no-auth`; CORS is off unless `--cors-origin` is given; LoRAs are loaded here, by name,
never from a path a client sends.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from stable_audio_3.apps.failures import OneLineParser, run_reporting

__all__ = ["main", "parse_args", "build_server"]

PROG = "stable-audio-server"


def _parser() -> OneLineParser:
    p = OneLineParser(
        prog=PROG, description="Serve Stable Audio 3 over HTTP (async jobs, progress, batching)."
    )
    p.add_argument(
        "--model", default=None, help="registry name or checkpoint directory (default: the demo model)"
    )
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1 = this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--token",
        default=os.environ.get("STABLE_AUDIO_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' (or set STABLE_AUDIO_TOKEN)",
    )
    p.add_argument("--insecure-no-auth", action="store_true", help="allow a non-local bind without a token")
    p.add_argument(
        "--cors-origin", action="append", default=[], help="allow this browser origin (repeatable)"
    )
    p.add_argument("--data-dir", default="stable_audio_server", help="job state (SQLite) and results")
    p.add_argument("--queue-size", type=int, default=16, help="jobs waiting at most (then 429)")
    p.add_argument("--max-batch", type=int, default=4, help="items merged into one generate() call at most")
    p.add_argument("--max-body-mb", type=float, default=32.0, help="request body (and upload) limit")
    p.add_argument("--retention-hours", type=float, default=24.0, help="finished jobs kept at most this long")
    p.add_argument("--retention-count", type=int, default=1000, help="finished jobs kept at most")
    p.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="NAME=PATH[:STRENGTH]",
        help="load a LoRA at start under NAME (repeatable); requests set strengths by name",
    )
    return p


class UsageError(ValueError):
    is_usage_error = True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_args(args: argparse.Namespace) -> list[tuple[str, str, float]]:
    """Refuse unsafe or impossible settings before anything loads; returns the LoRAs to load."""
    if not _is_loopback(args.host) and args.token is None and not args.insecure_no_auth:
        raise UsageError(
            f"--host {args.host} is reachable from other machines: give --token, or --insecure-no-auth"
        )
    for name in ("queue_size", "max_batch", "retention_count"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.max_body_mb > 0 or not args.retention_hours > 0:
        raise UsageError("--max-body-mb and --retention-hours must be > 0")
    loras = []
    for spec in args.lora:
        name, sep, rest = spec.partition("=")
        if not sep or not name or not rest:
            raise UsageError(f"--lora takes NAME=PATH[:STRENGTH], got {spec!r}")
        path, strength = rest, 1.0
        head, colon, tail = rest.rpartition(":")
        if colon and head and _is_number(tail):  # else a path with a colon in it
            path, strength = head, float(tail)
        if not Path(path).exists():
            raise UsageError(f"--lora {name}: no such file: {path}")
        if name in {n for n, _, _ in loras}:
            raise UsageError(f"--lora: the name {name!r} is given twice")
        loras.append((name, path, strength))
    return loras


def build_server(args: argparse.Namespace, model=None):
    """The model (loaded unless given), its scheduler and the ASGI app for these arguments."""
    from stable_audio_3 import DEMO_MODEL, DEMO_NOTICE, StableAudioModel
    from stable_audio_3.apps.server.app import Settings, create_app
    from stable_audio_3.apps.server.scheduler import Scheduler
    from stable_audio_3.apps.server.store import JobStore, retention_policy

    loras = check_args(args)
    name = args.model or DEMO_MODEL
    if model is None:
        if args.model is None:
            print(f"{PROG}: {DEMO_NOTICE}", file=sys.stderr, flush=True)
        model = StableAudioModel.from_pretrained(name, device=args.device, dtype=args.dtype)
    for index, (_, path, strength) in enumerate(loras):
        model.load_lora(path)
        model.set_lora_strength(strength, lora_index=index)
    scheduler = Scheduler(
        model,
        JobStore(args.data_dir),
        max_queue=args.queue_size,
        max_batch=args.max_batch,
        lora_names=[n for n, _, _ in loras],
        retention=retention_policy(args.retention_hours * 3600, args.retention_count),
    )
    settings = Settings(
        model_name=str(name),
        token=args.token,
        cors_origins=tuple(args.cors_origin),
        max_body_bytes=int(args.max_body_mb * 2**20),
    )
    return model, scheduler, create_app(model, scheduler, settings)


def _serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UsageError('the server needs its extra: pip install "stable-audio-3[server]"') from None
    _, scheduler, app = build_server(args)
    scheduler.start()
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    finally:
        scheduler.stop()
        scheduler.store.close()
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return _parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_reporting(PROG, lambda: _serve(args))
