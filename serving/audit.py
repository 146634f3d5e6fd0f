"""The audit log: one structured JSON line per request to a protected endpoint.

A line holds the time, method, path, status, the caller's key id (a hash prefix, never
the key), the model name and version that answered, how many voters were scored,
whether reasons were asked for, the scores' warnings by kind (see serving/voters.py), and
the latency::

    {"audit": "persuade", "time": "2026-11-28T10:50:00.123Z", "method": "POST", "path": "/score",
     "status": 200, "key_id": "3f9a0c1d22b4", "model": "persuade-ggl2008", "model_version": "3",
     "voters": 250, "explain": true, "warnings": {"missing": 12, "out_of_range": 1}, "latency_ms": 41.7}

It never holds voter ids, feature values, phone numbers or anything else from the request
body. Lines go to stderr (with the service log) and, if ``PERSUADE_AUDIT_LOG`` names a
file, are appended to it too.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from features.settings import Settings

AUDIT_LOGGER = "persuade.audit"

_current: ContextVar[AuditRecord | None] = ContextVar("persuade_audit_record", default=None)


@dataclass
class AuditRecord:
    """What the audit line of one request will say (filled in while it is handled)."""

    method: str
    path: str
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds")
                      .replace("+00:00", "Z"))
    status: int = 0
    key_id: str | None = None
    model: str | None = None
    model_version: str | None = None
    voters: int | None = None
    explain: bool | None = None
    warnings: dict[str, int] | None = None  # warning kind -> how many among the scores (POST /score)
    latency_ms: float = 0.0

    def line(self) -> str:
        return json.dumps({"audit": "persuade", **asdict(self)}, separators=(",", ":"))


def current_record() -> AuditRecord | None:
    """The audit record of the request being handled (None outside a request)."""
    return _current.get()


def audit_logger(path: str | Path | None = None) -> logging.Logger:
    """The audit logger: JSON lines to stderr, and to ``path`` (or ``PERSUADE_AUDIT_LOG``)."""
    logger = logging.getLogger(AUDIT_LOGGER)
    if getattr(logger, "_persuade_configured", False):
        return logger
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    path = path or Settings.from_env().audit_log
    if path:
        handlers.append(logging.FileHandler(path, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger._persuade_configured = True  # type: ignore[attr-defined]
    return logger


class AuditMiddleware:
    """ASGI middleware writing one audit line per request to a protected path.

    Parameters
    ----------
    app : ASGI app
    is_open : callable, optional
        ``is_open(path)`` is True for paths that are not audited (health checks, docs).
    logger : logging.Logger, optional
        Default: :func:`audit_logger`.
    """

    def __init__(self, app, is_open=None, logger: logging.Logger | None = None):
        self.app = app
        self.is_open = is_open or (lambda path: False)
        self.logger = logger or audit_logger()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or self.is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        record = AuditRecord(method=scope["method"], path=scope["path"])
        token = _current.set(record)
        started = time.perf_counter()

        async def send_and_note(message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except BaseException:
            record.status = record.status or 500
            raise
        finally:
            record.latency_ms = round((time.perf_counter() - started) * 1000, 2)
            self.logger.info(record.line())
            _current.reset(token)
