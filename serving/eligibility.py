"""The service's eligibility rule: the consent table and rules of :mod:`features.consent`.

Every ``POST /score`` and ``POST /plan`` goes through :class:`ConsentEligibility` before
anything is returned: an arm the voter may not get (do-not-contact, no consent to texts
or automated calls, a revocation, the landline prerecorded-call cap) is never the
voter's ``best_arm`` nor planned, and the response gives the reason code per arm.

The consent table is named by ``PERSUADE_CONSENT_TABLE`` (parquet or CSV, the format
of :class:`features.consent.ConsentTable`). Without one, no voter has a consent record,
so every delivery that needs prior consent is suppressed (``no_consent``) and mail,
canvass and live calls stay allowed: the service never contacts on a guess.

The table is re-read when its file changes (checked at most once a second), so a
revocation written to it takes effect with the next request. A change that cannot be
read keeps the last good table in force and is reported in ``GET /model`` and the log.

Every decision is made by :mod:`features.consent`; per request only the voters that have
events in the table are folded, against their own events (a voter without records gets
the decision computed once for "no records"), which keeps the rule under a millisecond
for the usual request.

Phone numbers sent with the voters (field ``phone``) are hashed (HMAC, key from
``PERSUADE_HASH_KEY``) as soon as they are read and used only to join rows of the
table keyed by phone; they are never logged, kept or returned.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.consent import PHONE_HASH_COLUMN, ConsentError, ConsentTable, EligibilityRules
from features.consent import Eligibility as ConsentRules
from features.phones import PhoneHasher
from serving.bundle import ArmInfo
from serving.scoring import Eligibility
from serving.voters import VoterBatch

logger = logging.getLogger("persuade.serving")

PHONE_FIELD = "phone"
CHECK_EVERY_SECONDS = 1.0


@dataclass(frozen=True)
class LoadedTable:
    """A consent table in force, indexed for per-request lookups (swapped whole on re-read).

    Attributes
    ----------
    table : ConsentTable
    by_id, by_phone : dict of str to ndarray
        Voter id / phone hash -> positions of the events keyed by it.
    info : dict
        Name, fingerprint and event counts (computed once, for ``GET /model``).
    loaded_at : str
    """

    table: ConsentTable
    by_id: dict[str, np.ndarray]
    by_phone: dict[str, np.ndarray]
    info: dict[str, Any]
    loaded_at: str

    @classmethod
    def index(cls, table: ConsentTable) -> LoadedTable:
        events = table.events
        by_id = {str(k): v for k, v in events.groupby("voter_id", sort=False).indices.items()}
        by_phone = {str(k): v for k, v in events.groupby("phone_hash", sort=False).indices.items()}
        info = {"table": table.name, "fingerprint": table.fingerprint(), "events": table.counts()}
        return cls(table, by_id, by_phone, info, datetime.now().astimezone().isoformat(timespec="seconds"))

    def events_of(self, ids: Sequence[str], hashes: Sequence[str | None]) -> ConsentTable:
        """Only the events that name these voters or phones: their consent state is the same."""
        keys = [self.by_id[i] for i in ids if i in self.by_id]
        keys += [self.by_phone[h] for h in hashes if h is not None and h in self.by_phone]
        rows = np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)
        return ConsentTable(self.table.events.iloc[rows])


class ConsentEligibility:
    """``EligibilityRule`` of the service (see :class:`serving.scoring.EligibilityRule`).

    Every decision is made by :mod:`features.consent`. For speed, the voters of a request
    who have no event in the table (by id or phone) get the decision of a voter without
    records, computed once per set of arms; only the others are folded, against just their
    own events.

    Parameters
    ----------
    table_path : str or Path, optional
        The consent table; ``None`` means no consent records (consent-only deliveries
        suppressed for everyone).
    as_of : datetime or str, optional
        Decide as of this instant (for reproducible lists); default: now, at each request.
    landline_prerecorded_cap : int
        Prerecorded or AI-voice calls a landline without consent may get in the window.
    window_days : int
    hasher : PhoneHasher, optional
        Default: key from ``PERSUADE_HASH_KEY``.

    Raises
    ------
    features.consent.ConsentError, features.phones.MissingHashKeyError
        The table cannot be read, or it has rows keyed by phone and no hash key is set.
    """

    passthrough = (PHONE_FIELD,)

    def __init__(self, table_path: str | Path | None = None, as_of: datetime | str | None = None,
                 landline_prerecorded_cap: int = 3, window_days: int = 30,
                 hasher: PhoneHasher | None = None):
        self.path = Path(table_path) if table_path else None
        self.as_of = as_of
        self.rules = EligibilityRules(landline_prerecorded_cap, window_days)
        self.hasher = hasher or PhoneHasher()
        self._lock = threading.Lock()
        self._checked = 0.0
        self._stamp: tuple[int, int] | None = None
        self._error: str | None = None
        self._no_record: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._loaded: LoadedTable | None = self._read() if self.path is not None else None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConsentEligibility:
        """``PERSUADE_CONSENT_TABLE``, ``PERSUADE_CONSENT_AS_OF``, ``PERSUADE_PRERECORDED_CAP``."""
        env = os.environ if env is None else env
        return cls(env.get("PERSUADE_CONSENT_TABLE") or None, env.get("PERSUADE_CONSENT_AS_OF") or None,
                   int(env.get("PERSUADE_PRERECORDED_CAP", "3")))

    # -- the table -------------------------------------------------------------------
    def _file_stamp(self) -> tuple[int, int]:
        stat = self.path.stat()
        return stat.st_mtime_ns, stat.st_size

    def _read(self) -> LoadedTable:
        try:
            stamp = self._file_stamp()  # before reading: a change made while reading is seen next time
        except FileNotFoundError:
            raise ConsentError(f"consent table not found: {self.path}") from None
        table = ConsentTable.read(self.path, self.hasher, phone_column=PHONE_FIELD)
        if table.has_phone_rows:
            self.hasher.hash("+10000000000")  # fails now, not mid-request, when the key is missing
        loaded = LoadedTable.index(table)
        self._stamp, self._error = stamp, None
        return loaded

    def loaded(self) -> LoadedTable | None:
        """The table in force, re-read first if its file changed."""
        if self.path is None or time.monotonic() - self._checked < CHECK_EVERY_SECONDS:
            return self._loaded
        with self._lock:
            self._checked = time.monotonic()
            try:
                if self._file_stamp() != self._stamp:
                    self._loaded = self._read()
                    logger.info("consent table %s re-read: %s", self.path.name, self._loaded.info["events"])
            except Exception as exc:  # noqa: BLE001 - keep the last good table, say why loudly
                message = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
                if message != self._error:
                    logger.error("consent table %s could not be re-read; the last good one stays in force: %s",
                                 self.path.name, message)
                self._error = message
        return self._loaded

    def describe(self) -> dict[str, Any]:
        """For ``GET /model``: which table is in force (no personal data)."""
        loaded = self.loaded()
        facts = ConsentRules(None, self.rules, self.as_of).describe()
        info = loaded.info if loaded is not None else {"table": None, "fingerprint": None, "events": {}}
        return {**facts, **info, "loaded_at": loaded.loaded_at if loaded else None, "error": self._error}

    # -- the rule --------------------------------------------------------------------
    def _decide(self, table: ConsentTable | None, frame: pd.DataFrame,
                arms: Sequence[ArmInfo]) -> tuple[np.ndarray, np.ndarray]:
        """``features.consent``'s decision for ``frame``'s voters (ids may repeat)."""
        rules = ConsentRules(table, self.rules, self.as_of, PHONE_FIELD, self.hasher)
        slugs = [a.slug for a in arms]
        allowed = np.ones((len(frame), len(arms)), dtype=bool)
        reason = np.full((len(frame), len(arms)), None, dtype=object)
        # the consent state is per voter id: a request naming one id twice is decided row by row
        occurrence = frame.groupby("voter_id", sort=False).cumcount().to_numpy()
        for k in range(int(occurrence.max()) + 1 if len(frame) else 0):
            rows = np.flatnonzero(occurrence == k)
            decided = rules.for_voters(frame.iloc[rows], arms)
            allowed[rows] = decided[[f"eligible_{s}" for s in slugs]].to_numpy(dtype=bool)
            why = decided[[f"suppression_{s}" for s in slugs]].to_numpy(dtype=object)
            reason[rows] = np.where(allowed[rows], None, why)
        return allowed, reason

    def _without_records(self, arms: Sequence[ArmInfo]) -> tuple[np.ndarray, np.ndarray]:
        """The decision for a voter with no event in the table (the same for everyone)."""
        key = tuple((a.slug, a.delivery) for a in arms)
        if key not in self._no_record:
            self._no_record[key] = self._decide(None, pd.DataFrame({"voter_id": ["no-record"]}), arms)
        allowed, reason = self._no_record[key]
        return allowed[0], reason[0]

    def __call__(self, voters: VoterBatch, arms: Sequence[ArmInfo]) -> Eligibility:
        loaded = self.loaded()
        n = len(voters)
        default_allowed, default_reason = self._without_records(arms)
        allowed = np.tile(default_allowed, (n, 1))
        reason = np.tile(default_reason, (n, 1))
        if loaded is None or n == 0:
            return Eligibility(allowed, reason)
        ids = voters.ids.astype(str)
        hashes: list[str | None] = [None] * n
        if loaded.by_phone:  # a voter sent without a phone joins by id only
            raw = pd.Series(voters.passthrough.get(PHONE_FIELD, np.full(n, None)), dtype=object)
            raw = raw.where(raw.map(lambda v: isinstance(v, str | int) and not isinstance(v, bool)), None)
            hashes = self.hasher.hash_raw(raw, column=PHONE_FIELD, errors="coerce").tolist()
        known = np.fromiter(((i in loaded.by_id) or (h is not None and h in loaded.by_phone)
                             for i, h in zip(ids.tolist(), hashes, strict=True)), dtype=bool, count=n)
        rows = np.flatnonzero(known)
        if rows.size:
            known_ids, known_hashes = ids[rows].tolist(), [hashes[r] for r in rows]
            frame = pd.DataFrame({"voter_id": known_ids, PHONE_HASH_COLUMN: known_hashes})
            allowed[rows], reason[rows] = self._decide(loaded.events_of(known_ids, known_hashes), frame, arms)
        return Eligibility(allowed, reason)
