"""Request limits: what one request may hold, refused before anything parses it where possible.

========================  =================================================================
voters per request        :data:`MAX_VOTERS` (``POST /score``, ``POST /plan``); consent events
                          per request: ``serving.consent_intake.MAX_EVENTS``
items of any list/object  the same limit, for every list or object at the first two levels
                          of the request (the request's fields, the voters of ``voters``)
JSON values per request   :data:`VALUES_PER_ITEM` per allowed voter or event
body bytes                ``PERSUADE_MAX_BODY_BYTES`` (default 64 MiB)
content type              ``application/json`` (or none) on the POST endpoints
``voter_id``              :data:`MAX_ID_CHARS` characters, no control characters
other strings read        :data:`MAX_STRING_CHARS` characters (features, fields the consent rules read)
request headers           ``serving.header_limit.MAX_HEADER_BYTES``
========================  =================================================================

:class:`BodyLimitMiddleware` is a pure ASGI middleware: it answers 415 to a body that is not
JSON, 413 to a body whose ``Content-Length`` is over the byte limit (before reading it), and
counts the voters (or events) and values of a JSON body while it streams in
(:class:`serving.json_shape.JsonShape`), answering 413 as soon as a count crosses its limit:
50 MB of ``{"voters": [{}, {}, ...]}`` is refused after reading the first few kilobytes,
without building one object. Strings are checked where the voters are read
(:mod:`serving.voters`: a 422 naming the voter and the field).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from features.settings import DEFAULT_MAX_BODY_BYTES
from serving.consent_intake import MAX_EVENTS
from serving.json_shape import JsonShape

MAX_VOTERS = 10_000
MAX_ID_CHARS = 128
MAX_STRING_CHARS = 256
VALUES_PER_ITEM = 256  # JSON values per voter (or event) a request may hold on average
JSON_MEDIA_TYPE = "application/json"
# POST endpoint -> (what its list holds, most items): the list limit is checked while the body arrives
COUNTED: dict[str, tuple[str, int]] = {"/score": ("voters", MAX_VOTERS), "/plan": ("voters", MAX_VOTERS),
                                        "/consent/events": ("events", MAX_EVENTS)}
JSON_ONLY = frozenset({*COUNTED, "/admin/reload"})  # POST endpoints whose body is JSON


class BodyLimitMiddleware:
    """Refuse a request body that is not JSON (415) or is over a limit (413), before it is parsed.

    Parameters
    ----------
    app : ASGI app
    max_bytes : int
        Most bytes in a request body.
    counted : mapping of str to (str, int)
        Path -> (what its list holds, most items in it); see :data:`COUNTED`.
    """

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 counted: Mapping[str, tuple[str, int]] = COUNTED):
        self.app = app
        self.max_bytes = max_bytes
        self.counted = dict(counted)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        if scope["method"] == "POST" and scope["path"] in JSON_ONLY:
            media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if media and media != JSON_MEDIA_TYPE.encode():
                shown = media.decode("latin-1")[:80]
                await refuse(send, 415, f"Content-Type must be {JSON_MEDIA_TYPE}, got {shown!r}")
                return
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await refuse(send, 413, f"request body larger than {self.max_bytes:,} bytes")
            return
        counted = self.counted.get(scope["path"]) if scope["method"] == "POST" else None
        if counted is None and declared is not None:
            await self.app(scope, receive, send)
            return
        body = await self._read(receive, send, counted)
        if body is None:
            return
        replayed = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay():
            return replayed.pop() if replayed else await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive, send, counted: tuple[str, int] | None) -> bytes | None:
        """The whole body, or None once a limit was crossed (and refused)."""
        shape = None if counted is None else JsonShape(max_items=counted[1], max_values=counted[1] * VALUES_PER_ITEM)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await refuse(send, 413, f"request body larger than {self.max_bytes:,} bytes")
                return None
            crossed = shape.feed(chunk) if shape is not None else None
            if crossed:
                noun, limit = counted
                if crossed == "values":
                    noun, limit = "JSON values", limit * VALUES_PER_ITEM
                await refuse(send, 413, f"more than {limit:,} {noun} in one request; the limit is {limit:,}")
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


async def refuse(send, status: int, error: str) -> None:
    """Answer ``status`` with ``{"error": error, "detail": []}``, the body of every refusal here."""
    body = json.dumps({"error": error, "detail": []}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
