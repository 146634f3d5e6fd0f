"""Consent events as the ledger stores them: validated, phones hashed, replies read, ids given.

One path for every producer of ledger rows (``POST /consent/events``, ``persuade consent
import``): the events are in the consent-table schema (:mod:`features.consent`), with
three optional columns more:

``event_id``
    The idempotency key; rows without one get :func:`features.consent_ledger.content_event_id`.
``reply``
    A free-text reply. A row with a reply and no ``event`` is read by
    :func:`features.consent_replies.classify_reply`: an opt-out becomes a ``revocation``
    (``applied``), an unclear reply a ``revocation`` with keyword ``OTHER`` kept for review
    (``review``), an opt-in or help reply is recorded without effect (``not_applied``).
    The stored reply has phone numbers and e-mail addresses masked.
``status``
    As exported by the ledger (``applied`` or ``review``), so that an exported table
    imports again as the same events.

Validation and normalization (ids, phone hashing, event values, timestamps) are
:meth:`features.consent.ConsentTable.from_frame`'s, so the ledger and the consent table
agree on every value.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from features.consent import ConsentError, ConsentTable, normalize_ids
from features.consent_ledger import CONTENT_COLUMNS, STATUSES, LedgerError, content_event_id
from features.consent_replies import ReplyKind, classify_reply
from features.phones import PhoneHasher
from features.pii import PHONE_PATTERN, scrub_text

EVENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+=#-]{0,199}$")
EVENT_ID_RULE = "1 to 200 letters, digits or . _ : @ / + = # -, starting with a letter or digit"


def check_event_id(value: object) -> str:
    """An event id as stored; raises ValueError (without the value if it holds a phone number)."""
    if not isinstance(value, str) or not EVENT_ID_PATTERN.fullmatch(value):
        raise ValueError(f"an event id is {EVENT_ID_RULE}")
    if PHONE_PATTERN.search(value):
        raise ValueError("an event id must not contain a phone number")
    return value


def ledger_rows(frame: pd.DataFrame, *, hasher: PhoneHasher | None = None, id_column: str = "voter_id",
                phone_column: str = "phone", time_on_receipt: bool = False) -> pd.DataFrame:
    """Ledger rows (``event_id`` and :data:`~features.consent_ledger.CONTENT_COLUMNS`) from raw events.

    Parameters
    ----------
    frame : DataFrame
        Events in the consent-table schema, optionally with ``event_id``, ``reply`` and
        ``status`` (see the module docstring).
    hasher : PhoneHasher, optional
        Hashes the phone numbers (default: key from ``PERSUADE_HASH_KEY``).
    id_column, phone_column : str
        Names of the voter id and phone columns in ``frame``.
    time_on_receipt : bool
        Events without a timestamp happened when received (a webhook's): their
        ``timestamp`` stays missing here and the ledger sets it to ``received_at`` (so a
        repeat of the event, received later, is still the same event). Otherwise a
        consent, revocation or prerecorded call without a timestamp is an error.

    Returns
    -------
    DataFrame
        One row per row of ``frame``, in its order.

    Raises
    ------
    LedgerError
        A row that cannot be stored; the message names the column and row, never a
        phone number.
    """
    frame = frame.reset_index(drop=True)
    hasher = hasher or PhoneHasher()
    n = len(frame)
    event = _column(frame, "event")
    reply = _column(frame, "reply")
    keyword = _column(frame, "keyword")
    status = pd.Series("applied", index=frame.index, dtype=object)
    to_read = reply.notna() & event.isna()
    for i in np.flatnonzero(to_read):
        try:
            reading = classify_reply(reply.iloc[i])
        except (TypeError, ValueError) as exc:
            raise LedgerError(f"column 'reply', row {i}: {exc}") from None
        if reading.kind in (ReplyKind.opt_out, ReplyKind.unclear):
            event.iloc[i], keyword.iloc[i] = "revocation", reading.keyword
        status.iloc[i] = {ReplyKind.opt_out: "applied", ReplyKind.unclear: "review"}.get(reading.kind, "not_applied")
    if "status" in frame.columns:
        given = frame["status"].notna()
        unknown = given & ~frame["status"].isin(STATUSES[:2])
        if unknown.any():
            raise LedgerError(f"column 'status': {int(unknown.sum())} rows are not one of {list(STATUSES[:2])}")
        status[given & ~to_read] = frame.loc[given & ~to_read, "status"]
    raw = frame.assign(event=event, keyword=keyword)
    untimed = _column(frame, "timestamp").isna()
    if time_on_receipt:
        raw["timestamp"] = _column(frame, "timestamp").where(~untimed, pd.Timestamp.now(tz="UTC").isoformat())
    rows = pd.DataFrame({c: pd.Series(None, index=frame.index, dtype=object) for c in CONTENT_COLUMNS})
    effective = event.notna().to_numpy()
    try:
        if effective.any():
            table = ConsentTable.from_frame(raw[effective].drop(columns=["reply", "status"], errors="ignore"),
                                            hasher=hasher, id_column=id_column, phone_column=phone_column)
            normalized = table.events.set_axis(frame.index[effective])
            for col in ("voter_id", "phone_hash", "event", "line_type", "scope", "source", "keyword", "timestamp"):
                rows.loc[effective, col] = normalized[col].astype(object)
        if (~effective).any():  # opt-in and help replies: who sent them, nothing else
            quiet = raw[~effective]
            if phone_column in quiet.columns:
                rows.loc[~effective, "phone_hash"] = hasher.hash_raw(quiet[phone_column], column=phone_column)
            if "phone_hash" in quiet.columns:
                rows.loc[~effective, "phone_hash"] = quiet["phone_hash"].where(
                    quiet["phone_hash"].notna(), rows.loc[~effective, "phone_hash"])
            if id_column in quiet.columns:
                rows.loc[~effective, "voter_id"] = normalize_ids(quiet[id_column], id_column).astype(object)
            if "timestamp" in quiet.columns:
                rows.loc[~effective, "timestamp"] = pd.to_datetime(quiet["timestamp"], utc=True).astype(object)
    except (ConsentError, ValueError) as exc:
        raise LedgerError(scrub_text(str(exc))) from None
    for col in CONTENT_COLUMNS:
        if col != "timestamp":
            rows[col] = rows[col].astype(object).where(rows[col].notna(), None)
    rows["timestamp"] = pd.to_datetime(rows["timestamp"], utc=True).dt.floor("us")
    if time_on_receipt:
        rows.loc[untimed.to_numpy(), "timestamp"] = pd.NaT
    rows["status"] = status
    rows["reply"] = reply.map(lambda text: scrub_text(text) if isinstance(text, str) else None).astype(object)
    rows.insert(0, "event_id", _event_ids(frame, rows))
    if rows["event_id"].isna().any() or len(rows) != n:
        raise LedgerError("every event needs an event_id")
    return rows


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame.columns:
        return pd.Series([None] * len(frame), index=frame.index, dtype=object)
    values = frame[name].astype(object)
    return values.where(values.notna(), None)


def _event_ids(frame: pd.DataFrame, rows: pd.DataFrame) -> pd.Series:
    given = _column(frame, "event_id")
    ids = []
    seen: dict[str, int] = {}
    for i, value in enumerate(given):
        if value is not None and not (isinstance(value, float) and value != value):
            try:
                ids.append(check_event_id(value))
            except ValueError as exc:
                raise LedgerError(f"column 'event_id', row {i}: {exc}") from None
            continue
        content = rows.iloc[i].to_dict()
        first = content_event_id(content)
        seen[first] = seen.get(first, -1) + 1
        ids.append(content_event_id(content, seen[first]))
    return pd.Series(ids, index=frame.index, dtype=object)
