"""Schemathesis fuzzes the server from its own OpenAPI schema: whatever a client sends, the answer
is never a server error (the worker is not started, so only request handling is exercised)."""

from __future__ import annotations

import pytest
from conftest import checkpoint_dir
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")

from stable_audio_3 import StableAudioModel  # noqa: E402
from stable_audio_3.apps.server.main import build_server, parse_args  # noqa: E402


@pytest.fixture(scope="module")
def server_app(tmp_path_factory):
    model = StableAudioModel.from_pretrained(checkpoint_dir("A"), device="cpu")
    data = tmp_path_factory.mktemp("fuzz")
    _, scheduler, app = build_server(
        parse_args(["--data-dir", str(data), "--queue-size", "1000"]), model=model
    )
    yield app
    scheduler.store.close()


@pytest.fixture
def api_schema(server_app):
    return schemathesis.openapi.from_asgi("/openapi.json", server_app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_a_server_error(case) -> None:
    response = case.call()
    not_ready = case.path == "/readyz" and response.status_code == 503  # by design: no worker here
    assert response.status_code < 500 or not_ready, (
        case.method,
        case.path,
        response.status_code,
        response.text[:300],
    )
