"""Consent and eligibility: who may be contacted by which delivery, and if not, why not.

Everything that decides whether a voter may get an arm lives here, in three steps:

1. :class:`ConsentTable` reads the consent table (one row per event, see below),
   validates it, and replaces phone numbers by keyed hashes
   (:class:`features.phones.PhoneHasher`) as soon as it has read them.
2. :meth:`ConsentTable.state` folds the events of each voter into a *consent state*
   as of a point in time: do-not-contact, line type, consent to automated calls and to
   texts, revocation in effect, prerecorded calls in the cap window.
3. :class:`EligibilityRules` maps state and delivery to ``eligible`` and a
   :class:`Reason` through one ordered decision table (:data:`RULES`), the first
   matching rule wins. :func:`apply_eligibility` then applies the result to scores.

The consent table
-----------------
=================== ==================================================================
column              meaning
=================== ==================================================================
``voter_id``        the voter (optional when the row has a phone)
``phone``           the phone number as written (hashed at read time), or
``phone_hash``      its keyed hash (hex HMAC-SHA256 of the E.164 form)
``event``           ``line_type``, ``consent``, ``revocation``, ``do_not_contact``,
                    ``prerecorded_call``
``line_type``       ``cell`` or ``landline`` (``line_type`` rows)
``scope``           ``calls`` (autodialed, prerecorded or AI-voice calls), ``texts``
                    or ``all`` (``consent`` rows)
``source``          how consent was obtained (``consent`` rows), see :data:`SOURCE_STANDING`
``keyword``         the opt-out word of a revocation (STOP, QUIT, END, REVOKE, OPT OUT,
                    CANCEL, UNSUBSCRIBE; anything else is recorded as ``OTHER``)
``timestamp``       when it happened (required for consent, revocation and
                    prerecorded_call rows; UTC when no zone is given)
=================== ==================================================================

A row applies to the voter it names and to every voter whose phone number is the row's.

The rules (decided for US political outreach; see docs/notes/issue-3-readme.md)
-----------------------------------------------------------------------------
- Do-not-contact (the internal list) wins over everything, every channel.
- Mail, canvass and live (manually dialed) calls need no prior consent.
- Autodialed calls, prerecorded or AI-voice calls and texts to a cell phone need prior
  express consent. A line of unknown type is treated as a cell phone.
- Texts go to cell phones only: a landline is never texted.
- To a landline, autodialed calls need no consent; prerecorded or AI-voice calls without
  consent are capped (default 3 per 30 days).
- A revocation takes effect at its timestamp and covers every automated delivery
  (calls and texts), whatever channel it was received on. A consent given *after* it
  restores eligibility only if it comes from the voter directly and expressly
  (standing 3: ``written`` or ``opt_in_keyword``); lower-standing consent (a number the
  voter gave on a form, verbal, third-party) never overrides a revocation. A revocation
  and a consent at the same instant: the revocation wins.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from features.config import ArmSpec, Delivery, arm_slug
from features.phones import HASH_PATTERN, PhoneHasher

OPT_OUT_KEYWORDS: tuple[str, ...] = ("STOP", "QUIT", "END", "REVOKE", "OPT OUT", "CANCEL", "UNSUBSCRIBE")
OTHER_KEYWORD = "OTHER"
CONTROL_ARM = "control"  # the best_arm value of "contact nobody" (as serving.bundle.CONTROL_ARM)


class ConsentError(ValueError):
    """A consent table or eligibility input that cannot be used (names the column)."""


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


class Reason(StrEnum):
    """Why an arm is suppressed for a voter."""

    do_not_contact = "do_not_contact"
    revoked = "revoked"
    no_consent = "no_consent"
    landline_cannot_text = "landline_cannot_text"
    landline_prerecorded_cap = "landline_prerecorded_cap"


REASON_TEXT: dict[Reason, str] = {
    Reason.do_not_contact: "on the internal do-not-contact list",
    Reason.revoked: "revoked consent (opt-out keyword); no later consent of sufficient standing",
    Reason.no_consent: "cell phone (or unknown line type) without prior express consent for this delivery",
    Reason.landline_cannot_text: "the number is a landline: texts cannot be delivered",
    Reason.landline_prerecorded_cap: "landline without consent already got the capped number of "
                                     "prerecorded calls in the window",
}


# -- the decision table ---------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """One row of the decision table: when ``condition`` holds, the outcome is set."""

    condition: str
    eligible: bool
    reason: Reason | None
    why: str


_DNC = Rule("do_not_contact", False, Reason.do_not_contact, "do-not-contact wins over everything")
_NO_CONSENT_NEEDED = "needs no prior consent"
_AUTOMATED_VOICE = (
    _DNC,
    Rule("consent_calls", True, None, "prior express consent to automated calls"),
    Rule("revoked", False, Reason.revoked, "a revocation is in effect"),
    Rule("landline_under_cap", True, None, "landline without consent, under the cap in the window"),
    Rule("landline", False, Reason.landline_prerecorded_cap, "landline without consent, cap reached"),
    Rule("always", False, Reason.no_consent, "cell or unknown line without consent"),
)
RULES: dict[Delivery, tuple[Rule, ...]] = {
    Delivery.mail: (_DNC, Rule("always", True, None, f"mail {_NO_CONSENT_NEEDED}")),
    Delivery.canvass: (_DNC, Rule("always", True, None, f"a door knock {_NO_CONSENT_NEEDED}")),
    Delivery.live_call: (_DNC, Rule("always", True, None, f"a live, manually dialed call {_NO_CONSENT_NEEDED}")),
    Delivery.autodialed_call: (
        _DNC,
        Rule("consent_calls", True, None, "prior express consent to automated calls"),
        Rule("revoked", False, Reason.revoked, "a revocation is in effect"),
        Rule("landline", True, None, f"an autodialed call to a landline {_NO_CONSENT_NEEDED}"),
        Rule("always", False, Reason.no_consent, "cell or unknown line without consent"),
    ),
    Delivery.prerecorded_call: _AUTOMATED_VOICE,
    Delivery.ai_voice_call: _AUTOMATED_VOICE,
    Delivery.text: (
        _DNC,
        Rule("landline", False, Reason.landline_cannot_text, "a landline cannot get texts"),
        Rule("consent_texts", True, None, "prior express consent to texts"),
        Rule("revoked", False, Reason.revoked, "a revocation is in effect"),
        Rule("always", False, Reason.no_consent, "no consent to texts"),
    ),
}


def needs_consent(delivery: Delivery | str) -> bool:
    """True if some voters may be suppressed for lack of consent on this delivery."""
    return any(r.reason not in (None, Reason.do_not_contact) for r in RULES[Delivery(delivery)])


def rules_table() -> pd.DataFrame:
    """The decision table as a frame (delivery, order, condition, outcome, why), for reports."""
    rows = []
    for delivery, rules in RULES.items():
        for i, rule in enumerate(rules, 1):
            rows.append({"delivery": delivery.value, "order": i, "condition": rule.condition,
                         "outcome": "eligible" if rule.eligible else f"suppressed: {rule.reason.value}",
                         "why": rule.why})
    return pd.DataFrame(rows)


# -- arms -----------------------------------------------------------------------------
class ArmLike(Protocol):
    label: str
    delivery: str


Arms = Sequence[ArmLike] | Mapping[str, ArmSpec]


def arm_deliveries(arms: Arms) -> list[tuple[str, str, Delivery]]:
    """(label, slug, delivery) of each arm, from scoring-model arms or config arm specs."""
    if isinstance(arms, Mapping):
        items = [(label, spec.resolved_delivery.value) for label, spec in arms.items()]
    else:
        items = [(a.label, a.delivery) for a in arms]
    out = []
    for label, delivery in items:
        try:
            out.append((label, arm_slug(label), Delivery(delivery)))
        except ValueError:
            known = ", ".join(d.value for d in Delivery)
            raise ConsentError(f"arm {label!r}: unknown delivery {delivery!r} (known: {known})") from None
    return out


# -- the consent table ----------------------------------------------------------------
_EVENT_COLUMNS = ["voter_id", "phone_hash", "event", "line_type", "scope", "source", "keyword", "timestamp"]
_NEEDS_TIME = {Event.consent, Event.revocation, Event.prerecorded_call}
_TIME = "datetime64[ns, UTC]"
PHONE_HASH_COLUMN = "phone_hash"


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


class ConsentTable:
    """Validated consent events; phone numbers are held only as keyed hashes.

    Parameters
    ----------
    events : DataFrame
        Normalized events with the columns ``voter_id``, ``phone_hash``, ``event``,
        ``line_type``, ``scope``, ``source``, ``keyword``, ``timestamp`` (as produced by
        :meth:`from_frame`; use that to read a raw table).
    """

    def __init__(self, events: pd.DataFrame):
        missing = [c for c in _EVENT_COLUMNS if c not in events.columns]
        if missing:
            raise ConsentError(f"normalized consent events lack columns {missing}; use ConsentTable.from_frame")
        self.events = events[_EVENT_COLUMNS].reset_index(drop=True)
        self.events["timestamp"] = pd.to_datetime(self.events["timestamp"], utc=True).astype(_TIME)
        self.name: str | None = None  # the file it was read from, if any

    # -- construction ------------------------------------------------------------
    @classmethod
    def empty(cls) -> ConsentTable:
        """No consent records: automated deliveries are suppressed for everybody."""
        return cls(pd.DataFrame({c: pd.Series(dtype=object) for c in _EVENT_COLUMNS}).astype({"timestamp": _TIME}))

    @classmethod
    def read(cls, path: str | Path, hasher: PhoneHasher | None = None, id_column: str = "voter_id",
             phone_column: str = "phone") -> ConsentTable:
        """Read a consent table (parquet or CSV) and validate it, see :meth:`from_frame`."""
        path = Path(path)
        if not path.exists():
            raise ConsentError(f"consent table not found: {path}")
        if path.suffix.lower() in {".parquet", ".pq"}:
            frame = pd.read_parquet(path)
        elif path.suffix.lower() == ".csv" or path.name.lower().endswith(".csv.gz"):
            frame = pd.read_csv(path, dtype={id_column: str, phone_column: str})
        else:
            raise ConsentError(f"{path}: unsupported consent table type (use .parquet or .csv)")
        try:
            table = cls.from_frame(frame, hasher, id_column=id_column, phone_column=phone_column)
        except ConsentError as exc:
            raise ConsentError(f"consent table {path.name}: {exc}") from None
        table.name = path.name
        return table

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, hasher: PhoneHasher | None = None, id_column: str = "voter_id",
                   phone_column: str = "phone") -> ConsentTable:
        """Validate a raw consent table and hash its phone numbers.

        Every problem found is listed in one :class:`ConsentError`, by column.
        Phone numbers are normalized to E.164 and replaced by keyed hashes; the raw
        numbers are not kept.
        """
        problems: list[str] = []
        if "event" not in frame.columns:
            raise ConsentError("column 'event' is missing; it says what each row records "
                               f"({', '.join(e.value for e in Event)})")
        keys = [c for c in (id_column, phone_column, "phone_hash") if c in frame.columns]
        if not keys:
            raise ConsentError(f"no join key: the consent table needs a {id_column!r}, {phone_column!r} "
                               "or 'phone_hash' column")
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
            problems.append(f"{int(no_key.sum())} rows have no {id_column!r}, {phone_column!r} or 'phone_hash' "
                            f"(first at row {frame.index[no_key.to_numpy()][0]!r})")
        _check_values(frame, "line_type", event == Event.line_type, LineType, problems, exclude=("unknown",))
        _check_values(frame, "scope", event == Event.consent, Scope, problems)
        _check_values(frame, "source", event == Event.consent, Source, problems)
        if "timestamp" in frame.columns:
            ts = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce", format="mixed")
            unreadable = ts.isna() & frame["timestamp"].notna()
            if unreadable.any():
                problems.append(f"column 'timestamp': {int(unreadable.sum())} values are not dates/times "
                                f"(first at row {frame.index[unreadable.to_numpy()][0]!r})")
        else:
            ts = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
        untimed = event.isin([e.value for e in _NEEDS_TIME]) & ts.isna()
        if untimed.any() and "timestamp" in frame.columns:
            problems.append(f"column 'timestamp': {int(untimed.sum())} consent/revocation/prerecorded_call rows "
                            "have no timestamp")
        elif untimed.any():
            problems.append(f"column 'timestamp' is missing (needed by {int(untimed.sum())} rows)")
        phone_hash = pd.Series(None, index=frame.index, dtype=object)
        if "phone_hash" in frame.columns:
            given = frame["phone_hash"].notna()
            ok = frame.loc[given, "phone_hash"].astype(str).str.fullmatch(HASH_PATTERN.pattern)
            if not ok.all():
                problems.append(f"column 'phone_hash': {int((~ok).sum())} values are not 64-hex-digit "
                                "HMAC-SHA256 hashes")
            phone_hash[given] = frame.loc[given, "phone_hash"].astype(str)
        if problems:
            raise ConsentError("; ".join(problems))
        if phone_column in frame.columns and frame[phone_column].notna().any():
            hashed = (hasher or PhoneHasher()).hash_raw(frame[phone_column], column=phone_column)
            phone_hash = phone_hash.where(phone_hash.notna(), hashed)
        voter_id = frame[id_column].astype("string").str.strip() if id_column in frame.columns else None
        events = pd.DataFrame({
            "voter_id": voter_id.astype(object).where(voter_id.notna(), None) if voter_id is not None else None,
            "phone_hash": phone_hash,
            "event": event.astype(object),
            "line_type": _lower(frame, "line_type"),
            "scope": _lower(frame, "scope"),
            "source": _lower(frame, "source"),
            "keyword": np.where(event == Event.revocation,
                                frame["keyword"].map(_canonical_keyword) if "keyword" in frame.columns
                                else OTHER_KEYWORD, None),
            "timestamp": ts,
        })
        return cls(events)

    # -- facts -------------------------------------------------------------------
    @property
    def has_phone_rows(self) -> bool:
        """True if some rows are keyed by phone number (joining them needs the voters' phones)."""
        return bool(self.events.phone_hash.notna().any())

    def counts(self) -> dict[str, int]:
        """Rows per event type (no personal data)."""
        return {str(k): int(v) for k, v in self.events.event.value_counts().sort_index().items()}

    def fingerprint(self) -> str:
        """sha256 of the normalized events (phones as hashes): which consent table was applied."""
        canonical = self.events.sort_values([*_EVENT_COLUMNS[:3], "timestamp"], kind="stable").astype(str)
        return hashlib.sha256(canonical.to_csv(index=False).encode()).hexdigest()

    def save(self, path: str | Path) -> Path:
        """Write the normalized events (phone numbers as keyed hashes only) to parquet."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.events.to_parquet(path, index=False)
        return path

    # -- folding events into a state ---------------------------------------------------
    def state(
        self,
        voters: pd.DataFrame,
        as_of: datetime | str | None = None,
        window_days: int = 30,
        id_column: str = "voter_id",
        phone_column: str = "phone",
        hasher: PhoneHasher | None = None,
    ) -> pd.DataFrame:
        """The consent state of each voter as of ``as_of`` (default: now, UTC).

        Parameters
        ----------
        voters : DataFrame
            The voters: ``id_column`` and, when the table has rows keyed by phone only,
            ``phone_column`` (raw numbers; hashed here and not kept) or ``phone_hash``
            (hashed already, e.g. at the HTTP boundary; it is used when present).
        as_of : datetime or str, optional
            Events after it are not yet in effect.
        window_days : int
            Length of the prerecorded-call cap window ending at ``as_of``.

        Returns
        -------
        DataFrame
            One row per voter, in the order of ``voters``: ``voter_id``,
            ``do_not_contact``, ``line_type``, ``consent_calls``, ``consent_texts``,
            ``revoked``, ``revocation_keyword``, ``prerecorded_calls``.
        """
        if id_column not in voters.columns:
            raise ConsentError(f"voters: the id column {id_column!r} is missing")
        ids = voters[id_column].astype(str).to_numpy()
        if pd.Series(ids).duplicated().any():
            raise ConsentError(f"voters: the id column {id_column!r} has duplicate ids")
        now = _as_utc(as_of)
        ev = self.events[self.events.timestamp.isna() | (self.events.timestamp <= now)].copy()
        ev["row"] = np.arange(len(ev))
        links = [ev[ev.voter_id.notna()].merge(pd.DataFrame({"voter_id": ids}), on="voter_id")]
        phone_rows = ev.phone_hash.notna()
        if phone_rows.any():
            if PHONE_HASH_COLUMN in voters.columns:
                hashes = voters[PHONE_HASH_COLUMN].astype(object)
            elif phone_column in voters.columns:
                hashes = (hasher or PhoneHasher()).hash_raw(voters[phone_column], column=phone_column,
                                                            errors="coerce")
            else:
                raise ConsentError(
                    f"voters: the consent table has rows keyed by phone number; the voters need the "
                    f"{phone_column!r} (or {PHONE_HASH_COLUMN!r}) column to join them"
                )
            by_phone = pd.DataFrame({"voter_id": ids, "phone_hash": hashes.to_numpy()}).dropna()
            links.append(ev[phone_rows].drop(columns="voter_id").merge(by_phone, on="phone_hash"))
        linked = pd.concat(links, ignore_index=True).drop_duplicates(["voter_id", "row"])
        return _fold(linked, ids, now, window_days)


def _lower(frame: pd.DataFrame, column: str) -> pd.Series | None:
    if column not in frame.columns:
        return None
    values = frame[column].astype("string").str.strip().str.lower()
    return values.astype(object).where(values.notna(), None)


def _as_utc(value: datetime | str | None) -> pd.Timestamp:
    ts = pd.Timestamp.now(tz="UTC") if value is None else pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _fold(linked: pd.DataFrame, ids: np.ndarray, now: pd.Timestamp, window_days: int) -> pd.DataFrame:
    """Per-voter consent state from the events linked to each voter."""
    state = pd.DataFrame({"voter_id": ids})
    kind = linked.event

    def per_voter(mask: pd.Series, agg: str, column: str = "row") -> pd.Series:
        return linked[mask].groupby("voter_id")[column].agg(agg).reindex(ids)

    state["do_not_contact"] = per_voter(kind == Event.do_not_contact, "size").fillna(0).to_numpy() > 0
    lines = linked[kind == Event.line_type]
    is_cell = (lines.line_type == LineType.cell.value).groupby(lines.voter_id).max().reindex(ids)
    known = is_cell.notna().to_numpy()
    # A number ever reported as a cell phone is treated as one (ported numbers).
    state["line_type"] = np.where(~known, LineType.unknown.value,
                                  np.where(is_cell.fillna(False).astype(bool).to_numpy(),
                                           LineType.cell.value, LineType.landline.value))
    last_rev = per_voter(kind == Event.revocation, "max", "timestamp")
    state["revoked"] = last_rev.notna().to_numpy()
    rev_rows = linked[kind == Event.revocation].sort_values("timestamp")
    state["revocation_keyword"] = rev_rows.groupby("voter_id").keyword.last().reindex(ids).to_numpy()
    consents = linked[kind == Event.consent].copy()
    consents["last_rev"] = pd.Series(last_rev.reindex(consents.voter_id).to_numpy(), index=consents.index,
                                     dtype=_TIME)
    standing = consents.source.map({s.value: v for s, v in SOURCE_STANDING.items()}).fillna(0)
    consents["valid"] = consents.last_rev.isna() | (
        (consents.timestamp > consents.last_rev) & (standing >= REINSTATING_STANDING)
    )
    for scope in (Scope.calls, Scope.texts):
        hit = consents[consents.valid & consents.scope.isin([scope.value, Scope.all.value])]
        state[f"consent_{scope.value}"] = state.voter_id.isin(hit.voter_id).to_numpy()
    start = now - pd.Timedelta(days=window_days)
    calls = linked[(kind == Event.prerecorded_call) & (linked.timestamp > start)]
    state["prerecorded_calls"] = calls.groupby("voter_id").size().reindex(ids).fillna(0).astype(int).to_numpy()
    return state


# -- eligibility ----------------------------------------------------------------------
class EligibilityRules:
    """Decide, per voter and arm, whether the arm may be delivered and why not.

    Parameters
    ----------
    landline_prerecorded_cap : int
        Prerecorded (or AI-voice) calls a landline may get without consent within
        ``window_days``; a voter is eligible while fewer have been made.
    window_days : int
        Length of the cap window.
    """

    def __init__(self, landline_prerecorded_cap: int = 3, window_days: int = 30):
        self.landline_prerecorded_cap = landline_prerecorded_cap
        self.window_days = window_days

    def conditions(self, state: pd.DataFrame) -> dict[str, np.ndarray]:
        """The named conditions the rules refer to, evaluated on a consent state."""
        if self.landline_prerecorded_cap < 0:
            raise ConsentError("landline_prerecorded_cap must be >= 0")
        landline = state.line_type.to_numpy() == LineType.landline.value
        return {
            "always": np.ones(len(state), dtype=bool),
            "do_not_contact": state.do_not_contact.to_numpy(dtype=bool),
            "consent_calls": state.consent_calls.to_numpy(dtype=bool),
            "consent_texts": state.consent_texts.to_numpy(dtype=bool),
            "revoked": state.revoked.to_numpy(dtype=bool),
            "landline": landline,
            "landline_under_cap": landline & (state.prerecorded_calls.to_numpy() < self.landline_prerecorded_cap),
        }

    def decide(self, state: pd.DataFrame, delivery: Delivery | str,
               conditions: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(eligible, reason) arrays for one delivery; reason is None where eligible."""
        conds = conditions if conditions is not None else self.conditions(state)
        rules = RULES[Delivery(delivery)]
        eligible = np.select([conds[r.condition] for r in rules], [r.eligible for r in rules], default=False)
        reason = np.select([conds[r.condition] for r in rules],
                           [r.reason.value if r.reason else None for r in rules], default=None)
        return eligible.astype(bool), reason.astype(object)

    def evaluate(self, state: pd.DataFrame, arms: Arms) -> pd.DataFrame:
        """``voter_id`` and, per arm, ``eligible_<slug>`` and ``suppression_<slug>``."""
        conds = self.conditions(state)
        out = pd.DataFrame({"voter_id": state.voter_id.to_numpy()})
        for _label, slug, delivery in arm_deliveries(arms):
            eligible, reason = self.decide(state, delivery, conds)
            out[f"eligible_{slug}"] = eligible
            out[f"suppression_{slug}"] = reason
        return out


class Eligibility:
    """A consent table and the rules, ready to apply to scores (CLI and HTTP service).

    Parameters
    ----------
    table : ConsentTable, optional
        The consent records; ``None`` means none (automated deliveries suppressed).
    rules : EligibilityRules, optional
    as_of : datetime or str, optional
        Point in time of the decision; default: now (UTC) at each call.
    phone_column : str
        Column of the voters' phone numbers (for rows of the table keyed by phone).
    hasher : PhoneHasher, optional
        Default: key from ``PERSUADE_HASH_KEY``.
    """

    def __init__(self, table: ConsentTable | None = None, rules: EligibilityRules | None = None,
                 as_of: datetime | str | None = None, phone_column: str = "phone",
                 hasher: PhoneHasher | None = None):
        self.table = table
        self.rules = rules
        self.as_of = as_of
        self.phone_column = phone_column
        self.hasher = hasher

    @classmethod
    def from_path(cls, path: str | Path | None, landline_prerecorded_cap: int = 3, window_days: int = 30,
                  as_of: datetime | str | None = None, phone_column: str = "phone",
                  hasher: PhoneHasher | None = None) -> Eligibility:
        """Read a consent table (or none, when ``path`` is None) with these rules."""
        table = ConsentTable.read(path, hasher, phone_column=phone_column) if path is not None else None
        return cls(table, EligibilityRules(landline_prerecorded_cap, window_days), as_of, phone_column, hasher)

    def for_voters(self, voters: pd.DataFrame, arms: Arms, id_column: str = "voter_id") -> pd.DataFrame:
        """Eligibility per voter and arm (see :meth:`EligibilityRules.evaluate`)."""
        rules = self.rules or EligibilityRules()
        table = self.table or ConsentTable.empty()
        state = table.state(voters, self.as_of, rules.window_days, id_column, self.phone_column, self.hasher)
        return rules.evaluate(state, arms)

    def apply(self, scores: pd.DataFrame, voters: pd.DataFrame, arms: Arms,
              id_column: str = "voter_id") -> pd.DataFrame:
        """Scores with eligibility applied (see :func:`apply_eligibility`)."""
        return apply_eligibility(scores, self.for_voters(voters, arms, id_column), arms)

    def for_voter_file(self, path: str | Path, arms: Arms, id_column: str = "voter_id") -> pd.DataFrame:
        """Eligibility of every voter of a voter file (parquet or CSV).

        Only the id column and, when the consent table has rows keyed by phone, the
        phone column are read; the phone numbers are hashed and dropped here.
        """
        path = Path(path)
        fmt = "csv" if path.name.lower().endswith((".csv", ".csv.gz")) else "parquet"
        dataset = ds.dataset(str(path), format=fmt)
        names = dataset.schema.names
        if id_column not in names:
            raise ConsentError(f"{path.name}: the id column {id_column!r} is missing")
        needs_phone = self.table is not None and self.table.has_phone_rows
        columns = [id_column, self.phone_column] if needs_phone and self.phone_column in names else [id_column]
        voters = dataset.to_table(columns=columns).to_pandas()
        voters[id_column] = voters[id_column].astype(str)
        return self.for_voters(voters, arms, id_column)

    def describe(self) -> dict[str, Any]:
        """What was applied (for provenance; no personal data)."""
        rules = self.rules or EligibilityRules()
        table = self.table
        return {
            "table": getattr(table, "name", None) if table is not None else None,
            "fingerprint": table.fingerprint() if table is not None else None,
            "events": table.counts() if table is not None else {},
            "as_of": _as_utc(self.as_of).isoformat(),
            "landline_prerecorded_cap": rules.landline_prerecorded_cap,
            "window_days": rules.window_days,
        }


def eligibility_for(voters: pd.DataFrame, arms: Arms, table: ConsentTable | None = None,
                    rules: EligibilityRules | None = None, as_of: datetime | str | None = None,
                    id_column: str = "voter_id", phone_column: str = "phone",
                    hasher: PhoneHasher | None = None) -> pd.DataFrame:
    """Eligibility per voter and arm: ``voter_id``, ``eligible_<slug>``, ``suppression_<slug>``."""
    return Eligibility(table, rules, as_of, phone_column, hasher).for_voters(voters, arms, id_column)


def apply_eligibility(scores: pd.DataFrame, eligibility: pd.DataFrame, arms: Arms) -> pd.DataFrame:
    """Apply eligibility to scores before they are returned.

    For each arm, the uplift of voters who may not get it becomes NaN, and the columns
    ``eligible_<slug>`` (bool) and ``suppression_<slug>`` (a :class:`Reason` value, missing
    when eligible) follow its ``uplift_<slug>`` column. ``best_arm`` and
    ``best_uplift`` are chosen again among the eligible arms only: an ineligible arm
    is never a voter's best arm, and ``control`` (contact nobody) is always possible.

    Parameters
    ----------
    scores : DataFrame
        Output of ``ScoringModel.score``: ``voter_id``, ``uplift_<slug>`` per arm,
        ``best_arm``, ``best_uplift``.
    eligibility : DataFrame
        Output of :func:`eligibility_for` for (at least) the scored voters.
    arms : sequence of arms (``ScoringModel.arms``) or mapping of config arm specs

    Returns
    -------
    DataFrame
        A new frame, rows in the order of ``scores``.
    """
    specs = arm_deliveries(arms)
    if "voter_id" not in scores.columns:
        raise ConsentError("scores: the 'voter_id' column is missing")
    needed = [f"{p}_{slug}" for _, slug, _ in specs for p in ("eligible", "suppression")]
    missing = [c for c in ["voter_id", *needed] if c not in eligibility.columns]
    if missing:
        raise ConsentError(f"eligibility: columns {missing} are missing")
    lookup = eligibility.drop_duplicates("voter_id").set_index("voter_id")
    ids = scores.voter_id.astype(str)
    unknown = ~ids.isin(lookup.index)
    if unknown.any():
        raise ConsentError(f"eligibility: {int(unknown.sum())} scored voters have no eligibility row")
    rows = lookup.loc[ids.to_numpy()]
    out = scores.copy()
    uplift = []
    for _label, slug, _delivery in specs:
        col = f"uplift_{slug}"
        if col not in out.columns:
            raise ConsentError(f"scores: the column {col!r} is missing")
        ok = rows[f"eligible_{slug}"].to_numpy(dtype=bool)
        out[col] = np.where(ok, out[col].to_numpy(dtype=float), np.nan)
        out.insert(out.columns.get_loc(col) + 1, f"eligible_{slug}", ok)
        reason = pd.Series(rows[f"suppression_{slug}"].to_numpy(dtype=object), index=out.index).astype("str")
        out.insert(out.columns.get_loc(col) + 2, f"suppression_{slug}", reason)  # missing (NaN) where eligible
        uplift.append(out[col].to_numpy(dtype=float))
    matrix = np.column_stack(uplift) if uplift else np.zeros((len(out), 0))
    best, value = best_eligible_arm(matrix, [label for label, _, _ in specs])
    out["best_arm"] = best
    out["best_uplift"] = value
    return out


def best_eligible_arm(uplift: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Best arm per row among the allowed ones (NaN = not allowed), ``control`` if none is positive.

    The same choice as ``serving.bundle.best_arms`` (tested to agree); it lives here
    because ``features`` may not import ``serving``.
    """
    n = uplift.shape[0]
    if n == 0 or uplift.shape[1] == 0:
        return np.full(n, CONTROL_ARM, dtype=object), np.zeros(n)
    masked = np.where(np.isnan(uplift), -np.inf, uplift)
    idx = masked.argmax(axis=1)
    top = masked[np.arange(n), idx]
    arm = np.where(top > 0, np.asarray(labels, dtype=object)[idx], CONTROL_ARM)
    return arm, np.where(top > 0, top, 0.0)


def suppression_counts(eligibility: pd.DataFrame, arms: Arms) -> pd.DataFrame:
    """Voters per arm and outcome: ``arm``, ``delivery``, ``reason`` (``eligible`` or a code), ``voters``.

    Every reason code the arm's delivery can give appears (zero counts included), so a
    reviewer sees what was checked, not only what was found.
    """
    rows: list[dict[str, Any]] = []
    for label, slug, delivery in arm_deliveries(arms):
        reasons = eligibility[f"suppression_{slug}"].astype(object).where(eligibility[f"eligible_{slug}"] == False)  # noqa: E712
        counts = reasons.fillna("eligible").value_counts()
        possible = {r.reason.value for r in RULES[delivery] if r.reason is not None}
        for reason in ["eligible", *sorted(possible)]:
            rows.append({"arm": label, "delivery": delivery.value, "reason": reason,
                         "voters": int(counts.get(reason, 0))})
    return pd.DataFrame(rows, columns=["arm", "delivery", "reason", "voters"])
