"""The HTTP API over one `Scheduler`: submit, status, progress events, results, cancel, model info,
health and Prometheus metrics. Auth (a bearer token), CORS and the body-size limit are set by the
server's settings; `create_app` builds one self-contained app (no global state)."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from stable_audio_3 import StableAudioError, StableAudioModel
from stable_audio_3.apps.outputs import FORMATS, encode_audio
from stable_audio_3.apps.server.limits import BodyLimit
from stable_audio_3.apps.server.metrics import Metrics
from stable_audio_3.apps.server.scheduler import QueueFull, Scheduler
from stable_audio_3.apps.server.schema import AUDIO_FIELDS, FieldError, GenerationBody, build_spec, field_of
from stable_audio_3.apps.server.store import Job

__all__ = ["Settings", "create_app"]


@dataclass(frozen=True)
class Settings:
    model_name: str
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 32 * 2**20
    retry_after_s: int = 5


def _error(status: int, field: str, message: str, **headers: str) -> JSONResponse:
    detail = [{"loc": ["body", field], "msg": message, "type": "value_error"}]
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


def _status(job: Job, scheduler: Scheduler) -> dict[str, Any]:
    base = f"/v1/generations/{job.id}"
    out = {
        "id": job.id,
        "status": job.state,
        "queue_position": scheduler.position(job),
        "progress": {"step": job.step, "steps": job.steps},
        "items": job.items,
        "created": job.created,
        "started": job.started,
        "finished": job.finished,
        "urls": {
            "status": base,
            "events": f"{base}/events",
            "audio": [f"{base}/audio?item={k}" for k in range(job.items)],
        },
    }
    if job.state == "done":
        out["record"] = job.record
    if job.state == "failed":
        out["error"] = job.error
    return out


async def _read_submission(request: Request) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The JSON body, or a multipart form: a `request` field of JSON plus audio file uploads."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        form = await request.form()
        uploads = {}
        for name in AUDIO_FIELDS:
            if name in form and hasattr(form[name], "read"):
                uploads[name] = await form[name].read()
        text = form.get("request")
        if not isinstance(text, str):
            raise FieldError("request", "a multipart submission needs a 'request' field of JSON")
        raw = text
    else:
        uploads, raw = {}, (await request.body()).decode("utf-8", errors="replace")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise FieldError("body", f"the body is not valid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise FieldError("body", "the body must be a JSON object")
    return data, uploads


class Api:
    """The route handlers, each over the one model and scheduler."""

    def __init__(self, model: StableAudioModel, scheduler: Scheduler, settings: Settings) -> None:
        self.model, self.scheduler, self.settings = model, scheduler, settings
        self.metrics = Metrics(scheduler)
        self.fields = tuple(GenerationBody.model_fields)

    def _job(self, job_id: str) -> Job:
        job = self.scheduler.jobs.get(job_id)
        if job is None:
            raise _NotFound(job_id)
        return job

    async def submit(self, request: Request) -> JSONResponse:
        """Accept a generation job (JSON, or multipart with audio uploads): 202 with its URLs."""
        try:
            data, uploads = await _read_submission(request)
            body = GenerationBody.model_validate(data)
            spec = build_spec(body, uploads, self.scheduler.lora_names, self.model.default_duration)
            await asyncio.to_thread(self.model.check_arguments, **spec.generate_arguments())
        except ValidationError as err:
            detail = [
                {"loc": ["body", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]}
                for e in err.errors()
            ]
            return JSONResponse({"detail": detail}, status_code=422)
        except FieldError as err:
            return _error(422, err.field, str(err))
        except (StableAudioError, ValueError, TypeError) as err:
            return _error(422, field_of(str(err), self.fields), str(err))
        try:
            job = await asyncio.to_thread(self.scheduler.submit, spec)  # writes the inputs to disk
        except QueueFull as err:
            return _error(429, "body", str(err), **{"Retry-After": str(self.settings.retry_after_s)})
        headers = {"Location": f"/v1/generations/{job.id}"}
        return JSONResponse(_status(job, self.scheduler), status_code=202, headers=headers)

    async def status(self, job_id: str) -> dict[str, Any]:
        """Status, queue position, progress; the record when done, the error when failed."""
        return _status(self._job(job_id), self.scheduler)

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job (a finished one is left as it is)."""
        self._job(job_id)
        return _status(self.scheduler.cancel(job_id), self.scheduler)

    async def events(self, job_id: str, request: Request) -> StreamingResponse:
        """Server-sent events: `progress` on every change, then `done`, `failed` or `cancelled`."""
        job = self._job(job_id)

        async def stream():
            seen = None
            while True:
                now = (job.state, job.step, self.scheduler.position(job))
                if now != seen:
                    seen = now
                    kind = job.state if job.terminal else "progress"
                    yield f"event: {kind}\ndata: {json.dumps(_status(job, self.scheduler))}\n\n"
                if job.terminal or await request.is_disconnected():
                    return
                await asyncio.sleep(0.05)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def audio(self, job_id: str, item: int = 0, format: str = "wav") -> Response:
        """Item `item` of a finished job as wav (float32), flac, ogg or mp3."""
        job = self._job(job_id)
        if format not in FORMATS:
            return _error(422, "format", f"format must be one of {sorted(FORMATS)}, got {format!r}")
        if job.state != "done":
            return JSONResponse({"detail": f"generation {job_id} is {job.state}, not done"}, status_code=409)
        if not 0 <= item < job.items:
            return _error(422, "item", f"item must be in [0, {job.items}), got {item}")
        data = await asyncio.to_thread(_encode, self.scheduler.store.result(job_id, item), format)
        return Response(data, media_type=f"audio/{'mpeg' if format == 'mp3' else format}")

    async def models(self) -> dict[str, Any]:
        """The loaded model: its limits, which controls apply, the LoRAs loaded at start."""
        m, objective = self.model, self.model.config.diffusion.objective
        strengths = zip(self.scheduler.lora_names, m.lora_strengths(), strict=True)
        samplers = ["pingpong", "euler", "dpmpp"] if objective == "rf_denoiser" else ["euler", "dpmpp"]
        info = {
            "id": self.settings.model_name,
            "sample_rate": m.sample_rate,
            "max_duration": m.max_duration,
            "objective": objective,
            "default_sampler": samplers[0],
            "samplers": samplers,
            "controls": list(self.fields),
            "max_batch": self.scheduler.max_batch,
            "loras": [{"name": n, "strength": s} for n, s in strengths],
        }
        return {"data": [info]}

    async def healthz(self) -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    async def readyz(self) -> JSONResponse:
        """The model is loaded and the worker runs."""
        ready = self.scheduler.alive
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def prometheus(self) -> Response:
        """Prometheus text format."""
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")

    async def guard(self, request: Request, call_next):
        """Bearer auth (all but /healthz) and request metrics."""
        started = time.perf_counter()
        token = self.settings.token
        if token is not None and request.url.path != "/healthz":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                headers = {"WWW-Authenticate": "Bearer"}
                return JSONResponse(
                    {"detail": "missing or wrong bearer token"}, status_code=401, headers=headers
                )
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        self.metrics.request(request.method, route, response.status_code, time.perf_counter() - started)
        return response


class _NotFound(Exception):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id


def create_app(model: StableAudioModel, scheduler: Scheduler, settings: Settings) -> FastAPI:
    """One app: its routes, the body limit, auth, CORS when configured."""
    api = Api(model, scheduler, settings)
    app = FastAPI(title="Stable Audio 3 server", version="1", docs_url="/docs")
    app.middleware("http")(api.guard)  # innermost: auth and metrics
    if settings.cors_origins:  # outside auth, so that a browser's preflight gets its answer
        from fastapi.middleware.cors import CORSMiddleware

        origins = list(settings.cors_origins)
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)  # outermost
    app.add_exception_handler(
        _NotFound, lambda _, e: JSONResponse({"detail": f"no generation {e.job_id!r}"}, status_code=404)
    )
    schema = GenerationBody.model_json_schema()
    body = {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
    route = app.add_api_route
    route("/v1/generations", api.submit, methods=["POST"], status_code=202, openapi_extra=body)
    route("/v1/generations/{job_id}", api.status, methods=["GET"])
    route("/v1/generations/{job_id}", api.cancel, methods=["DELETE"])
    route("/v1/generations/{job_id}/events", api.events, methods=["GET"])
    route("/v1/generations/{job_id}/audio", api.audio, methods=["GET"])
    route("/v1/models", api.models, methods=["GET"])
    route("/healthz", api.healthz, methods=["GET"])
    route("/readyz", api.readyz, methods=["GET"])
    route("/metrics", api.prometheus, methods=["GET"])
    app.state.api = api
    return app


def _encode(path, format: str) -> bytes:
    """A stored float32 WAV in `format` (MP3 resampled to a rate it can hold)."""
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return encode_audio(data.T, rate, format, fit_rate=True)
