"""Consent and eligibility: who may be contacted by which delivery, and if not, why not.

Everything that decides whether a voter may get an arm lives in the consent modules,
one job each:

1. :mod:`features.consent_values` and :mod:`features.consent_table` read the consent
   table (one row per event), validate and normalize it (ids, timestamps) and replace
   phone numbers by keyed hashes (:class:`features.phones.PhoneHasher`) as soon as they
   have read them.
2. :mod:`features.consent_state` joins events to voters (one parser and one id
   normalization on both sides) and folds them into a consent state *per number*.
3. :mod:`features.consent_rules` maps state and delivery to ``eligible`` and a
   :class:`Reason` through one ordered decision table (:data:`RULES`), then keeps quiet
   hours for phone and text deliveries (:data:`CALLING_HOURS_RULES`, the voter's local
   time zone from :mod:`features.calling_hours`).
4. This module decides: :class:`ConsentRules` for voters, voter files and chunks of a
   scoring run (:class:`ConsentTransform`), with the join's diagnostics;
   :mod:`features.consent_scores` applies decisions to scores (:func:`apply_eligibility`).

Fail closed: a number that cannot be parsed, a stale consent table and a revocation of
any date suppress automated contact; only consents wait for their timestamp. Phone and
text contact is allowed only inside the calling window in the voter's local time at the
decision time (``as_of``, or now), in every zone the voter may be in; an unknown zone
suppresses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as ds

from features.calling_hours import STATE_COLUMN, TIME_ZONE_COLUMN, CallingHours, time_zone_text
from features.consent_rules import (  # noqa: F401 - the public names of the consent layer
    CALLING_HOURS_DELIVERIES,
    CALLING_HOURS_RULES,
    REASON_TEXT,
    RULES,
    ArmLike,
    Arms,
    EligibilityRules,
    Reason,
    Rule,
    arm_deliveries,
    keeps_calling_hours,
    needs_consent,
    possible_reasons,
    rules_table,
)
from features.consent_scores import (  # noqa: F401
    CONTROL_ARM,
    apply_eligibility,
    best_eligible_arm,
    suppression_counts,
)
from features.consent_state import JoinTally, fold, tally, voter_keys
from features.consent_table import (  # noqa: F401
    KEY_CHECK_COLUMN,
    OPT_OUT_KEYWORDS,
    OTHER_KEYWORD,
    PHONE_HASH_COLUMN,
    SOURCE_STANDING,
    ConsentError,
    ConsentTable,
    Event,
    LineType,
    Scope,
    Source,
    normalize_ids,
)
from features.phones import PhoneHasher
from features.settings import DEFAULT_PRERECORDED_CAP, DEFAULT_PRERECORDED_WINDOW_DAYS

REPLAY_WARNING = ("as_of is pinned to {as_of}: for replaying a past decision only. Consents are taken as of "
                  "then; do-not-contact and revocations apply whatever their date")


def as_utc(value: datetime | str | None) -> pd.Timestamp:
    """A decision time in UTC (now when None); a time without a zone is refused."""
    if value is None:
        return pd.Timestamp.now(tz="UTC")
    try:
        ts = pd.Timestamp(value)
    except ValueError:
        raise ConsentError(f"as_of {value!r} is not an ISO 8601 time") from None
    if ts.tzinfo is None:
        raise ConsentError(f"as_of {value!r} has no time zone: write it with an offset or Z")
    return ts.tz_convert("UTC")


class ConsentRules:
    """A consent table and the rules, ready to apply to scores (CLI, HTTP service, Spark, pyfunc).

    Parameters
    ----------
    table : ConsentTable, optional
        The consent records; ``None`` means none (automated deliveries suppressed).
    rules : EligibilityRules, optional
    as_of : datetime or str, optional
        When consents are taken as of (replay of a past decision); default: now at each
        call. Do-not-contact and revocations apply whatever their date.
    phone_column : str
        Column of the voters' phone numbers (the number each decision is for).
    hasher : PhoneHasher, optional
        Default: key from ``PERSUADE_HASH_KEY``.
    max_age_hours : float, optional
        A table whose file is older than this is stale: automated deliveries are
        suppressed (``consent_stale``); do-not-contact still applies. None: no limit.
    stale : str, optional
        Why the table is stale regardless of its age (e.g. its re-read failed).
    state_column : str
        Column of the voters' address state (two-letter code), a source of their local
        time zone besides the number; optional in the voters.

    Notes
    -----
    ``as_of`` (or now) is also the time quiet hours are checked at: a phone or text arm is
    eligible only while it is inside the calling window (``rules.calling_hours``) in the
    voter's local time.
    """

    def __init__(self, table: ConsentTable | None = None, rules: EligibilityRules | None = None,
                 as_of: datetime | str | None = None, phone_column: str = "phone",
                 hasher: PhoneHasher | None = None, max_age_hours: float | None = None, stale: str | None = None,
                 state_column: str = STATE_COLUMN):
        self.table = table
        self.rules = rules or EligibilityRules()
        self.as_of = as_of
        self.phone_column = phone_column
        self.hasher = hasher or PhoneHasher()
        self.max_age_hours = max_age_hours
        self.stale = stale
        self.state_column = state_column
        as_utc(as_of)  # refuse a bad decision time now

    @classmethod
    def from_path(cls, path: str | Path | None, landline_prerecorded_cap: int = DEFAULT_PRERECORDED_CAP,
                  window_days: int = DEFAULT_PRERECORDED_WINDOW_DAYS,
                  as_of: datetime | str | None = None, phone_column: str = "phone",
                  hasher: PhoneHasher | None = None, time_zone: str | None = None,
                  max_age_hours: float | None = None, calling_hours: CallingHours | str | None = None,
                  state_column: str = STATE_COLUMN) -> ConsentRules:
        """Read a consent table (or none, when ``path`` is None) with these rules.

        ``phone_column`` and ``state_column`` are the voters' (the table's phone column is
        ``phone``); ``time_zone`` places the table's timestamps written without one."""
        hasher = hasher or PhoneHasher()
        table = ConsentTable.read(path, hasher, time_zone=time_zone) if path is not None else None
        return cls(table, EligibilityRules(landline_prerecorded_cap, window_days, calling_hours), as_of, phone_column,
                   hasher, max_age_hours, state_column=state_column)

    # -- facts -------------------------------------------------------------------------
    def stale_reason(self) -> str | None:
        """Why automated deliveries wait for a fresh table (None: the table is fresh)."""
        if self.stale:
            return self.stale
        table = self.table
        if self.max_age_hours is None or table is None or table.written_at is None:
            return None
        age = (pd.Timestamp.now(tz="UTC") - table.written_at).total_seconds() / 3600
        if age > self.max_age_hours:
            return f"the consent table was written {age:,.1f} hours ago (maximum age {self.max_age_hours:g} hours)"
        return None

    @property
    def hashes_phones(self) -> bool:
        """Voters' numbers are hashed (the table has rows keyed by number)."""
        return self.table is not None and self.table.has_phone_rows

    # -- deciding ----------------------------------------------------------------------
    def keys(self, voters: pd.DataFrame, id_column: str = "voter_id") -> pd.DataFrame:
        """The join keys of ``voters`` (see :func:`features.consent_state.voter_keys`)."""
        return voter_keys(voters, id_column, self.phone_column, self.hasher, self.hashes_phones, self.state_column)

    def consent_decision(self, keys: pd.DataFrame, arms: Arms, at: pd.Timestamp) -> pd.DataFrame:
        """The consent rules' decision (:data:`RULES`, before quiet hours) of rows with these keys."""
        table = self.table or ConsentTable.empty()
        state = fold(table.events, keys, at, self.rules.window_days)
        state["stale"] = self.stale_reason() is not None
        return self.rules.evaluate(state, arms)

    def decide(self, voters: pd.DataFrame, arms: Arms, id_column: str = "voter_id",
               keys: pd.DataFrame | None = None, at: datetime | str | None = None) -> tuple[pd.DataFrame, JoinTally]:
        """ConsentRules of each row of ``voters`` (one voter and one number), and the join's tally.

        ``at`` is the decision time (default: ``as_of``, or now): consents are taken as of
        then and quiet hours are checked then.

        Returns
        -------
        (DataFrame, JoinTally)
            ``voter_id`` (as given, as text), ``phone_hash`` (the number decided for,
            when numbers are hashed), ``time_zone`` (the voter's local time zone, when an
            arm is a phone or text delivery; see :func:`features.calling_hours.time_zone_text`)
            and per arm ``eligible_<slug>`` and ``suppression_<slug>``; rows in the order of
            ``voters`` (ids may repeat: each row is decided on its own).
        """
        keys = self.keys(voters, id_column) if keys is None else keys
        at = as_utc(self.as_of if at is None else at)
        decided = self.consent_decision(keys, arms, at)
        decided["voter_id"] = voters[id_column].astype(str).to_numpy()
        specs = arm_deliveries(arms)
        columns = [(f"eligible_{slug}", f"suppression_{slug}") for _, slug, _ in specs]
        allowed, reason = self.rules.keep_calling_hours(
            decided[[e for e, _ in columns]].to_numpy(dtype=bool), decided[[r for _, r in columns]].to_numpy(object),
            [d for *_, d in specs], keys.time_zones.tolist(), at)
        for j, (eligible, why) in enumerate(columns):
            decided[eligible], decided[why] = allowed[:, j], reason[:, j]
        if self.hashes_phones:
            decided.insert(1, PHONE_HASH_COLUMN, pd.array(keys.phone_hash.to_numpy(dtype=object), dtype="str"))
        if any(keeps_calling_hours(d) for *_, d in specs):
            decided.insert(1 + self.hashes_phones, TIME_ZONE_COLUMN,
                           pd.array([time_zone_text(z) for z in keys.time_zones], dtype="str"))
        table = self.table or ConsentTable.empty()
        return decided, tally(keys, *table.keys())

    def for_voters(self, voters: pd.DataFrame, arms: Arms, id_column: str = "voter_id") -> pd.DataFrame:
        """ConsentRules per voter and arm (see :meth:`decide`)."""
        return self.decide(voters, arms, id_column)[0]

    def apply(self, scores: pd.DataFrame, voters: pd.DataFrame, arms: Arms,
              id_column: str = "voter_id") -> pd.DataFrame:
        """Scores with eligibility applied (see :func:`apply_eligibility`).

        When ``scores`` are ``voters``' rows in order (one decision per row, ids may repeat)
        they are matched by position, otherwise by ``voter_id``.
        """
        decided = self.for_voters(voters, arms, id_column)
        same_rows = len(scores) == len(voters) and "voter_id" in scores.columns and bool(
            (scores.voter_id.astype(str).to_numpy() == decided.voter_id.to_numpy()).all())
        return apply_eligibility(scores, decided, arms, by_position=same_rows)

    def for_voter_file(self, path: str | Path, arms: Arms, id_column: str = "voter_id",
                       chunk_size: int = 200_000) -> tuple[pd.DataFrame, JoinTally]:
        """ConsentRules of every voter of a voter file (parquet or CSV), and the join's tally.

        Only the id and phone columns are read, in chunks; the numbers are hashed and
        dropped here. Duplicate ids are refused (each voter is decided once).
        """
        path = Path(path)
        fmt = "csv" if path.name.lower().endswith((".csv", ".csv.gz")) else "parquet"
        dataset = ds.dataset(str(path), format=fmt)
        names = dataset.schema.names
        if id_column not in names:
            raise ConsentError(f"{path.name}: the id column {id_column!r} is missing")
        columns = [id_column, *(c for c in (self.phone_column, self.state_column) if c in names and c != id_column)]
        parts, total = [], JoinTally()
        for batch in dataset.to_batches(columns=columns, batch_size=chunk_size):
            decided, counted = self.decide(batch.to_pandas(), arms, id_column)
            parts.append(decided)
            total.add(counted)
        decided = pd.concat(parts, ignore_index=True) if parts else self.decide(
            pd.DataFrame({id_column: pd.Series(dtype=str)}), arms, id_column)[0]
        if decided.voter_id.duplicated().any():
            raise ConsentError(f"{path.name}: the id column {id_column!r} has duplicate ids")
        return decided, total

    def transform(self, arms: Arms, id_column: str, input_columns: Sequence[str]) -> ConsentTransform:
        """The per-chunk score transform of a scoring run (local or Spark engine).

        It reads the phone column when the input has it and an arm needs consent or keeps
        quiet hours, and the state column when the input has it and an arm keeps quiet
        hours. The hash key is resolved here: it travels with the transform (to Spark's
        workers too).
        """
        deliveries = [d for *_, d in arm_deliveries(arms)]
        timed = any(keeps_calling_hours(d) for d in deliveries)
        reads = [c for c, needed in ((self.phone_column, timed or any(needs_consent(d) for d in deliveries)),
                                     (self.state_column, timed)) if needed and c in input_columns and c != id_column]
        decider = self
        if self.hashes_phones:
            decider = ConsentRules(self.table, self.rules, self.as_of, self.phone_column, self.hasher.resolved(),
                                  self.max_age_hours, self.stale, self.state_column)
        return ConsentTransform(decider, arms, id_column, reads)

    # -- reporting ---------------------------------------------------------------------
    def describe(self, tally: JoinTally | None = None, table_info: dict[str, Any] | None = None) -> dict[str, Any]:
        """What was applied, and the join's diagnostics (for provenance and ``/model``; no personal data).

        ``table_info`` (name, fingerprint, events, key_check) replaces computing them again.
        """
        table = self.table
        as_of = as_utc(self.as_of)
        if table_info is None:
            table_info = {"table": table.name, "fingerprint": table.fingerprint(), "events": table.counts(),
                          "key_check": table.key_check} if table is not None else {
                "table": None, "fingerprint": None, "events": {}, "key_check": None}
        facts: dict[str, Any] = {
            **table_info,
            "as_of": as_of.isoformat(),
            "as_of_pinned": self.as_of is not None,
            "landline_prerecorded_cap": self.rules.landline_prerecorded_cap,
            "window_days": self.rules.window_days,
            "calling_hours": self.rules.calling_hours.window,
            "max_age_hours": self.max_age_hours,
            "stale": self.stale_reason(),
            "warnings": [REPLAY_WARNING.format(as_of=as_of.isoformat())] if self.as_of is not None else [],
            "data_errors": table.data_errors(as_of) if table is not None else {},
        }
        if tally is not None:
            facts["join"] = tally.report(*(table.keys() if table is not None else (set(), set())))
        return facts


class ConsentTransform:
    """Applies eligibility to each chunk of a scoring run (``transform(chunk, scores)``, picklable).

    The same object runs on the local engine and on Spark's workers, so both decide the
    same. ``columns`` are the input columns it reads besides the id (the phone column);
    ``tally`` accumulates the join's diagnostics of the chunks it saw in this process.
    """

    def __init__(self, eligibility: ConsentRules, arms: Arms, id_column: str, columns: list[str]):
        self.eligibility = eligibility
        self.arms = arms
        self.id_column = id_column
        self.columns = columns
        self.tally = JoinTally()

    def __call__(self, chunk: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
        decided, counted = self.eligibility.decide(chunk, self.arms, self.id_column)
        self.tally.add(counted)
        return apply_eligibility(scores, decided, self.arms, by_position=True)


def eligibility_for(voters: pd.DataFrame, arms: Arms, table: ConsentTable | None = None,
                    rules: EligibilityRules | None = None, as_of: datetime | str | None = None,
                    id_column: str = "voter_id", phone_column: str = "phone",
                    hasher: PhoneHasher | None = None, state_column: str = STATE_COLUMN) -> pd.DataFrame:
    """ConsentRules per voter and arm: ``voter_id``, ``eligible_<slug>``, ``suppression_<slug>`` (see
    :meth:`ConsentRules.decide`)."""
    return ConsentRules(table, rules, as_of, phone_column, hasher, state_column=state_column).for_voters(
        voters, arms, id_column)
