"""Phone numbers: normalization to E.164 and keyed hashing for joins.

A phone number is personal data. It is needed for one thing only, joining a consent
table to the voter file, and for that a keyed hash is enough: :class:`PhoneHasher`
turns a normalized number into ``HMAC-SHA256(key, "+15551234567")`` with a secret key
taken from the environment (``PERSUADE_HASH_KEY``). Without the key a hash cannot be
reversed by trying all ten-digit numbers, which a plain SHA-256 of a phone number can.

Error messages here never repeat the number itself: they name the column and the row.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

import numpy as np
import pandas as pd

HASH_KEY_ENV = "PERSUADE_HASH_KEY"
MIN_KEY_LENGTH = 16
HASH_PATTERN = re.compile(r"^[0-9a-f]{64}$")

_SEPARATORS = re.compile(r"[\s().\-/]")
_NANP = re.compile(r"^[2-9]\d{2}[2-9]\d{6}$")


class PhoneFormatError(ValueError):
    """A value that is not a phone number we can normalize (the message names the column, not the value)."""


class MissingHashKeyError(ValueError):
    """Phone numbers must be hashed but no usable key is configured."""


def normalize_e164(value: object, default_country_code: str = "1") -> str:
    """Normalize one phone number to E.164 (``+15552345678``).

    Accepted spellings: ``(555) 234-5678``, ``555.234.5678``, ``5552345678``,
    ``1-555-234-5678``, ``+1 555 234 5678``, ``011 44 20 7946 0000`` and any
    ``+<country code><number>`` of 8 to 15 digits. North American numbers (country code
    1) must have a valid area code and exchange (both starting with 2-9).

    Parameters
    ----------
    value : str or int
        The number as written.
    default_country_code : str
        Country code of numbers written without one (10 digits). Only ``"1"`` (NANP)
        is validated digit by digit.

    Returns
    -------
    str
        The E.164 form.

    Raises
    ------
    PhoneFormatError
        If ``value`` is not a phone number. The message does not contain the value.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        text = str(int(value))
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise PhoneFormatError(f"expected a phone number as text or integer, got {type(value).__name__}")
    text = _SEPARATORS.sub("", text)
    if text.startswith("00") or text.startswith("011"):
        text = "+" + text[3:] if text.startswith("011") else "+" + text[2:]
    if text.startswith("+"):
        digits = text[1:]
        if not digits.isdigit() or not 8 <= len(digits) <= 15 or digits[0] == "0":
            raise PhoneFormatError("not an E.164 number (+ and 8 to 15 digits, no leading 0)")
    else:
        if not text.isdigit():
            raise PhoneFormatError("a phone number may only contain digits, spaces, ( ) . - / and a leading +")
        if len(text) == 10:
            digits = default_country_code + text
        elif len(text) == 11 and text.startswith("1"):
            digits = text
        else:
            raise PhoneFormatError(f"expected 10 digits (or 11 starting with 1), got {len(text)} digits")
    if digits.startswith("1") and not _NANP.match(digits[1:]):
        raise PhoneFormatError("not a valid North American number (area code and exchange must start with 2-9)")
    return "+" + digits


def normalize_phones(values: pd.Series, column: str = "phone", errors: str = "raise") -> pd.Series:
    """Normalize a column of phone numbers to E.164; missing values stay missing.

    Parameters
    ----------
    values : Series
        Phone numbers as written.
    column : str
        Name of the column, for error messages.
    errors : {"raise", "coerce"}
        ``"raise"``: any value that is not a phone number is an error naming the column
        and the row; ``"coerce"``: such values become missing.

    Returns
    -------
    Series of str (object dtype), index of ``values``.
    """
    if errors not in {"raise", "coerce"}:
        raise ValueError(f"errors must be 'raise' or 'coerce', got {errors!r}")
    out: list[str | None] = []
    for idx, value in values.items():
        if value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and np.isnan(value)):
            out.append(None)
            continue
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        try:
            out.append(normalize_e164(value))
        except PhoneFormatError as exc:
            if errors == "raise":
                raise PhoneFormatError(f"column {column!r}, row {idx!r}: {exc}") from None
            out.append(None)
    return pd.Series(out, index=values.index, dtype=object)


class PhoneHasher:
    """Keyed hashes of E.164 phone numbers (HMAC-SHA256, hex).

    Parameters
    ----------
    key : str or bytes, optional
        The secret key. When not given, the environment variable ``env_var`` is read
        at the first hash (so a table without phone numbers needs no key).
    env_var : str
        Environment variable holding the key.

    Examples
    --------
    >>> hasher = PhoneHasher(key="a test key of 16+ chars")
    >>> len(hasher.hash("+15552345678"))
    64
    """

    def __init__(self, key: str | bytes | None = None, env_var: str = HASH_KEY_ENV):
        self.key = key
        self.env_var = env_var

    def _key(self) -> bytes:
        key = self.key if self.key is not None else os.environ.get(self.env_var)
        if not key:
            raise MissingHashKeyError(
                f"phone numbers must be hashed for the consent join but {self.env_var} is not set; "
                f"set it to a secret of at least {MIN_KEY_LENGTH} characters (e.g. the output of "
                f"`python -c 'import secrets; print(secrets.token_hex(32))'`) and keep it with the "
                f"campaign's other secrets: the same key must be used wherever hashes are joined"
            )
        raw = key.encode() if isinstance(key, str) else bytes(key)
        if len(raw) < MIN_KEY_LENGTH:
            raise MissingHashKeyError(
                f"{self.env_var} is too short ({len(raw)} bytes): use at least {MIN_KEY_LENGTH}"
            )
        return raw

    def hash(self, e164: str) -> str:
        """Hex HMAC-SHA256 of one normalized number."""
        if not isinstance(e164, str) or not e164.startswith("+"):
            raise PhoneFormatError("only E.164 numbers (normalize_e164) can be hashed")
        return hmac.new(self._key(), e164.encode(), hashlib.sha256).hexdigest()

    def hash_series(self, e164: pd.Series) -> pd.Series:
        """Hash a column of normalized numbers; missing values stay missing."""
        if not e164.notna().any():
            return pd.Series(None, index=e164.index, dtype=object)
        key = self._key()
        return pd.Series([None if v is None or v is pd.NA or v != v else
                          hmac.digest(key, str(v).encode(), "sha256").hex() for v in e164],
                         index=e164.index, dtype=object)

    def hash_raw(self, values: pd.Series, column: str = "phone", errors: str = "raise") -> pd.Series:
        """Normalize (see :func:`normalize_phones`) and hash a column of phone numbers."""
        return self.hash_series(normalize_phones(values, column=column, errors=errors))
