"""PII rules: which columns and values are personal data that must never be a feature,
and must never reach logs, MLflow or reports.

Detection is by name *and* by value: a column called ``note`` whose values look like
phone numbers or e-mail addresses is PII whatever its name says.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

PII_NAME_PATTERN = re.compile(
    r"(^|_)(phone|cell|mobile|tel|telephone|email|e_mail|mail_address|name|first_name|"
    r"last_name|surname|full_name|address|street|addr|zip4|ssn|dob|birth_date|birthdate)($|_)",
    re.IGNORECASE,
)
EMAIL_PATTERN = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# North American numbers in the usual spellings, and E.164.
PHONE_PATTERN = re.compile(
    r"(?<![\w.])(?:\+?1[\s.-]?)?\(?[2-9]\d{2}\)?[\s.-]?[2-9]\d{2}[\s.-]?\d{4}(?![\w.])"
    r"|\+[1-9]\d{9,14}(?!\d)"
)

_SAMPLE = 500


class PIIError(ValueError):
    """A PII column was about to be used as a feature or written out."""


def name_looks_like_pii(column: str) -> bool:
    """True if the column name is one of the usual names of personal data."""
    return bool(PII_NAME_PATTERN.search(column))


def values_look_like_pii(values: pd.Series, threshold: float = 0.5) -> str | None:
    """Return ``"phone"`` or ``"email"`` if most sampled values look like one, else None.

    Numbers are checked too: a 10-digit integer column is a phone column.
    """
    sample = values.dropna()
    if sample.empty:
        return None
    if len(sample) > _SAMPLE:
        sample = sample.sample(_SAMPLE, random_state=0)
    text = sample.astype(str)
    if pd.api.types.is_float_dtype(sample):
        text = sample.map(lambda v: f"{v:.0f}" if float(v).is_integer() else str(v))
    if text.str.contains(EMAIL_PATTERN).mean() >= threshold:
        return "email"
    if text.str.fullmatch(r"\s*" + PHONE_PATTERN.pattern + r"\s*").mean() >= threshold:
        return "phone"
    return None


def find_pii_columns(frame: pd.DataFrame, columns: Iterable[str] | None = None) -> dict[str, str]:
    """Map each column that looks like PII (by name or value) to the reason."""
    found: dict[str, str] = {}
    for col in columns if columns is not None else frame.columns:
        if name_looks_like_pii(col):
            found[col] = "name looks like personal data"
            continue
        if col in frame.columns:
            kind = values_look_like_pii(frame[col])
            if kind:
                found[col] = f"values look like {'phone numbers' if kind == 'phone' else 'e-mail addresses'}"
    return found


def scrub_text(text: str) -> str:
    """Replace phone numbers and e-mail addresses in free text."""
    text = EMAIL_PATTERN.sub("[email]", text)
    return PHONE_PATTERN.sub("[phone]", text)


def drop_pii_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the fields of one record whose name or value looks like PII."""
    out = {}
    for key, value in record.items():
        if name_looks_like_pii(key):
            continue
        if isinstance(value, str) and (EMAIL_PATTERN.search(value) or PHONE_PATTERN.search(value)):
            continue
        out[key] = value
    return out
