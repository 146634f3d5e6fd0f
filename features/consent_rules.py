"""The consent rules: one ordered decision table per delivery, the first matching rule wins.

Decided for US political outreach (see docs/compliance.md); not legal advice.

- Do-not-contact (the internal list) wins over everything, every channel.
- Automated deliveries (autodialed, prerecorded or AI-voice calls, texts) fail closed:
  suppressed while the consent table is stale (older than its maximum age, or its last
  re-read failed: ``consent_stale``) and when the number to dial is missing or cannot be
  parsed (``unverifiable_phone``).
- Mail, canvass and live (manually dialed) calls need no prior consent.
- Autodialed calls, prerecorded or AI-voice calls and texts to a cell phone need prior
  express consent for that number. A line of unknown type is treated as a cell phone.
- Texts go to cell phones only: a landline is never texted.
- To a landline, autodialed calls need no consent; prerecorded or AI-voice calls without
  consent are capped per line (default 3 per 30 days).
- A revocation covers every automated delivery, whatever channel it came in on. A later
  consent restores eligibility only if it comes from the voter directly and expressly
  (standing 3: ``written`` or ``opt_in_keyword``). At the same instant the revocation wins.

Then quiet hours (:data:`CALLING_HOURS_RULES`, :mod:`features.calling_hours`): a phone or
text delivery the table allows is suppressed when the voter's local time zone is unknown
(``unknown_timezone``) or the decision time is outside the calling window in some
candidate zone of the voter (``outside_calling_hours``). They come after the consent
rules, so a reason that lasts (``no_consent``) is never hidden by one of the hour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import numpy as np
import pandas as pd

from features.calling_hours import TCPA_CALLING_HOURS, CallingHours, Zones
from features.config import ArmSpec, Delivery, arm_slug
from features.consent_table import ConsentError, LineType
from features.settings import DEFAULT_PRERECORDED_CAP, DEFAULT_PRERECORDED_WINDOW_DAYS


class Reason(StrEnum):
    """Why an arm is suppressed for a voter."""

    do_not_contact = "do_not_contact"
    consent_stale = "consent_stale"
    unverifiable_phone = "unverifiable_phone"
    revoked = "revoked"
    no_consent = "no_consent"
    landline_cannot_text = "landline_cannot_text"
    landline_prerecorded_cap = "landline_prerecorded_cap"
    unknown_timezone = "unknown_timezone"
    outside_calling_hours = "outside_calling_hours"


REASON_TEXT: dict[Reason, str] = {
    Reason.do_not_contact: "on the internal do-not-contact list",
    Reason.consent_stale: "the consent table is older than its maximum age, or its last re-read failed: "
                          "automated contact waits for a good read",
    Reason.unverifiable_phone: "the number to dial is missing, has an extension or cannot be parsed: "
                               "its consent cannot be checked",
    Reason.revoked: "revoked consent (opt-out keyword); no later consent of sufficient standing",
    Reason.no_consent: "cell phone (or unknown line type) without prior express consent for this number",
    Reason.landline_cannot_text: "the number is a landline: texts cannot be delivered",
    Reason.landline_prerecorded_cap: "landline without consent already got the capped number of "
                                     "prerecorded calls in the window (counted per line)",
    Reason.unknown_timezone: "neither the number nor the address state gives the voter's local time zone: "
                             "the calling window cannot be kept",
    Reason.outside_calling_hours: "the decision time is outside the calling window (default 8 a.m.-9 p.m.) in "
                                  "the voter's local time (in every zone the voter may be in)",
}


@dataclass(frozen=True)
class Rule:
    """One row of the decision table: when ``condition`` holds, the outcome is set."""

    condition: str
    eligible: bool
    reason: Reason | None
    why: str


_DNC = Rule("do_not_contact", False, Reason.do_not_contact, "do-not-contact wins over everything")
_FAIL_CLOSED = (
    _DNC,
    Rule("consent_stale", False, Reason.consent_stale, "the consent table is stale or its re-read failed"),
    Rule("unverifiable_phone", False, Reason.unverifiable_phone, "no number whose consent can be checked"),
)
_CONSENT_CALLS = Rule("consent_calls", True, None, "prior express consent to automated calls to this number")
_REVOKED = Rule("revoked", False, Reason.revoked, "a revocation is in effect")
_NO_CONSENT = Rule("always", False, Reason.no_consent, "cell or unknown line without consent")
_NO_CONSENT_NEEDED = "needs no prior consent"
_AUTOMATED_VOICE = (
    *_FAIL_CLOSED, _CONSENT_CALLS, _REVOKED,
    Rule("landline_under_cap", True, None, "landline without consent, under the cap on this line"),
    Rule("landline", False, Reason.landline_prerecorded_cap, "landline without consent, cap reached"),
    _NO_CONSENT,
)
RULES: dict[Delivery, tuple[Rule, ...]] = {
    Delivery.mail: (_DNC, Rule("always", True, None, f"mail {_NO_CONSENT_NEEDED}")),
    Delivery.canvass: (_DNC, Rule("always", True, None, f"a door knock {_NO_CONSENT_NEEDED}")),
    Delivery.live_call: (_DNC, Rule("always", True, None, f"a live, manually dialed call {_NO_CONSENT_NEEDED}")),
    Delivery.autodialed_call: (
        *_FAIL_CLOSED, _CONSENT_CALLS, _REVOKED,
        Rule("landline", True, None, f"an autodialed call to a landline {_NO_CONSENT_NEEDED}"),
        _NO_CONSENT,
    ),
    Delivery.prerecorded_call: _AUTOMATED_VOICE,
    Delivery.ai_voice_call: _AUTOMATED_VOICE,
    Delivery.text: (
        *_FAIL_CLOSED,
        Rule("landline", False, Reason.landline_cannot_text, "a landline cannot get texts"),
        Rule("consent_texts", True, None, "prior express consent to texts to this number"),
        _REVOKED,
        Rule("always", False, Reason.no_consent, "no consent to texts"),
    ),
}


CALLING_HOURS_DELIVERIES = frozenset({Delivery.live_call, Delivery.autodialed_call, Delivery.prerecorded_call,
                                      Delivery.ai_voice_call, Delivery.text})
CALLING_HOURS_RULES: tuple[Rule, ...] = (
    Rule("unknown_timezone", False, Reason.unknown_timezone, "allowed above, but the voter's local time zone is "
         "unknown (no geographic number, no known address state)"),
    Rule("outside_calling_hours", False, Reason.outside_calling_hours, "allowed above, but now is outside the "
         "calling window in some zone the voter may be in"),
)


def keeps_calling_hours(delivery: Delivery | str) -> bool:
    """True for the phone and text deliveries, which keep the calling window (quiet hours)."""
    return Delivery(delivery) in CALLING_HOURS_DELIVERIES


def possible_reasons(delivery: Delivery | str) -> list[Reason]:
    """Every reason an arm of this delivery can be suppressed for, in rule order."""
    rules = [*RULES[Delivery(delivery)], *(CALLING_HOURS_RULES if keeps_calling_hours(delivery) else ())]
    return list(dict.fromkeys(r.reason for r in rules if r.reason is not None))


def needs_consent(delivery: Delivery | str) -> bool:
    """True if some voters may be suppressed for lack of consent on this delivery (quiet hours are not consent)."""
    return any(r.reason not in (None, Reason.do_not_contact) for r in RULES[Delivery(delivery)])


def rules_table() -> pd.DataFrame:
    """The decision table as a frame (delivery, order, condition, outcome, why), for reports; the quiet-hours
    rows of phone and text deliveries follow their consent rules."""
    rows = []
    for delivery, rules in RULES.items():
        then = CALLING_HOURS_RULES if keeps_calling_hours(delivery) else ()
        for i, rule in enumerate([*rules, *then], 1):
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


# -- the decision ---------------------------------------------------------------------
class EligibilityRules:
    """Decide, per voter and arm, whether the arm may be delivered and why not.

    Parameters
    ----------
    landline_prerecorded_cap : int
        Prerecorded (or AI-voice) calls a landline may get without consent within
        ``window_days``, counted per line; a line is eligible while fewer have been made.
    window_days : int
        Length of the cap window.
    calling_hours : CallingHours or str, optional
        The calling window in the voter's local time (default ``"08:00-21:00"``).
    """

    def __init__(self, landline_prerecorded_cap: int = DEFAULT_PRERECORDED_CAP,
                 window_days: int = DEFAULT_PRERECORDED_WINDOW_DAYS,
                 calling_hours: CallingHours | str | None = None):
        self.landline_prerecorded_cap = landline_prerecorded_cap
        self.window_days = window_days
        self.calling_hours = calling_hours if isinstance(calling_hours, CallingHours) else CallingHours(
            calling_hours or TCPA_CALLING_HOURS)

    def conditions(self, state: pd.DataFrame) -> dict[str, np.ndarray]:
        """The named conditions the rules refer to, evaluated on a consent state."""
        if self.landline_prerecorded_cap < 0:
            raise ConsentError("landline_prerecorded_cap must be >= 0")
        landline = state.line_type.to_numpy() == LineType.landline.value
        return {
            "always": np.ones(len(state), dtype=bool),
            "do_not_contact": state.do_not_contact.to_numpy(dtype=bool),
            "consent_stale": state.stale.to_numpy(dtype=bool),
            "unverifiable_phone": state.phone_status.to_numpy(dtype=object) != "ok",
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

    def keep_calling_hours(self, allowed: np.ndarray, reason: np.ndarray, deliveries: Sequence[Delivery | str],
                           zones: Sequence[Zones], at: pd.Timestamp) -> tuple[np.ndarray, np.ndarray]:
        """The quiet-hours stage (:data:`CALLING_HOURS_RULES`) on decisions of the consent rules.

        Parameters
        ----------
        allowed, reason : ndarray, shape (n, n_arms)
            The consent rules' decisions (reason None where allowed).
        deliveries : sequence of Delivery
            Each column's delivery; only phone and text deliveries keep the window.
        zones : sequence of tuple of str
            Each row's candidate time zones (``()``: unknown).
        at : Timestamp (aware)
            The decision time.

        Returns
        -------
        (allowed, reason)
            New arrays: a phone or text arm allowed so far is suppressed where the zone is
            unknown or ``at`` is outside the window in some candidate zone.
        """
        allowed, reason = np.array(allowed, dtype=bool), np.array(reason, dtype=object)
        timed = [j for j, d in enumerate(deliveries) if keeps_calling_hours(d)]
        if not timed or not len(allowed):
            return allowed, reason
        known = np.fromiter((bool(z) for z in zones), dtype=bool, count=len(zones))
        conditions = {"unknown_timezone": ~known, "outside_calling_hours": ~self.calling_hours.open_at(at, zones)}
        for j in timed:
            for rule in CALLING_HOURS_RULES:
                hit = allowed[:, j] & conditions[rule.condition]
                reason[hit, j] = rule.reason.value
                allowed[hit, j] = False
        return allowed, reason
