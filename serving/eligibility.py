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


class ConsentEligibility:
    """``EligibilityRule`` of the service (see :class:`serving.scoring.EligibilityRule`).

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
        self._loaded_at: str | None = None
        self._table: ConsentTable | None = self._read() if self.path is not None else None

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

    def _read(self) -> ConsentTable:
        try:
            stamp = self._file_stamp()  # before reading: a change made while reading is seen next time
        except FileNotFoundError:
            raise ConsentError(f"consent table not found: {self.path}") from None
        table = ConsentTable.read(self.path, self.hasher, phone_column=PHONE_FIELD)
        if table.has_phone_rows:
            self.hasher.hash("+10000000000")  # fails now, not mid-request, when the key is missing
        self._stamp, self._error = stamp, None
        self._loaded_at = datetime.now().astimezone().isoformat(timespec="seconds")
        return table

    def table(self) -> ConsentTable | None:
        """The table in force, re-read first if its file changed."""
        if self.path is None or time.monotonic() - self._checked < CHECK_EVERY_SECONDS:
            return self._table
        with self._lock:
            self._checked = time.monotonic()
            try:
                if self._file_stamp() != self._stamp:
                    self._table = self._read()
                    logger.info("consent table %s re-read: %s", self.path.name, self._table.counts())
            except Exception as exc:  # noqa: BLE001 - keep the last good table, say why loudly
                message = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
                if message != self._error:
                    logger.error("consent table %s could not be re-read; the last good one stays in force: %s",
                                 self.path.name, message)
                self._error = message
        return self._table

    def describe(self) -> dict[str, Any]:
        """For ``GET /model``: which table is in force (no personal data)."""
        table = self.table()
        info = ConsentRules(table, self.rules, self.as_of).describe()
        return {**info, "table": self.path.name if self.path else None, "loaded_at": self._loaded_at,
                "error": self._error}

    # -- the rule --------------------------------------------------------------------
    def __call__(self, voters: VoterBatch, arms: Sequence[ArmInfo]) -> Eligibility:
        table = self.table()
        frame = pd.DataFrame({"voter_id": voters.ids.astype(str)})
        if table is not None and table.has_phone_rows:  # a voter sent without a phone joins by id only
            raw = pd.Series(voters.passthrough.get(PHONE_FIELD, np.full(len(frame), None)), dtype=object)
            raw = raw.where(raw.map(lambda v: isinstance(v, str | int) and not isinstance(v, bool)), None)
            frame[PHONE_HASH_COLUMN] = self.hasher.hash_raw(raw, column=PHONE_FIELD, errors="coerce").to_numpy()
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
        return Eligibility(allowed, reason)
