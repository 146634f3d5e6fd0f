"""Time and staleness: opt-outs never wait, only consents do; no guessed dates; stale tables fail closed.

Issue 19, findings 3 and 4, on ``features.consent`` and on the service's rule
(``serving.eligibility.ConsentEligibility``) reading real files.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pytest
from consent_cases import ARMS, AS_OF, AUTOMATED, KEY, PHONE, decide, hash_key, outcomes, table  # noqa: F401

from features.consent import ConsentError, ConsentRules, ConsentTable
from features.phones import PhoneHasher
from serving.eligibility import ConsentEligibility
from serving.voters import VoterBatch

CONSENTED = [{"phone": PHONE, "event": "line_type", "line_type": "cell"},
             {"voter_id": "v1", "phone": PHONE, "event": "consent", "scope": "all", "source": "written",
              "timestamp": "2026-01-01T00:00:00Z"}]


# -- finding 3: dates ----------------------------------------------------------------------
@pytest.mark.parametrize("event", [{"event": "revocation", "keyword": "STOP"}, {"event": "do_not_contact"}])
def test_opt_outs_dated_after_the_decision_time_apply_anyway_only_consents_wait(event):
    events = table(*CONSENTED, {"voter_id": "v1", **event, "timestamp": "2026-10-05T00:00:00Z"})
    got = outcomes(decide(events))
    assert {got[s] for s in AUTOMATED} == {"revoked" if event["event"] == "revocation" else "do_not_contact"}
    assert ConsentRules(events, as_of=AS_OF).describe()["data_errors"]["dated_after_as_of"] == 1
    later = table({"phone": PHONE, "event": "line_type", "line_type": "cell"},
                  {"phone": PHONE, "event": "consent", "scope": "texts", "source": "written",
                   "timestamp": "2026-10-02T00:00:00Z"})
    assert outcomes(decide(later))["text"] == "no_consent"  # a consent waits for its timestamp
    assert outcomes(decide(later, as_of="2026-10-03T00:00:00Z"))["text"] == "eligible"


def test_prerecorded_calls_dated_after_the_decision_time_count_against_the_cap():
    events = table({"phone": PHONE, "event": "line_type", "line_type": "landline"},
                   *[{"phone": PHONE, "event": "prerecorded_call", "timestamp": "2026-10-05T00:00:00Z"}] * 3)
    assert outcomes(decide(events))["robo"] == "landline_prerecorded_cap"


@pytest.mark.parametrize(("value", "message"), [
    (1767225600, "epoch numbers"), ("1767225600", "epoch numbers"), (1767225600.0, "epoch numbers"),
    ("03/09/2026", r"day/month dates like 03/09/2026, whose order is ambiguous"),
    ("3.9.2026 14:00", "day/month dates"), ("March 9, 2026", "not ISO 8601"),
    ("2026-03-09T14:00:00", "no time zone"), ("2026-03-09", "no time zone"),
    ("2026-02-30T00:00:00Z", "not valid dates"),
])
def test_timestamps_that_would_be_a_guess_are_refused_by_name(value, message):
    frame = pd.DataFrame({"voter_id": ["a"], "event": ["revocation"], "keyword": ["STOP"],
                          "timestamp": pd.Series([value], dtype=object)})
    with pytest.raises(ConsentError, match=rf"column 'timestamp': 1 values (are |have )?.*{message}"):
        ConsentTable.from_frame(frame)


def test_epoch_integer_columns_and_naive_datetimes_in_parquet_are_refused(tmp_path):
    pd.DataFrame({"voter_id": ["a"], "event": ["revocation"], "timestamp": [1767225600]}).to_parquet(
        tmp_path / "epoch.parquet")
    with pytest.raises(ConsentError, match="epoch numbers"):
        ConsentTable.read(tmp_path / "epoch.parquet")
    pd.DataFrame({"voter_id": ["a"], "event": ["revocation"],
                  "timestamp": [pd.Timestamp("2026-03-09 14:00")]}).to_parquet(tmp_path / "naive.parquet")
    with pytest.raises(ConsentError, match="have no time zone"):
        ConsentTable.read(tmp_path / "naive.parquet")
    local = ConsentTable.read(tmp_path / "naive.parquet", time_zone="America/New_York")
    assert local.events.timestamp.iloc[0] == pd.Timestamp("2026-03-09T18:00:00Z")  # EDT is UTC-4 from March 8


def test_a_configured_time_zone_keeps_a_revocation_before_a_later_consent():
    """09:00 New York is 14:00 UTC: read as UTC the revocation would follow the 10:00 UTC consent."""
    rows = [{"phone": PHONE, "event": "line_type", "line_type": "cell"},
            {"voter_id": "v1", "phone": PHONE, "event": "consent", "scope": "texts", "source": "written",
             "timestamp": "2026-01-01T00:00:00Z"},
            {"phone": PHONE, "event": "revocation", "keyword": "STOP", "timestamp": "2026-03-02 09:00"},
            {"phone": PHONE, "event": "consent", "scope": "texts", "source": "opt_in_keyword",
             "timestamp": "2026-03-02T10:00:00Z"}]
    assert outcomes(decide(table(*rows, time_zone="America/New_York")))["text"] == "revoked"
    with pytest.raises(ConsentError, match="not an IANA time zone"):
        table(*rows, time_zone="Mars/Olympus")
    with pytest.raises(ConsentError, match="ambiguous or do not exist in America/New_York"):
        table({"voter_id": "a", "event": "revocation", "timestamp": "2026-11-01 01:30"},
              time_zone="America/New_York")


def test_a_decision_time_without_a_zone_is_refused():
    with pytest.raises(ConsentError, match="has no time zone"):
        ConsentRules(None, as_of="2026-10-01T00:00:00")


# -- finding 4: staleness and replay ----------------------------------------------------------
def _write(path, rows) -> None:
    pd.DataFrame(rows).reindex(columns=["voter_id", "phone", "event", "line_type", "scope", "source", "keyword",
                                        "timestamp"]).to_csv(path, index=False)


def _batch(ids, phones) -> VoterBatch:
    return VoterBatch(np.array(ids, dtype=object), {}, {"phone": np.array(phones, dtype=object)})


SERVICE_ARMS = [a for a in ARMS if a.slug in ("mail", "text")]


def test_an_old_table_file_suppresses_automated_contact_until_a_fresh_one(tmp_path, monkeypatch):
    monkeypatch.setattr("serving.eligibility.CHECK_EVERY_SECONDS", 0.0)
    path = tmp_path / "consent.csv"
    _write(path, [*CONSENTED, {"voter_id": "v2", "event": "do_not_contact"}])
    two_days_ago = time.time_ns() - 48 * 3600 * 10**9
    os.utime(path, ns=(two_days_ago, two_days_ago))
    rule = ConsentEligibility(path, AS_OF, hasher=PhoneHasher(KEY), max_age_hours=24)  # age: the file's, now
    decided = rule(_batch(["v1", "v2"], [PHONE, PHONE]), SERVICE_ARMS)
    assert decided.reason.tolist() == [[None, "consent_stale"], ["do_not_contact", "do_not_contact"]]
    assert "48.0 hours ago" in rule.describe()["stale"]
    os.utime(path)  # written again now
    assert rule(_batch(["v1"], [PHONE]), SERVICE_ARMS).allowed.tolist() == [[True, True]]
    assert rule.describe()["stale"] is None


@pytest.mark.parametrize("breakage", ["bad row", "deleted"])
def test_a_failed_re_read_suppresses_automated_contact_and_keeps_do_not_contact(tmp_path, monkeypatch, breakage):
    monkeypatch.setattr("serving.eligibility.CHECK_EVERY_SECONDS", 0.0)
    path = tmp_path / "consent.csv"
    _write(path, [*CONSENTED, {"voter_id": "v2", "event": "do_not_contact"}])
    rule = ConsentEligibility(path, AS_OF, hasher=PhoneHasher(KEY))
    assert rule(_batch(["v1"], [PHONE]), SERVICE_ARMS).allowed.tolist() == [[True, True]]
    if breakage == "deleted":
        path.unlink()
    else:
        path.write_text("voter_id,event\nv1,teleport\n")
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    decided = rule(_batch(["v1", "v2", "v3"], [PHONE, PHONE, None]), SERVICE_ARMS)
    assert decided.reason.tolist() == [[None, "consent_stale"], ["do_not_contact", "do_not_contact"],
                                       [None, "consent_stale"]]
    assert rule.describe()["stale"].startswith("the last re-read failed")
    _write(path, CONSENTED)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert rule(_batch(["v1"], [PHONE]), SERVICE_ARMS).allowed.tolist() == [[True, True]]
    assert rule.describe()["error"] is None and rule.describe()["stale"] is None


def test_a_pinned_decision_time_still_applies_new_revocations_and_says_it_is_a_replay(tmp_path, monkeypatch):
    monkeypatch.setattr("serving.eligibility.CHECK_EVERY_SECONDS", 0.0)
    path = tmp_path / "consent.csv"
    _write(path, CONSENTED)
    rule = ConsentEligibility(path, AS_OF, hasher=PhoneHasher(KEY))
    assert rule(_batch(["v1"], [PHONE]), SERVICE_ARMS).allowed.tolist() == [[True, True]]
    _write(path, [*CONSENTED, {"phone": PHONE, "event": "revocation", "keyword": "STOP",
                               "timestamp": "2026-11-15T10:00:00Z"}])  # a STOP received after the pinned time
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert rule(_batch(["v1"], [PHONE]), SERVICE_ARMS).reason.tolist() == [[None, "revoked"]]
    facts = rule.describe()
    assert facts["as_of_pinned"] and "replaying a past decision only" in facts["warnings"][0]
    assert facts["data_errors"]["dated_after_as_of"] == 1
