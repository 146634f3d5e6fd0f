"""``POST /consent/events`` end to end: a real ``bentoml serve`` on 127.0.0.1 with two workers.

The service runs once with the consent ledger in a SQLite file and once in a database on
the test PostgreSQL server (``tests/conftest.py``). An opt-out posted to one connection
must hold on the very next request on another (which may reach the other worker), and
after the worker that acknowledged it is killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal

import httpx
import numpy as np
import psutil
import pytest
from test_service import eventually, records

from features.consent_ledger import ConsentLedger
from features.phones import PhoneHasher
from features.synthetic import SYNTHETIC_AS_OF
from serving.auth import KeyRing, key_digest
from serving.launcher import ServiceProcess

KEY = "sk-score-" + secrets.token_hex(12)
CONSENT_KEY = "sk-consent-" + secrets.token_hex(12)
AUTH = {"Authorization": f"Bearer {KEY}"}
CONSENT_AUTH = {"Authorization": f"Bearer {CONSENT_KEY}"}
HASH_KEY = "events-hash-key-" + secrets.token_hex(8)
OPT_OUTS = ["STOP", "Para", "No más", "cancelar", "Unsubscribe", "stop texting me", "BAJA", "quit",
            "ya no me escriban", "END", "detener", "Opt out"]
AUTOMATED = ("Text",)  # the synthetic program's arm on an automated channel (texts need consent)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def ledger_location(request, tmp_path_factory) -> str:
    if request.param == "sqlite":
        return str(tmp_path_factory.mktemp("ledger") / "ledger.db")
    return request.getfixturevalue("postgres_database")()


@pytest.fixture(scope="module")
def service(champion_uri, campaign_dir, ledger_location, tmp_path_factory):
    table = tmp_path_factory.mktemp("consent") / "consent.parquet"
    shutil.copy(campaign_dir / "consent.parquet", table)  # a fresh file: not stale
    svc = ServiceProcess(model_uri=champion_uri, api_keys=[KEY],
                         env={"PERSUADE_RELOAD_SECONDS": "0", "PERSUADE_WORKERS": "2",
                              "PERSUADE_CONSENT_TABLE": str(table), "PERSUADE_HASH_KEY": HASH_KEY,
                              "PERSUADE_CONSENT_KEYS": CONSENT_KEY, "PERSUADE_CONSENT_LEDGER": ledger_location,
                              # texts are sent within the calling window then (quiet hours); opt-outs apply
                              # whatever their date, so the ones posted now hold at once all the same
                              "PERSUADE_CONSENT_AS_OF": SYNTHETIC_AS_OF})
    with svc:
        assert eventually(lambda: serving(svc) == 2, timeout=300), "both workers must load the model"
        yield svc
    svc.cleanup()


def serving(service) -> int:
    """How many times a worker loaded the model (each worker once, a restarted one again)."""
    return service.log.count("now serving it")


@pytest.fixture(scope="module")
def texted(service, campaign) -> list[dict]:
    """Voters whose best arm is a text they may get (consent on their number), as request records."""
    voters = records(campaign.voter_file.sample(1500, random_state=11).reset_index(drop=True))
    scores = httpx.post(f"{service.base_url}/score", json={"voters": voters}, headers=AUTH, timeout=120).json()
    chosen = [v for v, s in zip(voters, scores["scores"], strict=True)
              if s["best_arm"] == "Text" and s["eligible"]["Text"]]
    assert len(chosen) >= 16, "the sample must hold voters whose best arm is an allowed text"
    return chosen


def post_events(service, events: list[dict], headers=CONSENT_AUTH) -> httpx.Response:
    """A new connection each time: the request may reach either worker."""
    return httpx.post(f"{service.base_url}/consent/events", json={"events": events}, headers=headers, timeout=60)


def score_one(service, voter: dict) -> dict:
    r = httpx.post(f"{service.base_url}/score", json={"voters": [voter]}, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["scores"][0]


def e164(voter: dict) -> str:
    return "+1" + "".join(c for c in voter["phone"] if c.isdigit())[-10:]


def backend_of(location: str) -> str:
    return "postgresql" if location.startswith("postgresql") else "sqlite"


def workers(service) -> list[psutil.Process]:
    """The live worker processes of the service (killed ones not yet reaped are left out)."""
    live = []
    for proc in psutil.Process(service.process.pid).children(recursive=True):
        try:
            if "_bentoml_impl.worker" in " ".join(proc.cmdline()):
                live.append(proc)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue
    return live


def test_consent_keys_are_a_key_list_of_their_own(tmp_path):
    keys_file = tmp_path / "consent_keys.txt"
    keys_file.write_text(f"# the texting platform's webhook\n{key_digest('ck-file')}\n")
    ring = KeyRing.from_env({"PERSUADE_API_KEYS": "sk-1", "PERSUADE_ADMIN_KEYS": "ak-1",
                             "PERSUADE_CONSENT_KEYS": "ck-env", "PERSUADE_CONSENT_KEYS_FILE": str(keys_file)})
    assert ring.identify_consent("ck-file") == key_digest("ck-file")[:12] and ring.identify_consent("ck-env")
    assert ring.identify("ck-file") == (None, False) and ring.identify("ck-env") == (None, False)
    assert ring.identify_consent("sk-1") is None and ring.identify_consent("ak-1") is None
    keys_file.write_text("ck-file\n")  # a key itself, not its digest: refused
    with pytest.raises(ValueError, match="PERSUADE_CONSENT_KEYS_FILE"):
        KeyRing.from_env({"PERSUADE_CONSENT_KEYS_FILE": str(keys_file)})


def test_consent_events_take_their_own_keys(service):
    event = [{"event_id": "auth-1", "voter_id": "X", "event": "do_not_contact"}]
    assert post_events(service, event, headers={}).status_code == 401
    scoring_key = post_events(service, event, headers=AUTH)
    assert scoring_key.status_code == 403 and "consent-event key" in scoring_key.json()["error"]
    assert httpx.post(f"{service.base_url}/score", json={"voters": []}, headers=CONSENT_AUTH).status_code == 401
    assert httpx.get(f"{service.base_url}/model", headers=CONSENT_AUTH).status_code == 401


def test_an_opt_out_holds_on_the_very_next_score_and_plan(service, texted, ledger_location):
    backend = backend_of(ledger_location)
    voters = texted[:12]
    planned = httpx.post(f"{service.base_url}/plan", json={"voters": voters, "budget": 1000}, headers=AUTH,
                         timeout=120).json()
    texts = {c["voter_id"] for c in planned["channels"].get("text", {}).get("contacts", []) if c["arm"] == "Text"}
    assert texts, "before the opt-outs the plan texts some of these voters"
    bodies = []
    for i, voter in enumerate(voters):
        r = post_events(service, [{"event_id": f"{backend}-stop-{voter['voter_id']}", "phone": e164(voter),
                                   "reply": OPT_OUTS[i % len(OPT_OUTS)]}])
        assert r.status_code == 200, r.text
        assert r.json()["events"][0]["event"] == "revocation" and r.json()["recorded"] == 1
        got = score_one(service, voter)  # at once, on a new connection
        assert got["eligible"]["Text"] is False and got["ineligible_reasons"]["Text"] == "revoked", got
        assert got["best_arm"] not in AUTOMATED
        bodies.append(r.text + json.dumps(got))
    planned = httpx.post(f"{service.base_url}/plan", json={"voters": voters, "budget": 1000}, headers=AUTH,
                         timeout=120).json()
    arms = {c["arm"] for ch in planned["channels"].values() for c in ch["contacts"]}
    assert arms and not arms & set(AUTOMATED), "a voter who opted out was planned for a text"
    consent = httpx.get(f"{service.base_url}/model", headers=AUTH).json()["consent"]
    assert consent["ledger"]["backend"] == backend and consent["ledger"]["error"] is None
    numbers = [v["phone"] for v in voters] + [e164(v) for v in voters]
    assert not [n for n in numbers if n in service.log or any(n in b for b in bodies)]


def test_an_unclear_reply_and_a_do_not_contact_apply_at_once(service, texted, ledger_location):
    backend = backend_of(ledger_location)
    unclear, door = texted[12], texted[13]
    r = post_events(service, [{"event_id": f"{backend}-reply-1", "phone": e164(unclear), "reply": "quién habla?"},
                              {"event_id": f"{backend}-door-1", "voter_id": door["voter_id"],
                               "event": "do_not_contact", "source": "canvass"}])
    assert r.status_code == 200, r.text
    assert [e["status"] for e in r.json()["events"]] == ["review", "applied"]
    got = score_one(service, unclear)
    assert got["ineligible_reasons"]["Text"] == "revoked" and got["best_arm"] not in AUTOMATED
    got = score_one(service, door)
    assert set(got["ineligible_reasons"].values()) == {"do_not_contact"} and got["best_arm"] == "control"
    with ConsentLedger(ledger_location, hasher=PhoneHasher(HASH_KEY)) as ledger:
        assert f"{backend}-reply-1" in ledger.review_queue()["event_id"].tolist()


def test_repeats_are_idempotent_and_a_changed_repeat_is_409(service, ledger_location):
    backend = backend_of(ledger_location)
    event = {"event_id": f"{backend}-idem-1", "phone": "(202) 555-0101", "reply": "STOP"}
    first = post_events(service, [event])
    again = post_events(service, [event])
    assert first.status_code == again.status_code == 200
    assert again.json() == {"recorded": 0, "duplicates": 1,
                            "events": [{**first.json()["events"][0], "duplicate": True}]}
    changed = post_events(service, [{"event_id": f"{backend}-idem-2", "voter_id": "X1", "event": "do_not_contact"},
                                    {**event, "phone": "(202) 555-0102"}])
    assert changed.status_code == 409
    assert changed.json()["detail"] == [{"event": 1, "field": "event_id", "message": "already recorded with other "
                                                                                    "content"}]
    assert "555-010" not in changed.text
    assert post_events(service, [{"event_id": f"{backend}-idem-2", "voter_id": "X2",
                                  "event": "do_not_contact"}]).json()["recorded"] == 1, "nothing of a 409 is kept"


def test_bad_events_are_422_naming_the_field_and_never_the_number(service):
    events = [
        {"event_id": "bad-0", "phone": "202 555 01", "reply": "STOP"},  # not a number
        {"event_id": "bad-1", "phone": 2025550179.0, "reply": "STOP"},  # a float
        {"event_id": "bad-2", "phone": "(202) 555-0177", "reply": "STOP", "timestamp": "2026-11-01T10:00:00"},
        {"event_id": "bad-3", "phone": "(202) 555-0177", "event": "opt_out"},
        {"phone": "(202) 555-0177", "reply": "STOP"},  # no event_id
        {"event_id": "bad-5", "phone": "(202) 555-0177", "+12025550178": "STOP"},  # a field named by a number
        {"event_id": "bad-6", "phone": "(202) 555-0177", "event": "consent", "source": "written"},
        {"event_id": "bad-7", "phone": "(202) 555-0177", "reply": "STOP", "event": "revocation"},
        {"event_id": "stop-2025550179", "phone": "(202) 555-0177", "reply": "STOP"},  # an id holding a number
        {"event_id": "bad-9", "phone": "(202) 555-0177", "reply": "STOP", "timestamp": "2999-01-01T00:00:00Z"},
    ]
    r = post_events(service, events)
    assert r.status_code == 422, r.text
    found = {(d["event"], d["field"]) for d in r.json()["detail"]}
    assert found == {(0, "phone"), (1, "phone"), (2, "timestamp"), (3, "event"), (4, "event_id"), (5, "[phone]"),
                     (6, "scope"), (7, "event"), (8, "event_id"), (9, "timestamp")}
    assert r.json()["error"].startswith("event 0, field 'phone'")
    too_many = post_events(service, [{"event_id": f"m-{i}", "voter_id": "X", "event": "do_not_contact"}
                                     for i in range(1001)])
    assert too_many.status_code == 413
    for bad_shape in ({"events": "STOP"}, {"events": [1, 2]}):
        r2 = httpx.post(f"{service.base_url}/consent/events", json=bad_shape, headers=CONSENT_AUTH)
        assert 400 <= r2.status_code < 500
    digits = ["2025550177", "555-0177", "2025550178", "2025550179", "555 01"]
    assert eventually(lambda: "consent/events" in service.log)  # the audit lines are written
    assert not [d for d in digits if d in r.text or d in service.log]


def test_an_acknowledged_opt_out_survives_kill_9_of_the_workers(service, texted, ledger_location):
    backend = backend_of(ledger_location)
    voter = texted[14]
    event_id = f"{backend}-kill-{voter['voter_id']}"
    before, loaded = workers(service), serving(service)
    assert len(before) == 2
    r = post_events(service, [{"event_id": event_id, "phone": e164(voter), "reply": "STOP"}])
    assert r.status_code == 200, r.text
    for proc in before:  # right after the 200, whichever worker answered it
        os.kill(proc.pid, signal.SIGKILL)
    with ConsentLedger(ledger_location, hasher=PhoneHasher(HASH_KEY)) as ledger:
        stored = ledger.read().set_index("event_id")
        assert stored.loc[event_id, "status"] == "applied" and stored.loc[event_id, "event"] == "revocation"
        assert stored.loc[event_id, "phone_hash"] == PhoneHasher(HASH_KEY).hash(e164(voter))

    assert eventually(lambda: serving(service) == loaded + 2, timeout=300), \
        f"the workers did not come back:\n{service.log[-2000:]}"
    assert len(workers(service)) == 2 and not {p.pid for p in workers(service)} & {p.pid for p in before}
    got = score_one(service, voter)
    assert got["eligible"]["Text"] is False and got["ineligible_reasons"]["Text"] == "revoked"
    assert got["best_arm"] not in AUTOMATED
    assert np.isfinite(got["best_uplift"])
