"""A bounded load test of the real server process on loopback: 60 requests from 12 concurrent
clients against a queue of 16, some cancelled. Every request must end done, cancelled or refused
with 429 (none lost, none run twice) and the server's peak memory must stay bounded."""

from __future__ import annotations

import concurrent.futures
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import checkpoint_dir

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

CLIENTS, PER_CLIENT = 12, 5
FAST = {"steps": 3, "duration_padding_sec": 0.2}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _start(tmp_path: Path, port: int) -> subprocess.Popen:
    cmd = [
        sys.executable, "-c", "from stable_audio_3.apps.server.main import main; raise SystemExit(main())",
        "--model", str(checkpoint_dir("A")), "--port", str(port), "--data-dir", str(tmp_path / "data"),
        "--queue-size", "16", "--max-batch", "4",
    ]  # fmt: skip
    with open(tmp_path / "server.log", "w") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise AssertionError((tmp_path / "server.log").read_text())
    raise AssertionError("the server did not become ready")


def _client(base: str, index: int) -> list[tuple[str, str | None]]:
    """Submit PER_CLIENT jobs back to back (so the queue fills and refuses some), cancel every fourth
    accepted one, then wait for each to end."""
    out, jobs = [], []
    with httpx.Client(base_url=base, timeout=60) as http:
        for k in range(PER_CLIENT):
            body = {
                "prompt": f"client {index} job {k}",
                "duration": 0.5 + 0.1 * (k % 3),
                "seed": index * 10 + k,
            }
            r = http.post("/v1/generations", json={**body, **FAST})
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) > 0
                out.append(("refused", None))
                continue
            assert r.status_code == 202, r.text
            jobs.append(r.json()["id"])
            if (index + k) % 4 == 0:
                http.delete(f"/v1/generations/{jobs[-1]}")
        for job in jobs:
            while (status := http.get(f"/v1/generations/{job}").json())["status"] in ("queued", "running"):
                time.sleep(0.02)
            if status["status"] == "done":
                assert http.get(f"/v1/generations/{job}/audio").status_code == 200
            out.append((status["status"], job))
    return out


@pytest.mark.slow
def test_sixty_requests_from_twelve_clients(tmp_path: Path) -> None:
    port = _free_port()
    proc = _start(tmp_path, port)
    try:
        base = f"http://127.0.0.1:{port}"
        idle_rss = _rss_kib(proc.pid, "VmRSS")
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            results = [r for rs in pool.map(lambda i: _client(base, i), range(CLIENTS)) for r in rs]
        assert len(results) == CLIENTS * PER_CLIENT
        states = [s for s, _ in results]
        assert set(states) <= {"done", "cancelled", "refused"}, states
        accepted = [j for s, j in results if j is not None]
        assert len(set(accepted)) == len(accepted)  # no job id handed out twice
        assert min(states.count("cancelled"), states.count("done"), states.count("refused")) >= 1
        metrics = httpx.get(f"{base}/metrics").text
        for state in ("done", "cancelled"):
            assert f'stable_audio_jobs{{state="{state}"}} {float(states.count(state))}' in metrics
        for state in ("queued", "running", "failed"):
            assert f'stable_audio_jobs{{state="{state}"}} 0.0' in metrics
        files = sorted((tmp_path / "data" / "jobs").glob("*/item_*.wav"))
        assert len(files) == states.count("done")  # each finished job written once, nothing else
        peak = _rss_kib(proc.pid, "VmHWM")
        assert peak < idle_rss + 600 * 1024, (idle_rss, peak)  # bounded: the queue, not the load, sets it
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode is not None
    assert "Traceback" not in (tmp_path / "server.log").read_text()
