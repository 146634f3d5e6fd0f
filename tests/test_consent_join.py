"""One typed join: ids and numbers normalized alike on both sides, the number is what is consented.

Issue 19, findings 1, 2, 5, 6 and 9: do-not-contact rows keyed by ids that differ only in
type or padding, numbers that cannot be parsed, events recorded for another number,
the landline cap per line, and hashes made with another key.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from consent_cases import ARMS, AS_OF, AUTOMATED, KEY, PHONE, decide, hash_key, outcomes, table, voter  # noqa: F401

from features.consent import ConsentError, ConsentRules, ConsentTable, normalize_ids
from features.phones import PhoneHasher


# -- finding 1: ids --------------------------------------------------------------------
def test_ids_normalize_alike_whatever_their_type_and_padding():
    values = pd.Series([1001, 1001.0, "1001", " 1001 ", "1001.0", np.int64(1001), None, float("nan"), " v1 ", ""],
                       dtype=object)
    assert normalize_ids(values).tolist() == ["1001"] * 6 + [None, None, "v1", None]
    with pytest.raises(ConsentError, match=r"column 'voter_id': 2 ids are booleans or fractional"):
        normalize_ids(pd.Series([True, 10.5, "a"], dtype=object))


def test_do_not_contact_by_integer_id_survives_a_parquet_with_phone_only_rows(tmp_path):
    """Integer ids beside phone-only rows become floats (1001.0) in parquet; they still match."""
    raw = pd.DataFrame({"voter_id": pd.array([1001, None], dtype="Int64").astype(float),
                        "phone": [None, "415 555 2672"], "event": ["do_not_contact", "do_not_contact"]})
    raw.to_parquet(tmp_path / "consent.parquet")
    events = ConsentTable.read(tmp_path / "consent.parquet")
    assert events.events.voter_id.tolist()[0] == "1001"
    voters = pd.DataFrame({"voter_id": [1001, 1002], "phone": ["212 555 0100", "212 555 0101"]})
    got = decide(events, voters)
    assert outcomes(got, 0)["mail"] == outcomes(got, 0)["door"] == outcomes(got, 0)["live"] == "do_not_contact"
    assert outcomes(got, 1)["mail"] == "eligible"


def test_padded_ids_match_on_both_sides(tmp_path):
    pd.DataFrame({"voter_id": ["v1 "], "event": ["do_not_contact"]}).to_csv(tmp_path / "c.csv", index=False)
    events = ConsentTable.read(tmp_path / "c.csv")
    got = decide(events, pd.DataFrame({"voter_id": [" v1", "v2"], "phone": [PHONE, PHONE]}))
    assert outcomes(got, 0)["mail"] == "do_not_contact" and outcomes(got, 1)["mail"] == "eligible"


def test_decisions_report_table_keys_matching_no_voter_and_unparseable_numbers():
    events = table({"voter_id": "v1", "event": "do_not_contact"}, {"voter_id": "gone", "event": "do_not_contact"},
                   {"phone": "415 555 2672", "event": "do_not_contact"},
                   {"phone": "415 555 2679", "event": "do_not_contact"})
    voters = pd.DataFrame({"voter_id": ["v1", "v2", "v3", "v4"],
                           "phone": pd.Series([PHONE, "415.555.2672", "415-555-2671 x9", None], dtype=object)})
    rules = ConsentRules(events, as_of=AS_OF)
    _, tally = rules.decide(voters, [])
    join = rules.describe(tally)["join"]
    assert join == {"voters": 4, "phone_missing": 1, "phone_unparseable": 1, "table_ids_matching_no_voter": 1,
                    "table_phones_matching_no_voter": 1}


# -- finding 2: numbers that cannot be parsed fail closed --------------------------------
@pytest.mark.parametrize("phone", [None, "", "not a phone", "415-555-2671 x12", 4155552671.0, ["415-555-2671"],
                                   {"number": "415-555-2671"}, True])
def test_a_number_that_cannot_be_parsed_gets_no_automated_contact(phone):
    """Even a revocation keyed by the number could not be joined: automated channels wait."""
    events = table({"phone": PHONE, "event": "line_type", "line_type": "cell"},
                   {"voter_id": "v1", "phone": PHONE, "event": "consent", "scope": "all", "source": "written",
                    "timestamp": "2026-01-01T00:00:00Z"},
                   {"phone": PHONE, "event": "revocation", "keyword": "STOP", "timestamp": "2026-09-01T00:00:00Z"},
                   {"voter_id": "v2", "event": "do_not_contact"})
    got = decide(events, pd.DataFrame({"voter_id": ["v1", "v2"], "phone": pd.Series([phone, phone], dtype=object)}))
    assert {outcomes(got, 0)[slug] for slug in AUTOMATED} == {"unverifiable_phone"}
    assert outcomes(got, 0)["mail"] == outcomes(got, 0)["door"] == "eligible"
    assert outcomes(got, 0)["live"] == "unknown_timezone"  # no number, no local time: no call
    assert set(outcomes(got, 1).values()) == {"do_not_contact"}  # do-not-contact by id comes first


# -- finding 5: the number is what is consented -----------------------------------------
def _consented(**key) -> ConsentTable:
    return table({**key, "event": "consent", "scope": "all", "source": "written",
                  "timestamp": "2026-01-01T00:00:00Z"},
                 {**key, "event": "line_type", "line_type": "landline"})


def test_a_new_number_carries_no_consent_or_landline_status_from_the_old_one():
    events = _consented(voter_id="v1", phone=PHONE)
    assert {outcomes(decide(events, voter("v1", PHONE)))[s] for s in AUTOMATED} - {"landline_cannot_text"} \
        == {"eligible"}
    moved = outcomes(decide(events, voter("v1", "212 555 0100")))  # v1's new (cell) number
    assert {moved[s] for s in AUTOMATED} == {"no_consent"}


def test_consent_recorded_by_voter_id_alone_grants_nothing():
    events = _consented(voter_id="v1")
    assert {outcomes(decide(events))[s] for s in AUTOMATED} == {"no_consent"}
    assert events.data_errors(pd.Timestamp(AS_OF)) == {"dated_after_as_of": 0, "consent_without_number": 1,
                                                      "line_type_without_number": 1}


def test_a_number_reassigned_to_another_voter_carries_no_consent_but_its_opt_outs():
    events = table({"voter_id": "v1", "phone": PHONE, "event": "consent", "scope": "texts", "source": "written",
                    "timestamp": "2026-01-01T00:00:00Z"},
                   {"voter_id": "v1", "phone": "212 555 0100", "event": "revocation", "keyword": "STOP",
                    "timestamp": "2026-02-01T00:00:00Z"})
    got = decide(events, pd.DataFrame({"voter_id": ["v2", "v3"], "phone": [PHONE, "212 555 0100"]}))
    assert outcomes(got, 0)["text"] == "no_consent"  # v1's consent is not v2's
    assert outcomes(got, 1)["text"] == "revoked"  # a STOP from the number holds for whoever has it now


def test_a_voter_with_two_numbers_is_decided_per_number_and_the_hash_says_which():
    events = _consented(voter_id="v1", phone=PHONE)
    voters = pd.DataFrame({"voter_id": ["v1", "v1"], "phone": [PHONE, "212 555 0100"]})
    got = ConsentRules(events, as_of=AS_OF).for_voters(voters, [a for a in ARMS if a.slug == "robo"])
    assert got.eligible_robo.tolist() == [True, False]
    hasher = PhoneHasher(key=KEY)
    assert got.phone_hash.tolist() == [hasher.hash("+14155552671"), hasher.hash("+12125550100")]


# -- finding 6: the prerecorded cap counts per line ---------------------------------------
def test_the_landline_cap_counts_calls_per_line_not_per_voter():
    """Calls to a shared landline count for everyone on it; calls to a voter's old line not for the new one."""
    new_line = "212 555 0100"
    calls = [{"voter_id": v, "phone": PHONE, "event": "prerecorded_call", "timestamp": f"2026-09-2{i}T12:00:00Z"}
             for i, v in enumerate(["v1", "v1", "v2"])]
    events = table({"phone": PHONE, "event": "line_type", "line_type": "landline"},
                   {"phone": new_line, "event": "line_type", "line_type": "landline"}, *calls)
    voters = pd.DataFrame({"voter_id": ["v1", "v2", "v3", "v1"],
                           "phone": [PHONE, "415.555.2671", "+14155552671", new_line]})
    got = decide(events, voters, cap=2)
    assert [outcomes(got, i)["robo"] for i in range(4)] == ["landline_prerecorded_cap"] * 3 + ["eligible"]


# -- finding 9: a key check value ----------------------------------------------------------
def test_a_table_hashed_with_another_key_is_refused(tmp_path):
    theirs = PhoneHasher(key="another campaign's key 0123")
    pd.DataFrame({"phone_hash": [theirs.hash("+14155552671")], "hash_key_check": [theirs.key_check()],
                  "event": ["do_not_contact"]}).to_parquet(tmp_path / "theirs.parquet")
    with pytest.raises(ConsentError, match=r"made with another key \(key check \['[0-9a-f]{16}'\], this key's is "):
        ConsentTable.read(tmp_path / "theirs.parquet")


def test_a_hashed_file_must_carry_its_key_check_and_saved_tables_do(tmp_path):
    ours = PhoneHasher(key=KEY)
    pd.DataFrame({"phone_hash": [ours.hash("+14155552671")], "event": ["do_not_contact"]}).to_csv(
        tmp_path / "bare.csv", index=False)
    with pytest.raises(ConsentError, match="without a 'hash_key_check' column"):
        ConsentTable.read(tmp_path / "bare.csv")
    saved = table({"phone": PHONE, "event": "do_not_contact"}).save(tmp_path / "hashed.parquet")
    again = ConsentTable.read(saved)
    assert again.key_check == ours.key_check()
    assert decide(again).eligible_mail.tolist() == [False]
