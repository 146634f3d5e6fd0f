"""Quiet hours: phone and text contact only inside the calling window of the voter's local time.

The TCPA's rule (47 CFR 64.1200(c)(1)) is no call before 8 a.m. or after 9 p.m. *local
time at the called party's location*; persuade keeps it for every phone and text
delivery (:data:`features.consent_rules.CALLING_HOURS_DELIVERIES`). The window is a
setting (:class:`CallingHours`, ``PERSUADE_CALLING_HOURS``, ``--calling-hours``); it may be
narrowed (a state's stricter law), never widened past 08:00-21:00.

The voter's local time zone has two sources, both candidates:

- the number: ``phonenumbers``' time-zone data (``time_zones_for_number``) of a
  geographic number (its area code and exchange). A toll-free or other non-geographic
  number says nothing of where its owner is: no zone.
- the address: the voter's ``state`` (two-letter USPS code) when the voters have that
  column, through :data:`STATE_TIME_ZONES`; a state spanning several zones gives them all.

When the candidates disagree (a number kept after a move) or a source gives several
zones, the zone is ambiguous: the window must hold in *every* candidate zone (the most
restrictive reading). No candidate at all is an unknown zone: phone and text contact is
suppressed (``unknown_timezone``), since nobody could keep the window.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import time
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import phonenumbers
from phonenumbers.timezone import time_zones_for_geographical_number

from features.consent_values import ConsentError
from features.settings import Settings

CALLING_HOURS_ENV = Settings.variable("calling_hours")
_TCPA_START, _TCPA_END = time(8, 0), time(21, 0)  # 47 CFR 64.1200(c)(1): not before 8 a.m. nor after 9 p.m.
TCPA_CALLING_HOURS = f"{_TCPA_START:%H:%M}-{_TCPA_END:%H:%M}"
STATE_COLUMN = "state"
TIME_ZONE_COLUMN = "time_zone"
Zones = tuple[str, ...]

_EASTERN, _CENTRAL, _MOUNTAIN, _PACIFIC = "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"
# The IANA zones of each state's territory; a state on two sides of a zone line lists both.
STATE_TIME_ZONES: dict[str, Zones] = {
    "AK": ("America/Adak", "America/Anchorage"), "AL": (_CENTRAL,), "AR": (_CENTRAL,),
    "AZ": ("America/Phoenix", _MOUNTAIN),  # the Navajo Nation keeps daylight-saving time
    "CA": (_PACIFIC,), "CO": (_MOUNTAIN,), "CT": (_EASTERN,), "DC": (_EASTERN,), "DE": (_EASTERN,),
    "FL": (_CENTRAL, _EASTERN), "GA": (_EASTERN,), "HI": ("Pacific/Honolulu",), "IA": (_CENTRAL,),
    "ID": ("America/Boise", _PACIFIC), "IL": (_CENTRAL,), "IN": ("America/Indiana/Indianapolis", _CENTRAL),
    "KS": (_CENTRAL, _MOUNTAIN), "KY": (_CENTRAL, _EASTERN), "LA": (_CENTRAL,), "MA": (_EASTERN,),
    "MD": (_EASTERN,), "ME": (_EASTERN,), "MI": ("America/Detroit", "America/Menominee"), "MN": (_CENTRAL,),
    "MO": (_CENTRAL,), "MS": (_CENTRAL,), "MT": (_MOUNTAIN,), "NC": (_EASTERN,), "ND": (_CENTRAL, _MOUNTAIN),
    "NE": (_CENTRAL, _MOUNTAIN), "NH": (_EASTERN,), "NJ": (_EASTERN,), "NM": (_MOUNTAIN,),
    "NV": (_PACIFIC, _MOUNTAIN),  # West Wendover keeps Mountain time
    "NY": (_EASTERN,), "OH": (_EASTERN,), "OK": (_CENTRAL,), "OR": (_PACIFIC, "America/Boise"),
    "PA": (_EASTERN,), "RI": (_EASTERN,), "SC": (_EASTERN,), "SD": (_CENTRAL, _MOUNTAIN), "TN": (_CENTRAL, _EASTERN),
    "TX": (_CENTRAL, _MOUNTAIN), "UT": (_MOUNTAIN,), "VA": (_EASTERN,), "VT": (_EASTERN,), "WA": (_PACIFIC,),
    "WI": (_CENTRAL,), "WV": (_EASTERN,), "WY": (_MOUNTAIN,),
    "AS": ("Pacific/Pago_Pago",), "GU": ("Pacific/Guam",), "MP": ("Pacific/Saipan",), "PR": ("America/Puerto_Rico",),
    "VI": ("America/St_Thomas",),
}
_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_NANP_ZONES: dict[str, Zones] = {}  # "+1" + area code + exchange -> zones (see number_time_zones)


class CallingHours:
    """The calling window, in the called voter's local time: contact from ``start`` until before ``end``.

    Parameters
    ----------
    window : str
        ``"HH:MM-HH:MM"``, default ``"08:00-21:00"`` (the TCPA's). A narrower window is
        accepted (a state's stricter law); one reaching outside 08:00-21:00 is refused.

    Raises
    ------
    features.consent.ConsentError
        A window that is not ``HH:MM-HH:MM``, is empty, or is wider than the TCPA's.
    """

    def __init__(self, window: str = TCPA_CALLING_HOURS):
        match = _WINDOW.match(str(window))
        if match is None:
            raise ConsentError(f"calling hours {window!r}: write them as HH:MM-HH:MM, e.g. {TCPA_CALLING_HOURS}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
            raise ConsentError(f"calling hours {window!r}: not times of day")
        self.start, self.end = time(h1, m1), time(h2, m2)
        if not self.start < self.end:
            raise ConsentError(f"calling hours {window!r}: the window must start before it ends")
        if self.start < _TCPA_START or self.end > _TCPA_END:
            raise ConsentError(f"calling hours {window!r}: the window may be narrowed, never widened past "
                               f"{TCPA_CALLING_HOURS} local time (TCPA, 47 CFR 64.1200(c)(1))")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CallingHours:
        """The window of ``PERSUADE_CALLING_HOURS`` in ``env`` (default: the process environment)."""
        return cls.from_settings(Settings.from_env(env))

    @classmethod
    def from_settings(cls, settings: Settings) -> CallingHours:
        """The window of ``settings.calling_hours`` (default 08:00-21:00); an error names the variable."""
        try:
            return cls(settings.calling_hours or TCPA_CALLING_HOURS)
        except ConsentError as exc:
            raise ConsentError(f"{CALLING_HOURS_ENV}: {exc}") from None

    @property
    def window(self) -> str:
        """``"HH:MM-HH:MM"``."""
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def __repr__(self) -> str:
        return f"CallingHours({self.window!r})"

    def open_at(self, at: pd.Timestamp, zones: Sequence[Zones]) -> np.ndarray:
        """Per row: True when ``at`` (aware) is inside the window in every zone of the row.

        A row without zones is never open (the caller reports it as an unknown zone).
        """
        if at.tzinfo is None:
            raise ConsentError("a decision time without a time zone cannot be placed in local time")
        verdict: dict[Zones, bool] = {}
        out = np.zeros(len(zones), dtype=bool)
        for i, row in enumerate(zones):
            if row not in verdict:
                verdict[row] = bool(row) and all(
                    self.start <= at.astimezone(ZoneInfo(z)).time() < self.end for z in row)
            out[i] = verdict[row]
        return out


def _zones_of_number(e164: str) -> Zones:
    """Zones of one E.164 number: ``time_zones_for_number`` without its country-wide list for
    non-geographic numbers (toll-free, premium, ...), which says nothing of where the owner is."""
    number = phonenumbers.parse(e164)
    if not phonenumbers.is_number_type_geographical(phonenumbers.number_type(number), number.country_code):
        return ()
    return tuple(sorted(z for z in time_zones_for_geographical_number(number) if z != "Etc/Unknown"))


def number_time_zones(e164: pd.Series) -> list[Zones]:
    """The candidate zones of each normalized number (``()`` for a missing or non-geographic one).

    North American numbers are looked up once per area code and exchange: their type and
    zones do not depend on the last four digits (checked on 48,000 exchanges, 4 lines
    each, with phonenumbers 9.0; ``tests/test_consent_calling_hours.py`` re-checks a sample).
    """
    out: list[Zones] = []
    for value in e164.tolist():
        if not isinstance(value, str):
            out.append(())
        elif value.startswith("+1") and len(value) == 12:
            key = value[:8]
            if key not in _NANP_ZONES:
                _NANP_ZONES[key] = _zones_of_number(value)
            out.append(_NANP_ZONES[key])
        else:
            out.append(_zones_of_number(value))
    return out


def state_time_zones(states: pd.Series) -> list[Zones]:
    """The zones of each state (two-letter USPS code, any case); ``()`` for missing or unknown values."""
    return [STATE_TIME_ZONES.get(v.strip().upper(), ()) if isinstance(v, str) else () for v in states.tolist()]


def local_time_zones(number_zones: Sequence[Zones], state_zones: Sequence[Zones] | None = None) -> list[Zones]:
    """Each voter's candidate zones: those of the number and those of the address, together (sorted)."""
    if state_zones is None:
        return [tuple(z) for z in number_zones]
    return [tuple(sorted(set(a) | set(b))) for a, b in zip(number_zones, state_zones, strict=True)]


def time_zone_text(zones: Zones) -> str | None:
    """How a row's zones are written out: one IANA name, or several separated by spaces; None if unknown."""
    return " ".join(zones) if zones else None
