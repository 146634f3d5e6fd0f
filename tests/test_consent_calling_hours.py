"""Quiet hours: phone and text contact only within 8 a.m.-9 p.m. of the voter's local time (issue 19).

The zone comes from the number (phonenumbers' time-zone data) and the address state; when
they leave several zones the window must hold in each, when they leave none the voter's
phone and text arms are suppressed. The decision time is the consent decision's (as_of,
or now); the window is a setting that may only be narrowed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import phonenumbers
import pytest
from consent_cases import ARMS, AS_OF, KEY, PHONE, hash_key, outcomes, table, voter  # noqa: F401
from phonenumbers.timezone import time_zones_for_number

from features.calling_hours import CallingHours, number_time_zones
from features.consent import (
    ConsentError,
    ConsentRules,
    ConsentTable,
    EligibilityRules,
    eligibility_for,
    needs_consent,
    rules_table,
    suppression_counts,
)
from features.phones import PhoneHasher
from serving.eligibility import ConsentEligibility
from serving.voters import VoterBatch

PHONE_AND_TEXT = ("live", "auto", "robo", "ai", "text")
CONSENTED = ({"phone": PHONE, "event": "line_type", "line_type": "cell"},
             {"voter_id": "v1", "phone": PHONE, "event": "consent", "scope": "all", "source": "written",
              "timestamp": "2026-01-01T00:00:00Z"})
TOLL_FREE = "+1 800 555 0100"  # a number that says nothing of where its owner is


def at(when: str, voters: pd.DataFrame | None = None, events: ConsentTable | None = None,
       hours: str | None = None, arms=ARMS) -> pd.DataFrame:
    return eligibility_for(voters if voters is not None else voter(), arms,
                           events if events is not None else table(*CONSENTED), EligibilityRules(calling_hours=hours),
                           when)


@pytest.mark.parametrize(("when", "open_"), [
    ("2026-10-01T14:59:59Z", False),  # 07:59:59 in San Francisco (PDT)
    ("2026-10-01T15:00:00Z", True),  # 08:00
    ("2026-10-02T03:59:59Z", True),  # 20:59:59
    ("2026-10-02T04:00:00Z", False),  # 21:00
    ("2026-12-01T15:30:00Z", False),  # 07:30 PST: the zone's daylight-saving rules, not a fixed offset
    ("2026-12-01T16:00:00Z", True),  # 08:00 PST
    ("2026-10-01T09:00:00-07:00", True),  # any offset: the instant is what counts
])
def test_phone_and_text_arms_only_within_8am_to_9pm_of_the_voters_local_time(when, open_):
    got = at(when)
    expected = "eligible" if open_ else "outside_calling_hours"
    assert outcomes(got) == {"mail": "eligible", "door": "eligible", **dict.fromkeys(PHONE_AND_TEXT, expected)}
    assert got.time_zone.tolist() == ["America/Los_Angeles"]  # carried, so a dialer keeps the window at send time


def test_a_lasting_reason_is_never_hidden_by_the_hour():
    night = "2026-10-01T10:00:00Z"  # 03:00 in San Francisco
    assert outcomes(at(night, events=ConsentTable.empty()))["text"] == "no_consent"
    dnc = table(*CONSENTED, {"voter_id": "v1", "event": "do_not_contact"})
    assert set(outcomes(at(night, events=dnc)).values()) == {"do_not_contact"}
    assert outcomes(at(night, voter(phone="415-555-2671 x12")))["text"] == "unverifiable_phone"
    assert outcomes(at(night))["text"] == "outside_calling_hours"


def test_the_zone_comes_from_the_number_and_the_state_and_must_hold_in_every_zone():
    voters = pd.DataFrame({
        "voter_id": ["number", "toll-free+state", "state-two-zones", "number+other-state", "toll-free", "bad-state"],
        "phone": pd.Series([PHONE, TOLL_FREE, None, PHONE, TOLL_FREE, None], dtype=object),
        "state": pd.Series([None, " ca ", "FL", "NY", None, "ZZ"], dtype=object),
    })
    live = [a for a in ARMS if a.slug in ("mail", "live")]
    morning = at("2026-10-01T15:30:00Z", voters, ConsentTable.empty(), arms=live)  # LA 08:30, NY 11:30, CHI 10:30
    assert morning.eligible_live.tolist() == [True] * 4 + [False] * 2
    assert morning.suppression_live.tolist()[4:] == ["unknown_timezone"] * 2
    assert morning.time_zone.tolist()[:4] == ["America/Los_Angeles", "America/Los_Angeles",
                                              "America/Chicago America/New_York",
                                              "America/Los_Angeles America/New_York"]
    assert morning.time_zone.isna().tolist()[4:] == [True, True]
    late = at("2026-10-02T01:30:00Z", voters, ConsentTable.empty(), arms=live)  # LA 18:30, CHI 20:30, NY 21:30
    assert late.eligible_live.tolist() == [True, True, False, False, False, False]
    assert late.suppression_live.tolist()[2:4] == ["outside_calling_hours"] * 2
    assert late.eligible_mail.all()
    digits = "".join(c for c in PHONE if c.isdigit())
    assert not any(digits[-4:] in str(z) for z in late.time_zone)  # the zone, never the number


def test_the_window_is_a_setting_that_may_be_narrowed_never_widened():
    half_past_eight = "2026-10-01T15:30:00Z"  # in San Francisco
    assert outcomes(at(half_past_eight))["text"] == "eligible"
    assert outcomes(at(half_past_eight, hours="09:00-20:00"))["text"] == "outside_calling_hours"
    assert outcomes(at("2026-10-01T16:00:00Z", hours=" 9:00 - 20:00 "))["text"] == "eligible"
    assert CallingHours.from_env({}).window == "08:00-21:00"
    assert CallingHours.from_env({"PERSUADE_CALLING_HOURS": "09:00-20:00"}).window == "09:00-20:00"
    for wider in ("07:00-21:00", "08:00-21:30"):
        with pytest.raises(ConsentError, match="never widened past 08:00-21:00"):
            EligibilityRules(calling_hours=wider)
    for bad in ("20:00-09:00", "9-20", "08:00-25:00"):
        with pytest.raises(ConsentError, match="calling hours"):
            CallingHours(bad)
    with pytest.raises(ConsentError, match="without a time zone"):
        CallingHours().open_at(pd.Timestamp("2026-10-01T12:00:00"), [("America/New_York",)])
    with pytest.raises(ConsentError, match="no time zone"):
        at("2026-10-01T15:30:00")  # a decision time must say its zone, as ever


def test_number_zones_are_phonenumbers_own_and_non_geographic_numbers_have_none():
    rng = np.random.default_rng(19)
    exchanges = [f"+1{a}{e}" for a, e in zip(rng.integers(200, 1000, 300), rng.integers(200, 1000, 300), strict=True)]
    numbers = [f"{x}{line:04d}" for x in exchanges for line in rng.choice(10_000, 3, replace=False)]
    numbers += ["+442079460958", "+33142685300", "+18005550100", "+19005550100"]
    got = number_time_zones(pd.Series(numbers))  # looked up once per exchange
    for number, zones in zip(numbers, got, strict=True):
        parsed = phonenumbers.parse(number)
        theirs = time_zones_for_number(parsed)
        kind = phonenumbers.number_type(parsed)
        if theirs == ("Etc/Unknown",) or not phonenumbers.is_number_type_geographical(kind, parsed.country_code):
            assert zones == (), number
        else:
            assert zones == tuple(sorted(theirs)), number
    assert got[-4] == ("Europe/London",) and got[-2] == got[-1] == ()
    assert number_time_zones(pd.Series([None, np.nan])) == [(), ()]


def test_quiet_hours_are_rules_of_the_report_and_the_counts_but_not_consent():
    rules = rules_table()
    text = rules[rules.delivery == "text"]
    assert text.condition.tolist()[-2:] == ["unknown_timezone", "outside_calling_hours"]
    assert text.outcome.tolist()[-1] == "suppressed: outside_calling_hours"
    assert not rules[rules.delivery.isin(["mail", "canvass"])].condition.isin(["unknown_timezone"]).any()
    assert not needs_consent("live_call")  # a live call still needs no consent (persuade plan, --no-consent)
    counts = suppression_counts(at(AS_OF), ARMS).set_index(["arm", "reason"]).voters
    assert counts[("Live", "outside_calling_hours")] == 0 and counts[("Text", "unknown_timezone")] == 0
    assert ("Mail", "unknown_timezone") not in counts.index


def test_the_service_rule_keeps_quiet_hours_as_the_full_decision(tmp_path):
    path = tmp_path / "consent.csv"
    pd.DataFrame(list(CONSENTED)).to_csv(path, index=False)
    ids = ["v1", "v1", "v2", "v3", "v4"]
    phones = [PHONE, PHONE, TOLL_FREE, "(212) 555-0100", None]
    states = [None, "NY", "CA", {"not": "a state"}, "TX"]
    batch = VoterBatch(np.array(ids, dtype=object), {}, {"phone": np.array(phones, dtype=object),
                                                          "state": np.array(states, dtype=object)})
    voters = pd.DataFrame({"voter_id": ids, "phone": pd.Series(phones, dtype=object),
                           "state": pd.Series(states, dtype=object)})
    hasher = PhoneHasher(KEY)
    assert "state" in ConsentEligibility.passthrough
    for when, hours in (("2026-10-01T15:30:00Z", None), ("2026-10-02T01:30:00Z", None),
                        ("2026-10-01T23:30:00Z", "09:00-19:00")):
        rule = ConsentEligibility(path, when, hasher=hasher, calling_hours=hours)
        got = rule(batch, ARMS)
        full = ConsentRules.from_path(path, as_of=when, hasher=hasher, calling_hours=hours).for_voters(voters, ARMS)
        for j, arm in enumerate(ARMS):
            assert got.allowed[:, j].tolist() == full[f"eligible_{arm.slug}"].tolist(), (when, arm.slug)
            assert [None if ok else r for r, ok in zip(got.reason[:, j], got.allowed[:, j], strict=True)] == [
                None if ok else r for r, ok in zip(full[f"suppression_{arm.slug}"], full[f"eligible_{arm.slug}"],
                                                   strict=True)]
        assert got.time_zone.tolist() == full.time_zone.astype(object).where(full.time_zone.notna(), None).tolist()
        assert rule.describe()["calling_hours"] == (hours or "08:00-21:00")
    late = ConsentEligibility(path, "2026-10-02T01:30:00Z", hasher=hasher)(batch, ARMS)  # NY 21:30, LA 18:30
    text = [a.slug for a in ARMS].index("text")
    assert got.time_zone.tolist()[:2] == ["America/Los_Angeles", "America/Los_Angeles America/New_York"]
    assert late.allowed[0, text] and late.reason[1, text] == "outside_calling_hours"  # one number, two addresses
    assert ConsentEligibility.from_env({"PERSUADE_CALLING_HOURS": "09:00-20:00"}).rules.calling_hours.window == \
        "09:00-20:00"


def test_the_synthetic_voter_file_has_a_local_time_zone_for_almost_every_number():
    """The scale test bed's numbers are in real US area codes, as the campaign's (46.8% had none before)."""
    from features.phones import parse_phones
    from features.synthetic_voterfile import make_chunk

    phones = make_chunk(0, 5000, np.random.default_rng(5)).column("phone").to_pandas()
    zones = number_time_zones(parse_phones(phones)[0])
    assert sum(z == () for z in zones) / len(zones) < 0.01
