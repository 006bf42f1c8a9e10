"""The request-body limit as ASGI middleware: 413 for a body past `limit` bytes, whether or not it
declares its length (a chunked upload is counted as it streams in, and cut off there)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["BodyLimit"]


class BodyLimit:
    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    def _answer(self) -> tuple[dict, dict]:
        msg = f"the request body is larger than {self.limit} bytes"
        body = json.dumps({"detail": [{"loc": ["body"], "msg": msg, "type": "value_error"}]}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        return {"type": "http.response.start", "status": 413, "headers": headers}, {
            "type": "http.response.body",
            "body": body,
        }

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            for message in self._answer():
                await send(message)
            return
        state = {"seen": 0, "over": False, "answered": False}

        async def counted_receive():
            if state["over"]:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > self.limit:  # stop reading; the app sees an empty tail
                    state["over"] = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def limited_send(message):
            if not state["over"]:
                await send(message)
            elif not state["answered"]:  # whatever the app made of a cut body, the answer is 413
                state["answered"] = True
                for answer in self._answer():
                    await send(answer)

        await self.app(scope, counted_receive, limited_send)
