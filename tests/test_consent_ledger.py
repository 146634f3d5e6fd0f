"""The consent ledger on a real SQLite file and a real PostgreSQL server, replies, the feed, the CLI.

PostgreSQL is Debian's server, started for the session by ``tests/conftest.py``
(``postgres_server``) on a Unix socket in a temp dir; each test gets a fresh database.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import secrets
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from ledger_writer import STOP_TIME, phone, write_for_a_while

from features.consent import ConsentRules, ConsentTable
from features.consent_ledger import ConsentLedger, LedgerConflict, LedgerError, default_ledger_path, ledger_url
from features.consent_replies import ReplyKind, classify_reply
from features.ledger_rows import ledger_rows
from features.phones import PhoneHasher
from features.synthetic import SYNTHETIC_AS_OF, make_consent_table
from serving.bundle import ArmInfo
from serving.consent_feed import LedgerFeed, LedgerUnavailable
from serving.eligibility import ConsentEligibility
from serving.voters import VoterBatch
from training.cli import main

HASH_KEY = "ledger-test-key-" + secrets.token_hex(8)
HASHER = PhoneHasher(HASH_KEY)
ARMS = [ArmInfo("Text", "text", "text"), ArmInfo("Robocall", "phone", "prerecorded_call"),
        ArmInfo("Mail", "mail", "mail")]
WRITERS, WRITE_SECONDS = 16, 10.0  # issue 19: sixteen writers for ten seconds, on each backend


def rows(events: list[dict]) -> pd.DataFrame:
    """Ledger rows of raw events, as the HTTP intake makes them (no timestamp: when received)."""
    return ledger_rows(pd.DataFrame(events), hasher=HASHER, time_on_receipt=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path) -> str:
    """Where a ledger lives: a SQLite file, or a fresh database on the test PostgreSQL server."""
    return str(tmp_path / "ledger.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture
def ledger(location):
    with ConsentLedger(location, hasher=HASHER) as led:
        yield led


# -- storage ---------------------------------------------------------------------------
def test_the_default_ledger_is_a_sqlite_file_in_wal_mode_synced_at_every_commit(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSUADE_HOME", str(tmp_path))
    monkeypatch.delenv("PERSUADE_CONSENT_LEDGER", raising=False)
    assert default_ledger_path() == tmp_path / "consent_ledger" / "ledger.db"
    with ConsentLedger.from_env(hasher=HASHER) as led:
        with led.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert led.describe()["url"] == f"sqlite:///{tmp_path}/consent_ledger/ledger.db"
    for bad in ("mysql+pymysql://u@localhost/db", "sqlite://", "sqlite:///:memory:"):
        with pytest.raises(LedgerError, match="PERSUADE_CONSENT_LEDGER"):
            ledger_url(bad)


def test_append_is_idempotent_by_event_id(ledger):
    batch = [{"event_id": "sms-1", "phone": phone(1), "reply": "STOP"},
             {"event_id": "door-1", "voter_id": "V1", "event": "do_not_contact", "source": "internal"}]
    first = ledger.append(rows(batch), received_from="webhook")
    assert not first["duplicate"].any() and first["status"].tolist() == ["applied", "applied"]
    seq = ledger.last_seq()
    time.sleep(0.05)  # a retry arrives later: the event is the same (its time is its first receipt)
    again = ledger.append(rows(batch), received_from="retry")
    assert again["duplicate"].all() and ledger.last_seq() == seq
    assert again["seq"].tolist() == first["seq"].tolist()
    assert again["received_from"].tolist() == ["webhook", "webhook"]
    assert again["timestamp"].tolist() == first["timestamp"].tolist()
    assert first["timestamp"].iloc[0] == first["received_at"].iloc[0]
    with pytest.raises(LedgerConflict, match="'sms-1'"):  # same id, another number: refused, batch and all
        ledger.append(rows([{"event_id": "new-1", "voter_id": "V9", "event": "do_not_contact"},
                            {"event_id": "sms-1", "phone": phone(2), "reply": "STOP"}]), received_from="x")
    with pytest.raises(LedgerConflict, match="'door-2'"):  # an id twice in one batch, two contents
        ledger.append(rows([{"event_id": "door-2", "voter_id": "V2", "event": "do_not_contact"},
                            {"event_id": "door-2", "voter_id": "V3", "event": "do_not_contact"}]), received_from="x")
    stored = ledger.read()
    assert stored["event_id"].tolist() == ["sms-1", "door-1"] and ledger.last_seq() == seq


def test_phone_numbers_are_never_stored(ledger, location):
    spellings = ["(202) 555-0123", "+1 202 555 0123", "202.555.0123", 2025550123]
    ledger.append(rows([{"event_id": f"sms-{i}", "phone": p, "reply": "Para ya, mi número es 202-555-0123"}
                        for i, p in enumerate(spellings)]), received_from="webhook")
    stored = ledger.read()
    assert stored["phone_hash"].nunique() == 1 and stored["reply"].iloc[0] == "Para ya, mi número es [phone]"
    everything = stored.astype(str).to_csv() + ledger.as_table().astype(str).to_csv()
    if location.endswith(".db"):
        ledger.close()
        everything += "".join(p.read_bytes().decode("latin-1") for p in Path(location).parent.glob("ledger.db*"))
    for needle in ("2025550123", "555-0123", "555 0123", "555.0123"):
        assert needle not in everything


def test_a_ledger_hashed_with_another_key_is_refused(location):
    with ConsentLedger(location, hasher=HASHER) as led:
        led.append(rows([{"event_id": "sms-1", "phone": phone(1), "reply": "STOP"}]), received_from="t")
    other = PhoneHasher("another-key-" + secrets.token_hex(8))
    with ConsentLedger(location, hasher=other) as led:
        # the one key check of features.phones (PhoneHasher.verify_key_check), worded as a consent table's
        with pytest.raises(LedgerError, match=rf"^the ledger's phone hashes: made with another key \(key check "
                                              rf"\['{HASHER.key_check()}'\], this key's is {other.key_check()}\)"):
            led.check_key()
        with pytest.raises(LedgerError, match="another key"):
            LedgerFeed(led)
        with pytest.raises(LedgerError, match="another key"):
            led.append(ledger_rows(pd.DataFrame([{"event_id": "sms-2", "phone": phone(2), "reply": "STOP"}]),
                                   hasher=other, time_on_receipt=True), received_from="t")
        assert led.read()["event_id"].tolist() == ["sms-1"]


# -- 16 writers at once ----------------------------------------------------------------
def test_sixteen_concurrent_writers_lose_no_acknowledged_event(ledger, location, tmp_path):
    # Forked from a fork server that has imported only tests/ledger_writer.py (and through it
    # features, pandas, SQLAlchemy) once: each writer is a process of its own with nothing of
    # this one, without sixteen interpreters importing the same libraries.
    writers = multiprocessing.get_context("forkserver")
    writers.set_forkserver_preload(["ledger_writer"])
    ready, start = writers.Queue(), writers.Event()
    outs = [tmp_path / f"writer-{k}.json" for k in range(WRITERS)]
    procs = [writers.Process(target=write_for_a_while,
                           args=(location, HASH_KEY, k, WRITE_SECONDS, ready, start, str(outs[k])))
             for k in range(WRITERS)]
    for p in procs:
        p.start()
    assert sorted(ready.get(timeout=600) for _ in procs) == list(range(WRITERS))
    start.set()  # all at once
    seen, last = [], 0  # a reader polling as the service's feed does: every event exactly once
    while any(p.is_alive() for p in procs):
        new = ledger.read(since=last)
        if len(new):
            seen += new["event_id"].tolist()
            last = int(new["seq"].max())
        time.sleep(0.02)
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    seen += ledger.read(since=last)["event_id"].tolist()
    stored = ledger.read()
    assert stored["event_id"].is_unique and stored["seq"].is_unique
    assert sorted(seen) == sorted(stored["event_id"]), "a reader following seq missed or repeated events"
    by_id = stored.set_index("event_id")
    acked: dict[str, set[int]] = {}
    for k, out in enumerate(outs):
        result = json.loads(out.read_text())
        assert result["errors"] == [], result["errors"][:3]
        mine = [e for e, _ in result["acked"] if e.startswith(f"w{k}-")]
        assert mine, f"writer {k} got nothing acknowledged"
        for event_id, seq in result["acked"]:
            acked.setdefault(event_id, set()).add(seq)
    lost = sorted(set(acked) - set(by_id.index))
    assert not lost, f"{len(lost)} acknowledged events are not in the ledger, e.g. {lost[:3]}"
    assert all(seqs == {int(by_id.loc[e, "seq"])} for e, seqs in acked.items()), "an ack named another row"
    assert set(by_id.index) == set(acked), "the ledger holds events nobody was told were stored"
    dnc = by_id[by_id.index.str.fullmatch(r"w\d+-\d+")]
    assert (dnc["voter_id"] == "V" + dnc.index.str[1:]).all() and (dnc["event"] == "do_not_contact").all()
    sms = by_id[by_id.index.str.endswith("-sms")]
    numbers = [phone(int(w) * 1000 + int(i)) for w, i in sms.index.str.extract(r"w(\d+)-(\d+)-sms").to_numpy()]
    assert sms["phone_hash"].tolist() == HASHER.hash_raw(pd.Series(numbers)).tolist()
    assert (sms["keyword"] == "STOP").all() and (sms["timestamp"] == pd.Timestamp(STOP_TIME)).all()
    assert len(acked) > WRITERS * 3


# -- replies ---------------------------------------------------------------------------
REPLIES = [
    # CTIA keywords and the FCC's 2024 list, alone or in a sentence
    ("STOP", "opt_out", "STOP"), ("stop.", "opt_out", "STOP"), ("Stop All", "opt_out", "STOP"),
    ("STOPALL", "opt_out", "STOP"), ("unsubscribe", "opt_out", "UNSUBSCRIBE"), ("Cancel", "opt_out", "CANCEL"),
    ("END", "opt_out", "END"), ("quit", "opt_out", "QUIT"), ("REVOKE", "opt_out", "REVOKE"),
    ("opt-out", "opt_out", "OPT OUT"), ("OptOut", "opt_out", "OPT OUT"), ("please stop texting me", "opt_out", "STOP"),
    ("I want to opt out of these", "opt_out", "OPT OUT"), ("don't text me again", "opt_out", "OTHER"),
    ("Remove me from your list", "opt_out", "OTHER"), ("wrong number", "opt_out", "OTHER"),
    # Spanish
    ("PARA", "opt_out", "STOP"), ("parar", "opt_out", "STOP"), ("Alto", "opt_out", "STOP"),
    ("detener", "opt_out", "STOP"), ("No más", "opt_out", "STOP"), ("no mas mensajes por favor", "opt_out", "STOP"),
    ("Cancelar", "opt_out", "CANCEL"), ("BAJA", "opt_out", "UNSUBSCRIBE"), ("dar de baja", "opt_out", "UNSUBSCRIBE"),
    ("Fin", "opt_out", "END"), ("basta", "opt_out", "STOP"), ("no me llamen", "opt_out", "OTHER"),
    # opt-in and help: no effect on consent
    ("START", "opt_in", None), ("Unstop", "opt_in", None), ("yes", "opt_in", None), ("Sí", "opt_in", None),
    ("HELP", "help", None), ("ayuda", "help", None),
    # unclear: kept for review, revokes automated contact meanwhile
    ("who is this?", "unclear", "OTHER"), ("para mañana", "unclear", "OTHER"), ("the end is near", "unclear", "OTHER"),
    ("yes but not now", "unclear", "OTHER"), ("ok", "unclear", "OTHER"), ("", "unclear", "OTHER"),
]


@pytest.mark.parametrize(("text", "kind", "keyword"), REPLIES)
def test_replies_are_read_with_the_ctia_and_fcc_keywords(text, kind, keyword):
    reading = classify_reply(text)
    assert (reading.kind.value, reading.keyword) == (kind, keyword)
    assert reading.revokes == (kind in ("opt_out", "unclear"))
    stored = rows([{"event_id": "r-1", "phone": phone(1), "reply": text}]).iloc[0]
    expected = {"opt_out": ("revocation", "applied"), "unclear": ("revocation", "review")}.get(kind)
    assert (stored["event"], stored["status"]) == (expected or (None, "not_applied"))
    assert stored["keyword"] == (keyword if expected else None)


def test_an_over_long_or_non_text_reply_is_refused():
    with pytest.raises(LedgerError, match="column 'reply', row 0: a reply may have at most 1600"):
        rows([{"event_id": "r-1", "phone": phone(1), "reply": "x" * 1601}])
    with pytest.raises(LedgerError, match="column 'reply'"):
        rows([{"event_id": "r-1", "phone": phone(1), "reply": 42}])
    assert classify_reply("x" * 1600).kind == ReplyKind.unclear


@pytest.fixture
def consented(tmp_path) -> Path:
    """A consent table: numbers 1-4 are cell phones with written consent to texts and calls; 5 has none."""
    table = pd.DataFrame(
        [{"phone": phone(i), "event": "line_type", "line_type": "cell"} for i in range(1, 6)]
        + [{"phone": phone(i), "event": "consent", "scope": "all", "source": "written",
            "timestamp": "2026-01-05T10:00:00+00:00"} for i in range(1, 5)])
    path = tmp_path / "consent.parquet"
    table.to_parquet(path)
    return path


def decide(rule: ConsentEligibility, numbers: list[int]) -> tuple[np.ndarray, np.ndarray]:
    batch = VoterBatch(np.array([f"V{i}" for i in numbers], dtype=object), {},
                       {"phone": np.array([phone(i) for i in numbers], dtype=object)})
    decided = rule(batch, ARMS)
    return decided.allowed, decided.reason


def test_replies_change_the_very_next_decision(ledger, consented):
    rule = ConsentEligibility(consented, SYNTHETIC_AS_OF, hasher=HASHER, feed=LedgerFeed(ledger))
    allowed, _ = decide(rule, [1, 2, 3, 4, 5])
    assert allowed[:4, :2].all() and not allowed[4, :2].any() and allowed[:, 2].all()
    stored = ledger.append(rows([
        {"event_id": "r1", "phone": phone(1), "reply": "Stop texting me"},
        {"event_id": "r2", "phone": phone(2), "reply": "no más"},
        {"event_id": "r3", "phone": phone(3), "reply": "quién es?"},  # unclear
        {"event_id": "r4", "phone": phone(4), "reply": "YES"},
        {"event_id": "r5", "phone": phone(5), "reply": "START"},  # an opt-in word grants nothing
    ]), received_from="webhook")
    assert stored["status"].tolist() == ["applied", "applied", "review", "not_applied", "not_applied"]
    allowed, reason = decide(rule, [1, 2, 3, 4, 5])
    assert reason[:3, :2].tolist() == [["revoked", "revoked"]] * 3, "an opt-out or unclear reply must revoke"
    assert allowed[3, :2].all() and not allowed[4, :2].any() and allowed[:, 2].all()
    ledger.append(rows([{"event_id": "r6", "phone": phone(1), "reply": "UNSTOP"}]), received_from="webhook")
    assert decide(rule, [1])[1][0, :2].tolist() == ["revoked", "revoked"], "UNSTOP alone must not restore consent"
    assert ledger.review_queue()["event_id"].tolist() == ["r3"]
    with pytest.raises(LedgerError, match="review decision 'maybe'"):
        ledger.resolve("r3", decision="maybe", reviewer="reviewer-1")
    ledger.resolve("r3", decision="not_opt_out", reviewer="reviewer-1")
    assert ledger.review_queue().empty
    assert decide(rule, [3])[0][0, :2].all(), "a reply read as no opt-out must stop revoking"
    ledger.resolve("r3", decision="not_opt_out", reviewer="reviewer-1")  # the same decision again: no-op
    with pytest.raises(LedgerConflict):
        ledger.resolve("r3", decision="opt_out", reviewer="reviewer-2")
    with pytest.raises(LedgerError, match="awaiting review"):
        ledger.resolve("r1", decision="not_opt_out", reviewer="reviewer-1")


def test_the_service_rule_takes_the_ledger_feed_from_its_factory(ledger, consented, monkeypatch):
    monkeypatch.setenv("PERSUADE_HASH_KEY", HASH_KEY)
    feed = LedgerFeed(ledger)
    rule = ConsentEligibility.from_env({"PERSUADE_CONSENT_TABLE": str(consented),
                                        "PERSUADE_CONSENT_AS_OF": SYNTHETIC_AS_OF}, feed=feed)
    assert rule.feed is feed and decide(rule, [1])[0][0, :2].all()
    ledger.append(rows([{"event_id": "factory-1", "phone": phone(1), "reply": "STOP"}]), received_from="webhook")
    assert decide(rule, [1])[1][0, :2].tolist() == ["revoked", "revoked"]
    assert rule.describe()["ledger"]["events_in_effect"] == 1


def test_the_feed_sees_other_writers_and_fails_closed_without_the_ledger(ledger, location, consented):
    rule = ConsentEligibility(consented, SYNTHETIC_AS_OF, hasher=HASHER, feed=LedgerFeed(ledger))
    assert decide(rule, [1])[0].all()
    with ConsentLedger(location, hasher=HASHER) as other:  # e.g. another worker of the service
        other.append(rows([{"event_id": "door-1", "voter_id": "V1", "event": "do_not_contact"},
                           {"event_id": "sms-2", "phone": phone(2), "reply": "STOP",
                            "timestamp": "2099-01-01T00:00:00+00:00"}]), received_from="other")
    allowed, reason = decide(rule, [1, 2])
    assert not allowed[0].any() and set(reason[0]) == {"do_not_contact"}
    assert reason[1, :2].tolist() == ["revoked", "revoked"], "a revocation dated ahead applies on receipt"
    with ledger.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE consent_events RENAME TO consent_events_away"))
    try:
        with pytest.raises(LedgerUnavailable, match="fail closed"):
            decide(rule, [3])
        assert rule.feed.describe()["error"].startswith(("OperationalError", "ProgrammingError"))
    finally:
        with ledger.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE consent_events_away RENAME TO consent_events"))
    assert decide(rule, [3])[0].all() and rule.feed.describe()["error"] is None


# -- persuade consent import|export ----------------------------------------------------
@pytest.fixture
def runner(monkeypatch):
    monkeypatch.setenv("PERSUADE_HASH_KEY", HASH_KEY)
    return CliRunner(env={"COLUMNS": "250"})


def test_cli_import_and_export_round_trip(runner, location, tmp_path):
    voters = pd.DataFrame({"voter_id": [f"SYN-{i:05d}" for i in range(400)], "phone": [phone(i) for i in range(400)]})
    table = make_consent_table(voters, seed=4)
    source = tmp_path / "consent.parquet"
    table.to_parquet(source)
    first = runner.invoke(main, ["consent", "import", "--table", str(source), "--ledger", location])
    assert first.exit_code == 0, first.output
    assert f"imported {len(table):,} events from consent.parquet: {len(table):,} new, 0 already" in first.output
    again = runner.invoke(main, ["consent", "import", "--table", str(source), "--ledger", location])
    assert f"0 new, {len(table):,} already in the ledger" in again.output
    decided = {}
    for fmt in ("parquet", "csv"):
        out = tmp_path / f"export.{fmt}"
        done = runner.invoke(main, ["consent", "export", "--output", str(out), "--ledger", location])
        assert done.exit_code == 0 and f"exported {len(table):,} events" in done.output, done.output
        text = out.read_bytes().decode("latin-1")
        assert not any(p in text for p in voters["phone"].head(50)), "an export holds a phone number"
        decided[fmt] = ConsentRules(ConsentTable.read(out, HASHER), as_of=SYNTHETIC_AS_OF,
                                   hasher=HASHER).for_voters(voters, ARMS)
        back = runner.invoke(main, ["consent", "import", "--table", str(out), "--ledger", location])
        assert f"0 new, {len(table):,} already in the ledger" in back.output, back.output
        fresh = tmp_path / f"fresh-{fmt}.db"
        moved = runner.invoke(main, ["consent", "import", "--table", str(out), "--ledger", str(fresh)])
        assert f"{len(table):,} new" in moved.output, moved.output
    original = ConsentRules(ConsentTable.from_frame(table, HASHER), as_of=SYNTHETIC_AS_OF,
                           hasher=HASHER).for_voters(voters, ARMS)
    assert (original["eligible_text"] != original["eligible_mail"]).any()  # the table decides something
    for fmt, got in decided.items():
        pd.testing.assert_frame_equal(got, original, obj=f"decisions from the {fmt} export")


def test_cli_import_error_names_the_column_never_the_number(runner, tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame([{"phone": "(202) 555-0147 ext. 12", "event": "revocation", "keyword": "STOP",
                   "timestamp": "2026-11-01T00:00:00Z"}]).to_csv(bad, index=False)
    done = runner.invoke(main, ["consent", "import", "--table", str(bad), "--ledger", str(tmp_path / "l.db")])
    assert done.exit_code == 2 and "'phone'" in done.output
    assert "555-0147" not in done.output and "5550147" not in done.output
    assert ConsentLedger(tmp_path / "l.db", hasher=HASHER).read().empty


# -- persuade consent review -----------------------------------------------------------
def test_cli_review_lists_unclear_replies_and_records_each_reading_as_a_new_event(runner, tmp_path, consented):
    location = str(tmp_path / "ledger.db")  # a real SQLite file, as the service writes it
    ledger = ConsentLedger(location, hasher=HASHER)
    ledger.append(rows([
        {"event_id": "u1", "phone": phone(1), "reply": "quién es? mi otro número es 202-555-0177"},
        {"event_id": "u2", "phone": phone(2), "reply": "maybe later"},
        {"event_id": "u3", "voter_id": "V3", "phone": phone(3), "reply": "ok whatever"},
        {"event_id": "s4", "phone": phone(4), "reply": "STOP"},
    ]), received_from="webhook")
    rule = ConsentEligibility(consented, SYNTHETIC_AS_OF, hasher=HASHER, feed=LedgerFeed(ledger))
    assert decide(rule, [1, 2, 3, 4])[1][:, 0].tolist() == ["revoked"] * 4  # unclear replies revoke meanwhile

    def review(*args: str):
        return runner.invoke(main, ["consent", "review", "--ledger", location, *args])

    listed = review()
    assert listed.exit_code == 0, listed.output
    assert "3 unclear replies awaiting review" in listed.output
    for event_id, text in (("u1", "quién es?"), ("u2", "maybe later"), ("u3", "ok whatever")):
        assert f"{event_id}  received " in listed.output and f"reply: {text}" in listed.output
    assert "voter V3" in listed.output and "s4" not in listed.output
    assert f"number (hash) {HASHER.hash('+12025550002')[:12]}…" in listed.output  # a hash prefix, never the number
    for number in [phone(1), phone(2), phone(3), "202-555-0177"]:
        assert number[-8:] not in listed.output and re.sub(r"\D", "", number)[-7:] not in listed.output
    before = ledger.read()
    for event_id, reading in (("u1", "stop"), ("u2", "consent"), ("u3", "other")):
        done = review("--resolve", event_id, "--as", reading, "--reviewer", "ana")
        assert done.exit_code == 0, done.output
        assert f"resolved {event_id} as {reading}: " in done.output
    after = ledger.read()
    assert after.head(len(before)).equals(before)  # the replies are never edited
    added = after.iloc[len(before):]
    assert added.event_id.tolist() == ["review:u1", "review:u2", "review:u3"]
    assert added.resolves.tolist() == ["u1", "u2", "u3"] and added.status.eq("resolution").all()
    assert added.review_decision.tolist() == ["opt_out", "opt_in", "not_opt_out"]
    assert added.received_from.eq("review:ana").all() and added.phone_hash.isna().all()
    _, reason = decide(rule, [1, 2, 3, 4])
    assert reason[:, 0].tolist() == ["revoked", None, None, "revoked"]  # stop keeps it; consent and other lift it
    assert "0 unclear replies awaiting review" in review().output
    same = review("--resolve", "u1", "--as", "stop", "--reviewer", "ana")  # the same reading again: a no-op
    assert same.exit_code == 0 and "(already recorded)" in same.output and len(ledger.read()) == len(after)
    other = review("--resolve", "u1", "--as", "other")
    assert other.exit_code == 2 and "resolved before with another reading" in " ".join(other.output.split())
    unknown = review("--resolve", "s4", "--as", "other")  # an opt-out is not a reply awaiting review
    assert unknown.exit_code == 2 and "no reply awaiting review" in unknown.output
    assert review("--resolve", "u2").exit_code == 2 and review("--as", "stop").exit_code == 2
    assert len(ledger.read()) == len(after)
    ledger.close()

