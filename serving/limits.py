"""Request size limits: voters per request, and bytes per request body.

The voter limit is checked on the parsed request (``POST /score`` answers 413). The byte
limit is a pure ASGI middleware that refuses an oversized body before anything parses it,
so one huge upload cannot exhaust the service's memory: by ``Content-Length`` when the
client sends it, else by counting a chunked body as it arrives.
"""

from __future__ import annotations

import json

MAX_VOTERS = 10_000
MAX_BODY_BYTES = 64 * 1024 * 1024  # a 10,000-voter request is a few MB


class BodyLimitMiddleware:
    """Answer 413 to a request whose body exceeds ``max_bytes``.

    Parameters
    ----------
    app : ASGI app
    max_bytes : int
    """

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.max_bytes:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read the body up to the limit, then replay it.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replayed = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay():
            return replayed.pop() if replayed else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send) -> None:
        body = json.dumps({"error": f"request body larger than {self.max_bytes:,} bytes", "detail": []}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
