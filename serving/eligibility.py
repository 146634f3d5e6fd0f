"""The service's eligibility rule: the consent table and rules of :mod:`features.consent`.

Every ``POST /score`` and ``POST /plan`` goes through :class:`ConsentEligibility` before
anything is returned: an arm the voter may not get (do-not-contact, no consent to texts
or automated calls for the number sent, a revocation, the landline prerecorded-call cap,
a stale table, a number that cannot be parsed) is never the voter's ``best_arm`` nor
planned, its uplift is ``null``, and the response gives the reason code per arm.

The consent table is named by ``PERSUADE_CONSENT_TABLE`` (parquet or CSV, the format
of :class:`features.consent.ConsentTable`). Without one, no voter has a consent record,
so every delivery that needs prior consent is suppressed and mail, canvass and live
calls stay allowed: the service never contacts on a guess.

The table is re-read when its file changes (checked at most once a second), so a
revocation written to it takes effect with the next request. Fail closed: while the
file is older than ``PERSUADE_CONSENT_MAX_AGE_HOURS`` (default 24), or after a re-read
failed (a bad row, a deleted file) until a good one, automated deliveries are suppressed
(``consent_stale``); the last good table's do-not-contact rows keep applying.
``PERSUADE_CONSENT_AS_OF`` is for replaying a past decision only (``GET /model`` and the
log say so): consents are taken as of then, do-not-contact and revocations always apply.

Every decision is made by :mod:`features.consent`; per request only the voters that have
events in the table are folded, against their own events (a voter without records gets
the decision computed once for "no records"), which keeps the rule under a millisecond
for the usual request.

The phone number sent with each voter (field ``phone``) is the number the decision is
for. It is parsed and hashed (HMAC, key from ``PERSUADE_HASH_KEY``) as soon as it is
read; a missing, malformed, float, list or object value is ``unverifiable_phone`` for
automated deliveries, never an error. Numbers are never logged, kept or returned.

Quiet hours: phone and text arms are allowed only inside the calling window
(``PERSUADE_CALLING_HOURS``, default 08:00-21:00) in the voter's local time at the
request's time (or ``PERSUADE_CONSENT_AS_OF``). The zone comes from the number and, when
the voter is sent with a ``state`` (two-letter code), from the state; where they leave
several zones the window must hold in each, and where they leave none the arms are
suppressed (``unknown_timezone``). Each voter's ``time_zone`` is returned with the scores
and plans of a model with phone or text arms, so a dialer keeps the window at send time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from features.calling_hours import STATE_COLUMN, CallingHours, time_zone_text
from features.consent import ConsentError, ConsentRules, ConsentTable, EligibilityRules, as_utc, keeps_calling_hours
from features.consent_state import JoinTally
from features.phones import PhoneHasher, mask_phones
from features.settings import (
    DEFAULT_CONSENT_MAX_AGE_HOURS,
    DEFAULT_PRERECORDED_CAP,
    DEFAULT_PRERECORDED_WINDOW_DAYS,
    Settings,
)
from serving.bundle import ArmInfo
from serving.scoring import Eligibility
from serving.voters import VoterBatch

logger = logging.getLogger("persuade.serving")

PHONE_FIELD = "phone"
STATE_FIELD = STATE_COLUMN
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
        Name, fingerprint, event counts and key check (computed once, for ``GET /model``).
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
        info = {"table": table.name, "fingerprint": table.fingerprint(), "events": table.counts(),
                "key_check": table.key_check}
        return cls(table, by_id, by_phone, info, datetime.now().astimezone().isoformat(timespec="seconds"))

    def events_of(self, ids: Sequence[str | None], hashes: Sequence[str | None]) -> ConsentTable:
        """Only the events that name these voters or phones: their consent state is the same."""
        keys = [self.by_id[i] for i in ids if i is not None and i in self.by_id]
        keys += [self.by_phone[h] for h in hashes if h is not None and h in self.by_phone]
        rows = np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)
        part = ConsentTable(self.table.events.iloc[rows], self.table.key_check)
        part.written_at = self.table.written_at
        return part


class EventFeed(Protocol):
    """More events in force besides the file (the consent ledger, ``serving.consent_feed.LedgerFeed``)."""

    def merge(self, base: LoadedTable | None) -> LoadedTable: ...

    def describe(self) -> dict[str, Any]: ...


class ConsentEligibility:
    """``EligibilityRule`` of the service (see :class:`serving.scoring.EligibilityRule`).

    Every decision is made by :mod:`features.consent`. For speed, the voters of a request
    who have no event in the table (by id or phone) get the decision of a voter without
    records (per phone status), computed once per set of arms; only the others are
    folded, against just their own events.

    Parameters
    ----------
    table_path : str or Path, optional
        The consent table; ``None`` means no consent records (consent-only deliveries
        suppressed for everyone).
    as_of : datetime or str, optional
        Replay: take consents as of this instant (with a zone); default: now, at each request.
    landline_prerecorded_cap : int
        Prerecorded or AI-voice calls a landline without consent may get in the window.
    window_days : int
    hasher : PhoneHasher, optional
        Default: key from ``PERSUADE_HASH_KEY``.
    time_zone : str, optional
        IANA time zone of the table's timestamps written without one (else refused).
    max_age_hours : float, optional
        A table file older than this is stale (automated deliveries wait); None: no limit.
    feed : EventFeed, optional
        Events that arrive between re-reads of the file (the consent ledger).
    calling_hours : CallingHours or str, optional
        The calling window in the voter's local time (default ``"08:00-21:00"``).

    Raises
    ------
    features.consent.ConsentError, features.phones.MissingHashKeyError
        The table cannot be read, or it has rows keyed by phone and no hash key is set.
    """

    passthrough = (PHONE_FIELD, STATE_FIELD)

    def __init__(self, table_path: str | Path | None = None, as_of: datetime | str | None = None,
                 landline_prerecorded_cap: int = DEFAULT_PRERECORDED_CAP,
                 window_days: int = DEFAULT_PRERECORDED_WINDOW_DAYS, hasher: PhoneHasher | None = None,
                 time_zone: str | None = None, max_age_hours: float | None = DEFAULT_CONSENT_MAX_AGE_HOURS,
                 feed: EventFeed | None = None, calling_hours: CallingHours | str | None = None):
        self.path = Path(table_path) if table_path else None
        self.as_of = as_of
        self.rules = EligibilityRules(landline_prerecorded_cap, window_days, calling_hours)
        self.hasher = hasher or PhoneHasher()
        self.time_zone = time_zone
        self.max_age_hours = max_age_hours
        self.feed = feed
        ConsentRules(None, self.rules, as_of)  # refuse a decision time without a zone now
        self._lock = threading.Lock()
        self._checked = 0.0
        self._stamp: tuple[int, int] | None = None
        self._error: str | None = None
        self._no_record: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._seen = JoinTally()  # the join's diagnostics of the requests answered since the last read
        self._seen_lock = threading.Lock()
        self._loaded: LoadedTable | None = self._read() if self.path is not None else None
        if as_of is not None:
            logger.warning("PERSUADE_CONSENT_AS_OF is set (%s): for replaying a past decision only; "
                           "do-not-contact and revocations apply whatever their date", as_of)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, feed: EventFeed | None = None) -> ConsentEligibility:
        """:meth:`from_settings` of ``env`` (default: the process environment)."""
        return cls.from_settings(Settings.from_env(env), feed=feed)

    @classmethod
    def from_settings(cls, settings: Settings, *, feed: EventFeed | None = None) -> ConsentEligibility:
        """From ``PERSUADE_CONSENT_TABLE``, ``_AS_OF``, ``_TIMEZONE``, ``_MAX_AGE_HOURS`` (0: no limit),
        ``PERSUADE_PRERECORDED_CAP``, ``PERSUADE_CALLING_HOURS`` and ``PERSUADE_HASH_KEY`` (when set; else
        read when a number is hashed), with the events of ``feed`` (the consent ledger's,
        :class:`serving.consent_feed.LedgerFeed`) in force too."""
        max_age = settings.consent_max_age_hours
        return cls(settings.consent_table, settings.consent_as_of, settings.prerecorded_cap,
                   hasher=PhoneHasher(settings.hash_key), time_zone=settings.consent_timezone,
                   max_age_hours=max_age if max_age > 0 else None, feed=feed,
                   calling_hours=CallingHours.from_settings(settings))

    # -- the table -------------------------------------------------------------------
    def _file_stamp(self) -> tuple[int, int]:
        stat = self.path.stat()
        return stat.st_mtime_ns, stat.st_size

    def _read(self) -> LoadedTable:
        try:
            stamp = self._file_stamp()  # before reading: a change made while reading is seen next time
        except FileNotFoundError:
            raise ConsentError(f"consent table not found: {self.path}") from None
        table = ConsentTable.read(self.path, self.hasher, phone_column=PHONE_FIELD, time_zone=self.time_zone)
        if table.has_phone_rows:
            self.hasher.hash("+10000000000")  # fails now, not mid-request, when the key is missing
        loaded = LoadedTable.index(table)
        self._stamp, self._error, self._seen = stamp, None, JoinTally()
        return loaded

    def loaded(self) -> LoadedTable | None:
        """The table in force (with the feed's events), re-read first if its file changed."""
        if self.path is not None and time.monotonic() - self._checked >= CHECK_EVERY_SECONDS:
            with self._lock:
                self._checked = time.monotonic()
                try:
                    if self._file_stamp() != self._stamp:
                        self._loaded = self._read()
                        logger.info("consent table %s re-read: %s", self.path.name, self._loaded.info["events"])
                except Exception as exc:  # noqa: BLE001 - keep the last good table's do-not-contact, say why
                    message = mask_phones(f"{type(exc).__name__}: {exc}".replace("\n", " "))[:300]
                    if message != self._error:
                        logger.error("consent table %s could not be re-read; automated contact is suppressed "
                                     "(consent_stale) until a good read: %s", self.path.name, message)
                    self._error = message
        return self.feed.merge(self._loaded) if self.feed is not None else self._loaded

    def _consent_rules(self, loaded: LoadedTable | None) -> ConsentRules:
        """The decision of ``features.consent`` with the table in force (and its staleness)."""
        stale = f"the last re-read failed: {self._error}" if self._error else None
        return ConsentRules(loaded.table if loaded is not None else None, self.rules, self.as_of, PHONE_FIELD,
                            self.hasher, self.max_age_hours, stale)

    def describe(self) -> dict[str, Any]:
        """For ``GET /model``: the table in force, its staleness and the join's diagnostics (no personal data)."""
        loaded = self.loaded()
        rules = self._consent_rules(loaded)
        with self._seen_lock:
            seen = JoinTally().add(self._seen)
        facts = rules.describe(seen, loaded.info if loaded is not None else None)
        facts["join_scope"] = "voters of the requests answered since the table was loaded"
        out = {**facts, "time_zone": self.time_zone, "loaded_at": loaded.loaded_at if loaded else None,
               "error": self._error}
        if self.feed is not None:
            out["ledger"] = self.feed.describe()
        return out

    # -- the rule --------------------------------------------------------------------
    def _without_records(self, rules: ConsentRules, arms: Sequence[ArmInfo], status: str,
                         at: pd.Timestamp) -> tuple[np.ndarray, np.ndarray]:
        """The consent rules' decision for a voter with no event in the table (the same for everyone of a
        phone status; quiet hours come after, per voter)."""
        stale = rules.stale_reason() is not None
        key = (tuple((a.slug, a.delivery) for a in arms), status, stale)
        if key not in self._no_record:
            keys = pd.DataFrame({"voter_id": [None], "phone_hash": [None], "phone_status": [status]})
            decided = ConsentRules(None, self.rules, self.as_of, stale="stale" if stale else None).consent_decision(
                keys, arms, at)
            self._no_record[key] = _arrays(decided, arms)
        return self._no_record[key]

    def __call__(self, voters: VoterBatch, arms: Sequence[ArmInfo]) -> Eligibility:
        loaded = self.loaded()
        rules = self._consent_rules(loaded)
        at = as_utc(self.as_of)  # one decision time for the request: consents and quiet hours
        n = len(voters)
        sent = {f: voters.passthrough.get(f, np.full(n, None, dtype=object)) for f in self.passthrough}
        frame = pd.DataFrame({"voter_id": np.asarray(voters.ids, dtype=object), **sent})
        keys = rules.keys(frame)
        status = keys.phone_status.to_numpy(dtype=object)
        allowed = np.ones((n, len(arms)), dtype=bool)
        reason = np.full((n, len(arms)), None, dtype=object)
        for kind in np.unique(status) if n else []:
            rows = status == kind
            allowed[rows], reason[rows] = self._without_records(rules, arms, str(kind), at)
        if loaded is not None and n:
            ids, hashes = keys.voter_id.tolist(), keys.phone_hash.tolist()
            by_id = [i is not None and i in loaded.by_id for i in ids]
            by_phone = [h is not None and h in loaded.by_phone for h in hashes]
            seen = JoinTally(n, int((status == "missing").sum()), int((status == "unparseable").sum()),
                             {i for i, hit in zip(ids, by_id, strict=True) if hit},
                             {h for h, hit in zip(hashes, by_phone, strict=True) if hit})
            with self._seen_lock:
                self._seen.add(seen)
            rows = np.flatnonzero(np.logical_or(by_id, by_phone))
            if rows.size:
                part = keys.iloc[rows].reset_index(drop=True)
                known = ConsentRules(loaded.events_of(part.voter_id.tolist(), part.phone_hash.tolist()), self.rules,
                                     self.as_of, PHONE_FIELD, self.hasher, stale=rules.stale_reason())
                allowed[rows], reason[rows] = _arrays(known.consent_decision(part, arms, at), arms)
        zones = keys.time_zones.tolist()
        allowed, reason = self.rules.keep_calling_hours(allowed, reason, [a.delivery for a in arms], zones, at)
        local = None
        if any(keeps_calling_hours(a.delivery) for a in arms):
            local = np.array([time_zone_text(z) for z in zones], dtype=object)
        return Eligibility(allowed, reason, local)


def _arrays(decided: pd.DataFrame, arms: Sequence[ArmInfo]) -> tuple[np.ndarray, np.ndarray]:
    """(allowed, reason) arrays, arms in order, from a decision frame."""
    slugs = [a.slug for a in arms]
    allowed = decided[[f"eligible_{s}" for s in slugs]].to_numpy(dtype=bool)
    why = decided[[f"suppression_{s}" for s in slugs]].to_numpy(dtype=object)
    return allowed, np.where(allowed, None, why)


# -- the pyfunc's consent ---------------------------------------------------------------
PREDICT_PARAMS: dict[str, Any] = {"consent_table": "", "as_of": "", "prerecorded_cap": DEFAULT_PRERECORDED_CAP,
                                  "consent_time_zone": "", "consent_max_age_hours": DEFAULT_CONSENT_MAX_AGE_HOURS,
                                  "calling_hours": ""}


def predict_eligibility(params: Mapping[str, Any] | None) -> ConsentRules:
    """The consent decision of the MLflow pyfunc's ``predict`` (:data:`PREDICT_PARAMS`).

    Without ``consent_table`` nobody has consent: every arm that needs it is suppressed.
    The number each decision is for is the input's ``phone`` column, and the voter's address
    state its ``state`` column (both optional in the signature); ``calling_hours`` narrows
    the calling window (default 08:00-21:00), checked at ``as_of`` or now.
    """
    given = {**PREDICT_PARAMS, **{k: v for k, v in (params or {}).items() if v is not None}}
    max_age = float(given["consent_max_age_hours"])
    return ConsentRules.from_path(given["consent_table"] or None, int(given["prerecorded_cap"]),
                                  as_of=given["as_of"] or None, phone_column=PHONE_FIELD,
                                  time_zone=given["consent_time_zone"] or None,
                                  max_age_hours=max_age if max_age > 0 else None,
                                  calling_hours=given["calling_hours"] or None, state_column=STATE_FIELD)
