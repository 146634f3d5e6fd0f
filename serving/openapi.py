"""The published OpenAPI document (``GET /docs.json``): what the service really answers.

BentoML writes the document from the endpoints' pydantic models, but it cannot know what
the middlewares and handlers answer besides 200: it lists 400, 404 and 500 with schemas of
its own (a 400's ``detail`` as a string, where it is a list), nothing about keys, and it
labels the document OpenAPI 3.0 while pydantic writes ``null`` as a JSON Schema type (3.1).
:func:`published` rewrites it, and :class:`PublishedSpecMiddleware` serves the rewrite:

- OpenAPI 3.1 (its schemas are JSON Schema, so ``{"type": "null"}`` means what pydantic meant),
  and bodies described by the pydantic models' own schemas (BentoML's copies in the paths drop
  ``null`` from nullable fields);
- the bearer scheme, required by every endpoint that is not open (``serving.auth``);
- every answer with its body: 400 :class:`~serving.api.BadRequest`; 401, 403, 409, 413, 415,
  422, 431, 503 and 500 :class:`~serving.api.ErrorResponse` (``GET /model`` and ``GET /report``
  answer 503 with the reload state), all ``application/json``.

``tests/test_request_bounds.py`` runs schemathesis against the published document.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from serving.api import BadRequest, ErrorResponse, ReloadStatus
from serving.auth import ADMIN_PREFIX, CONSENT_PREFIX, is_open_path
from serving.limits import COUNTED, JSON_ONLY

SPEC_PATH = "/docs.json"
BEARER = "bearer"
REF = "#/components/schemas/{model}"
_BENTOML_ERRORS = ("InvalidArgument", "NotFound", "InternalServerError")
WHY = {
    400: "The body is not valid JSON or not of the request's shape (`detail` lists each problem).",
    401: "No valid key: send `Authorization: Bearer <key>`.",
    403: "The key may not use this endpoint (admin and consent-event endpoints need their own keys).",
    404: "Not found.",
    409: "An `event_id` already recorded with other content (nothing recorded).",
    413: "Too large: over the voters (or events) per request, the JSON values per request or the body bytes.",
    415: "The body is not `application/json`.",
    422: "A field of the wrong type or size, named in `detail` (the value is never echoed).",
    431: "The request line and headers are larger than the limit (the connection is closed).",
    500: "An unexpected error (the log has it; nothing about the request is logged).",
    503: "Not ready: no model loaded yet, or the consent ledger cannot be read; retry.",
}


def published(spec: dict[str, Any]) -> dict[str, Any]:
    """BentoML's OpenAPI document, rewritten to match the service (see the module docstring)."""
    out = copy.deepcopy(spec)
    out["openapi"] = "3.1.0"
    components = out.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in _BENTOML_ERRORS:
        schemas.pop(name, None)
    for model in (BadRequest, ErrorResponse, ReloadStatus):
        found = model.model_json_schema(ref_template=REF)
        schemas.update(found.pop("$defs", {}))
        schemas[model.__name__] = found
    components["securitySchemes"] = {BEARER: {
        "type": "http", "scheme": "bearer",
        "description": "An API key (`PERSUADE_API_KEYS`); `/admin/*` needs an admin key, `/consent/*` a "
                       "consent-event key."}}
    for path, item in out.get("paths", {}).items():
        for method, operation in item.items():
            _use_components(operation, schemas)
            _document(path, method, operation)
    return out


def _use_components(operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Request and response bodies described by their component schemas: BentoML copies those into the
    path, and its copies lose pydantic's ``null`` alternatives (a nullable field becomes a required type)."""
    bodies = [operation.get("requestBody") or {}, *operation.get("responses", {}).values()]
    for body in bodies:
        for media in body.get("content", {}).values():
            title = media.get("schema", {}).get("title")
            if title in schemas:
                media["schema"] = copy.deepcopy(schemas[title])


def _document(path: str, method: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    codes = {431, 500}
    if is_open_path(path):
        operation["security"] = []
    else:
        operation["security"] = [{BEARER: []}]
        codes |= {401, 403}
    if method == "post" and path in JSON_ONLY:
        codes |= {400, 413, 415, 422}
    if path in COUNTED or path in ("/model", "/report"):
        codes |= {503}
    if path.startswith(CONSENT_PREFIX):
        codes |= {409}
    if path.startswith(ADMIN_PREFIX):
        codes -= {422}
    for code in sorted(codes | {int(c) for c in responses if str(c) != "200"}):
        model = BadRequest if code == 400 else ReloadStatus if code == 503 and method == "get" else ErrorResponse
        responses.pop(code, None)  # BentoML's keys are integers, FastAPI's strings: one key per code
        responses[str(code)] = {"description": WHY.get(code, "Error."), "content": {
            "application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}}


class PublishedSpecMiddleware:
    """Serve :func:`published` of the document the app serves at ``/docs.json``.

    Parameters
    ----------
    app : ASGI app
    """

    def __init__(self, app):
        self.app = app
        self._cached: bytes | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != SPEC_PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if self._cached is None:
            start, chunks = {}, []

            async def keep(message) -> None:
                if message["type"] == "http.response.start":
                    start.update(message)
                else:
                    chunks.append(message.get("body", b""))

            await self.app(scope, receive, keep)
            if start.get("status") != 200:
                body = b"".join(chunks)
                await send({**start, "headers": _headers(start.get("headers", []), len(body))})
                await send({"type": "http.response.body", "body": body})
                return
            self._cached = json.dumps(published(json.loads(b"".join(chunks)))).encode()
        body = self._cached
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _headers(headers: list[tuple[bytes, bytes]], length: int) -> list[tuple[bytes, bytes]]:
    return [*(h for h in headers if h[0].lower() != b"content-length"), (b"content-length", str(length).encode())]
