"""The HTTP server end to end on a tiny fixture model: every endpoint, batching with per-item seeds,
cancel, restart with a finished and a running job, retention, auth and the bad-request table."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import checkpoint_dir

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from stable_audio_3 import StableAudioModel  # noqa: E402
from stable_audio_3.apps.server.main import build_server, main, parse_args  # noqa: E402
from stable_audio_3.apps.server.scheduler import STOPPED_ERROR  # noqa: E402
from stable_audio_3.apps.server.store import RESTART_ERROR, Job, retention_policy  # noqa: E402

FAST = {"steps": 3, "duration_padding_sec": 0.2}
ATOL = 2e-4  # batched vs batch-1 matmuls (tests/test_item_seeds.py)


@pytest.fixture(scope="module")
def model() -> StableAudioModel:
    return StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu")


@contextmanager
def serving(model, data_dir, *flags: str, start: bool = True) -> Iterator[tuple[TestClient, object]]:
    args = parse_args(["--data-dir", str(data_dir), *flags])
    _, scheduler, app = build_server(args, model=model)
    if start:
        scheduler.start()
    try:
        with TestClient(app) as client:
            yield client, scheduler
    finally:
        scheduler.stop()
        scheduler.store.close()


def wait(client: TestClient, job_id: str, states=("done", "failed", "cancelled"), timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/v1/generations/{job_id}").json()
        if status["status"] in states:
            return status
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {status['status']} after {timeout} s")


def wav(client: TestClient, job_id: str, item: int = 0, fmt: str = "wav") -> np.ndarray:
    r = client.get(f"/v1/generations/{job_id}/audio", params={"item": item, "format": fmt})
    assert r.status_code == 200, r.text
    data, _ = sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)
    return data.T


def solo(model, prompt: str, duration: float, seed: int, **kw) -> np.ndarray:
    out = model.generate(prompt, duration=duration, seed=seed, progress=False, **{**FAST, **kw})
    return out[0].numpy()


def test_submit_poll_fetch_matches_the_python_api(model, tmp_path) -> None:
    with serving(model, tmp_path) as (client, _):
        r = client.post("/v1/generations", json={"prompt": "rain", "duration": 0.5, "seed": 7, **FAST})
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["status"] in ("queued", "running") and body["urls"]["events"].endswith("/events")
        status = wait(client, body["id"])
        assert status["status"] == "done" and status["progress"] == {"step": 3, "steps": 3}
        assert status["record"]["item_seeds"] == [7] and status["record"]["prompts"] == ["rain"]
        audio = wav(client, body["id"])
        np.testing.assert_allclose(audio, solo(model, "rain", 0.5, 7), atol=ATOL, rtol=0)
        for fmt, rate in (("flac", 6000), ("ogg", 6000), ("mp3", 8000)):  # mp3 cannot hold 6 kHz
            r = client.get(body["urls"]["audio"][0], params={"format": fmt})
            other, got_rate = sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)
            assert got_rate == rate and other.shape[1] == 2
            assert abs(other.shape[0] * 6000 / rate - audio.shape[1]) < 2048
        assert client.get(f"/v1/generations/{body['id']}/audio", params={"format": "aiff"}).status_code == 422
        assert client.get(f"/v1/generations/{body['id']}/audio", params={"item": 1}).status_code == 422
        assert client.get("/v1/generations/nope").status_code == 404


def test_batch_items_and_events(model, tmp_path) -> None:
    with serving(model, tmp_path) as (client, _):
        job = client.post(
            "/v1/generations", json={"prompt": ["a", "b"], "duration": 0.4, "seed": 3, **FAST}
        ).json()
        with client.stream("GET", job["urls"]["events"]) as stream:
            text = "".join(stream.iter_text())
        kinds = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("event: ")]
        assert kinds[-1] == "done" and "progress" in kinds
        last = json.loads([line for line in text.splitlines() if line.startswith("data: ")][-1][6:])
        assert last["record"]["item_seeds"] == [3, 4]  # item k of a one-seed job gets seed + k
        for k, prompt in enumerate("ab"):
            np.testing.assert_allclose(
                wav(client, job["id"], k), solo(model, prompt, 0.4, 3 + k), atol=ATOL, rtol=0
            )


def test_compatible_jobs_share_one_run_and_keep_their_own_audio(model, tmp_path) -> None:
    with serving(model, tmp_path, "--max-batch", "4", start=False) as (client, scheduler):
        jobs = [
            client.post("/v1/generations", json={"prompt": p, "duration": d, "seed": s, **FAST}).json()
            for p, d, s in [("rain", 0.5, 1), ("wind", 0.3, 2), ("fire", 0.5, 3)]
        ]
        other = client.post(
            "/v1/generations", json={"prompt": "x", "duration": 0.5, "seed": 4, "steps": 2}
        ).json()
        assert [client.get(j["urls"]["status"]).json()["queue_position"] for j in jobs] == [0, 1, 2]
        scheduler.start()
        for j in [*jobs, other]:
            assert wait(client, j["id"])["status"] == "done"
        assert scheduler.runs == 2  # the three compatible jobs in one generate() call
        for j, (p, d, s) in zip(jobs, [("rain", 0.5, 1), ("wind", 0.3, 2), ("fire", 0.5, 3)], strict=True):
            got = wav(client, j["id"])
            assert got.shape[1] == int(d * model.sample_rate)
            np.testing.assert_allclose(got, solo(model, p, d, s), atol=ATOL, rtol=0)
        assert client.get(jobs[0]["urls"]["status"]).json()["record"]["extra"]["batch_items"] == 3


def test_cancel_queued_and_running(model, tmp_path) -> None:
    with serving(model, tmp_path, start=False) as (client, scheduler):
        queued = client.post("/v1/generations", json={"prompt": "a", "duration": 0.3, **FAST}).json()
        assert queued["progress"] == {"step": 0, "steps": 3} and queued["queue_position"] == 0
        assert client.delete(queued["urls"]["status"]).json()["status"] == "cancelled"
        slow = client.post("/v1/generations", json={"prompt": "b", "duration": 2.0, "steps": 200}).json()
        scheduler.start()
        wait(client, slow["id"], states=("running",))
        while client.get(slow["urls"]["status"]).json()["progress"]["step"] < 1:
            time.sleep(0.01)
        client.delete(slow["urls"]["status"])
        status = wait(client, slow["id"])
        assert status["status"] == "cancelled" and status["progress"]["step"] < 200
        assert client.get(slow["urls"]["audio"][0]).status_code == 409
        after = client.post("/v1/generations", json={"prompt": "c", "duration": 0.3, **FAST}).json()
        assert wait(client, after["id"])["status"] == "done"  # the worker goes on


def test_restart_serves_finished_fails_running_and_requeues_queued(model, tmp_path) -> None:
    with serving(model, tmp_path) as (client, scheduler):
        done = client.post("/v1/generations", json={"prompt": "a", "duration": 0.3, "seed": 1, **FAST}).json()
        wait(client, done["id"])
        first = wav(client, done["id"])
        scheduler.stop()  # the worker is gone; the next two jobs stay queued
        running = client.post("/v1/generations", json={"prompt": "b", "duration": 0.3, **FAST}).json()
        queued = client.post("/v1/generations", json={"prompt": "c", "duration": 0.3, **FAST}).json()
        job = scheduler.jobs[running["id"]]
        job.state = "running"  # as if the process died in the middle of it
        scheduler.store.update(job)
    with serving(model, tmp_path) as (client, _):
        np.testing.assert_array_equal(wav(client, done["id"]), first)
        crashed = client.get(running["urls"]["status"]).json()
        assert crashed["status"] == "failed" and crashed["error"] == RESTART_ERROR
        assert wait(client, queued["id"])["status"] == "done"


def test_retention_by_count_and_age(model, tmp_path) -> None:
    with serving(model, tmp_path, "--retention-count", "1") as (client, scheduler):
        a = client.post("/v1/generations", json={"prompt": "a", "duration": 0.3, **FAST}).json()
        wait(client, a["id"])
        b = client.post("/v1/generations", json={"prompt": "b", "duration": 0.3, **FAST}).json()
        wait(client, b["id"])
        assert client.get(a["urls"]["status"]).status_code == 404
        assert not scheduler.store.folder(a["id"]).exists()
        assert client.get(b["urls"]["audio"][0]).status_code == 200
    now = time.time()
    jobs = {
        "old": Job("old", {}, 1, "done", now - 100, finished=now - 100),
        "new": Job("new", {}, 1, "done", now, finished=now),
        "waiting": Job("waiting", {}, 1, "queued", now - 1000),
    }
    assert retention_policy(50, None)(jobs) == ["old"]
    assert retention_policy(None, 5)(jobs) == []


def test_models_health_ready_metrics(model, tmp_path) -> None:
    with serving(model, tmp_path) as (client, _):
        info = client.get("/v1/models").json()["data"][0]
        assert (
            info["max_duration"] == pytest.approx(model.max_duration)
            and info["default_sampler"] == "pingpong"
        )
        assert info["loras"] == [] and "cfg_scale" in info["controls"]
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200
        job = client.post("/v1/generations", json={"prompt": "a", "duration": 0.3, **FAST}).json()
        wait(client, job["id"])
        text = client.get("/metrics").text
        assert 'stable_audio_jobs{state="done"} 1.0' in text and "stable_audio_queue_depth 0.0" in text
        assert "stable_audio_step_seconds_count 3.0" in text and "stable_audio_request_seconds" in text
        assert client.get("/openapi.json").json()["paths"]["/v1/generations"]["post"]["requestBody"]
    with serving(model, tmp_path, start=False) as (client, _):
        assert client.get("/readyz").status_code == 503


def test_queue_full_is_429_with_retry_after(model, tmp_path) -> None:
    with serving(model, tmp_path, "--queue-size", "2", start=False) as (client, _):
        for _ in range(2):
            assert client.post("/v1/generations", json={"prompt": "a", "duration": 0.3}).status_code == 202
        r = client.post("/v1/generations", json={"prompt": "a", "duration": 0.3})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


def test_a_failing_job_reports_its_error_and_the_server_goes_on(model, tmp_path, monkeypatch) -> None:
    real = model.generate

    def flaky(*args, **kwargs):
        if kwargs["prompt"] == ["boom"]:
            raise RuntimeError("simulated failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", flaky)
    with serving(model, tmp_path) as (client, _):
        bad = client.post("/v1/generations", json={"prompt": "boom", "duration": 0.3, **FAST}).json()
        status = wait(client, bad["id"])
        assert status["status"] == "failed" and "simulated failure" in status["error"]
        good = client.post("/v1/generations", json={"prompt": "fine", "duration": 0.3, **FAST}).json()
        assert wait(client, good["id"])["status"] == "done"


def _wav_b64(seconds: float, rate: int) -> str:
    buf = io.BytesIO()
    sf.write(buf, np.zeros((int(seconds * rate), 2), np.float32), rate, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


def test_inpainting_from_base64_and_multipart(model, tmp_path) -> None:
    rate = model.sample_rate
    source = _wav_b64(1.0, rate)
    fields = {
        "duration": 1.0,
        "seed": 5,
        "inpaint_mask_start_seconds": 0.2,
        "inpaint_mask_end_seconds": 0.5,
        **FAST,
    }
    with serving(model, tmp_path) as (client, _):
        a = client.post("/v1/generations", json={"prompt": "x", "inpaint_audio": source, **fields}).json()
        b = client.post(
            "/v1/generations",
            data={"request": json.dumps({"prompt": "x", **fields})},
            files={"inpaint_audio": ("src.wav", base64.b64decode(source), "audio/wav")},
        )
        assert b.status_code == 202, b.text
        assert wait(client, a["id"])["status"] == "done" and wait(client, b.json()["id"])["status"] == "done"
        expected = solo(
            model,
            "x",
            1.0,
            5,
            inpaint_audio=(torch.zeros(2, rate), rate),
            **{k: fields[k] for k in ("inpaint_mask_start_seconds", "inpaint_mask_end_seconds")},
        )
        np.testing.assert_allclose(wav(client, a["id"]), expected, atol=ATOL, rtol=0)
        np.testing.assert_allclose(wav(client, b.json()["id"]), expected, atol=ATOL, rtol=0)


SILENCE = _wav_b64(0.5, 6000)
BAD_REQUESTS = [
    ({"duration": 1.0}, 422, "prompt"),
    ({"prompt": 5}, 422, "prompt"),
    ({"prompt": "a", "steps": "5"}, 422, "steps"),
    ({"prompt": "a", "duration": "long"}, 422, "duration"),
    ({"prompt": "a", "duration": 1e6}, 422, "duration"),
    ({"prompt": "a", "steps": 0}, 422, "steps"),
    ({"prompt": "a", "seed": [1, 2]}, 422, "seed"),
    ({"prompt": "a", "lora": {"nope": 1.0}}, 422, "lora"),
    ({"prompt": "a", "lora": {"/etc/passwd": 1.0}}, 422, "lora"),
    ({"prompt": "a", "init_audio": "/etc/passwd"}, 422, "init_audio"),
    ({"prompt": "a", "init_audio": base64.b64encode(b"not audio at all").decode()}, 422, "init_audio"),
    ({"prompt": "a", "init_audio_path": "/etc/passwd"}, 422, "init_audio_path"),
    (
        {
            "prompt": "a",
            "duration": 1.0,
            "inpaint_audio": SILENCE,
            "inpaint_mask_start_seconds": 0.5,
            "inpaint_mask_end_seconds": 0.2,
        },
        422,
        "inpaint_mask_start_seconds",
    ),
    (
        {
            "prompt": "a",
            "duration": 1.0,
            "inpaint_audio": SILENCE,
            "inpaint_mask_start_seconds": [0.1, 2.0],
            "inpaint_mask_end_seconds": [0.2, 3.0],
        },
        422,
        "inpaint_mask_start_seconds",
    ),
    (
        {"prompt": "a", "duration": 1.0, "inpaint_mask_start_seconds": 0.2, "inpaint_mask_end_seconds": 0.5},
        422,
        "inpaint_audio",
    ),
    ({"prompt": "a", "sampler": "heun"}, 422, "sampler"),
    # refused from the schema, before 25 million items are built (schemathesis found that taking 67 s)
    ({"prompt": "a", "batch_size": 25_039_917}, 422, "batch_size"),
    ({"prompt": "a", "batch_size": 0}, 422, "batch_size"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_REQUESTS)
def test_bad_requests_name_the_field(model, tmp_path, body, status, field) -> None:
    with serving(model, tmp_path, start=False) as (client, scheduler):
        r = client.post("/v1/generations", json=body)
        assert r.status_code == status, r.text
        assert field in [x for d in r.json()["detail"] for x in d["loc"]], r.text
        assert not scheduler.jobs  # nothing was accepted


def test_oversized_bodies_are_413(model, tmp_path) -> None:
    with serving(model, tmp_path, "--max-body-mb", "0.01", start=False) as (client, scheduler):
        big = _wav_b64(2.0, model.sample_rate)
        assert client.post("/v1/generations", json={"prompt": "a", "init_audio": big}).status_code == 413
        files = {"init_audio": ("a.wav", base64.b64decode(big), "audio/wav")}
        r = client.post("/v1/generations", data={"request": json.dumps({"prompt": "a"})}, files=files)
        assert r.status_code == 413

        def chunks():  # no Content-Length: counted as it streams
            yield b'{"prompt": "' + b"a" * 20000 + b'"}'

        r = client.post("/v1/generations", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and not scheduler.jobs


def test_token_auth(model, tmp_path) -> None:
    with serving(model, tmp_path, "--token", "s3cret", start=False) as (client, _):
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/healthz").status_code == 200


def test_cli_refuses_a_public_bind_without_a_token(capsys, tmp_path) -> None:
    assert main(["--host", "0.0.0.0", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--token" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["--lora", "x=/no/such.safetensors", "--data-dir", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_loras_are_loaded_at_start_by_name_and_requests_set_strengths(tmp_path) -> None:
    lora = checkpoint_dir("A").parents[1] / "golden" / "lora.safetensors"
    own = StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu")
    with serving(own, tmp_path, "--lora", f"tone={lora}:0.5") as (client, _):
        assert client.get("/v1/models").json()["data"][0]["loras"] == [{"name": "tone", "strength": 0.5}]
        jobs = [
            client.post(
                "/v1/generations", json={"prompt": "tone", "duration": 0.5, "seed": 2, **extra, **FAST}
            )
            for extra in ({"lora": {"tone": 0.8}}, {})
        ]
        results = [wav(client, wait(client, j.json()["id"])["id"]) for j in jobs]
    for got, strength in zip(results, (0.8, 0.5), strict=True):
        np.testing.assert_allclose(got, solo(own, "tone", 0.5, 2, lora_strength=strength), atol=ATOL, rtol=0)
    assert not np.allclose(results[0], results[1])


def test_the_default_model_is_demo_with_a_notice(tmp_path, capsys) -> None:
    _, scheduler, app = build_server(parse_args(["--data-dir", str(tmp_path)]))
    try:
        assert "demo model" in capsys.readouterr().err
        with TestClient(app) as client:
            assert client.get("/v1/models").json()["data"][0]["id"] == "demo"
    finally:
        scheduler.store.close()


def test_stopping_the_server_fails_the_running_job_and_keeps_the_queued(model, tmp_path) -> None:
    with serving(model, tmp_path) as (client, scheduler):
        slow = client.post("/v1/generations", json={"prompt": "b", "duration": 2.0, "steps": 200}).json()
        waiting = client.post("/v1/generations", json={"prompt": "c", "duration": 0.3, **FAST}).json()
        wait(client, slow["id"], states=("running",))
        scheduler.stop()
        status = client.get(slow["urls"]["status"]).json()
        assert status["status"] == "failed" and status["error"] == STOPPED_ERROR
        assert client.get(waiting["urls"]["status"]).json()["status"] == "queued"
    with serving(model, tmp_path) as (client, _):
        assert wait(client, waiting["id"])["status"] == "done"


def test_cors_is_off_by_default_and_preflight_works_with_a_token(model, tmp_path) -> None:
    origin = {"Origin": "http://localhost:5173"}
    with serving(model, tmp_path, start=False) as (client, _):
        assert "access-control-allow-origin" not in client.get("/healthz", headers=origin).headers
    flags = ("--token", "t", "--cors-origin", "http://localhost:5173")
    with serving(model, tmp_path, *flags, start=False) as (client, _):
        pre = client.options("/v1/generations", headers={**origin, "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == origin["Origin"]
        r = client.get("/v1/models", headers={**origin, "Authorization": "Bearer t"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin["Origin"]


def test_request_metrics_are_labelled_by_route(model, tmp_path) -> None:
    with serving(model, tmp_path, start=False) as (client, _):
        client.get("/v1/generations/missing")
        text = client.get("/metrics").text
        assert 'route="/v1/generations/{job_id}",status="404"' in text
