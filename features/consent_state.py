"""The join of consent events to voters, and their fold into a consent state per number.

A decision is per voter *and number dialed*: each row of the voters is one voter with
one phone number (or none). :func:`voter_keys` normalizes both join keys exactly as the
consent table's (:func:`features.consent_table.normalize_ids`,
:func:`features.phones.normalize_e164`); :func:`fold` links events to rows and folds
them into a state:

==================== ===================================================================
event                applies to a row when
==================== ===================================================================
``do_not_contact``,  the event names the row's voter id, or its number (whatever the
``revocation``       event's date: they never wait)
``consent``          the event's number is the row's, and the event names no voter or
                     this voter (a number reassigned to someone else carries nothing);
                     only once its timestamp has passed
``line_type``        the event's number is the row's (a line type is the number's)
``prerecorded_call`` the event's number is the row's, or the event names this voter and
                     no number (counted against the voter's line: conservative)
==================== ===================================================================

So a voter's new number carries no consent and no landline status from an old one, and
the prerecorded-call cap counts calls per line, whoever they were made for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.calling_hours import STATE_COLUMN, local_time_zones, number_time_zones, state_time_zones
from features.consent_table import (
    PHONE_HASH_COLUMN,
    REINSTATING_STANDING,
    SOURCE_STANDING,
    UTC_TIME,
    ConsentError,
    Event,
    LineType,
    Scope,
    normalize_ids,
)
from features.phones import PhoneHasher, parse_phones

STATE_COLUMNS = ["voter_id", "phone_status", "do_not_contact", "line_type", "consent_calls", "consent_texts",
                 "revoked", "revocation_keyword", "prerecorded_calls"]


@dataclass
class JoinTally:
    """Join diagnostics of decisions (counts and matched keys; no personal data but keyed hashes).

    Attributes
    ----------
    voters : int
        Rows decided.
    phone_missing, phone_unparseable : int
        Rows whose number was missing, or could not be parsed (automated channels suppressed).
    matched_ids, matched_phones : set of str
        The consent table's voter ids and phone hashes that matched some row.
    """

    voters: int = 0
    phone_missing: int = 0
    phone_unparseable: int = 0
    matched_ids: set[str] = field(default_factory=set)
    matched_phones: set[str] = field(default_factory=set)

    def add(self, other: JoinTally) -> JoinTally:
        """Add ``other`` (another chunk's tally) to this one, in place."""
        self.voters += other.voters
        self.phone_missing += other.phone_missing
        self.phone_unparseable += other.phone_unparseable
        self.matched_ids |= other.matched_ids
        self.matched_phones |= other.matched_phones
        return self

    def report(self, table_ids: set[str], table_phones: set[str]) -> dict[str, Any]:
        """The diagnostics as plain counts, against the table's join keys."""
        return {"voters": self.voters, "phone_missing": self.phone_missing,
                "phone_unparseable": self.phone_unparseable,
                "table_ids_matching_no_voter": len(table_ids - self.matched_ids),
                "table_phones_matching_no_voter": len(table_phones - self.matched_phones)}


def voter_keys(voters: pd.DataFrame, id_column: str = "voter_id", phone_column: str = "phone",
               hasher: PhoneHasher | None = None, hash_phones: bool = True,
               state_column: str = STATE_COLUMN) -> pd.DataFrame:
    """The join keys of each row: ``voter_id`` (normalized), ``phone_hash``, ``phone_status``, ``time_zones``.

    ``phone_status`` is ``ok``, ``missing`` (no phone column, or no value) or
    ``unparseable``. Raw numbers are hashed (when ``hash_phones``) and not kept; a
    ``phone_hash`` column (hashed already, with the same key) is used as it is.
    ``time_zones`` are the row's candidate local time zones, from the parsed number and
    the ``state_column`` when there is one (:mod:`features.calling_hours`); ``()``: unknown.
    """
    if id_column not in voters.columns:
        raise ConsentError(f"voters: the id column {id_column!r} is missing")
    n = len(voters)
    ids = normalize_ids(voters[id_column].reset_index(drop=True), id_column)
    number_zones = [()] * n
    if phone_column in voters.columns:
        e164, status = parse_phones(voters[phone_column].reset_index(drop=True))
        number_zones = number_time_zones(e164)
        hashes = (hasher or PhoneHasher()).hash_series(e164) if hash_phones else pd.Series(None, index=e164.index,
                                                                                            dtype=object)
    elif PHONE_HASH_COLUMN in voters.columns:
        hashes = voters[PHONE_HASH_COLUMN].reset_index(drop=True).astype(object)
        hashes = hashes.where(hashes.notna(), None)
        status = pd.Series(np.where(hashes.notna(), "ok", "missing"), dtype=object)
    else:
        hashes = pd.Series([None] * n, dtype=object)
        status = pd.Series(["missing"] * n, dtype=object)
    states = state_time_zones(voters[state_column]) if state_column in voters.columns else None
    zones = pd.Series(local_time_zones(number_zones, states), dtype=object)
    return pd.DataFrame({"voter_id": ids.to_numpy(dtype=object), PHONE_HASH_COLUMN: hashes.to_numpy(dtype=object),
                         "phone_status": status.to_numpy(dtype=object), "time_zones": zones.to_numpy()})


def tally(keys: pd.DataFrame, table_ids: set[str], table_phones: set[str]) -> JoinTally:
    """The join diagnostics of rows with these keys (see :func:`voter_keys`)."""
    status = keys.phone_status.to_numpy(dtype=object)
    return JoinTally(voters=len(keys), phone_missing=int((status == "missing").sum()),
                     phone_unparseable=int((status == "unparseable").sum()),
                     matched_ids=table_ids & set(keys.voter_id.dropna()),
                     matched_phones=table_phones & set(keys.phone_hash.dropna()))


def _links(events: pd.DataFrame, keys: pd.DataFrame) -> pd.DataFrame:
    """(row, event) pairs that name the same voter id or number, with how they matched."""
    ev = events.assign(event_row=np.arange(len(events)))
    rows = keys.assign(row=np.arange(len(keys)))
    by_id = ev.loc[ev.voter_id.notna(), ["voter_id", "event_row"]].merge(
        rows.loc[rows.voter_id.notna(), ["voter_id", "row"]], on="voter_id")[["row", "event_row"]]
    by_phone = ev.loc[ev.phone_hash.notna(), ["phone_hash", "event_row"]].merge(
        rows.loc[rows.phone_hash.notna(), ["phone_hash", "row"]], on="phone_hash")[["row", "event_row"]]
    pairs = pd.concat([by_id.assign(id_match=True, phone_match=False),
                       by_phone.assign(id_match=False, phone_match=True)], ignore_index=True)
    pairs = pairs.groupby(["row", "event_row"], as_index=False, sort=False)[["id_match", "phone_match"]].max()
    attrs = ev.drop(columns="event_row").iloc[pairs.event_row.to_numpy()].reset_index(drop=True)
    linked = pd.concat([pairs.reset_index(drop=True), attrs], axis=1)
    kind = linked.event
    id_match, phone_match = linked.id_match.to_numpy(bool), linked.phone_match.to_numpy(bool)
    names_voter, names_number = linked.voter_id.notna().to_numpy(), linked.phone_hash.notna().to_numpy()
    applies = (
        (kind.isin([Event.do_not_contact.value, Event.revocation.value]).to_numpy() & (id_match | phone_match))
        | ((kind == Event.consent.value).to_numpy() & phone_match & (~names_voter | id_match))
        | ((kind == Event.line_type.value).to_numpy() & phone_match)
        | ((kind == Event.prerecorded_call.value).to_numpy() & (phone_match | (id_match & ~names_number)))
    )
    return linked[applies]


def fold(events: pd.DataFrame, keys: pd.DataFrame, as_of: pd.Timestamp, window_days: int) -> pd.DataFrame:
    """The consent state of each row of ``keys`` (see the module docstring for which events apply).

    Parameters
    ----------
    events : DataFrame
        ``ConsentTable.events``.
    keys : DataFrame
        :func:`voter_keys` of the rows.
    as_of : Timestamp (UTC)
        Consents given after it are not yet in effect; do-not-contact, revocations and
        prerecorded calls count whatever their date.
    window_days : int
        Length of the prerecorded-call window ending at ``as_of`` (later calls count too).

    Returns
    -------
    DataFrame
        One row per row of ``keys``: the columns of :data:`STATE_COLUMNS`.
    """
    n = len(keys)
    linked = _links(events, keys)
    kind = linked.event
    rows = pd.RangeIndex(n)

    def per_row(mask: pd.Series, agg: str, column: str = "event_row") -> pd.Series:
        return linked[mask].groupby("row")[column].agg(agg).reindex(rows)

    state = pd.DataFrame({"voter_id": keys.voter_id.to_numpy(dtype=object),
                          "phone_status": keys.phone_status.to_numpy(dtype=object)})
    state["do_not_contact"] = per_row(kind == Event.do_not_contact, "size").fillna(0).to_numpy() > 0
    lines = linked[kind == Event.line_type]
    is_cell = (lines.line_type == LineType.cell.value).groupby(lines.row).max().reindex(rows)
    known = is_cell.notna().to_numpy()
    # A number ever reported as a cell phone is treated as one (ported numbers).
    state["line_type"] = np.where(~known, LineType.unknown.value,
                                  np.where(is_cell.fillna(False).astype(bool).to_numpy(),
                                           LineType.cell.value, LineType.landline.value))
    last_rev = per_row(kind == Event.revocation, "max", "timestamp")
    state["revoked"] = last_rev.notna().to_numpy()
    rev_rows = linked[kind == Event.revocation].sort_values("timestamp", kind="stable")
    state["revocation_keyword"] = rev_rows.groupby("row").keyword.last().reindex(rows).to_numpy()
    consents = linked[(kind == Event.consent) & (linked.timestamp <= as_of)].copy()
    consents["last_rev"] = pd.Series(last_rev.reindex(consents.row).to_numpy(), index=consents.index, dtype=UTC_TIME)
    standing = consents.source.map({s.value: v for s, v in SOURCE_STANDING.items()}).fillna(0)
    consents["valid"] = consents.last_rev.isna() | (
        (consents.timestamp > consents.last_rev) & (standing >= REINSTATING_STANDING)
    )
    for scope in (Scope.calls, Scope.texts):
        hit = consents[consents.valid & consents.scope.isin([scope.value, Scope.all.value])]
        state[f"consent_{scope.value}"] = np.isin(np.arange(n), hit.row.to_numpy())
    start = as_of - pd.Timedelta(days=window_days)
    calls = linked[(kind == Event.prerecorded_call) & (linked.timestamp > start)]
    state["prerecorded_calls"] = calls.groupby("row").size().reindex(rows).fillna(0).astype(int).to_numpy()
    return state[STATE_COLUMNS]
