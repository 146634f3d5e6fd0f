"""Phone numbers: one parser (Google's libphonenumber), keyed hashing for joins, masking.

A phone number is personal data. It is needed for one thing only, joining a consent
table to the voter file, and for that a keyed hash is enough: :class:`PhoneHasher`
turns a normalized number into ``HMAC-SHA256(key, "+15551234567")`` with a secret key
taken from the environment (``PERSUADE_HASH_KEY``). Without the key a hash cannot be
reversed by trying all ten-digit numbers, which a plain SHA-256 of a phone number can.
:meth:`PhoneHasher.key_check` is the key's check value: tables of hashes (and the consent
ledger) carry it, and :meth:`PhoneHasher.verify_key_check` refuses hashes made with another
key instead of letting them silently join nothing.

Every number, on both sides of the join, goes through :func:`normalize_e164`, a thin
layer over the ``phonenumbers`` package (parsed as dialed from the US). A number with an
extension, a float (a number column that went through a nullable float), a list, an
object or a boolean is not a number we can dial with certainty: it is refused.

Error messages here never repeat the number itself: they name the column and the row.
:func:`mask_phones` masks whatever looks like a number in other texts.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable

import numpy as np
import pandas as pd
import phonenumbers
from pydantic import SecretStr

from features.settings import Settings

HASH_KEY_ENV = Settings.variable("hash_key")
MIN_KEY_LENGTH = 16
HASH_PATTERN = re.compile(r"^[0-9a-f]{64}$")
DEFAULT_REGION = "US"
PHONE_STATUS = ("ok", "missing", "unparseable")
MASK = "[phone]"

# The North American Numbering Plan's structure (area code and exchange start with 2-9).
# libphonenumber's per-area-code validity also refuses area codes its bundled metadata
# does not list; measured on the synthetic voter file (random area codes) it refused 42%.
_NANP = re.compile(r"^[2-9]\d{2}[2-9]\d{6}$")
_LONG_DIGITS = re.compile(r"\d{10,}")
_KEY_CHECK_MESSAGE = b"persuade phone-hash key check v1"


class PhoneFormatError(ValueError):
    """A value that is not a phone number we can normalize (the message names the column, not the value)."""


class MissingHashKeyError(ValueError):
    """Phone numbers must be hashed but no usable key is configured."""


class KeyCheckError(ValueError):
    """Phone hashes made with another key than this one (they would join nothing)."""


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (float, np.floating)):
        return "a float (write phone numbers as text)"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def is_missing(value: object) -> bool:
    """True for None, NaN, NA and blank text: no number was given."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    return isinstance(value, str) and not value.strip()


def normalize_e164(value: object, region: str = DEFAULT_REGION) -> str:
    """Normalize one phone number to E.164 (``+15552345678``) with ``phonenumbers``.

    Accepted: text in any usual spelling (``(555) 234-5678``, ``555.234.5678``,
    ``+1 555 234 5678``, ``011 44 20 7946 0000``) and integers. North American numbers
    must follow the numbering plan (area code and exchange start with 2-9); others must
    be valid for their country.

    Parameters
    ----------
    value : str or int
        The number as written.
    region : str
        Region the number is dialed from when it has no ``+`` (default ``"US"``).

    Returns
    -------
    str
        The E.164 form.

    Raises
    ------
    PhoneFormatError
        If ``value`` is not a phone number, has an extension, or is a float, list,
        object or boolean. The message does not contain the value.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, np.integer)):
        raise PhoneFormatError(f"expected a phone number as text, got {_kind(value)}")
    text = value.strip() if isinstance(value, str) else str(int(value))
    if not text:
        raise PhoneFormatError("is empty")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise PhoneFormatError("not a phone number") from None
    if number.extension:
        raise PhoneFormatError("has an extension: the line dialed would not be the number on record")
    national = str(number.national_number)
    valid = _NANP.match(national) is not None if number.country_code == 1 else phonenumbers.is_valid_number(number)
    if not valid:
        raise PhoneFormatError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def parse_phones(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """E.164 form and status (``ok``, ``missing`` or ``unparseable``) of each value.

    Never raises: anything that is not a number (a float, a list, an object, an
    extension) is ``unparseable`` and has no E.164 form.
    """
    e164: list[str | None] = []
    status: list[str] = []
    for value in values.tolist():
        if is_missing(value):
            e164.append(None)
            status.append("missing")
            continue
        try:
            e164.append(normalize_e164(value))
            status.append("ok")
        except PhoneFormatError:
            e164.append(None)
            status.append("unparseable")
    return (pd.Series(e164, index=values.index, dtype=object),
            pd.Series(status, index=values.index, dtype=object))


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
    e164, status = parse_phones(values)
    bad = status == "unparseable"
    if errors == "raise" and bad.any():
        position = int(bad.to_numpy().argmax())
        row = values.index.tolist()[position]
        try:
            normalize_e164(values.iloc[position])
        except PhoneFormatError as exc:
            more = f" (and {int(bad.sum()) - 1} more rows)" if bad.sum() > 1 else ""
            raise PhoneFormatError(f"column {column!r}, row {row!r}: {exc}{more}") from None
    return e164


def mask_phones(text: str) -> str:
    """``text`` with every phone number (any spelling) and long digit run replaced by ``[phone]``."""
    for match in reversed(list(phonenumbers.PhoneNumberMatcher(text, DEFAULT_REGION,
                                                                leniency=phonenumbers.Leniency.POSSIBLE))):
        text = text[:match.start] + MASK + text[match.end:]
    return _LONG_DIGITS.sub(MASK, text)


class PhoneHasher:
    """Keyed hashes of E.164 phone numbers (HMAC-SHA256, hex).

    Parameters
    ----------
    key : str, bytes or SecretStr, optional
        The secret key. When not given, ``PERSUADE_HASH_KEY`` is read (through
        :class:`features.settings.Settings`) at each hash of a column, so a table without
        phone numbers needs no key.

    Examples
    --------
    >>> hasher = PhoneHasher(key="a test key of 16+ chars")
    >>> len(hasher.hash("+15552345678"))
    64
    """

    def __init__(self, key: str | bytes | SecretStr | None = None):
        self.key = key.get_secret_value() if isinstance(key, SecretStr) else key

    def _key(self) -> bytes:
        if self.key is not None:
            key = self.key
        else:
            secret = Settings.from_env().hash_key
            key = secret.get_secret_value() if secret is not None else None
        if not key:
            raise MissingHashKeyError(
                f"phone numbers must be hashed for the consent join but {HASH_KEY_ENV} is not set; "
                f"set it to a secret of at least {MIN_KEY_LENGTH} characters (e.g. the output of "
                f"`python -c 'import secrets; print(secrets.token_hex(32))'`) and keep it with the "
                f"campaign's other secrets: the same key must be used wherever hashes are joined"
            )
        raw = key.encode() if isinstance(key, str) else bytes(key)
        if len(raw) < MIN_KEY_LENGTH:
            raise MissingHashKeyError(
                f"{HASH_KEY_ENV} is too short ({len(raw)} bytes): use at least {MIN_KEY_LENGTH}"
            )
        return raw

    def resolved(self) -> PhoneHasher:
        """A hasher holding the key itself (read from the environment now), e.g. to ship to Spark workers
        whose environment lacks it; raises :class:`MissingHashKeyError` here rather than there."""
        return PhoneHasher(self._key())

    def key_check(self) -> str:
        """The key's check value: 16 hex digits of an HMAC of a fixed message (reveals nothing of the key)."""
        return hmac.new(self._key(), _KEY_CHECK_MESSAGE, hashlib.sha256).hexdigest()[:16]

    def verify_key_check(self, found: str | Iterable[str] | None, what: str) -> None:
        """Refuse hashes whose key check values (``found``; None or empty: none to check) are not this key's.

        Parameters
        ----------
        found : str or iterable of str, optional
            The check values the hashes came with (a table's column, the ledger's record).
        what : str
            What holds the hashes, for the message (e.g. ``"column 'phone_hash'"``).

        Raises
        ------
        KeyCheckError
            Some value is another key's; the message names both check values (never a key).
        """
        values = {found} if isinstance(found, str) else set(found or ())
        if not values:
            return
        ours = self.key_check()
        if values != {ours}:
            raise KeyCheckError(f"{what}: made with another key (key check {sorted(values)}, this key's is {ours}): "
                                f"they would join nothing; hash with the campaign's {HASH_KEY_ENV}")

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
