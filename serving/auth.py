"""Bearer-key authentication: a pure ASGI middleware in front of every scoring endpoint.

Keys come from the environment:

``PERSUADE_API_KEYS``
    Comma-separated keys (development, tests).
``PERSUADE_API_KEYS_FILE``
    A file with one sha256 hex digest of a key per line (``#`` comments allowed): the
    service never needs to hold the keys themselves.
``PERSUADE_ADMIN_KEYS`` / ``PERSUADE_ADMIN_KEYS_FILE``
    The same for admin keys (``/admin/*``, e.g. ``POST /admin/reload``). An admin key
    may also score.
``PERSUADE_CONSENT_KEYS`` / ``PERSUADE_CONSENT_KEYS_FILE``
    The same for consent-event keys (``/consent/*``, e.g. ``POST /consent/events`` from a
    texting platform's webhook). They are accepted there only, and only they are: a
    scoring or admin key cannot write consent events, a consent-event key cannot score.

A key is identified by the first 12 hex digits of its sha256 (its *key id*), which is
what the audit log records. The key itself is never logged, stored or echoed. With no
key configured every protected request is refused (fail closed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from features.settings import Settings
from serving.audit import current_record

logger = logging.getLogger("persuade.auth")

KEY_ID_LENGTH = 12
OPEN_PATHS = frozenset({"/", "/livez", "/healthz", "/readyz", "/metrics", "/docs.json", "/schema.json"})
OPEN_PREFIXES = ("/static_content/", "/assets/")
ADMIN_PREFIX = "/admin/"
CONSENT_PREFIX = "/consent/"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def key_digest(key: str) -> str:
    """sha256 hex digest of a key (what a keys file stores)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyRing:
    """The accepted keys, as digests: digest -> key id, for scoring, for admin, for consent events."""

    scoring: frozenset[str]
    admin: frozenset[str]
    consent: frozenset[str] = frozenset()

    @classmethod
    def from_keys(cls, keys: Iterable[str] = (), admin_keys: Iterable[str] = (),
                  consent_keys: Iterable[str] = ()) -> KeyRing:
        admin = frozenset(key_digest(k) for k in admin_keys if k)
        return cls(frozenset(key_digest(k) for k in keys if k) | admin, admin,
                   frozenset(key_digest(k) for k in consent_keys if k))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KeyRing:
        """:meth:`from_settings` of ``env`` (default: the process environment)."""
        return cls.from_settings(Settings.from_env(env))

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """Keys from ``PERSUADE_API_KEYS[_FILE]``, ``PERSUADE_ADMIN_KEYS[_FILE]``, ``PERSUADE_CONSENT_KEYS[_FILE]``."""
        scoring = _digests(settings, "api_keys")
        admin = _digests(settings, "admin_keys")
        ring = cls(scoring | admin, admin, _digests(settings, "consent_keys"))
        if not ring.scoring:
            logger.warning("no API keys configured (PERSUADE_API_KEYS or PERSUADE_API_KEYS_FILE): "
                           "every scoring request will be refused")
        return ring

    def identify(self, key: str) -> tuple[str | None, bool]:
        """(key id, is admin) of a presented key; (None, False) if it is not accepted."""
        digest = key_digest(key)
        if digest not in self.scoring:
            return None, False
        return digest[:KEY_ID_LENGTH], digest in self.admin

    def identify_consent(self, key: str) -> str | None:
        """Key id of a presented consent-event key; None if it is not one."""
        digest = key_digest(key)
        return digest[:KEY_ID_LENGTH] if digest in self.consent else None


def _digests(settings: Settings, field: str) -> frozenset[str]:
    """Digests of the keys of ``field`` (``api_keys``, ...) and of its keys file (``api_keys_file``)."""
    digests = {key_digest(k) for k in settings.key_list(field)}
    path: Path | None = getattr(settings, f"{field}_file")
    if path is None:
        return frozenset(digests)
    variable = Settings.variable(f"{field}_file")
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"{variable} {path}: cannot be read ({exc.strerror or exc})") from None
    for n, line in enumerate(lines, start=1):
        line = line.split("#", 1)[0].strip().lower()
        if not line:
            continue
        if not _HEX64.match(line):
            raise ValueError(f"{variable} {path}, line {n}: not a sha256 hex digest")
        digests.add(line)
    return frozenset(digests)


class BearerKeyMiddleware:
    """ASGI middleware: ``Authorization: Bearer <key>`` on every path but the open ones.

    No key or an unknown key is a 401; a scoring key on ``/admin/*`` is a 403; on
    ``/consent/*`` only consent-event keys are accepted. The key id of an accepted
    request goes into the request's audit record.

    Parameters
    ----------
    app : ASGI app
    keys : KeyRing, optional
        Default: :meth:`KeyRing.from_env`.
    """

    def __init__(self, app, keys: KeyRing | None = None):
        self.app = app
        self.keys = keys if keys is not None else KeyRing.from_env()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or is_open_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        key = _bearer(scope)
        if scope["path"].startswith(CONSENT_PREFIX):
            await self._consent(scope, receive, send, key)
            return
        key_id, admin = self.keys.identify(key) if key else (None, False)
        if key_id is None:
            await _refuse(send, 401, "missing or invalid API key: send 'Authorization: Bearer <key>'")
            return
        record = current_record()
        if record is not None:
            record.key_id = key_id
        if scope["path"].startswith(ADMIN_PREFIX) and not admin:
            await _refuse(send, 403, "this endpoint needs an admin key")
            return
        await self.app(scope, receive, send)

    async def _consent(self, scope, receive, send, key: str | None) -> None:
        """``/consent/*``: consent-event keys only (401 without a key, 403 for another kind of key)."""
        key_id = self.keys.identify_consent(key) if key else None
        if key_id is None:
            if key and self.keys.identify(key)[0] is not None:
                await _refuse(send, 403, "this endpoint needs a consent-event key (PERSUADE_CONSENT_KEYS)")
            else:
                await _refuse(send, 401, "missing or invalid consent-event key: send 'Authorization: Bearer <key>'")
            return
        record = current_record()
        if record is not None:
            record.key_id = key_id
        await self.app(scope, receive, send)


def is_open_path(path: str) -> bool:
    """True for paths that need no key (health checks, metrics, API docs)."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def _bearer(scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="persuade"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
