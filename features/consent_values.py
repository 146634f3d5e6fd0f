"""Normalizing the values of a consent table: voter ids (the join key) and timestamps.

The same :func:`normalize_ids` runs on both sides of every join (the table's ids and
the voters'); :func:`parse_timestamps` accepts ISO 8601 with a zone, and refuses by name
what would be a guess: a time without a zone (unless the table's time zone is
configured), epoch numbers and day/month dates such as ``03/09/2026``.
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from features.phones import mask_phones

UTC_TIME = "datetime64[ns, UTC]"


class ConsentError(ValueError):
    """A consent table or eligibility input that cannot be used (names the column; numbers masked)."""

    def __init__(self, message: str):
        super().__init__(mask_phones(str(message)))


# -- join keys ------------------------------------------------------------------------
_INTEGRAL_TEXT = re.compile(r"^(-?\d+)\.0+$")


def normalize_ids(values: pd.Series, column: str = "voter_id") -> pd.Series:
    """Voter ids as join keys, the same on both sides of every join.

    Integers and integral floats (a nullable integer column read as float: ``1001.0``)
    become ``"1001"``, text is stripped (``" v1 "`` -> ``"v1"``; ``"1001.0"`` -> ``"1001"``),
    blanks and missing values become None.

    Raises
    ------
    ConsentError
        A boolean or a non-integral float id (names the column and the first row).
    """
    out: list[str | None] = []
    bad: list[object] = []
    for idx, value in values.items():
        if value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and np.isnan(value)):
            out.append(None)
        elif isinstance(value, (bool, np.bool_)):
            out.append(None)
            bad.append(idx)
        elif isinstance(value, (int, np.integer)):
            out.append(str(int(value)))
        elif isinstance(value, (float, np.floating)):
            out.append(str(int(value)) if float(value).is_integer() else None)
            if not float(value).is_integer():
                bad.append(idx)
        else:
            text = str(value).strip()
            integral = _INTEGRAL_TEXT.match(text)
            out.append(integral[1] if integral else (text or None))
    if bad:
        raise ConsentError(f"column {column!r}: {len(bad)} ids are booleans or fractional numbers "
                           f"(first at row {bad[0]!r}); write voter ids as text or integers")
    return pd.Series(out, index=values.index, dtype=object)


# -- time -------------------------------------------------------------------------------
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?"
                  r"(?P<zone>Z|[+-]\d{2}(?::?\d{2})?)?)?$")
_EPOCH = re.compile(r"^-?\d+(?:\.\d*)?$")
_DAY_MONTH = re.compile(r"^\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}\b")
TIME_ZONE_HINT = ("write an offset (2026-03-01T09:00:00-05:00 or ...Z) or configure the table's time zone "
                  "(consent.time_zone, --consent-time-zone, PERSUADE_CONSENT_TIMEZONE)")


def time_zone(name: str | None) -> ZoneInfo | None:
    """The configured time zone of a consent table (an IANA name such as ``America/New_York``)."""
    if name is None or not str(name).strip():
        return None
    try:
        return ZoneInfo(str(name).strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ConsentError(f"time zone {name!r} is not an IANA time zone name (e.g. America/New_York)") from None


def first_row(frame_index: pd.Index, mask: pd.Series) -> object:
    return frame_index[mask.to_numpy()].tolist()[0]


def parse_timestamps(values: pd.Series, problems: list[str], zone: str | None = None,
                     column: str = "timestamp") -> pd.Series:
    """UTC timestamps of a column; what cannot be used is added to ``problems`` by name.

    Accepted: ISO 8601 with a zone (``2026-03-01T14:00:00Z``, ``...-05:00``), timezone-aware
    datetimes, and (only with ``zone``) ISO 8601 or datetimes without one, read as local
    time there. Refused: epoch numbers, day/month dates (``03/09/2026``: which is the
    month?), anything else, and local times a daylight-saving change makes ambiguous.
    """
    tz = time_zone(zone)
    index = values.index
    out = pd.Series(pd.NaT, index=index, dtype=UTC_TIME)
    if pd.api.types.is_datetime64_any_dtype(values):
        if values.dt.tz is not None:
            return values.dt.tz_convert("UTC").astype(UTC_TIME)
        text = values.astype(object).where(values.notna(), None).map(lambda v: None if v is None else v.isoformat())
    elif pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        epoch = values.notna()
        if epoch.any():
            problems.append(f"column {column!r}: {int(epoch.sum())} values are epoch numbers, not dates "
                            f"(first at row {first_row(index, epoch)!r}); write ISO 8601 with a zone")
        return out
    else:
        text = values.map(lambda v: None if v is None or v is pd.NA or v is pd.NaT or v != v
                          else v.isoformat() if isinstance(v, datetime) else str(v).strip())
    text = text.astype(object).where(text.notna() & (text != ""), None)
    given = text.notna()
    s = text.fillna("")
    epoch = given & s.str.fullmatch(_EPOCH.pattern)
    day_month = given & ~epoch & s.str.match(_DAY_MONTH.pattern)
    iso = given & s.str.fullmatch(_ISO.pattern)
    zoned = iso & s.str.extract(_ISO.pattern)["zone"].notna()
    other = given & ~epoch & ~day_month & ~iso
    for mask, what in ((epoch, "epoch numbers, not dates"),
                       (day_month, "day/month dates like 03/09/2026, whose order is ambiguous"),
                       (other, "not ISO 8601 dates/times")):
        if mask.any():
            problems.append(f"column {column!r}: {int(mask.sum())} values are {what} "
                            f"(first at row {first_row(index, mask)!r}); write ISO 8601 with a zone "
                            f"(2026-03-09T14:00:00Z)")
    unreadable = pd.Series(False, index=index)
    if zoned.any():
        out[zoned] = pd.to_datetime(s[zoned], utc=True, format="ISO8601", errors="coerce")
        unreadable |= zoned & out.isna()
    local = iso & ~zoned
    if local.any() and tz is None:
        problems.append(f"column {column!r}: {int(local.sum())} values have no time zone "
                        f"(first at row {first_row(index, local)!r}); {TIME_ZONE_HINT}")
    elif local.any():
        naive = pd.to_datetime(s[local], format="ISO8601", errors="coerce")
        unreadable |= local & naive.reindex(index).isna()
        placed = naive.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
        unclear = placed.isna() & naive.notna()
        if unclear.any():
            problems.append(f"column {column!r}: {int(unclear.sum())} local times are ambiguous or do not "
                            f"exist in {tz.key} (a daylight-saving change; first at row "
                            f"{first_row(placed.index, unclear)!r}); write them with an offset")
        out[local] = placed.dt.tz_convert("UTC")
    if unreadable.any():
        problems.append(f"column {column!r}: {int(unreadable.sum())} values are not valid dates "
                        f"(first at row {first_row(index, unreadable)!r})")
    return out
