"""Phone numbers: one parser (phonenumbers), E.164 normalization, keyed hashing, masking."""

from __future__ import annotations

import hashlib
import hmac

import pandas as pd
import pytest

from features.phones import (
    HASH_KEY_ENV,
    KeyCheckError,
    MissingHashKeyError,
    PhoneFormatError,
    PhoneHasher,
    mask_phones,
    normalize_e164,
    normalize_phones,
    parse_phones,
)

KEY = "unit-test-key-0123456789"


@pytest.mark.parametrize("written", [
    "(415) 555-2671", "415-555-2671", "415.555.2671", "4155552671", " 415 555 2671 ",
    "1-415-555-2671", "14155552671", "+1 415 555 2671", "+1 (415) 555-2671", "011 1 415 555 2671",
    4155552671, 14155552671,
])
def test_spellings_of_one_number_normalize_to_the_same_e164(written):
    assert normalize_e164(written) == "+14155552671"


def test_international_numbers_keep_their_country_code():
    assert normalize_e164("+44 20 7946 0958") == "+442079460958"
    assert normalize_e164("011 44 20 7946 0958") == "+442079460958"  # dialed from the US
    with pytest.raises(PhoneFormatError):
        normalize_e164("+44 20 7946")  # not a valid UK number


@pytest.mark.parametrize("bad", [
    "555-2671",  # too short
    "(015) 555-2671",  # area code starting with 0
    "(415) 155-2671",  # exchange starting with 1
    "415555267100",  # 12 digits without +
    "+0 415 555 2671",
    "call me",
    "415-555-2671 x12",  # an extension: the line dialed would not be the number on record
    "(415) 555-2671 ext. 3",
    "0044 20 7946 0958",  # a European international prefix is not dialed from the US
    4155552671.0,  # a float (a nullable number column): refused, not rounded into a number
    ["415-555-2671"], {"number": "415-555-2671"}, True, "",
])
def test_non_numbers_are_refused_without_echoing_the_value(bad):
    with pytest.raises(PhoneFormatError) as info:
        normalize_e164(bad)
    assert "2671" not in str(info.value)


def test_a_column_error_names_the_column_and_row_not_the_number():
    values = pd.Series(["415-555-2671", "not a phone 555"], index=[10, 11])
    with pytest.raises(PhoneFormatError, match=r"column 'cell', row 11") as info:
        normalize_phones(values, column="cell")
    assert "555" not in str(info.value).split(":", 1)[0]
    assert "not a phone" not in str(info.value)


def test_coerce_turns_bad_values_into_missing_and_keeps_missing():
    values = pd.Series(["415-555-2671", "nope", None, float("nan"), 4155552672.0, 4155552672])
    out = normalize_phones(values, errors="coerce")
    assert out.tolist() == ["+14155552671", None, None, None, None, "+14155552672"]


def test_every_value_gets_a_status_and_nothing_raises():
    values = pd.Series(["(415) 555-2671", None, " ", "415-555-2671 x12", ["415-555-2671"], {"n": 1}, 4155552671.0,
                        float("nan"), "+1 415 555 2672"], dtype=object)
    e164, status = parse_phones(values)
    assert status.tolist() == ["ok", "missing", "missing", "unparseable", "unparseable", "unparseable", "unparseable",
                               "missing", "ok"]
    assert e164.tolist() == ["+14155552671", None, None, None, None, None, None, None, "+14155552672"]


@pytest.mark.parametrize("text", [
    "bad value 415-555-2671 here", "e.g. ['4155552671', '+1 (415) 555-2671']", "x+14155552671y",
    "row 3: 1-415-555-2671", "{'phone': 4155552671}", "+44 20 7946 0958", "14155552671999",
])
def test_mask_phones_masks_every_spelling(text):
    masked = mask_phones(text)
    assert "[phone]" in masked
    assert not any(digits in masked.replace(" ", "").replace("-", "") for digits in ("5552671", "79460958"))


def test_mask_phones_keeps_dates_counts_and_ids():
    text = "column 'timestamp': 3 values at 2026-03-09T14:00:00Z (first at row 12), voter VF-000000001"
    assert mask_phones(text) == text


def test_one_key_check_refuses_hashes_of_another_key_by_their_check_values():
    ours, other = PhoneHasher(key=KEY), PhoneHasher(key="another key of 16+ chars")
    ours.verify_key_check(ours.key_check(), "x")  # ours, and nothing to check, pass
    ours.verify_key_check([ours.key_check(), ours.key_check()], "x")
    ours.verify_key_check(None, "x")
    ours.verify_key_check([], "x")
    for found in (other.key_check(), [ours.key_check(), other.key_check()]):
        with pytest.raises(KeyCheckError, match=r"^the table: made with another key \(key check \[") as info:
            ours.verify_key_check(found, "the table")
        assert other.key_check() in str(info.value) and ours.key_check() in str(info.value)
        assert KEY not in str(info.value) and "16+ chars" not in str(info.value)


def test_the_key_check_value_identifies_the_key_and_reveals_nothing():
    ours, other = PhoneHasher(key=KEY), PhoneHasher(key=KEY + "-other")
    assert ours.key_check() == PhoneHasher(key=KEY).key_check()
    assert ours.key_check() != other.key_check() and len(ours.key_check()) == 16
    assert ours.key_check() not in ours.hash("+14155552671")


def test_hash_is_the_hmac_sha256_of_the_e164_form_under_the_key():
    expected = hmac.new(KEY.encode(), b"+14155552671", hashlib.sha256).hexdigest()
    hasher = PhoneHasher(key=KEY)
    assert hasher.hash("+14155552671") == expected
    assert hasher.hash_raw(pd.Series(["(415) 555-2671", None])).tolist() == [expected, None]
    # a plain sha256 (guessable by trying every number) is not what is stored
    assert expected != hashlib.sha256(b"+14155552671").hexdigest()


def test_another_key_gives_other_hashes():
    a = PhoneHasher(key=KEY).hash("+14155552671")
    b = PhoneHasher(key=KEY + "-other").hash("+14155552671")
    assert a != b and len(a) == len(b) == 64


def test_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(HASH_KEY_ENV, KEY)
    assert PhoneHasher().hash("+14155552671") == PhoneHasher(key=KEY).hash("+14155552671")


def test_missing_key_is_a_clear_error_naming_the_variable(monkeypatch):
    monkeypatch.delenv(HASH_KEY_ENV, raising=False)
    with pytest.raises(MissingHashKeyError, match=HASH_KEY_ENV):
        PhoneHasher().hash_raw(pd.Series(["415-555-2671"]))


def test_short_key_is_refused(monkeypatch):
    monkeypatch.setenv(HASH_KEY_ENV, "short")
    with pytest.raises(MissingHashKeyError, match="too short"):
        PhoneHasher().hash("+14155552671")


def test_no_key_needed_when_there_is_nothing_to_hash(monkeypatch):
    monkeypatch.delenv(HASH_KEY_ENV, raising=False)
    assert PhoneHasher().hash_series(pd.Series([None, None], dtype=object)).isna().all()


def test_only_normalized_numbers_are_hashed():
    with pytest.raises(PhoneFormatError, match=r"E\.164"):
        PhoneHasher(key=KEY).hash("415-555-2671")
