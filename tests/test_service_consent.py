"""Consent over HTTP: a real ``bentoml serve`` on 127.0.0.1 reading a consent table that the tests change.

Issue 19 through the service: a phone of any JSON type never makes a 500; an arm a voter
may not get has null uplift and stays out of the summary; ``GET /model`` reports the join
and warns of a replay; a stale or broken table suppresses automated contact (do-not-contact
still applies); no planted number reaches a response or the log.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time

import httpx
import numpy as np
import pandas as pd
import pytest

from features.consent import ConsentRules
from features.phones import PhoneHasher
from features.synthetic import SYNTHETIC_AS_OF
from serving.api import ScoreResponse
from serving.launcher import ServiceProcess
from serving.plan_api import PlanResponse

KEY = "sk-consent-" + secrets.token_hex(12)
HASH_KEY = "test-hash-key-" + secrets.token_hex(8)
PLANTED = ["(415) 555-0199", "+1 212 555 0187", "646.555.0142"]
PLANTED_DIGITS = [re.sub(r"\D", "", p)[-7:] for p in PLANTED]
TOLL_FREE = "(800) 555-0100"
WINDOW = "08:00-20:00"  # the service's calling window: at its time (00:00 UTC) it is 8 p.m. in New York, so out


@pytest.fixture(scope="module")
def consent_table(campaign_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("service_consent") / "consent.parquet"
    shutil.copy(campaign_dir / "consent.parquet", path)
    return path


@pytest.fixture(scope="module")
def service(champion_uri, consent_table):
    svc = ServiceProcess(model_uri=champion_uri, api_keys=[KEY],
                         env={"PERSUADE_RELOAD_SECONDS": "0", "PERSUADE_CONSENT_TABLE": str(consent_table),
                              "PERSUADE_HASH_KEY": HASH_KEY, "PERSUADE_CONSENT_AS_OF": SYNTHETIC_AS_OF,
                              "PERSUADE_CONSENT_MAX_AGE_HOURS": "24", "PERSUADE_CALLING_HOURS": WINDOW,
                              "PERSUADE_WORKERS": "1"})  # consent, not workers (tests/test_service_workers.py)
    with svc:
        yield svc
    svc.cleanup()


@pytest.fixture(scope="module")
def client(service):
    with service.client(KEY) as c:
        yield c


@pytest.fixture(scope="module")
def segment(campaign) -> pd.DataFrame:
    return campaign.voter_file.sample(120, random_state=8).reset_index(drop=True)


def records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def score(client, voters) -> httpx.Response:
    return client.post("/score", json={"voters": voters})


def eventually(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return result


def texted_voter(client, segment) -> dict:
    """A voter of the segment who may be texted now (consent for their number)."""
    body = score(client, records(segment)).json()["scores"]
    return records(segment)[next(i for i, s in enumerate(body) if s["eligible"]["Text"])]


# -- finding 2 over HTTP ----------------------------------------------------------------------
@pytest.mark.parametrize("phone", [["415-555-2671"], {"number": "415-555-2671"}, 4155552671.5, 4155552671.0,
                                   "415-555-2671 x12", True, None, "not a phone"])
def test_a_phone_of_any_type_is_a_suppression_never_an_error(client, segment, phone):
    voter = {**texted_voter(client, segment), "phone": phone}
    r = score(client, [voter])
    assert r.status_code == 200, r.text
    (s,) = r.json()["scores"]
    assert s["eligible"]["Text"] is False and s["ineligible_reasons"]["Text"] == "unverifiable_phone"
    assert s["uplift"]["Text"] is None and s["best_arm"] != "Text"
    assert s["eligible"]["Mail"] is True
    plan = client.post("/plan", json={"voters": [voter, voter | {"voter_id": "other"}], "budget": 5})
    assert plan.status_code == 200, plan.text


# -- finding 7: /score's uplift and summary ----------------------------------------------------
def test_an_arm_a_voter_may_not_get_has_null_uplift_and_stays_out_of_the_summary(client, model, segment,
                                                                                  consent_table):
    r = score(client, records(segment))
    body = ScoreResponse.model_validate(r.json())
    rules = ConsentRules.from_path(consent_table, as_of=SYNTHETIC_AS_OF, hasher=PhoneHasher(HASH_KEY),
                                   calling_hours=WINDOW)
    expected = rules.apply(model.score(segment, allow_missing=True), segment, model.arms)
    for arm in model.arms:
        got = np.array([np.nan if s.uplift[arm.label] is None else s.uplift[arm.label] for s in body.scores])
        np.testing.assert_allclose(got, expected[f"uplift_{arm.slug}"], rtol=0, atol=1e-9)  # NaN where not allowed
        allowed = expected[f"eligible_{arm.slug}"]
        summary = body.summary
        assert summary.eligible_voters[arm.label] == int(allowed.sum())
        assert summary.expected_incremental[arm.label] == pytest.approx(expected[f"uplift_{arm.slug}"].sum())
        assert summary.mean_uplift[arm.label] == pytest.approx(expected[f"uplift_{arm.slug}"].mean())
    assert 0 < body.summary.eligible_voters["Text"] < len(segment)
    explained = client.post("/score", json={"voters": records(segment.head(20)), "explain": True}).json()
    for s in explained["scores"]:
        assert all((s["reasons"][arm] is None) == (s["uplift"][arm] is None) for arm in s["uplift"])


# -- quiet hours ---------------------------------------------------------------------------------
def test_scores_and_plans_carry_the_local_time_zone_and_keep_the_calling_window(client, model, segment,
                                                                                 consent_table):
    # every synthetic number has a real US area code: toll-free numbers say nothing of where a voter is
    segment = segment.assign(phone=segment.phone.where(segment.index % 10 != 0, TOLL_FREE))
    voters = records(segment)
    body = score(client, voters).json()["scores"]
    rules = ConsentRules.from_path(consent_table, as_of=SYNTHETIC_AS_OF, hasher=PhoneHasher(HASH_KEY),
                                   calling_hours=WINDOW)
    expected = rules.for_voters(segment, model.arms)
    zone = dict(zip(expected.voter_id, expected.time_zone.astype(object).where(expected.time_zone.notna(), None),
                    strict=True))
    assert [s["time_zone"] for s in body] == [zone[v["voter_id"]] for v in voters]
    reasons = {s["ineligible_reasons"].get("Phone") for s in body}
    assert {"outside_calling_hours", "unknown_timezone"} <= reasons  # east-coast numbers at 8 p.m.; toll-free
    voter = texted_voter(client, segment)  # texts allowed now: a number west of New York
    moved = score(client, [{**voter, "state": "NY"}]).json()["scores"][0]  # ... of a voter living in New York
    assert moved["ineligible_reasons"]["Text"] == "outside_calling_hours" and moved["best_arm"] != "Text"
    assert "America/New_York" in moved["time_zone"].split() and len(moved["time_zone"].split()) >= 2
    plan = client.post("/plan", json={"voters": voters, "budget": 300})
    assert plan.status_code == 200, plan.text
    PlanResponse.model_validate(plan.json())
    channels = plan.json()["channels"]
    assert {"phone", "text"} & set(channels), "the plan must call or text someone"
    for channel, part in channels.items():
        for contact in part["contacts"]:
            if channel in ("phone", "text"):
                assert contact["time_zone"] == zone[contact["voter_id"]] is not None
            else:
                assert "time_zone" not in contact


# -- findings 1, 2 and 4 in GET /model -----------------------------------------------------------
def test_model_reports_the_join_the_key_check_and_the_replay(client, segment):
    before = client.get("/model").json()["consent"]["join"]
    voters = records(segment.head(10))
    voters[0]["phone"], voters[1]["phone"] = None, ["x"]
    assert score(client, voters).status_code == 200
    facts = client.get("/model").json()["consent"]
    assert facts["join"]["voters"] == before["voters"] + 10
    assert facts["join"]["phone_missing"] == before["phone_missing"] + 1
    assert facts["join"]["phone_unparseable"] == before["phone_unparseable"] + 1
    assert facts["join"]["table_phones_matching_no_voter"] > 0
    assert facts["key_check"] == PhoneHasher(HASH_KEY).key_check()
    assert facts["as_of_pinned"] and "replaying a past decision only" in facts["warnings"][0]
    assert facts["max_age_hours"] == 24 and facts["stale"] is None


# -- finding 4: stale and broken tables ----------------------------------------------------------
def _reason(client, voters: list[dict]) -> list[tuple[str | None, str | None]]:
    body = score(client, voters).json()["scores"]
    return [(s["ineligible_reasons"].get("Text"), s["ineligible_reasons"].get("Mail")) for s in body]


def test_an_old_table_suppresses_automated_contact_until_it_is_written_again(client, segment, consent_table):
    voter = texted_voter(client, segment)
    two_days_ago = time.time() - 48 * 3600
    try:
        os.utime(consent_table, (two_days_ago, two_days_ago))
        assert eventually(lambda: _reason(client, [voter]) == [("consent_stale", None)])
        assert "hours ago" in client.get("/model").json()["consent"]["stale"]
    finally:
        os.utime(consent_table)
    assert eventually(lambda: _reason(client, [voter]) == [(None, None)])


def test_a_broken_table_suppresses_automated_contact_keeps_do_not_contact_and_leaks_no_number(
        service, client, segment, consent_table):
    voter = texted_voter(client, segment)
    good = consent_table.read_bytes()
    original = pd.read_parquet(consent_table)
    dnc = {"voter_id": "DNC-ONLY", "phone": None, "event": "do_not_contact", "source": "internal",
           "timestamp": pd.Timestamp(SYNTHETIC_AS_OF)}
    bad_rows = pd.DataFrame([{"voter_id": "x", "event": PLANTED[0]},
                             {"voter_id": "y", "event": "line_type", "line_type": PLANTED[1]},
                             {"voter_id": "z", "phone": PLANTED[2] + " ext 9", "event": "do_not_contact"}])
    try:
        pd.concat([original, pd.DataFrame([dnc])], ignore_index=True).to_parquet(consent_table, index=False)
        assert eventually(lambda: _reason(client, [{"voter_id": "DNC-ONLY"}]) == [("do_not_contact",) * 2])
        pd.concat([original, pd.DataFrame([dnc]), bad_rows], ignore_index=True).to_parquet(consent_table, index=False)
        assert eventually(lambda: client.get("/model").json()["consent"]["error"])
        assert _reason(client, [voter, {"voter_id": "DNC-ONLY"}]) == [("consent_stale", None),
                                                                       ("do_not_contact", "do_not_contact")]
        model_text = client.get("/model").text
        assert "column 'event'" in model_text and "column 'line_type'" in model_text
    finally:
        consent_table.write_bytes(good)
    assert eventually(lambda: client.get("/model").json()["consent"]["error"] is None)
    assert _reason(client, [voter]) == [(None, None)]
    assert eventually(lambda: "could not be re-read" in service.log)
    assert not leaked(service.log + model_text)


def leaked(text: str) -> list[str]:
    """Planted numbers found in ``text``, in any spelling (digits compared within each run of a number)."""
    runs = [re.sub(r"\D", "", run) for run in re.findall(r"\d[\d\s().+\-]*", text)]
    return [d for d in PLANTED_DIGITS if any(d in run for run in runs)]
