"""``POST /consent/events``: opt-outs and other consent events, written to the consent ledger.

A texting platform's webhook forwards replies (``{"event_id": "SM123", "phone": ...,
"reply": "STOP"}``); a canvassing app sends a do-not-contact (``{"event_id": "door-42",
"voter_id": "MI-1", "event": "do_not_contact"}``). Every event is validated, its phone
number hashed at once, its reply read (:mod:`features.consent_replies`), and the whole
request is committed to the ledger (:mod:`features.consent_ledger`) before the 200: an
acknowledged event survives a crash of the service the next instant, and applies to the
next ``/score`` or ``/plan`` (:mod:`serving.consent_feed`).

Answers: 200 with each event's stored status; 422 for bad events, naming the event (its
index) and the field, never echoing a value; 409 when an event id was recorded before
with other content (nothing of the request is recorded); 413 for more than
:data:`MAX_EVENTS` events; 503 when the ledger cannot be written (nothing recorded; retry:
the request is idempotent).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, WithJsonSchema
from pydantic import field_validator as validates
from sqlalchemy.exc import SQLAlchemyError

from features.consent import Event, LineType, Scope, Source
from features.consent_ledger import ConsentLedger, LedgerConflict, LedgerError
from features.consent_replies import MAX_REPLY_CHARS
from features.ledger_rows import check_event_id, ledger_rows
from features.phones import HASH_PATTERN, PhoneFormatError, normalize_e164
from features.pii import scrub_text

logger = logging.getLogger("persuade.serving")

MAX_EVENTS = 1_000
MAX_DETAILS = 20
CLOCK_SKEW = timedelta(minutes=5)  # a timestamp later than this after receipt is refused
_ROW = re.compile(r",? row \d+")
_COLUMN = re.compile(r"column '(\w+)'")


class ConsentEventIn(BaseModel):
    """One consent event (the consent table's columns; see ``features/consent_table.py``)."""

    model_config = ConfigDict(extra="forbid")

    event_id: StrictStr = Field(description="Idempotency key: the same event sent again is recorded once.")
    voter_id: StrictStr | StrictInt | None = Field(default=None, description="The voter, if known.")
    phone: StrictStr | StrictInt | None = Field(
        default=None, description="The number the event is about (hashed on arrival, never stored or echoed).")
    phone_hash: StrictStr | None = Field(default=None, pattern=HASH_PATTERN.pattern,
                                         description="Instead of `phone`: its keyed hash (with `hash_key_check`).")
    hash_key_check: StrictStr | None = Field(default=None, description="Check value of the key of `phone_hash`.")
    event: Literal[tuple(e.value for e in Event)] | None = Field(  # type: ignore[valid-type]
        default=None, description="What happened; or send `reply` and the service reads it.")
    reply: StrictStr | None = Field(default=None, max_length=MAX_REPLY_CHARS,
                                    description="A free-text reply (STOP, PARA, ...), read as an opt-out or not.")
    line_type: Literal[tuple(t.value for t in LineType if t != LineType.unknown)] | None = None  # type: ignore[valid-type]
    scope: Literal[tuple(s.value for s in Scope)] | None = None  # type: ignore[valid-type]
    source: StrictStr | None = Field(default=None, max_length=32,
                                     description=f"How consent was obtained: {', '.join(s.value for s in Source)}.")
    keyword: StrictStr | None = Field(default=None, max_length=32, description="The opt-out word of a revocation.")
    timestamp: StrictStr | None = Field(default=None, description="ISO 8601 with a zone; default: when received.")

    @validates("event_id")
    @classmethod
    def _event_id(cls, value: str) -> str:
        return check_event_id(value)

    @validates("phone")
    @classmethod
    def _phone(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            try:
                normalize_e164(value)
            except PhoneFormatError as exc:
                raise ValueError(str(exc)) from None
        return value

    @validates("timestamp")
    @classmethod
    def _timestamp(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("not an ISO 8601 time (e.g. 2026-03-01T09:00:00-05:00)") from None
        if moment.tzinfo is None:
            raise ValueError("has no time zone: write it with an offset or Z")
        if moment > datetime.now(UTC) + CLOCK_SKEW:
            raise ValueError(f"is more than {CLOCK_SKEW.seconds // 60} minutes in the future")
        return moment.astimezone(UTC).isoformat()

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) of the rules between fields."""
        out = []
        if (self.event is None) == (self.reply is None):
            out.append(("event", "send exactly one of 'event' and 'reply'"))
        if self.voter_id is None and self.phone is None and self.phone_hash is None:
            out.append(("phone", "an event needs a 'voter_id', 'phone' or 'phone_hash'"))
        if self.phone is not None and self.phone_hash is not None:
            out.append(("phone_hash", "send 'phone' or 'phone_hash', not both"))
        if self.phone_hash is not None and self.hash_key_check is None:
            out.append(("hash_key_check", "a 'phone_hash' needs the check value of the key that made it"))
        if self.event == Event.line_type and self.line_type is None:
            out.append(("line_type", "a line_type event needs 'line_type'"))
        if self.event == Event.consent:
            if self.scope is None:
                out.append(("scope", "a consent event needs 'scope'"))
            if self.source not in {s.value for s in Source}:
                out.append(("source", f"a consent event needs 'source', one of {[s.value for s in Source]}"))
        return out


EVENT_SCHEMA = ConsentEventIn.model_json_schema()
ConsentEvents = Annotated[
    list[dict[str, Any]],
    WithJsonSchema({"type": "array", "items": EVENT_SCHEMA, "maxItems": MAX_EVENTS}),
]


class ConsentEventsRequest(BaseModel):
    """``POST /consent/events``: events to record."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"example": {"events": [
        {"event_id": "SM0123456789abcdef", "phone": "+1 202 555 0143", "reply": "STOP"},
        {"event_id": "canvass-2026-03-01-0042", "voter_id": "MI-000123", "event": "do_not_contact"}]}})

    events: ConsentEvents = Field(description=f"At most {MAX_EVENTS:,} events; recorded together or not at all.")


class RecordedEvent(BaseModel):
    event_id: str
    status: str = Field(description="`applied`, `review` (an unclear reply: revokes automated contact until a "
                                    "person reads it) or `not_applied` (an opt-in or help reply: no effect).")
    event: str | None
    keyword: str | None
    duplicate: bool = Field(description="The event id was recorded before (nothing new was stored).")


class ConsentEventsResponse(BaseModel):
    recorded: int = Field(description="Events stored by this request.")
    duplicates: int = Field(description="Events already stored (same id, same content).")
    events: list[RecordedEvent]


class ConsentIntake:
    """Validate consent events and commit them to the ledger (the endpoint's logic).

    Parameters
    ----------
    ledger : ConsentLedger
        Where events go; its hasher hashes the phone numbers.
    """

    def __init__(self, ledger: ConsentLedger):
        self.ledger = ledger

    def receive(self, events: list[Any], key_id: str | None = None) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for a request's events, committed before a 200."""
        if len(events) > MAX_EVENTS:
            return 413, _error(f"{len(events):,} events in one request; the limit is {MAX_EVENTS:,}")
        frame, problems = read_events(events)
        if not problems:
            try:
                rows = ledger_rows(frame, hasher=self.ledger.hasher, time_on_receipt=True)
            except LedgerError:
                rows, problems = None, self._row_problems(frame)
        if problems:
            first = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            return 422, _error(f"event {first['event']}, field {first['field']!r}: {first['message']}{more}",
                               problems[:MAX_DETAILS])
        try:
            stored = self.ledger.append(rows, received_from=f"http:{key_id or 'unknown'}")
        except LedgerConflict as exc:
            index = {e: i for i, e in enumerate(frame["event_id"])}
            detail = [{"event": index.get(e), "field": "event_id", "message": "already recorded with other content"}
                      for e in exc.event_ids]
            return 409, _error(str(exc), detail[:MAX_DETAILS])
        except (LedgerError, SQLAlchemyError) as exc:
            logger.error("consent events could not be recorded (%s); the sender should retry", type(exc).__name__)
            return 503, _error("the consent ledger cannot be written: nothing was recorded; retry (the request "
                               "is idempotent by event_id)")
        new = int((~stored["duplicate"]).sum())
        logger.info("consent events: %d recorded, %d already recorded", new, len(stored) - new)
        listed = [{"event_id": r["event_id"], "status": r["status"], "event": r["event"], "keyword": r["keyword"],
                   "duplicate": bool(r["duplicate"])}
                  for r in stored[["event_id", "status", "event", "keyword", "duplicate"]].to_dict("records")]
        return 200, {"recorded": new, "duplicates": len(stored) - new, "events": listed}

    def _row_problems(self, frame: pd.DataFrame) -> list[dict[str, Any]]:
        """The events that fail the ledger's validation, one by one (for the 422's detail)."""
        problems = []
        for i in range(len(frame)):
            try:
                ledger_rows(frame.iloc[[i]], hasher=self.ledger.hasher, time_on_receipt=True)
            except LedgerError as exc:
                message = scrub_text(_ROW.sub("", str(exc)))
                column = _COLUMN.search(message)
                problems.append({"event": i, "field": column.group(1) if column else None, "message": message})
        return problems or [{"event": None, "field": None, "message": "the events cannot be recorded together"}]


def read_events(events: list[Any]) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Validated events as a raw consent-table frame, and the problems found (event, field, message)."""
    problems: list[dict[str, Any]] = []
    rows = []
    for i, raw in enumerate(events):
        if not isinstance(raw, dict):
            problems.append({"event": i, "field": None, "message": "an event is a JSON object"})
            continue
        try:
            event = ConsentEventIn.model_validate(raw)
        except ValidationError as exc:
            found: dict[str | None, list[str]] = {}  # a union's members each fail: one entry per field
            for e in exc.errors(include_input=False, include_url=False, include_context=False):
                field = scrub_text(str(e["loc"][0])) if e["loc"] else None
                message = scrub_text(e["msg"].removeprefix("Value error, "))
                found.setdefault(field, [])
                if message not in found[field]:
                    found[field].append(message)
            problems += [{"event": i, "field": f, "message": " or ".join(m)} for f, m in found.items()]
            continue
        problems += [{"event": i, "field": f, "message": m} for f, m in event.problems()]
        row = event.model_dump()
        row["voter_id"] = None if event.voter_id is None else str(event.voter_id)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(ConsentEventIn.model_fields)), problems


def _error(message: str, detail: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"error": message, "detail": detail or []}
