"""The consent ledger: consent events as they arrive, stored durably, one row per event.

Opt-outs arrive one by one (a STOP forwarded by a texting platform's webhook, a
canvasser's do-not-contact) and must apply at once; the consent table file
(:class:`features.consent.ConsentTable`) is re-written in bulk. The ledger holds the
former: an append-only table of events in the consent-table schema, each with

``event_id``
    The idempotency key (unique): sending an event again is a no-op that returns the
    stored event; the same id with other content is a :class:`LedgerConflict`.
``received_at``, ``received_from``
    When the ledger stored it (UTC) and who sent it (``http:<key id>``, ``import:<file>``).
``status``
    ``applied`` (in effect), ``review`` (an unclear reply: in effect as a revocation until a
    person reviews it), ``not_applied`` (an opt-in or help reply: recorded, no effect on
    consent) or ``resolution`` (a person's reading of a ``review`` reply, see
    :meth:`ConsentLedger.resolve`: ``review_decision`` (:class:`ReviewDecision`) ``opt_out``
    keeps the revocation, ``opt_in`` and ``not_opt_out`` take it out of the consent table;
    ``resolves`` names the reply's event).
``reply``
    The free-text reply it was read from, if any (phone numbers and e-mails masked).

Phone numbers are never stored: only their keyed hashes (``phone_hash``), as in the
consent table. The ledger remembers the hash key's check value
(:meth:`features.phones.PhoneHasher.key_check`) and refuses phone hashes made with
another key; its consent table carries that value (column ``hash_key_check``).

Storage is SQLAlchemy Core (:mod:`features.ledger_store`): by default an embedded SQLite file in WAL mode with
``synchronous=FULL`` (a committed event survives ``kill -9`` and power loss), at
``<PERSUADE_HOME or project>/consent_ledger/ledger.db``; ``PERSUADE_CONSENT_LEDGER`` names
another file or a PostgreSQL URL (``postgresql+psycopg://user@/db?host=/run/postgresql``).
Events are numbered (``seq``) in commit order, so a reader that remembers the last number
it saw gets every later event with one indexed query (:meth:`ConsentLedger.read`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from features.consent import KEY_CHECK_COLUMN
from features.ledger_store import (  # noqa: F401 - LEDGER_ENV: the ledger's public name
    EVENTS,
    LEDGER_ENV,
    META,
    SCHEMA_VERSION,
    LedgerError,
    default_ledger_path,
    ledger_url,
    metadata,
    sqlite_engine,
)
from features.phones import KeyCheckError, PhoneHasher
from features.settings import Settings

CONTENT_COLUMNS = ["voter_id", "phone_hash", "event", "line_type", "scope", "source", "keyword", "timestamp",
                   "status", "reply", "review_decision", "resolves"]
TABLE_COLUMNS = ["voter_id", "phone_hash", "event", "line_type", "scope", "source", "keyword", "timestamp"]
STATUSES = ("applied", "review", "not_applied", "resolution")


class ReviewDecision(StrEnum):
    """A person's reading of an unclear reply (:meth:`ConsentLedger.resolve`)."""

    opt_out = "opt_out"  # an opt-out after all: its revocation stays
    opt_in = "opt_in"  # asks for messages: the revocation goes; like an opt-in reply, it grants no consent itself
    not_opt_out = "not_opt_out"  # neither: the revocation goes


LIFTS_REVOCATION = (ReviewDecision.opt_in, ReviewDecision.not_opt_out)
IN_EFFECT = ("applied", "review")
TIMED_EVENTS = ("consent", "revocation", "prerecorded_call")  # the consent table needs their time


class LedgerConflict(LedgerError):
    """An event id already stored with other content."""

    def __init__(self, event_ids: list[str]):
        self.event_ids = event_ids
        shown = ", ".join(repr(i) for i in event_ids[:3]) + (" ..." if len(event_ids) > 3 else "")
        super().__init__(f"event_id {shown}: already recorded with other content; an event id is used once")


class ConsentLedger:
    """A durable, idempotent store of consent events (see the module docstring).

    Parameters
    ----------
    location : str or Path, optional
        A SQLAlchemy URL (``sqlite:///...``, ``postgresql+psycopg://...``) or a SQLite file
        path; default: :func:`default_ledger_path`.
    hasher : PhoneHasher, optional
        The key phone hashes are made with (default: ``PERSUADE_HASH_KEY``); checked
        against the ledger's key check value when phone hashes are stored.
    """

    def __init__(self, location: str | Path | None = None, *, hasher: PhoneHasher | None = None):
        self.url = ledger_url(location)
        self.hasher = hasher or PhoneHasher()
        if self.url.get_backend_name() == "sqlite":
            self.engine = sqlite_engine(self.url)
        else:
            self.engine = sa.create_engine(self.url, pool_pre_ping=True)
        self._create()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, hasher: PhoneHasher | None = None) -> ConsentLedger:
        """The ledger named by ``PERSUADE_CONSENT_LEDGER`` in ``env`` (default: the process environment)."""
        return cls.from_settings(Settings.from_env(env), hasher=hasher)

    @classmethod
    def from_settings(cls, settings: Settings, *, hasher: PhoneHasher | None = None) -> ConsentLedger:
        """The ledger of ``settings.consent_ledger`` (default: the embedded SQLite file under ``settings.home``);
        phone hashes with ``hasher`` (default: the key of ``settings.hash_key``)."""
        return cls(settings.consent_ledger or default_ledger_path(settings),
                   hasher=hasher or PhoneHasher(settings.hash_key))

    def _create(self) -> None:
        for attempt in range(3):  # processes starting together may race to create the tables
            try:
                metadata.create_all(self.engine)
                with self.engine.begin() as conn:
                    conn.execute(self._insert(META).on_conflict_do_nothing(index_elements=["name"]),
                                 {"name": "schema_version", "value": SCHEMA_VERSION})
                    version = conn.execute(sa.select(META.c.value).where(META.c.name == "schema_version")).scalar()
                break
            except DBAPIError:
                if attempt == 2:
                    raise
        if version != SCHEMA_VERSION:
            raise LedgerError(f"the ledger at {self.describe()['url']} has schema version {version}, "
                              f"this code reads {SCHEMA_VERSION}")

    def _insert(self, table: sa.Table):
        return (sqlite.insert if self.url.get_backend_name() == "sqlite" else postgresql.insert)(table)

    def close(self) -> None:
        """Close the database connections."""
        self.engine.dispose()

    def __enter__(self) -> ConsentLedger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """Backend and URL (password hidden), for ``GET /model`` and the CLI."""
        return {"backend": self.url.get_backend_name(), "url": self.url.render_as_string(hide_password=True)}

    # -- writing ---------------------------------------------------------------------
    def append(self, rows: pd.DataFrame, *, received_from: str) -> pd.DataFrame:
        """Store events durably (committed when this returns); idempotent by ``event_id``.

        Parameters
        ----------
        rows : DataFrame
            ``event_id`` and :data:`CONTENT_COLUMNS`, normalized (as made by
            :func:`features.ledger_rows.ledger_rows`): phone numbers as keyed hashes,
            timestamps aware. A consent, revocation or prerecorded call without a
            timestamp happened when received: it gets ``received_at``, and a repeat
            without a timestamp matches the stored event whatever its timestamp.
        received_from : str
            Who sent them (``http:<key id>``, ``import:<file>``).

        Returns
        -------
        DataFrame
            The stored events in the order of ``rows`` (every column of the ledger) and
            ``duplicate``: True where the event id was stored before.

        Raises
        ------
        LedgerConflict
            An event id is already stored, or repeated in ``rows``, with other content;
            nothing of ``rows`` is stored then.
        """
        missing = [c for c in ["event_id", *CONTENT_COLUMNS] if c not in rows.columns]
        if missing:
            raise LedgerError(f"ledger rows lack the columns {missing}")
        bad = sorted(set(rows["status"].dropna()) - set(STATUSES)) + ["missing"] * int(rows["status"].isna().any())
        if bad:
            raise LedgerError(f"column 'status': {bad} (allowed: {list(STATUSES)})")
        records = [_record(row) for row in rows[["event_id", *CONTENT_COLUMNS]].to_dict("records")]
        firsts: dict[str, dict[str, Any]] = {}
        for rec in records:
            if firsts.setdefault(rec["event_id"], rec) != rec:
                raise LedgerConflict([rec["event_id"]])
        now = datetime.now(UTC)
        fresh = [{**rec, "received_at": now, "received_from": received_from[:200]} for rec in firsts.values()]
        for rec in fresh:
            if rec["timestamp"] is None and rec["event"] in TIMED_EVENTS:
                rec["timestamp"] = now
        ids = list(firsts)
        with self.engine.begin() as conn:
            if self.url.get_backend_name() == "postgresql":  # writers in turn: seq order is commit order
                conn.execute(sa.text(f"LOCK TABLE {EVENTS.name} IN EXCLUSIVE MODE"))
            new: set[str] = set()
            if fresh:
                stmt = self._insert(EVENTS).on_conflict_do_nothing(index_elements=["event_id"])
                new = set(conn.execute(stmt.returning(EVENTS.c.event_id), fresh).scalars())
            stored = {r["event_id"]: dict(r) for r in conn.execute(
                sa.select(EVENTS).where(EVENTS.c.event_id.in_(ids))).mappings()}
            conflicts = [i for i in ids if i not in new and not _same(_record(stored[i]), firsts[i])]
            if conflicts:
                raise LedgerConflict(conflicts)
            if any(rec["phone_hash"] is not None for rec in fresh if rec["event_id"] in new):
                self._check_key(conn)
        out = _frame([stored[i] for i in rows["event_id"]])
        out["duplicate"] = ~out["event_id"].isin(new).to_numpy()
        return out

    def _check_key(self, conn: sa.Connection) -> None:
        conn.execute(self._insert(META).on_conflict_do_nothing(index_elements=["name"]),
                     {"name": "key_check", "value": self.hasher.key_check()})
        self._verify(conn.execute(sa.select(META.c.value).where(META.c.name == "key_check")).scalar())

    def _verify(self, stored: str | None) -> None:
        """The ledger's key check value against this hasher's (:meth:`PhoneHasher.verify_key_check`)."""
        try:
            self.hasher.verify_key_check(stored, "the ledger's phone hashes")
        except KeyCheckError as exc:
            raise LedgerError(str(exc)) from None

    def key_check(self) -> str | None:
        """Check value of the key the ledger's phone hashes were made with (None before the first)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(META.c.value).where(META.c.name == "key_check")).scalar()

    def check_key(self) -> None:
        """Raise :class:`LedgerError` if the ledger's phone hashes were made with another key."""
        self._verify(self.key_check())

    def resolve(self, event_id: str, *, decision: ReviewDecision | str, reviewer: str) -> pd.DataFrame:
        """Record a person's reading of an unclear reply (status ``review``), as an event of its own.

        Parameters
        ----------
        event_id : str
            The reply's event.
        decision : ReviewDecision or str
            ``opt_out`` keeps the reply's revocation; ``opt_in`` and ``not_opt_out`` take it
            out of the consent table (the voter's earlier consent applies again; the reply
            grants none of its own).
        reviewer : str
            Who read it (``received_from`` of the resolution).

        Returns
        -------
        DataFrame
            The resolution as stored (see :meth:`append`).

        Raises
        ------
        LedgerError
            No reply awaiting review has this id, or ``decision`` is not a :class:`ReviewDecision`.
        LedgerConflict
            The reply was resolved before with another decision.

        Notes
        -----
        The reply is never changed: the resolution is event ``review:<event_id>``, and the
        same decision again is a no-op.
        """
        try:
            decision = ReviewDecision(decision)
        except ValueError:
            raise LedgerError(f"review decision {decision!r}: one of {[d.value for d in ReviewDecision]}") from None
        with self.engine.connect() as conn:
            status = conn.execute(sa.select(EVENTS.c.status).where(EVENTS.c.event_id == event_id)).scalar()
        if status != "review":
            raise LedgerError(f"event_id {event_id!r}: no reply awaiting review has this id")
        row = dict.fromkeys(CONTENT_COLUMNS) | {"status": "resolution", "resolves": event_id,
                                                 "review_decision": decision.value}
        return self.append(pd.DataFrame([{"event_id": f"review:{event_id}", **row}]), received_from=reviewer)

    # -- reading ---------------------------------------------------------------------
    def read(self, since: int = 0) -> pd.DataFrame:
        """Every stored event numbered after ``since`` (``seq``), oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(EVENTS).where(EVENTS.c.seq > since).order_by(EVENTS.c.seq)).mappings()
            return _frame([dict(r) for r in rows])

    def last_seq(self) -> int:
        """The number of the newest event (0 when empty)."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(EVENTS.c.seq), 0))).scalar())

    def as_table(self, since: int = 0) -> pd.DataFrame:
        """The events in effect in the consent-table schema (see :func:`in_effect`)."""
        return in_effect(self.read(since), key_check=self.key_check())

    def review_queue(self) -> pd.DataFrame:
        """Unclear replies no person has reviewed yet (they revoke automated contact meanwhile)."""
        events = self.read()
        waiting = (events["status"] == "review") & ~events["event_id"].isin(events["resolves"].dropna())
        return events.loc[waiting, ["seq", "event_id", "received_at", "voter_id", "phone_hash", "reply"]]


def dismissed(events: pd.DataFrame) -> set[str]:
    """Event ids of replies a person reviewed as not an opt-out (:data:`LIFTS_REVOCATION`)."""
    return set(events.loc[events["review_decision"].isin([d.value for d in LIFTS_REVOCATION]), "resolves"])


def in_effect(events: pd.DataFrame, dismissed_ids: set[str] | None = None, *,
              key_check: str | None = None) -> pd.DataFrame:
    """Ledger rows that count: ``applied`` and ``review`` (unless reviewed as not an opt-out).

    Columns: ``event_id``, the consent table's (``voter_id``, ``phone_hash``, ``event``,
    ``line_type``, ``scope``, ``source``, ``keyword``, ``timestamp``, ``hash_key_check``:
    ``key_check`` where there is a phone hash) and ``received_at``, ``received_from``,
    ``status``, ``reply``: readable by :meth:`features.consent.ConsentTable.read`, and
    imported again as the same events.
    """
    gone = dismissed(events) | (dismissed_ids or set())
    keep = events["status"].isin(IN_EFFECT) & ~events["event_id"].isin(gone)
    columns = ["event_id", *TABLE_COLUMNS, "received_at", "received_from", "status", "reply"]
    out = events.loc[keep, columns].reset_index(drop=True)
    out.insert(len(TABLE_COLUMNS) + 1, KEY_CHECK_COLUMN, out["phone_hash"].map(
        lambda h: None if h is None or h != h else key_check))
    return out


def _record(row: Mapping[str, Any]) -> dict[str, Any]:
    """The comparable content of one event (what an idempotent repeat must match)."""
    out: dict[str, Any] = {"event_id": row["event_id"]}
    for col in CONTENT_COLUMNS:
        value = row[col]
        if value is None or value is pd.NaT or (isinstance(value, float) and value != value):
            out[col] = None
        elif col == "timestamp":
            out[col] = pd.Timestamp(value).tz_convert("UTC").floor("us").to_pydatetime()
        else:
            out[col] = str(value)
    return out


def _same(stored: dict[str, Any], repeat: dict[str, Any]) -> bool:
    """A repeat matches the stored event (a repeat without a timestamp matches any)."""
    if repeat["timestamp"] is None:
        stored = {**stored, "timestamp": None}
    return stored == repeat


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = [c.name for c in EVENTS.columns]
    frame = pd.DataFrame(rows, columns=columns).astype(object)
    for col in ("received_at", "timestamp"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    frame["seq"] = frame["seq"].astype("int64")
    return frame


def content_event_id(row: Mapping[str, Any], occurrence: int = 0) -> str:
    """A deterministic event id for an event that came without one (a row of an imported table).

    The sha256 of its content (phone as its keyed hash) and of its occurrence among
    identical rows, so importing the same table again stores nothing new.
    """
    canonical = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in _record(
        {"event_id": None, **row}).items() if k != "event_id"}
    digest = hashlib.sha256(json.dumps([canonical, occurrence], sort_keys=True).encode()).hexdigest()
    return f"row-{digest[:40]}"
