"""Where the consent ledger lives: its URL, its database engine and its tables (SQLAlchemy Core).

By default an embedded SQLite file in WAL mode with ``synchronous=FULL`` (a committed
event survives ``kill -9`` and power loss), at ``<PERSUADE_HOME or project>/consent_ledger/ledger.db``;
``PERSUADE_CONSENT_LEDGER`` names another file or a PostgreSQL URL. What is stored and how
it is read and written is :mod:`features.consent_ledger`'s.
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from features.settings import Settings

LEDGER_ENV = Settings.variable("consent_ledger")
SCHEMA_VERSION = "1"
BUSY_TIMEOUT_SECONDS = 30


class LedgerError(ValueError):
    """Events the ledger cannot store (names the event id or column, never a phone number)."""


class UTCDateTime(sa.types.TypeDecorator):
    """A point in time, stored in UTC (naive on SQLite, ``timestamptz`` elsewhere), read back aware."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None or value is pd.NaT:
            return None
        ts = pd.Timestamp(value)
        if ts.tzinfo is None:
            raise LedgerError("a timestamp without a time zone cannot be stored")
        moment = ts.tz_convert("UTC").to_pydatetime()
        return moment.replace(tzinfo=None) if dialect.name == "sqlite" else moment

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()
EVENTS = sa.Table(
    "consent_events", metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(255), nullable=False, unique=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("received_from", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("voter_id", sa.String(200)),
    sa.Column("phone_hash", sa.String(64)),
    sa.Column("event", sa.String(32)),
    sa.Column("line_type", sa.String(16)),
    sa.Column("scope", sa.String(16)),
    sa.Column("source", sa.String(32)),
    sa.Column("keyword", sa.String(32)),
    sa.Column("timestamp", UTCDateTime),
    sa.Column("reply", sa.Text),
    sa.Column("review_decision", sa.String(16)),  # opt_out | opt_in | not_opt_out (status "resolution")
    sa.Column("resolves", sa.String(200)),  # the event id of the reviewed reply (status "resolution")
)
META = sa.Table(
    "consent_ledger_meta", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(200), nullable=False),
)


def default_ledger_path(settings: Settings | None = None) -> Path:
    """``<PERSUADE_HOME or the project>/consent_ledger/ledger.db`` (of ``settings``, default the environment's)."""
    return (settings or Settings.from_env()).home / "consent_ledger" / "ledger.db"


def ledger_url(location: str | Path | None = None) -> sa.URL:
    """The SQLAlchemy URL of a ledger: a URL as given, a path as a SQLite file, None the default file."""
    if location is None or (isinstance(location, str) and not location.strip()):
        location = default_ledger_path()
    if isinstance(location, str) and "://" in location:
        url = sa.make_url(location)
    else:
        path = Path(location).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        url = sa.URL.create("sqlite", database=str(path))
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise LedgerError(f"{LEDGER_ENV}: the ledger runs on SQLite or PostgreSQL, not {url.get_backend_name()!r}")
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise LedgerError(f"{LEDGER_ENV}: an in-memory SQLite database is not durable; name a file")
    return url


def sqlite_engine(url: sa.URL) -> Engine:
    engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_SECONDS})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise LedgerError(f"the SQLite ledger could not switch to WAL mode (got {mode!r})")
        cursor.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
        cursor.close()

    return engine
