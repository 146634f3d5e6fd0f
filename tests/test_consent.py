"""Consent and eligibility: the decision table, the event fold, the joins and applying it to scores."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import phonenumbers
import pytest
from consent_cases import ARMS, AS_OF, KEY, PHONE, decide, hash_key, outcomes, table, voter  # noqa: F401

from features.calling_hours import number_time_zones
from features.config import ArmSpec, Delivery
from features.consent import (
    OPT_OUT_KEYWORDS,
    RULES,
    ConsentError,
    ConsentRules,
    ConsentTable,
    Event,
    Reason,
    apply_eligibility,
    best_eligible_arm,
    eligibility_for,
    needs_consent,
    suppression_counts,
)
from features.phones import HASH_KEY_ENV, MissingHashKeyError, PhoneHasher, normalize_phones
from serving.bundle import ArmInfo, best_arms


# -- the decision table --------------------------------------------------------------
def test_every_delivery_has_rules_and_do_not_contact_comes_first():
    assert set(RULES) == set(Delivery)
    for rules in RULES.values():
        assert rules[0].reason == Reason.do_not_contact
        assert rules[-1].condition == "always"  # every voter gets a decision


def test_which_deliveries_need_consent():
    assert {d.value for d in Delivery if needs_consent(d)} == {
        "autodialed_call", "prerecorded_call", "ai_voice_call", "text"}


def test_nobody_on_record_mail_door_and_live_calls_only():
    got = outcomes(decide(ConsentTable.empty()))
    assert got == {"mail": "eligible", "door": "eligible", "live": "eligible", "auto": "no_consent",
                   "robo": "no_consent", "ai": "no_consent", "text": "no_consent"}


def test_do_not_contact_wins_over_everything_even_consent():
    events = table(
        {"voter_id": "v1", "phone": PHONE, "event": "consent", "scope": "all", "source": "written",
         "timestamp": "2026-01-01"},
        {"phone": PHONE, "event": "line_type", "line_type": "cell"},
        {"voter_id": "v1", "event": "do_not_contact", "timestamp": "2025-01-01"},
    )
    assert set(outcomes(decide(events)).values()) == {"do_not_contact"}


def test_cell_with_consent_gets_automated_calls_and_texts():
    events = table(
        {"phone": "+1 415 555 2671", "event": "line_type", "line_type": "cell"},
        {"voter_id": "v1", "phone": "4155552671", "event": "consent", "scope": "calls", "source": "voter_provided",
         "timestamp": "2026-01-01"},
        {"phone": "+14155552671", "event": "consent", "scope": "texts", "source": "verbal", "timestamp": "2026-01-01"},
    )
    assert set(outcomes(decide(events)).values()) == {"eligible"}


def test_consent_scope_is_respected():
    events = table(
        {"phone": PHONE, "event": "line_type", "line_type": "cell"},
        {"voter_id": "v1", "phone": PHONE, "event": "consent", "scope": "texts", "source": "written",
         "timestamp": "2026-01-01"},
    )
    got = outcomes(decide(events))
    assert got["text"] == "eligible"
    assert got["auto"] == got["robo"] == got["ai"] == "no_consent"


def test_unknown_line_type_is_treated_as_a_cell_phone():
    got = outcomes(decide(ConsentTable.empty()))
    assert got["auto"] == "no_consent"  # a landline would have been eligible


def test_landline_rules_autodial_free_texts_impossible_prerecorded_capped():
    events = table({"phone": PHONE, "event": "line_type", "line_type": "landline"})
    got = outcomes(decide(events))
    assert got["auto"] == "eligible"
    assert got["text"] == "landline_cannot_text"
    assert got["robo"] == got["ai"] == "eligible"  # no prerecorded calls yet


@pytest.mark.parametrize(("calls_in_window", "cap", "expected"), [
    (2, 3, "eligible"), (3, 3, "landline_prerecorded_cap"), (0, 0, "landline_prerecorded_cap"), (4, 5, "eligible"),
])
def test_landline_prerecorded_cap_counts_calls_in_the_window(calls_in_window, cap, expected):
    rows = [{"phone": PHONE, "event": "line_type", "line_type": "landline"}]
    rows += [{"phone": "415.555.2671", "event": "prerecorded_call", "timestamp": f"2026-09-{10 + i:02d}"}
             for i in range(calls_in_window)]
    rows += [{"voter_id": "v1", "event": "prerecorded_call", "timestamp": "2026-08-15"}] * 5  # > 30 days before
    got = outcomes(decide(table(*rows), cap=cap))
    assert got["robo"] == got["ai"] == expected
    assert got["auto"] == "eligible"


def test_landline_with_consent_is_not_capped():
    rows = [{"phone": PHONE, "event": "line_type", "line_type": "landline"},
            {"voter_id": "v1", "phone": PHONE, "event": "consent", "scope": "calls", "source": "written",
             "timestamp": "2026-01-01"}]
    rows += [{"voter_id": "v1", "event": "prerecorded_call", "timestamp": "2026-09-20"}] * 6
    assert outcomes(decide(table(*rows)))["robo"] == "eligible"


# -- revocations -----------------------------------------------------------------------
def _consent_then(*later: dict) -> ConsentTable:
    return table(
        {"phone": PHONE, "event": "line_type", "line_type": "cell"},
        {"voter_id": "v1", "phone": PHONE, "event": "consent", "scope": "all", "source": "written",
         "timestamp": "2026-01-01"},
        *later,
    )


def test_a_revocation_takes_effect_immediately_on_every_automated_delivery():
    events = _consent_then({"phone": "(415) 555-2671", "event": "revocation", "keyword": "STOP",
                            "timestamp": "2026-09-30T23:59:00Z"})
    got = outcomes(decide(events))
    assert got["text"] == got["auto"] == got["robo"] == got["ai"] == "revoked"
    assert got["mail"] == got["live"] == got["door"] == "eligible"


def test_a_revoked_landline_gets_no_automated_calls():
    events = table({"phone": PHONE, "event": "line_type", "line_type": "landline"},
                   {"voter_id": "v1", "event": "revocation", "keyword": "QUIT", "timestamp": "2026-05-01"})
    got = outcomes(decide(events))
    assert got["auto"] == got["robo"] == "revoked"
    assert got["text"] == "landline_cannot_text"


@pytest.mark.parametrize(("source", "reinstated"), [
    ("written", True), ("opt_in_keyword", True), ("voter_provided", False), ("verbal", False), ("third_party", False),
])
def test_only_a_later_consent_of_high_standing_overrides_a_revocation(source, reinstated):
    events = _consent_then(
        {"voter_id": "v1", "event": "revocation", "keyword": "unsubscribe", "timestamp": "2026-03-01"},
        {"phone": PHONE, "event": "consent", "scope": "texts", "source": source, "timestamp": "2026-04-01"},
    )
    got = outcomes(decide(events))
    assert got["text"] == ("eligible" if reinstated else "revoked")
    assert got["auto"] == "revoked"  # the new consent covers texts only


def test_a_revocation_and_a_consent_at_the_same_instant_revocation_wins():
    events = _consent_then(
        {"voter_id": "v1", "event": "revocation", "keyword": "STOP", "timestamp": "2026-03-01T12:00:00Z"},
        {"voter_id": "v1", "phone": PHONE, "event": "consent", "scope": "texts", "source": "written",
         "timestamp": "2026-03-01T12:00:00Z"},
    )
    assert outcomes(decide(events))["text"] == "revoked"


def test_opt_out_keywords_are_canonicalized():
    words = ["stop", "Quit", "END", "revoke", "opt-out", "OptOut", "cancel", "Unsubscribe", "please no", None]
    events = table(*[{"voter_id": f"v{i}", "event": "revocation", "keyword": w, "timestamp": "2026-01-01"}
                     for i, w in enumerate(words)])
    got = events.events.keyword.tolist()
    assert got == ["STOP", "QUIT", "END", "REVOKE", "OPT OUT", "OPT OUT", "CANCEL", "UNSUBSCRIBE", "OTHER", "OTHER"]
    assert set(got) - {"OTHER"} == set(OPT_OUT_KEYWORDS)


# -- joins -----------------------------------------------------------------------------
def test_rows_keyed_by_phone_join_whatever_the_spelling_and_are_stored_hashed():
    events = table({"phone": "+14155552671", "event": "do_not_contact"},
                   {"phone": "212 555 0100", "event": "do_not_contact"})
    voters = pd.DataFrame({"voter_id": ["a", "b", "c"], "phone": ["(415) 555-2671", "4155552672", None]})
    result = decide(events, voters)
    assert result.eligible_mail.tolist() == [False, True, True]
    assert "phone" not in events.events.columns
    assert events.events.phone_hash.tolist()[0] == PhoneHasher(key=KEY).hash("+14155552671")
    assert not events.events.astype(str).apply(lambda c: c.str.contains("555")).any().any()


def test_a_row_with_id_and_phone_applies_to_both_voters():
    events = table({"voter_id": "a", "phone": "415-555-2671", "event": "do_not_contact"})
    voters = pd.DataFrame({"voter_id": ["a", "b", "c"], "phone": ["212-555-0100", "415.555.2671", "212-555-0101"]})
    assert decide(events, voters).eligible_mail.tolist() == [False, False, True]


def test_voters_without_a_phone_column_get_no_automated_contact_but_their_do_not_contact():
    events = table({"phone": "415-555-2671", "event": "do_not_contact"}, {"voter_id": "b", "event": "do_not_contact"})
    got = decide(events, pd.DataFrame({"voter_id": ["a", "b"]}))
    # a live call needs no consent, but without a number (or state) nobody knows the voter's local time
    assert outcomes(got, 0) == {"mail": "eligible", "door": "eligible", "live": "unknown_timezone",
                                **dict.fromkeys(("auto", "robo", "ai", "text"), "unverifiable_phone")}
    assert set(outcomes(got, 1).values()) == {"do_not_contact"}


def test_phone_keyed_rows_without_a_hash_key_fail_clearly(monkeypatch):
    monkeypatch.delenv(HASH_KEY_ENV)
    with pytest.raises(MissingHashKeyError, match=HASH_KEY_ENV):
        table({"phone": "415-555-2671", "event": "do_not_contact"})
    # a table keyed by voter id alone needs no key
    assert table({"voter_id": "a", "event": "do_not_contact"}).counts() == {"do_not_contact": 1}


def test_precomputed_hashes_join_like_phone_numbers():
    hasher = PhoneHasher(key=KEY)
    events = table({"phone_hash": hasher.hash("+14155552671"), "hash_key_check": hasher.key_check(),
                    "event": "do_not_contact"})
    voters = pd.DataFrame({"voter_id": ["a", "b"], "phone": ["415 555 2671", "415 555 2672"]})
    assert decide(events, voters).eligible_mail.tolist() == [False, True]


def test_voters_may_bring_their_phone_already_hashed():
    events = table({"phone": "415-555-2671", "event": "do_not_contact"})
    hasher = PhoneHasher(key=KEY)
    voters = pd.DataFrame({"voter_id": ["a", "b"],
                           "phone_hash": [hasher.hash("+14155552671"), hasher.hash("+14155552672")]})
    assert decide(events, voters).eligible_mail.tolist() == [False, True]


def test_saved_tables_keep_hashes_only_and_read_back_the_same(tmp_path):
    events = table({"phone": "415-555-2671", "event": "line_type", "line_type": "landline"},
                   {"voter_id": "v1", "event": "revocation", "keyword": "stop", "timestamp": "2026-01-01"})
    path = events.save(tmp_path / "consent_hashed.parquet")
    assert "555" not in path.read_bytes().decode("latin-1")
    again = ConsentTable.read(path)
    assert again.fingerprint() == events.fingerprint()
    assert again.name == "consent_hashed.parquet"


# -- validation ------------------------------------------------------------------------
@pytest.mark.parametrize(("rows", "message"), [
    ([{"voter_id": "a", "event": "opt_in"}], r"column 'event'.*'opt_in'"),
    ([{"voter_id": "a", "event": "consent", "scope": "calls", "source": "written"}], r"'timestamp' is missing"),
    ([{"voter_id": "a", "event": "consent", "scope": "email", "source": "written", "timestamp": "2026-01-01"}],
     r"column 'scope'.*'email'"),
    ([{"voter_id": "a", "event": "consent", "scope": "texts", "source": "bought", "timestamp": "2026-01-01"}],
     r"column 'source'.*'bought'"),
    ([{"voter_id": "a", "event": "line_type", "line_type": "voip"}], r"column 'line_type'"),
    ([{"voter_id": "a", "event": "revocation", "keyword": "STOP", "timestamp": "yesterday-ish"}],
     r"column 'timestamp': 1 values are not ISO 8601"),
    ([{"voter_id": None, "phone": None, "event": "do_not_contact"}], r"1 rows have no 'voter_id'"),
    ([{"phone_hash": "abc", "event": "do_not_contact"}], r"column 'phone_hash'"),
    ([{"voter_id": "a", "event": "consent", "scope": "texts", "source": "written"}], r"'timestamp' is missing"),
])
def test_bad_tables_are_refused_naming_the_column(rows, message):
    with pytest.raises(ConsentError, match=message):
        ConsentTable.from_frame(pd.DataFrame(rows))


def test_a_table_without_event_or_key_column_is_refused():
    with pytest.raises(ConsentError, match="'event' is missing"):
        ConsentTable.from_frame(pd.DataFrame({"voter_id": ["a"]}))
    with pytest.raises(ConsentError, match="no join key"):
        ConsentTable.from_frame(pd.DataFrame({"event": ["do_not_contact"]}))


def test_unknown_delivery_of_an_arm_is_refused():
    with pytest.raises(ConsentError, match="unknown delivery 'carrier_pigeon'"):
        eligibility_for(pd.DataFrame({"voter_id": ["a"]}), [ArmInfo("X", "mail", "carrier_pigeon")])


def test_config_arm_specs_work_as_arms():
    arms = {"Postcard": ArmSpec(channel="mail"), "SMS": ArmSpec(channel="text")}
    result = eligibility_for(voter("a"), arms)
    assert result.eligible_postcard.tolist() == [True]
    assert result.suppression_sms.tolist() == ["no_consent"]


# -- applying eligibility to scores ----------------------------------------------------
def _scores(uplift: np.ndarray, ids: list[str]) -> pd.DataFrame:
    labels = [a.label for a in ARMS]
    frame = pd.DataFrame({"voter_id": ids, "turnout": 0.5})
    for j, arm in enumerate(ARMS):
        frame[f"uplift_{arm.slug}"] = uplift[:, j]
    best, value = best_arms(uplift, labels)
    return frame.assign(best_arm=best, best_uplift=value)


def test_an_ineligible_arm_is_never_best_and_control_or_mail_remain():
    # voter a: text is best but has no consent -> the next eligible arm (mail);
    # voter b: on the do-not-contact list -> control; voter c: only text helps -> control.
    uplift = np.array([
        [0.02, 0.01, 0.00, -0.01, -0.01, -0.01, 0.09],
        [0.05, 0.06, 0.07, 0.01, 0.01, 0.01, 0.08],
        [-0.01, -0.01, -0.02, -0.01, -0.01, -0.01, 0.05],
    ])
    scores = _scores(uplift, ["a", "b", "c"])
    assert scores.best_arm.tolist() == ["Text", "Text", "Text"]
    voters = pd.DataFrame({"voter_id": ["a", "b", "c"], "phone": ["415 555 2671", "415 555 2672", "415 555 2673"]})
    events = table({"voter_id": "b", "event": "do_not_contact"})
    out = ConsentRules(events, as_of=AS_OF).apply(scores, voters, ARMS)
    assert out.best_arm.tolist() == ["Mail", "control", "control"]
    assert out.best_uplift.tolist() == [0.02, 0.0, 0.0]
    assert out.eligible_text.tolist() == [False, False, False]
    assert out.suppression_text.tolist() == ["no_consent", "do_not_contact", "no_consent"]
    assert out.uplift_text.isna().all() and out.uplift_mail.notna().tolist() == [True, False, True]
    assert pd.isna(out.suppression_mail.iloc[0])
    cols = list(out.columns)
    assert cols[cols.index("uplift_text"):cols.index("uplift_text") + 3] == [
        "uplift_text", "eligible_text", "suppression_text"]
    assert list(out.voter_id) == ["a", "b", "c"] and len(scores.columns) + 2 * len(ARMS) + 1 == len(cols)
    assert cols[1] == "time_zone" and set(out.time_zone) == {"America/Los_Angeles"}  # the dialer keeps quiet hours


def test_scores_must_have_an_eligibility_row_for_every_voter():
    scores = _scores(np.zeros((2, len(ARMS))), ["a", "b"])
    elig = eligibility_for(pd.DataFrame({"voter_id": ["a"]}), ARMS)
    with pytest.raises(ConsentError, match="1 scored voters have no eligibility row"):
        apply_eligibility(scores, elig, ARMS)


def test_best_eligible_arm_chooses_like_the_scoring_model():
    rng = np.random.default_rng(0)
    uplift = rng.normal(0, 0.05, (500, 4))
    uplift[rng.random((500, 4)) < 0.3] = np.nan
    labels = ["a", "b", "c", "d"]
    ours, theirs = best_eligible_arm(uplift, labels), best_arms(uplift, labels)
    assert (ours[0] == theirs[0]).all()
    assert np.allclose(ours[1], theirs[1])


def test_suppression_counts_list_every_possible_reason_per_arm():
    voters = pd.DataFrame({"voter_id": ["a", "b", "c"], "phone": ["415 555 2671", "415 555 2672", "415 555 2673"]})
    events = table({"voter_id": "a", "event": "do_not_contact"},
                   {"phone": "415 555 2672", "event": "line_type", "line_type": "landline"})
    counts = suppression_counts(eligibility_for(voters, ARMS, events, as_of=AS_OF), ARMS).set_index(["arm", "reason"])
    assert counts.loc[("Mail", "eligible"), "voters"] == 2
    assert counts.loc[("Mail", "do_not_contact"), "voters"] == 1
    assert counts.loc[("Text", "landline_cannot_text"), "voters"] == 1
    assert counts.loc[("Text", "no_consent"), "voters"] == 1
    assert counts.loc[("Text", "revoked"), "voters"] == 0
    assert ("Mail", "no_consent") not in counts.index


# -- the synthetic consent table -------------------------------------------------------
def test_synthetic_consent_table_is_seeded_and_joins_to_the_voter_file():
    from features.synthetic import make_campaign, make_consent_table

    campaign = make_campaign(3000, seed=5)
    again = make_consent_table(campaign.voter_file, seed=5)
    pd.testing.assert_frame_equal(campaign.consent, again)
    consent = ConsentTable.from_frame(campaign.consent)
    assert set(consent.counts()) == {e.value for e in Event}
    by_phone = consent.events[consent.events.voter_id.isna()]
    hashes = set(PhoneHasher(key=KEY).hash_raw(campaign.voter_file.phone))
    assert by_phone.phone_hash.isin(hashes).all()  # every phone-keyed row is a voter's number
    result = ConsentRules(consent, as_of="2026-10-01T00:00:00Z").for_voters(campaign.voter_file, ARMS)
    shares = {a.slug: result[f"eligible_{a.slug}"].mean() for a in ARMS}
    assert 0.95 < shares["mail"] < 1.0  # a few on the do-not-contact list
    # texts need consent for the number: the table's consents keyed by voter id alone grant nothing
    assert 0.04 < shares["text"] < 0.6
    reasons = set(result.suppression_text.dropna()) | set(result.suppression_robo.dropna())
    # every reason code but the fail-closed ones (every synthetic number parses; the table is fresh) and quiet
    # hours': at 8 p.m. in New York every US zone is inside the window, and every synthetic number has a real one
    assert reasons == {r.value for r in Reason} - {"unverifiable_phone", "consent_stale", "unknown_timezone",
                                                   "outside_calling_hours"}
    assert shares["live"] == shares["mail"]  # a live call is suppressed only by do-not-contact then


def test_synthetic_numbers_have_real_us_area_codes_so_their_local_time_is_known():
    from features.synthetic import make_campaign, us_area_codes

    codes = us_area_codes()
    assert {212, 415, 907, 808} <= set(codes)  # New York, San Francisco, Alaska, Hawaii
    assert not {416, 604, 787, 800, 900, 999} & set(codes)  # Toronto, Vancouver, Puerto Rico, toll-free, unassigned
    voters = make_campaign(3000, seed=5).voter_file
    numbers = normalize_phones(voters.phone)
    assert numbers.str[2:5].astype(int).isin(codes).all()
    assert all(phonenumbers.region_code_for_number(phonenumbers.parse(n)) == "US" for n in numbers)
    zones = number_time_zones(numbers)
    assert np.mean([not z for z in zones]) < 0.02  # unknown_timezone; area codes drawn from 201-989 made it 47%
    assert {"America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"} <= {
        z for row in zones for z in row}
    early = ConsentRules(as_of="2026-10-01T12:30:00Z").for_voters(voters, ARMS)
    assert (early.suppression_live == "outside_calling_hours").any()  # 08:30 in New York, before 8 a.m. west of it


# -- the CLI ---------------------------------------------------------------------------
def test_score_with_consent_applies_eligibility_and_records_provenance(champion_uri, campaign_dir, tmp_path):
    out = tmp_path / "scores.parquet"
    cmd = [sys.executable, "-m", "training.cli", "score", "--model", champion_uri,
           "--input", str(campaign_dir / "voter_file.parquet"), "--output", str(out),
           "--consent", str(campaign_dir / "consent.parquet"), "--as-of", AS_OF, "--chunk-size", "20000"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    scores = pd.read_parquet(out)
    for slug in ("mail", "phone", "text", "canvass"):
        assert f"eligible_{slug}" in scores and f"suppression_{slug}" in scores
        not_allowed = ~scores[f"eligible_{slug}"]
        assert scores.loc[not_allowed, f"uplift_{slug}"].isna().all()
        assert scores.loc[not_allowed, f"suppression_{slug}"].notna().all()
    label = {"mail": "Mail", "phone": "Phone", "text": "Text", "canvass": "Canvass"}
    for slug, arm in label.items():
        assert scores.loc[scores.best_arm == arm, f"eligible_{slug}"].all()
    assert (~scores.eligible_text).mean() > 0.4 and scores.eligible_mail.mean() > 0.95
    assert (scores.best_arm == "Text").any()  # text stays possible where allowed
    provenance = json.loads((tmp_path / "scores.parquet.provenance.json").read_text())
    assert provenance["model"]["uri"].startswith("models:/persuade-synthetic-voted/")
    assert provenance["consent"]["table"] == "consent.parquet"
    assert provenance["consent"]["as_of"].startswith("2026-10-01T00:00:00")
    assert provenance["rows"] == len(scores)


def test_score_with_consent_but_no_hash_key_fails_clearly(champion_uri, campaign_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(HASH_KEY_ENV)
    cmd = [sys.executable, "-m", "training.cli", "score", "--model", champion_uri,
           "--input", str(campaign_dir / "voter_file.parquet"), "--output", str(tmp_path / "s.parquet"),
           "--consent", str(campaign_dir / "consent.parquet")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    assert HASH_KEY_ENV in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "s.parquet").exists()
