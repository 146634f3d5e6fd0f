"""The consent table: read, validate and normalize it (one row per event).

=================== ==================================================================
column              meaning
=================== ==================================================================
``voter_id``        the voter (optional when the row has a phone)
``phone``           the phone number as written (hashed at read time), or
``phone_hash``      its keyed hash (hex HMAC-SHA256 of the E.164 form), with
``hash_key_check``  the check value of the key that made the hashes
                    (:meth:`features.phones.PhoneHasher.key_check`)
``event``           ``line_type``, ``consent``, ``revocation``, ``do_not_contact``,
                    ``prerecorded_call``
``line_type``       ``cell`` or ``landline`` (``line_type`` rows)
``scope``           ``calls`` (autodialed, prerecorded or AI-voice calls), ``texts``
                    or ``all`` (``consent`` rows)
``source``          how consent was obtained (``consent`` rows), see :data:`SOURCE_STANDING`
``keyword``         the opt-out word of a revocation (STOP, QUIT, END, REVOKE, OPT OUT,
                    CANCEL, UNSUBSCRIBE; anything else is recorded as ``OTHER``)
``timestamp``       when it happened, ISO 8601 with a zone (required for consent,
                    revocation and prerecorded_call rows)
=================== ==================================================================

Both join keys are normalized here exactly as on the voters' side: ids by
:func:`normalize_ids` (``1001``, ``1001.0`` and ``" 1001 "`` are one voter), phone numbers
by :func:`features.phones.normalize_e164`. A timestamp without a zone is refused unless
the table's time zone is configured; epoch numbers and day/month dates such as
``03/09/2026`` are refused by name. Every error names the column and never echoes a
phone number (:class:`ConsentError` masks them).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd

from features.consent_values import UTC_TIME, ConsentError, first_row, normalize_ids, parse_timestamps
from features.phones import HASH_PATTERN, KeyCheckError, PhoneFormatError, PhoneHasher

OPT_OUT_KEYWORDS: tuple[str, ...] = ("STOP", "QUIT", "END", "REVOKE", "OPT OUT", "CANCEL", "UNSUBSCRIBE")
OTHER_KEYWORD = "OTHER"
PHONE_HASH_COLUMN = "phone_hash"
KEY_CHECK_COLUMN = "hash_key_check"
EVENT_COLUMNS = ["voter_id", "phone_hash", "event", "line_type", "scope", "source", "keyword", "timestamp"]


class Event(StrEnum):
    line_type = "line_type"
    consent = "consent"
    revocation = "revocation"
    do_not_contact = "do_not_contact"
    prerecorded_call = "prerecorded_call"


class LineType(StrEnum):
    cell = "cell"
    landline = "landline"
    unknown = "unknown"


class Scope(StrEnum):
    calls = "calls"
    texts = "texts"
    all = "all"


class Source(StrEnum):
    written = "written"
    opt_in_keyword = "opt_in_keyword"
    voter_provided = "voter_provided"
    verbal = "verbal"
    third_party = "third_party"


SOURCE_STANDING: dict[Source, int] = {
    Source.written: 3,  # signed (or e-signed) written agreement
    Source.opt_in_keyword: 3,  # the voter texted START / YES / UNSTOP from the number
    Source.voter_provided: 2,  # the voter gave the number on a form or sign-up
    Source.verbal: 2,  # recorded verbal consent
    Source.third_party: 1,  # consent collected by a partner or vendor
}
REINSTATING_STANDING = 3  # the least standing of a consent that overrides an earlier revocation
NEEDS_TIME = {Event.consent, Event.revocation, Event.prerecorded_call}


# -- the table ------------------------------------------------------------------------
def _canonical_keyword(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        return OTHER_KEYWORD
    word = " ".join(value.upper().replace("-", " ").replace("_", " ").split())
    word = "OPT OUT" if word == "OPTOUT" else word
    return word if word in OPT_OUT_KEYWORDS else OTHER_KEYWORD


def _check_values(frame: pd.DataFrame, column: str, rows: pd.Series, allowed: type[StrEnum],
                  problems: list[str], exclude: tuple[str, ...] = ()) -> None:
    known = [m.value for m in allowed if m.value not in exclude]
    if column not in frame.columns:
        if rows.any():
            problems.append(f"column {column!r} is missing (needed by {int(rows.sum())} rows)")
        return
    values = frame.loc[rows, column]
    bad = values.isna() | ~values.astype(str).str.strip().str.lower().isin(known)
    if bad.any():
        examples = sorted({str(v) for v in values[bad].head(50)})[:3]
        problems.append(f"column {column!r}: {int(bad.sum())} rows have a missing or unknown value "
                        f"(e.g. {examples}); allowed: {known}")


def _lower(frame: pd.DataFrame, column: str) -> pd.Series | None:
    if column not in frame.columns:
        return None
    values = frame[column].astype("string").str.strip().str.lower()
    return values.astype(object).where(values.notna(), None)


def _hash_columns(frame: pd.DataFrame, hasher: PhoneHasher, problems: list[str],
                  require_check: bool) -> tuple[pd.Series, bool]:
    """Given ``phone_hash`` values, checked: 64 hex digits, made with our key (its check value must be
    given when ``require_check``; a given one must always match)."""
    phone_hash = pd.Series(None, index=frame.index, dtype=object)
    if PHONE_HASH_COLUMN not in frame.columns or not frame[PHONE_HASH_COLUMN].notna().any():
        return phone_hash, False
    given = frame[PHONE_HASH_COLUMN].notna()
    values = frame.loc[given, PHONE_HASH_COLUMN].astype(str).str.strip().str.lower()
    ok = values.str.fullmatch(HASH_PATTERN.pattern)
    if not ok.all():
        problems.append(f"column {PHONE_HASH_COLUMN!r}: {int((~ok).sum())} values are not 64-hex-digit "
                        "HMAC-SHA256 hashes")
    phone_hash[given] = values
    checks = (frame.loc[given, KEY_CHECK_COLUMN].dropna().astype(str).str.strip().unique()
              if KEY_CHECK_COLUMN in frame.columns else [])
    if len(checks) == 0 and require_check:
        problems.append(f"column {PHONE_HASH_COLUMN!r}: hashes without a {KEY_CHECK_COLUMN!r} column: whose key made "
                        f"them cannot be checked (ConsentTable.save writes it; this key's check value is "
                        f"{hasher.key_check()})")
    try:
        hasher.verify_key_check(checks, f"column {PHONE_HASH_COLUMN!r}")
    except KeyCheckError as exc:
        problems.append(str(exc))
    return phone_hash, True


class ConsentTable:
    """Validated consent events; phone numbers are held only as keyed hashes.

    Parameters
    ----------
    events : DataFrame
        Normalized events with the columns of :data:`EVENT_COLUMNS` (as produced by
        :meth:`from_frame`; use that to read a raw table).
    key_check : str, optional
        Check value of the key that made the ``phone_hash`` values.
    """

    def __init__(self, events: pd.DataFrame, key_check: str | None = None):
        missing = [c for c in EVENT_COLUMNS if c not in events.columns]
        if missing:
            raise ConsentError(f"normalized consent events lack columns {missing}; use ConsentTable.from_frame")
        self.events = events[EVENT_COLUMNS].reset_index(drop=True)
        self.events["timestamp"] = pd.to_datetime(self.events["timestamp"], utc=True).astype(UTC_TIME)
        self.key_check = key_check
        self.name: str | None = None  # the file it was read from, if any
        self.written_at: pd.Timestamp | None = None  # when that file was last written (its age)

    # -- construction ------------------------------------------------------------
    @classmethod
    def empty(cls) -> ConsentTable:
        """No consent records: automated deliveries are suppressed for everybody."""
        return cls(pd.DataFrame({c: pd.Series(dtype=object) for c in EVENT_COLUMNS}).astype({"timestamp": UTC_TIME}))

    @classmethod
    def combine(cls, *tables: ConsentTable) -> ConsentTable:
        """One table of the events of several (e.g. a file and a ledger); hashes must share a key."""
        checks = {t.key_check for t in tables if t.key_check is not None}
        if len(checks) > 1:
            raise ConsentError(f"consent tables hashed with different keys (key checks {sorted(checks)})")
        combined = cls(pd.concat([t.events for t in tables], ignore_index=True), next(iter(checks), None))
        combined.name = " + ".join(t.name for t in tables if t.name) or None
        ages = [t.written_at for t in tables if t.written_at is not None]
        combined.written_at = min(ages) if ages else None
        return combined

    @classmethod
    def read(cls, path: str | Path, hasher: PhoneHasher | None = None, id_column: str = "voter_id",
             phone_column: str = "phone", time_zone: str | None = None) -> ConsentTable:
        """Read a consent table (parquet or CSV) and validate it, see :meth:`from_frame`."""
        path = Path(path)
        try:
            stamp = path.stat().st_mtime
        except FileNotFoundError:
            raise ConsentError(f"consent table not found: {path}") from None
        suffix = path.suffix.lower()
        if suffix not in {".parquet", ".pq", ".csv"} and not path.name.lower().endswith(".csv.gz"):
            raise ConsentError(f"{path}: unsupported consent table type (use .parquet or .csv)")
        try:
            frame = pd.read_parquet(path) if suffix in {".parquet", ".pq"} else pd.read_csv(path, dtype=str)
        except Exception as exc:  # noqa: BLE001 - any reader error: named, masked, never a traceback
            raise ConsentError(f"consent table {path.name} cannot be read: {type(exc).__name__}: {exc}") from None
        try:
            table = cls.from_frame(frame, hasher, id_column=id_column, phone_column=phone_column,
                                   time_zone=time_zone, require_key_check=True)
        except (ConsentError, PhoneFormatError) as exc:
            raise ConsentError(f"consent table {path.name}: {exc}") from None
        table.name = path.name
        table.written_at = pd.Timestamp(datetime.fromtimestamp(stamp, UTC))
        return table

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, hasher: PhoneHasher | None = None, id_column: str = "voter_id",
                   phone_column: str = "phone", time_zone: str | None = None,
                   require_key_check: bool = False) -> ConsentTable:
        """Validate a raw consent table and hash its phone numbers.

        Every problem found is listed in one :class:`ConsentError`, by column.
        Phone numbers are normalized to E.164 and replaced by keyed hashes; the raw
        numbers are not kept. ``time_zone`` (IANA name) places timestamps written
        without a zone; without it they are refused. Given ``phone_hash`` values must come
        with a ``hash_key_check`` equal to this key's (:meth:`PhoneHasher.key_check`);
        only a frame built in memory by code that holds the key (``require_key_check``
        False, e.g. the consent ledger) may omit it. Files (:meth:`read`) may not.
        """
        hasher = hasher or PhoneHasher()
        problems: list[str] = []
        if "event" not in frame.columns:
            raise ConsentError("column 'event' is missing; it says what each row records "
                               f"({', '.join(e.value for e in Event)})")
        keys = [c for c in (id_column, phone_column, PHONE_HASH_COLUMN) if c in frame.columns]
        if not keys:
            raise ConsentError(f"no join key: the consent table needs a {id_column!r}, {phone_column!r} "
                               f"or {PHONE_HASH_COLUMN!r} column")
        event = frame["event"].astype("string").str.strip().str.lower()
        bad_event = event.isna() | ~event.isin([e.value for e in Event])
        if bad_event.any():
            examples = sorted({str(v) for v in frame.loc[bad_event, "event"].head(50)})[:3]
            problems.append(f"column 'event': {int(bad_event.sum())} rows have a missing or unknown value "
                            f"(e.g. {examples}); allowed: {[e.value for e in Event]}")
        no_key = pd.Series(True, index=frame.index)
        for col in keys:
            no_key &= frame[col].isna() | (frame[col].astype("string").str.strip() == "")
        if no_key.any():
            problems.append(f"{int(no_key.sum())} rows have no {id_column!r}, {phone_column!r} or "
                            f"{PHONE_HASH_COLUMN!r} (first at row {first_row(frame.index, no_key)!r})")
        _check_values(frame, "line_type", event == Event.line_type, LineType, problems, exclude=("unknown",))
        _check_values(frame, "scope", event == Event.consent, Scope, problems)
        _check_values(frame, "source", event == Event.consent, Source, problems)
        if "timestamp" in frame.columns:
            ts = parse_timestamps(frame["timestamp"], problems, time_zone)
            given = frame["timestamp"].notna()
        else:
            ts = pd.Series(pd.NaT, index=frame.index, dtype=UTC_TIME)
            given = pd.Series(False, index=frame.index)
        untimed = event.isin([e.value for e in NEEDS_TIME]) & ~given
        if untimed.any() and "timestamp" in frame.columns:
            problems.append(f"column 'timestamp': {int(untimed.sum())} consent/revocation/prerecorded_call rows "
                            "have no timestamp")
        elif untimed.any():
            problems.append(f"column 'timestamp' is missing (needed by {int(untimed.sum())} rows)")
        phone_hash, hashed = _hash_columns(frame, hasher, problems, require_key_check)
        try:
            voter_id = normalize_ids(frame[id_column], id_column) if id_column in frame.columns else None
        except ConsentError as exc:
            problems.append(str(exc))
            voter_id = None
        if problems:
            raise ConsentError("; ".join(problems))
        if phone_column in frame.columns and frame[phone_column].notna().any():
            raw = frame[phone_column].astype(object).where(frame[phone_column].notna(), None)
            phone_hash = phone_hash.where(phone_hash.notna(), hasher.hash_raw(raw, column=phone_column))
            hashed = True
        events = pd.DataFrame({
            "voter_id": voter_id if voter_id is not None else None,
            PHONE_HASH_COLUMN: phone_hash,
            "event": event.astype(object),
            "line_type": _lower(frame, "line_type"),
            "scope": _lower(frame, "scope"),
            "source": _lower(frame, "source"),
            "keyword": np.where(event == Event.revocation,
                                frame["keyword"].map(_canonical_keyword) if "keyword" in frame.columns
                                else OTHER_KEYWORD, None),
            "timestamp": ts,
        }, index=frame.index)
        return cls(events, hasher.key_check() if hashed else None)

    # -- facts -------------------------------------------------------------------
    @property
    def has_phone_rows(self) -> bool:
        """True if some rows are keyed by phone number (joining them needs the voters' phones)."""
        return bool(self.events.phone_hash.notna().any())

    def keys(self) -> tuple[set[str], set[str]]:
        """The distinct voter ids and phone hashes the table names (its join keys)."""
        return set(self.events.voter_id.dropna()), set(self.events.phone_hash.dropna())

    def counts(self) -> dict[str, int]:
        """Rows per event type (no personal data)."""
        return {str(k): int(v) for k, v in self.events.event.value_counts().sort_index().items()}

    def data_errors(self, as_of: pd.Timestamp) -> dict[str, int]:
        """Rows that are applied but look wrong (counts; no personal data).

        ``dated_after_as_of``: do-not-contact, revocation and prerecorded-call rows dated
        after the decision time (applied anyway: they never wait); ``consent_without_number``
        and ``line_type_without_number``: rows keyed by voter id alone, which grant nothing
        (the number is what is consented, and what has a line type).
        """
        ev = self.events
        no_number = ev.phone_hash.isna()
        never_wait = ev.event.isin([Event.do_not_contact.value, Event.revocation.value,
                                    Event.prerecorded_call.value])
        return {
            "dated_after_as_of": int((never_wait & (ev.timestamp > as_of)).sum()),
            "consent_without_number": int(((ev.event == Event.consent.value) & no_number).sum()),
            "line_type_without_number": int(((ev.event == Event.line_type.value) & no_number).sum()),
        }

    def fingerprint(self) -> str:
        """sha256 of the normalized events (phones as hashes): which consent table was applied."""
        canonical = self.events.sort_values([*EVENT_COLUMNS[:3], "timestamp"], kind="stable").astype(str)
        return hashlib.sha256(canonical.to_csv(index=False).encode()).hexdigest()

    def save(self, path: str | Path) -> Path:
        """Write the normalized events (phone numbers as keyed hashes, with the key's check value) to parquet."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        out = self.events.copy()
        out[KEY_CHECK_COLUMN] = np.where(out.phone_hash.notna(), self.key_check, None)
        out.to_parquet(path, index=False)
        return path
