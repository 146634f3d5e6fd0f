"""The HTTP service end to end: a real ``bentoml serve`` subprocess on 127.0.0.1, over HTTP.

The service serves the synthetic campaign's champion from the session's temp MLflow store;
every expected value is computed in this process with the same registered model
(``ScoringModel.score`` / ``explain``), so the tests check the HTTP answers against the
model, not against themselves.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from features.consent import ConsentRules
from features.phones import PhoneHasher
from features.synthetic import SYNTHETIC_AS_OF
from serving.api import ModelCard, ScoreResponse
from serving.launcher import ServiceProcess, free_port
from serving.limits import MAX_VOTERS

KEY = "sk-test-" + secrets.token_hex(12)
ADMIN_KEY = "sk-admin-" + secrets.token_hex(12)
AUTH = {"Authorization": f"Bearer {KEY}"}
PII_COLUMNS = ["first_name", "last_name", "phone", "email", "address"]
MAX_BODY = 2_000_000  # bytes; lowered so that the body limit can be tested cheaply
HASH_KEY = "test-hash-key-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def consent_table(campaign_dir, tmp_path_factory) -> Path:
    """A copy of the campaign's consent table that the service reads (tests may change it)."""
    path = tmp_path_factory.mktemp("consent") / "consent.parquet"
    shutil.copy(campaign_dir / "consent.parquet", path)
    return path


@pytest.fixture(scope="module")
def service(champion_uri, consent_table):
    svc = ServiceProcess(model_uri=champion_uri, api_keys=[KEY], admin_keys=[ADMIN_KEY],
                         env={"PERSUADE_RELOAD_SECONDS": "0", "PERSUADE_WORKERS": "1",  # workers: test_service_workers
                              "PERSUADE_MAX_BODY_BYTES": str(MAX_BODY),
                              "PERSUADE_CONSENT_TABLE": str(consent_table), "PERSUADE_HASH_KEY": HASH_KEY,
                              "PERSUADE_CONSENT_AS_OF": SYNTHETIC_AS_OF})
    with svc:
        yield svc
    svc.cleanup()


def consent_rules(path: Path) -> ConsentRules:
    """The service's consent decision, made in this process with ``features.consent``."""
    return ConsentRules.from_path(path, as_of=SYNTHETIC_AS_OF, hasher=PhoneHasher(HASH_KEY))


@pytest.fixture(scope="module")
def client(service):
    with service.client(KEY) as c:
        yield c


@pytest.fixture(scope="module")
def segment(campaign) -> pd.DataFrame:
    """200 voters of the synthetic voter file, PII columns included (they must be dropped)."""
    return campaign.voter_file.sample(200, random_state=3).reset_index(drop=True)


def records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def score(client, voters, **options) -> httpx.Response:
    return client.post("/score", json={"voters": voters, **options})


def eventually(check, timeout: float = 30.0):
    """``check()`` once it is truthy; the server's log lines reach its log file asynchronously."""
    deadline = time.monotonic() + timeout
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return result


# -- health and auth -------------------------------------------------------------------
def test_health_endpoints_answer_without_a_key(service):
    for path in ("/livez", "/readyz"):
        assert httpx.get(service.base_url + path).status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", f"Basic {KEY}", "Bearer", KEY],
                         ids=["none", "wrong-key", "basic-scheme", "bearer-without-key", "key-without-scheme"])
def test_scoring_and_model_need_a_valid_key(service, header):
    headers = {"Authorization": header} if header is not None else {}
    r = httpx.post(f"{service.base_url}/score", json={"voters": [{"voter_id": "1"}]}, headers=headers)
    assert r.status_code == 401
    assert "API key" in r.json()["error"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(f"{service.base_url}/model", headers=headers).status_code == 401


def test_reload_needs_an_admin_key(client):
    r = client.post("/admin/reload")
    assert r.status_code == 403
    assert "admin" in r.json()["error"]


def test_audit_log_has_key_id_never_the_key(service, client, segment):
    assert httpx.get(f"{service.base_url}/model", headers={"Authorization": "Bearer not-a-key"}).status_code == 401
    assert score(client, records(segment.head(7))).status_code == 200

    def scored() -> list[dict]:
        lines = [json.loads(line) for line in service.log.splitlines() if line.startswith('{"audit"')]
        return [a for a in lines if a["path"] == "/score" and a["status"] == 200 and a["voters"] == 7]

    assert eventually(scored), "no audit line for the request"
    lines = [json.loads(line) for line in service.log.splitlines() if line.startswith('{"audit"')]
    assert KEY not in service.log and ADMIN_KEY not in service.log
    line = scored()[-1]
    assert line["key_id"] == hashlib.sha256(KEY.encode()).hexdigest()[:12]
    assert line["model"] == "persuade-synthetic-voted" and line["model_version"]
    assert line["latency_ms"] > 0 and line["time"].endswith("Z")
    assert set(line) == {"audit", "method", "path", "time", "status", "key_id", "model", "model_version",
                         "voters", "explain", "warnings", "latency_ms"}
    refused = [a for a in lines if a["status"] == 401]
    assert refused and all(a["key_id"] is None for a in refused)


# -- scores ----------------------------------------------------------------------------
def test_scores_are_the_models_scores(client, model, segment, consent_table):
    r = score(client, records(segment))
    assert r.status_code == 200
    body = ScoreResponse.model_validate(r.json())
    expected = consent_rules(consent_table).apply(model.score(segment, allow_missing=True), segment, model.arms)
    raw = model.score(segment, allow_missing=True)
    assert [s.voter_id for s in body.scores] == segment["voter_id"].tolist()
    got_turnout = np.array([s.turnout for s in body.scores])
    np.testing.assert_allclose(got_turnout, expected["turnout"], rtol=0, atol=1e-9)
    for arm in model.arms:
        got = np.array([np.nan if s.uplift[arm.label] is None else s.uplift[arm.label] for s in body.scores])
        allowed = expected[f"eligible_{arm.slug}"].to_numpy()
        np.testing.assert_allclose(got, np.where(allowed, raw[f"uplift_{arm.slug}"], np.nan), rtol=0, atol=1e-9)
        assert [s.eligible[arm.label] for s in body.scores] == allowed.tolist()
    assert [s.best_arm for s in body.scores] == expected["best_arm"].tolist()
    best = np.array([s.best_uplift for s in body.scores])
    ranks = np.array([s.rank for s in body.scores])
    assert sorted(ranks) == list(range(1, len(segment) + 1))
    assert np.all(np.diff(best[np.argsort(ranks)]) <= 0), "rank 1 must be the largest best_uplift"
    assert body.model.name == "persuade-synthetic-voted" and body.model.run_id
    assert all(s.reasons is None for s in body.scores)


def test_summary_adds_up(client, segment):
    body = score(client, records(segment.head(50))).json()
    uplift = pd.DataFrame([s["uplift"] for s in body["scores"]]).astype(float)  # null: not allowed
    summary = body["summary"]
    assert summary["voters"] == 50 and summary["outcome"] == "turnout"
    for arm in uplift.columns:
        assert summary["eligible_voters"][arm] == uplift[arm].notna().sum()
        assert summary["expected_incremental"][arm] == pytest.approx(uplift[arm].sum(), abs=1e-9)
        assert summary["mean_uplift"][arm] == pytest.approx(uplift[arm].mean(), abs=1e-12)
    assert sum(summary["best_arm_counts"].values()) == 50
    best = pd.Series([s["best_arm"] for s in body["scores"]]).value_counts()
    assert all(summary["best_arm_counts"][arm] == n for arm, n in best.items())


def test_reasons_add_up_to_the_uplift(client, model, segment):
    voters = records(segment.head(60))
    n_features = len(model.feature_names)
    body = score(client, voters, explain=True, top_k=n_features).json()
    short = score(client, voters, explain=True, top_k=3).json()
    for voter, full, top3 in zip(voters, body["scores"], short["scores"], strict=True):
        assert set(full["reasons"]) == {a.label for a in model.arms}
        for arm, reasons in full["reasons"].items():
            if full["uplift"][arm] is None:  # an arm the voter may not get: no uplift, no reasons
                assert reasons is None and top3["reasons"][arm] is None
                continue
            contributions = [r["contribution"] for r in reasons["top"]]
            assert len(contributions) == n_features
            assert reasons["base_value"] + sum(contributions) == pytest.approx(full["uplift"][arm], abs=1e-6)
            sizes = np.abs(contributions)
            assert np.all(np.diff(sizes) <= 0), "reasons must be sorted by absolute contribution"
            assert top3["reasons"][arm]["top"] == reasons["top"][:3]
            for r in reasons["top"]:
                if r["feature"] in ("age", "hh_size", "party_score"):
                    assert r["value"] == pytest.approx(voter[r["feature"]])
                if r["feature"] == "urbanicity":
                    assert r["value"] == voter["urbanicity"]


def test_reasons_match_the_models_explanation(client, model, segment):
    part = segment.head(20)
    body = score(client, records(part), explain=True, top_k=1).json()
    X = model.transform(part, allow_missing=True)
    for arm in model.arms:
        contributions = model.explain(X, arm.label)
        top = np.abs(contributions[:, :-1]).argmax(axis=1)
        for i, s in enumerate(body["scores"]):
            reason = s["reasons"][arm.label]
            if s["uplift"][arm.label] is None:  # an arm the voter may not get has no reasons
                assert reason is None
                continue
            assert reason["base_value"] == pytest.approx(contributions[i, -1], abs=1e-9)
            assert reason["top"][0]["feature"] == model.feature_names[top[i]]
            assert reason["top"][0]["contribution"] == pytest.approx(contributions[i, top[i]], abs=1e-9)


def test_missing_features_allowed_and_extra_fields_ignored(client, model, segment):
    voters = records(segment.head(5))
    with_extra = [{**v, "favourite_color": "teal", "notes": {"any": ["thing"]}} for v in voters]
    assert score(client, with_extra).json()["scores"] == score(client, voters).json()["scores"]
    bare = score(client, [{"voter_id": "only-an-id"}, {"voter_id": 42, "age": None}]).json()["scores"]
    expected = model.score(pd.DataFrame({"voter_id": ["only-an-id", "42"]}), allow_missing=True)
    assert [s["voter_id"] for s in bare] == ["only-an-id", "42"]
    np.testing.assert_allclose([s["turnout"] for s in bare], expected["turnout"], atol=1e-9)


def test_empty_segment(client):
    body = score(client, []).json()
    assert body["scores"] == [] and body["summary"]["voters"] == 0


# -- errors ----------------------------------------------------------------------------
def test_wrong_type_is_422_naming_voter_and_field(service, client, segment):
    voters = records(segment.head(8))
    voters[3]["age"] = "forty-two"
    voters[5]["hh_size"] = [1, 2]
    voters[6]["urbanicity"] = {"kind": "urban"}
    del voters[7]["voter_id"]
    r = score(client, voters)
    assert r.status_code == 422
    detail = {(d["voter"], d["field"]): d["message"] for d in r.json()["detail"]}
    assert set(detail) == {(3, "age"), (5, "hh_size"), (6, "urbanicity"), (7, "voter_id")}
    assert "number" in detail[(3, "age")] and "forty" not in r.text
    assert "voter 3" in r.json()["error"] and "'age'" in r.json()["error"]
    assert client.get("/model").status_code == 200  # still serving


def test_more_than_the_limit_is_413(client):
    r = score(client, [{"voter_id": str(i)} for i in range(MAX_VOTERS + 1)])
    assert r.status_code == 413
    assert f"{MAX_VOTERS:,}" in r.json()["error"]


def test_oversized_body_is_413_before_parsing(client):
    big = b'{"voters": [' + b",".join([b'{"voter_id": "x", "note": "' + b"a" * 1000 + b'"}'] * 2100) + b"]}"
    assert len(big) > MAX_BODY
    headers = {"Content-Type": "application/json"}
    r = client.post("/score", content=big, headers=headers)
    assert r.status_code == 413 and "larger than" in r.json()["error"]
    r = client.post("/score", content=iter([big[:1_000_000], big[1_000_000:]]), headers=headers)  # chunked
    assert r.status_code == 413
    assert score(client, [{"voter_id": "after"}]).status_code == 200


def test_malformed_json_is_400(client):
    r = client.post("/score", content=b'{"voters": [{"voter_id": "1", ', headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "Invalid JSON" in r.text
    r = client.post("/score", json={"voters": "not a list"})
    assert r.status_code == 400
    assert r.json()["detail"][0]["loc"] == ["voters"]
    r = client.post("/score", json={"voters": [], "top_k": 0})
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["top_k"]


def test_pii_never_reaches_the_log_or_a_response(service, client, segment):
    part = segment.head(30)
    secrets_sent = [str(v) for col in PII_COLUMNS for v in part[col]]
    responses = [score(client, records(part), explain=True).text]
    bad = records(part.head(3))
    bad[1]["age"] = part["phone"].iloc[1]  # a phone number where a number belongs
    responses.append(score(client, bad).text)
    phone, email = part["phone"].iloc[2], part["email"].iloc[2]
    broken = f'{{"voters": [{{"voter_id": "x", "phone": "{phone}", "email": "{email}"'.encode()
    responses.append(client.post("/score", content=broken, headers={"Content-Type": "application/json"}).text)
    assert eventually(lambda: "request body rejected" in service.log)  # logged without its content
    log = service.log
    leaked = [s for s in secrets_sent if s in log or any(s in body for body in responses)]
    assert not leaked, f"PII leaked: {leaked[:3]}"


def test_concurrent_single_voter_requests(client, model, segment):
    """Dialer-style traffic: many one-voter requests at once, answered in adaptive batches."""
    part = segment.head(48)
    expected = model.score(part, allow_missing=True)
    voters = records(part)

    def one(i):
        return score(client, [voters[i]], explain=bool(i % 2), top_k=1 + i % 4).json()

    with ThreadPoolExecutor(16) as pool:
        bodies = list(pool.map(one, range(len(voters))))
    for i, body in enumerate(bodies):
        (s,) = body["scores"]
        assert s["voter_id"] == voters[i]["voter_id"] and s["rank"] == 1
        assert s["turnout"] == pytest.approx(expected["turnout"].iloc[i], abs=1e-9)
        assert body["summary"]["voters"] == 1
        if i % 2:
            assert all(len(r["top"]) == 1 + i % 4 for r in s["reasons"].values() if r is not None)
        else:
            assert "reasons" not in s


# -- consent and eligibility -----------------------------------------------------------
def test_an_ineligible_arm_is_never_the_best_arm(client, model, segment, consent_table):
    """Voters whose top-uplift arm is Text but who may not be texted get another arm, with the reason."""
    voters = segment
    body = score(client, records(voters)).json()["scores"]
    raw = model.score(voters, allow_missing=True)
    decided = consent_rules(consent_table).for_voters(voters, model.arms)
    text_top = raw[[f"uplift_{a.slug}" for a in model.arms]].to_numpy().argmax(axis=1) == \
        [a.label for a in model.arms].index("Text")
    blocked = text_top & ~decided["eligible_text"].to_numpy()
    assert blocked.sum() >= 5, "the segment must hold voters whose best arm would be a text they may not get"
    for i in np.flatnonzero(blocked):
        s = body[i]
        assert s["best_arm"] != "Text" and s["eligible"]["Text"] is False
        assert s["ineligible_reasons"]["Text"] == decided["suppression_text"].iloc[i]
        assert s["ineligible_reasons"]["Text"] in {"no_consent", "revoked", "landline_cannot_text",
                                                   "do_not_contact", "unknown_timezone",
                                                   "outside_calling_hours"}
    for s in body:
        assert s["best_arm"] == "control" or s["eligible"][s["best_arm"]]


def test_consent_changes_take_effect_without_a_restart(client, segment, consent_table):
    """A do-not-contact row (by voter id) and a STOP reply (by phone) apply to the next requests."""
    original = pd.read_parquet(consent_table)
    before = score(client, records(segment.head(40))).json()["scores"]
    texted = [i for i, s in enumerate(before) if s["eligible"]["Text"]]
    mailed = [i for i, s in enumerate(before) if s["eligible"]["Mail"]]
    assert texted and mailed
    stop_voter, dnc_voter = segment.iloc[texted[0]], segment.iloc[next(i for i in mailed if i != texted[0])]
    when = pd.Timestamp(SYNTHETIC_AS_OF) - pd.Timedelta(hours=1)
    added = pd.DataFrame([
        {"voter_id": None, "phone": stop_voter["phone"], "event": "revocation", "keyword": "STOP", "timestamp": when},
        {"voter_id": dnc_voter["voter_id"], "phone": None, "event": "do_not_contact", "source": "internal",
         "timestamp": when},
    ])
    try:
        pd.concat([original, added], ignore_index=True).to_parquet(consent_table, index=False)

        def changed():
            got = score(client, records(pd.DataFrame([stop_voter, dnc_voter]))).json()["scores"]
            return got if got[0]["eligible"]["Text"] is False and got[1]["eligible"]["Mail"] is False else None

        got = eventually(changed, timeout=20)
        assert got, "the consent change was not applied"
        assert got[0]["ineligible_reasons"]["Text"] == "revoked" and got[0]["best_arm"] != "Text"
        assert all(r == "do_not_contact" for r in got[1]["ineligible_reasons"].values())
        assert set(got[1]["ineligible_reasons"]) == set(got[1]["uplift"]) and got[1]["best_arm"] == "control"
        assert client.get("/model").json()["consent"]["events"]["do_not_contact"] == \
            int((original.event == "do_not_contact").sum()) + 1
    finally:
        original.to_parquet(consent_table, index=False)
    assert eventually(lambda: client.get("/model").json()["consent"]["events"]["do_not_contact"]
                      == int((original.event == "do_not_contact").sum()), timeout=20)


def test_an_unreadable_consent_change_keeps_the_last_good_do_not_contact_and_stops_automated_contact(
        client, segment, consent_table):
    good = consent_table.read_bytes()
    expected = score(client, records(segment.head(20))).json()["scores"]
    try:
        consent_table.write_bytes(b"not a parquet file")
        assert eventually(lambda: client.get("/model").json()["consent"]["error"], timeout=20)
        for before, now in zip(expected, score(client, records(segment.head(20))).json()["scores"], strict=True):
            assert now["eligible"]["Text"] is False  # automated contact waits for a good read
            assert now["ineligible_reasons"]["Text"] in {"consent_stale", "do_not_contact"}
            assert now["eligible"]["Mail"] == before["eligible"]["Mail"]  # do-not-contact still applies
    finally:
        consent_table.write_bytes(good)
    assert eventually(lambda: client.get("/model").json()["consent"]["error"] is None, timeout=20)
    assert score(client, records(segment.head(20))).json()["scores"] == expected


# -- POST /plan ------------------------------------------------------------------------
def plan(client, voters, budget, costs=None) -> httpx.Response:
    return client.post("/plan", json={"voters": voters, "budget": budget,
                                      **({"costs": costs} if costs is not None else {})})


def test_plan_is_the_in_process_plan_and_respects_consent(client, model, segment, consent_table, trained):
    from serving.eligibility import ConsentEligibility
    from serving.plan_api import PlanResponse, plan_payload
    from serving.plan_costs import ProgramCosts
    from serving.registry import ModelRef
    from serving.voters import VoterReader

    voters = records(segment)
    costs = {"channels": {"phone": {"capacity": 20}}}
    r = plan(client, voters, 60, costs)
    assert r.status_code == 200, r.text
    body = PlanResponse.model_validate(r.json())
    batch = VoterReader(model, ("phone",)).read(voters)
    rule = ConsentEligibility(consent_table, SYNTHETIC_AS_OF, hasher=PhoneHasher(HASH_KEY))
    ref = ModelRef(uri="", name=trained.model_name, version=trained.version, run_id=trained.run_id)
    expected = plan_payload(model, ref, batch, 60, ProgramCosts.model_validate(costs), rule(batch, model.arms))
    assert body.total_expected_gain == pytest.approx(expected["total_expected_gain"], abs=1e-9)
    assert body.spent <= 60 + 1e-9 and body.solver.value <= body.solver.lp_bound + 1e-9
    assert body.channels.get("phone") is None or body.channels["phone"].attempts <= 20
    got = [(c.voter_id, c.arm) for ch in body.channels.values() for c in ch.contacts]
    want = [(c["voter_id"], c["arm"]) for ch in expected["channels"].values() for c in ch["contacts"]]
    assert sorted(got) == sorted(want) and got
    decided = consent_rules(consent_table).for_voters(segment, model.arms).set_index("voter_id")
    slug = {a.label: a.slug for a in model.arms}
    assert all(decided.loc[v, f"eligible_{slug[a]}"] for v, a in got), "a suppressed arm was planned"
    assert body.suppression.contacted == len(got)
    assert sum(body.suppression.model_dump(exclude={"not_allowed"}).values()) == len(segment)
    for channel in body.channels.values():
        assert [c.priority for c in channel.contacts] == sorted(c.priority for c in channel.contacts)
        assert all(c.expected_gain > 0 for c in channel.contacts)


def test_plan_with_a_holdout_and_exploration(client, model, segment):
    from serving.plan_api import PlanResponse

    request = {"voters": records(segment), "budget": 60, "holdout": 0.2, "explore": 0.1, "seed": 5}
    r = client.post("/plan", json=request)
    assert r.status_code == 200, r.text
    body = PlanResponse.model_validate(r.json())
    design = body.design
    assert design.description["seed"] == 5 and len(design.description["fingerprint"]) == 64
    again = PlanResponse.model_validate(client.post("/plan", json=request).json()).design
    assert [(v.voter_id, v.assigned, v.holdout) for v in design.voters] == [
        (v.voter_id, v.assigned, v.holdout) for v in again.voters]  # same seed, same assignment
    contacts = {c.voter_id: c.arm for ch in body.channels.values() for c in ch.contacts}
    held = {v.voter_id for v in design.voters if v.holdout}
    assert held and not held & set(contacts) and design.held_out == len(held)
    assert {v.voter_id: v.assigned for v in design.voters if v.assigned != "control"} == contacts
    assert design.expected_gain_forgone > 0 and body.suppression.randomized_out >= len(held)
    for v in design.voters:
        assert sum(v.probabilities.values()) == pytest.approx(1.0, abs=1e-12) and v.probabilities[v.assigned] > 0
    for field, value in (("holdout", 1), ("explore", -0.5), ("seed", -1)):
        bad = client.post("/plan", json={**request, field: value})
        assert bad.status_code == 422, bad.text
        assert bad.json()["detail"][0]["field"] == field
    assert client.post("/plan", json={"voters": records(segment), "budget": 60}).json()["design"] is None


def test_plan_sensitivity_on_request(client, model, segment):
    from serving.plan_api import PlanResponse

    voters = records(segment)
    plain = PlanResponse.model_validate(plan(client, voters, 60).json())
    assert plain.sensitivity is None
    r = client.post("/plan", json={"voters": voters, "budget": 60, "sensitivity": True})
    assert r.status_code == 200, r.text
    body = PlanResponse.model_validate(r.json())
    assert body.total_expected_gain == pytest.approx(plain.total_expected_gain)
    assert [(s.arm, s.side) for s in body.sensitivity] == [
        (a.label, side) for a in model.arms for side in ("low", "high")]
    for s in body.sensitivity:
        assert s.scale >= 0 and s.replan_value >= s.plan_value
        assert s.regret == pytest.approx(s.replan_value - s.plan_value)
        assert (s.voters_moved == 0) == (s.regret == 0)


@pytest.mark.parametrize(("payload", "status", "needle"), [
    ({"budget": 10, "costs": {"arms": {"Billboard": {"cost": 1}}}}, 422, "costs.arms"),
    ({"budget": 10, "sensitivity": "maybe"}, 400, "sensitivity"),
    ({"budget": -5}, 400, "budget"),
    ({"budget": 10, "costs": {"channels": {"phone": {"capacity": "many"}}}}, 400, "capacity"),
    ({"budget": 10, "voters": [{"voter_id": "a", "age": "old"}]}, 422, "age"),
])
def test_plan_errors_name_the_field(client, segment, payload, status, needle):
    request = {"voters": records(segment.head(5)), **payload}
    r = client.post("/plan", json=request)
    assert r.status_code == status, r.text
    assert needle in r.text
    if needle == "costs.arms":  # a PlanError: its field, not a guess from the message
        assert r.json()["detail"] == [{"field": "costs.arms", "message": r.json()["error"]}]


def test_plan_needs_a_key(service):
    r = httpx.post(f"{service.base_url}/plan", json={"voters": [], "budget": 1})
    assert r.status_code == 401


# -- GET /report -----------------------------------------------------------------------
def test_report_serves_the_served_runs_model_report(service, client, trained, tmp_path, monkeypatch):
    import mlflow

    from serving.model_report import MODEL_REPORT_ARTIFACT, ReportNotFound, fetch_model_report

    assert httpx.get(f"{service.base_url}/report").status_code == 401
    try:
        logged = fetch_model_report(trained.run_id)
    except ReportNotFound:
        r = client.get("/report")
        assert r.status_code == 404 and f"persuade report --run {trained.run_id}" in r.json()["error"]
        from training.model_report import ModelReport

        monkeypatch.setenv("PERSUADE_HASH_KEY", HASH_KEY)  # the report counts suppressions of the run's table
        ModelReport(shap_rows=300).write(trained.run_id, tmp_path / "model.html")
        logged = fetch_model_report(trained.run_id)
    r = client.get("/report")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.content == logged and trained.run_id.encode() in r.content
    with mlflow.start_run() as bare:
        pass
    with pytest.raises(ReportNotFound, match=MODEL_REPORT_ARTIFACT):
        fetch_model_report(bare.info.run_id)


# -- model card and docs ---------------------------------------------------------------
def test_model_card(client, trained, model):
    card = ModelCard.model_validate(client.get("/model").json())
    assert (card.name, card.version, card.run_id) == (trained.model_name, trained.version, trained.run_id)
    assert {a.label: a.channel for a in card.arms} == {"Mail": "mail", "Phone": "phone", "Text": "text",
                                                       "Canvass": "canvass"}
    assert card.features == model.feature_names and card.input_features == model.input_features
    assert set(PII_COLUMNS) <= set(card.excluded) and "sex" in card.excluded
    assert card.fingerprint["sha256"] == trained.fingerprint["sha256"]
    assert card.metrics and card.reload.state == "ok"


def test_openapi_documents_the_api(service):
    spec = httpx.get(f"{service.base_url}/docs.json").json()
    body = spec["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"voters", "explain", "top_k"} <= set(body["properties"])
    assert body["properties"]["voters"]["maxItems"] == MAX_VOTERS
    assert "get" in spec["paths"]["/model"]


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_no_server_errors(service, mode):
    """Schemathesis against the service's own OpenAPI spec, with a valid key: never a 5xx, and every
    answer as the spec says (its status documented, its body valid against the documented schema,
    its content type the documented one).

    Positive cases follow the spec; negative ones break it on purpose (they must get a 4xx),
    for the operations that take a body (the others have nothing to break).
    """
    schema = schemathesis.openapi.from_url(f"{service.base_url}/docs.json", headers=AUTH)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/score", "/model", "/admin/reload"}
    if mode == schemathesis.GenerationMode.NEGATIVE:
        operations = [op for op in operations if len(list(op.body))]
        assert {op.path for op in operations} >= {"/score"}
    failures: list[str] = []
    for operation in operations:
        fuzz(operation, mode, service.base_url, failures)
    assert not failures, failures[:5]


def test_persuade_serve_runs_the_service(champion_uri, trained):
    """``persuade serve --model URI --host 127.0.0.1 --port N`` serves the model for real."""
    port = free_port()
    persuade = shutil.which("persuade") or str(Path(sys.executable).with_name("persuade"))
    command = [persuade, "serve", "--model", champion_uri, "--host", "127.0.0.1", "--port", str(port)]
    svc = ServiceProcess(api_keys=[KEY], port=port, command=command)
    with svc, svc.client(KEY, timeout=60) as client:
        assert client.get("/model").json()["version"] == trained.version
        assert score(client, [{"voter_id": "cli-1", "age": 50}]).status_code == 200
    assert f"serving {champion_uri}" in svc.log
    svc.cleanup()


CONTRACT_CHECKS = (not_a_server_error, status_code_conformance, response_schema_conformance,
                   content_type_conformance)


def fuzz(operation, mode, base_url: str, failures: list[str]) -> None:
    """Up to 25 generated requests to one operation; 5xx answers and answers that break the spec
    (:data:`CONTRACT_CHECKS`) are appended to ``failures``."""

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case):
        response = case.call(base_url=base_url, headers=AUTH, timeout=120)
        for contract in CONTRACT_CHECKS:
            try:
                case.validate_response(response, checks=(contract,), headers=AUTH)
            except FailureGroup as exc:
                failures.append(f"{operation.method.upper()} {operation.path}: {response.status_code} "
                                f"{contract.__name__}: {str(exc)[:300]}")

    check()
