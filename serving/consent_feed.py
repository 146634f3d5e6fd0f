"""The consent ledger in the service's consent decision, from the very next request on.

:class:`serving.eligibility.ConsentEligibility` decides with the consent table file in
force; :class:`LedgerFeed` adds the events of the consent ledger
(:mod:`features.consent_ledger`), which ``POST /consent/events`` writes. At every request
the feed asks the ledger for its newest event number (one indexed query) and reads the
events after the last one it has only when there are some, so an event acknowledged by any worker of the
service applies to the next ``/score`` or ``/plan`` that any worker answers.

A revocation or do-not-contact takes effect when it was received at the latest: its
timestamp is capped at ``received_at``, so a texting platform whose clock runs ahead
cannot delay an opt-out. Unclear replies (status ``review``) count as revocations until a
person reads them as not an opt-out.

If the ledger cannot be read, :meth:`LedgerFeed.merge` raises :class:`LedgerUnavailable`
and the service answers 503: without the ledger an opt-out could be missed, so nothing is
decided (fail closed).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from features.consent import ConsentTable
from features.consent_ledger import ConsentLedger, dismissed, in_effect
from serving.eligibility import LoadedTable

logger = logging.getLogger("persuade.serving")
TAKES_EFFECT_ON_RECEIPT = ("revocation", "do_not_contact")
LEDGER_NAME = "consent ledger"


class LedgerUnavailable(RuntimeError):
    """The consent ledger cannot be read: no consent decision can be made."""


class LedgerFeed:
    """The consent ledger's events in force, kept in step with the ledger.

    Parameters
    ----------
    ledger : ConsentLedger

    Raises
    ------
    features.consent_ledger.LedgerError, LedgerUnavailable
        The ledger's phone hashes were made with another key than the service's, or
        it cannot be read (at start-up: the service does not start).
    """

    def __init__(self, ledger: ConsentLedger):
        self.ledger = ledger
        self._lock = threading.Lock()
        self._seq = 0
        self._ids = pd.Series(dtype=object)  # event id of each row of _events
        self._events = ConsentTable.empty().events
        self._dismissed: set[str] = set()
        self._key_check: str | None = None
        self._empty_base = LoadedTable.index(ConsentTable.empty())
        self._merged: tuple[Any, int, LoadedTable | None] | None = None
        self._error: str | None = None
        ledger.check_key()
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        """Read the events stored since the last read (call with the lock held).

        The ledger is append-only, so its newest ``seq`` says whether anything is new: one
        indexed ``max`` (about 0.1 ms on SQLite) answers most requests, and only new
        events pay for the read and the table's rebuild (about 20 ms).
        """
        try:
            if self.ledger.last_seq() <= self._seq:
                self._error = None
                return
            new = self.ledger.read(since=self._seq)
            gone = self._dismissed | dismissed(new)
            check = self.ledger.hasher.key_check() if new["phone_hash"].notna().any() else None
            rows = in_effect(new, gone, key_check=check)
            keep = ~self._ids.isin(gone).to_numpy()
            ids, events = [self._ids[keep]], [self._events[keep]]
            if len(rows):
                on_receipt = rows["event"].isin(TAKES_EFFECT_ON_RECEIPT) & (rows["timestamp"] > rows["received_at"])
                rows.loc[on_receipt, "timestamp"] = rows.loc[on_receipt, "received_at"]
                table = ConsentTable.from_frame(rows.drop(columns=["received_at", "received_from", "status",
                                                                   "reply"]), hasher=self.ledger.hasher)
                ids.append(rows["event_id"])
                events.append(table.events)
                self._key_check = self._key_check or table.key_check
        except Exception as exc:  # noqa: BLE001 - any failure to read the ledger: decide nothing
            self._error = f"{type(exc).__name__}: the consent ledger cannot be read"
            logger.error("consent ledger %s cannot be read (%s): requests are refused until it can",
                         self.ledger.describe()["url"], type(exc).__name__)
            raise LedgerUnavailable("the consent ledger cannot be read, so no consent decision can be made "
                                    "(fail closed); retry shortly") from None
        self._error = None
        if new.empty:
            return
        self._dismissed = gone
        self._ids = pd.concat(ids, ignore_index=True)
        self._events = pd.concat(events, ignore_index=True)
        self._seq = int(new["seq"].max())

    def merge(self, base: LoadedTable | None) -> LoadedTable:
        """The file table in force (``base``, or none) with the ledger's events added.

        Raises
        ------
        LedgerUnavailable
            The ledger cannot be read.
        """
        with self._lock:
            self._refresh()
            cached = self._merged
            if cached is not None and cached[0] is base and cached[1] == self._seq:
                return cached[2]
            ledger = ConsentTable(self._events, self._key_check)
            ledger.name = LEDGER_NAME
            merged = _merged(base or self._empty_base, ledger)
            self._merged = (base, self._seq, merged)
            return merged

    def describe(self) -> dict[str, Any]:
        """For ``GET /model``: the ledger (URL without password), events in force, last read error."""
        with self._lock:
            return {**self.ledger.describe(), "events_in_effect": len(self._events),
                    "last_seq": self._seq, "error": self._error}


def _merged(base: LoadedTable, ledger: ConsentTable) -> LoadedTable:
    """``base`` with the ledger's events appended to its table and to its lookups."""
    ledger_events = ledger.events
    if ledger_events.empty:
        return base
    offset = len(base.table.events)
    table = ConsentTable.combine(base.table, ledger)
    lookups = []
    for column, lookup in (("voter_id", base.by_id), ("phone_hash", base.by_phone)):
        combined = dict(lookup)
        for key, rows in ledger_events.groupby(column, sort=False).indices.items():
            rows = rows + offset
            combined[str(key)] = np.concatenate([combined[str(key)], rows]) if str(key) in combined else rows
        lookups.append(combined)
    return replace(base, table=table, by_id=lookups[0], by_phone=lookups[1])
