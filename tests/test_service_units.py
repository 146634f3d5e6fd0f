"""The pieces of the service in-process: reasons, voter reading, keys, arm sharing, logs."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel, ValidationError

from features.consent import ConsentError, ConsentRules
from features.phones import HASH_KEY_ENV, MissingHashKeyError, PhoneHasher
from serving.arms import ArmEnsembles, shared_trees
from serving.audit import AuditRecord
from serving.auth import KeyRing
from serving.bundle import ArmInfo
from serving.eligibility import ConsentEligibility
from serving.log_privacy import PrivacyFilter
from serving.model_holder import ModelHolder, SmokeCheckError, smoke_check
from serving.reasons import top_reasons
from serving.registry import load_scoring_model
from serving.scoring import SegmentScorer
from serving.voters import VoterBatch, VoterError, VoterReader


@pytest.fixture(scope="module")
def loaded(champion_uri):
    return load_scoring_model(champion_uri)


# -- reasons ---------------------------------------------------------------------------
def test_top_reasons_are_the_largest_by_absolute_size():
    rng = np.random.default_rng(0)
    contributions = rng.normal(size=(500, 12))
    reasons = top_reasons(contributions, 4)
    phi = contributions[:, :-1]
    np.testing.assert_array_equal(reasons.base_value, contributions[:, -1])
    expected = np.sort(np.abs(phi), axis=1)[:, ::-1][:, :4]
    np.testing.assert_array_equal(np.abs(reasons.contribution), expected)
    np.testing.assert_array_equal(np.take_along_axis(phi, reasons.feature, axis=1), reasons.contribution)


def test_the_top_k_are_the_first_k_of_all_reasons_when_contributions_tie():
    """An arm served by its constant effect explains every voter with zeros: k must not pick among them at random."""
    contributions = np.zeros((50, 13))
    contributions[:, 7] = 0.01  # only one feature moves (as the turnout-shaped reference's turnout score)
    contributions[:, -1] = 0.05
    full, top = top_reasons(contributions, 12), top_reasons(contributions, 3)
    np.testing.assert_array_equal(top.feature, full.feature[:, :3])
    assert top.feature[0].tolist() == [7, 0, 1]


def test_all_reasons_add_up_and_ties_keep_feature_order():
    contributions = np.array([[0.5, -0.5, 0.0, 0.25, 1.0]])
    reasons = top_reasons(contributions, 10)  # more than the 4 features: all of them
    assert reasons.feature.tolist() == [[0, 1, 3, 2]]
    assert reasons.base_value[0] + reasons.contribution.sum() == pytest.approx(1.25)
    with pytest.raises(ValueError, match="k must be"):
        top_reasons(contributions, 0)
    with pytest.raises(ValueError, match="n_features"):
        top_reasons(np.zeros(3), 2)


# -- reading voters --------------------------------------------------------------------
def test_voter_reader_keeps_ids_and_features_only(loaded):
    model, _ = loaded
    reader = VoterReader(model)
    batch = reader.read([
        {"voter_id": 7, "age": "51", "hh_size": True, "urbanicity": "urban", "phone": "(212) 555-0147",
         "email": "x@example.org", "primary_18": None},
        {"voter_id": "B", "age": 30.5},
    ])
    assert batch.ids.tolist() == ["7", "B"]
    assert set(batch.columns) == set(model.input_features)
    assert batch.columns["age"].tolist() == [51.0, 30.5]
    assert batch.columns["hh_size"][0] == 1.0 and np.isnan(batch.columns["primary_18"]).all()
    assert batch.columns["urbanicity"].tolist() == ["urban", None]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("age", "(212) 555-0147", "non-numeric string"),
    ("age", float("inf"), "finite"),
    ("age", "1e999", "finite"),
    ("age", 10**400, "finite"),
    ("age", {"years": 3}, "an object"),
    ("hh_size", [1], "an array"),
    ("urbanicity", ["urban"], "an array"),
    ("voter_id", None, "is required"),
    ("voter_id", 1.5, "string or an integer"),
    ("voter_id", True, "string or an integer"),
])
def test_voter_reader_names_voter_and_field(loaded, field, value, message):
    reader = VoterReader(loaded[0])
    voters = [{"voter_id": "ok", "age": 40}, {"voter_id": "ok2", "age": 41}]
    voters[1][field] = value
    with pytest.raises(VoterError) as info:
        reader.read(voters)
    (problem,) = info.value.problems
    assert (problem.voter, problem.field) == (1, field)
    assert message in problem.message
    assert "555" not in str(info.value)


# -- keys ------------------------------------------------------------------------------
def test_key_ring_from_keys_and_digest_files(tmp_path):
    digest = hashlib.sha256(b"file-key").hexdigest()
    keys_file = tmp_path / "keys.sha256"
    keys_file.write_text(f"# field team keys\n{digest}  # dialer\n\n")
    ring = KeyRing.from_env({"PERSUADE_API_KEYS": "a-key, b-key", "PERSUADE_API_KEYS_FILE": str(keys_file),
                             "PERSUADE_ADMIN_KEYS": "root-key"})
    assert ring.identify("file-key") == (digest[:12], False)
    assert ring.identify("a-key")[0] == hashlib.sha256(b"a-key").hexdigest()[:12]
    assert ring.identify("root-key")[1] is True
    assert ring.identify("nope") == (None, False) and ring.identify("") == (None, False)
    keys_file.write_text("not-a-digest\n")
    with pytest.raises(ValueError, match="line 1"):
        KeyRing.from_env({"PERSUADE_API_KEYS_FILE": str(keys_file)})


def test_no_keys_refuses_everything(caplog):
    with caplog.at_level(logging.WARNING):
        ring = KeyRing.from_env({})
    assert ring.identify("anything") == (None, False)
    assert "refused" in caplog.text


# -- arms that share trees -------------------------------------------------------------
def test_shared_arm_computation_is_each_arms_own(loaded, campaign):
    model, _ = loaded
    # The arms that serve one pooled candidate share its shape (grouped CV may serve another for the rest).
    served = model.metadata["served"]
    common = max(set(served.values()), key=list(served.values()).count)
    arms = [a for a in model.arms if served[a.label] == common and common != "constant"]
    assert len(arms) >= 2, served
    model = type(model)(**{**model.__dict__, "arms": arms, "uplift": {a.label: model.uplift[a.label] for a in arms}})
    X = model.transform(campaign.voter_file.head(3000), allow_missing=True)
    ensembles = ArmEnsembles(model, probe=X.head(50))
    assert ensembles.fast and ensembles.shared.n_trees > 0  # pooled arms share their shape
    Xu, turnout = ensembles.inputs(X)
    np.testing.assert_allclose(turnout, model.predict_turnout(X), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ensembles.uplift(Xu), model.predict_uplift(X), rtol=0, atol=1e-12)
    for arm, c in zip(ensembles.labels, ensembles.contributions(Xu), strict=True):
        np.testing.assert_allclose(c, model.explain(X, arm), rtol=0, atol=1e-12)


def test_arms_without_shared_trees_are_explained_one_by_one(loaded, campaign):
    model, _ = loaded
    labels = [a.label for a in model.arms]
    # Swap two arms' ensembles for unrelated ones: no common prefix with the others.
    X = model.transform(campaign.voter_file.head(500), allow_missing=True)
    Xu = model.uplift_inputs(X)  # the uplift models' own inputs (with the turnout score if they use it)
    unrelated = lgb.train({"objective": "regression", "num_leaves": 4, "verbose": -1},
                          lgb.Dataset(Xu, np.random.default_rng(0).normal(size=len(Xu))), 5)
    other = dict(model.uplift)
    other[labels[0]], other[labels[1]] = unrelated, model.uplift[labels[0]]
    changed = type(model)(**{**model.__dict__, "uplift": other})
    assert shared_trees([changed.uplift[a] for a in labels]) is None
    ensembles = ArmEnsembles(changed, probe=X.head(20))
    Xu, _ = ensembles.inputs(X)
    for arm, c in zip(labels, ensembles.contributions(Xu), strict=True):
        np.testing.assert_allclose(c, changed.explain(X, arm), rtol=0, atol=1e-12)


# -- smoke check -----------------------------------------------------------------------
def test_smoke_check_passes_a_good_model_and_refuses_nan_turnout(loaded):
    model, ref = loaded
    smoke_check(SegmentScorer(model, ref))
    broken = type(model)(**{**model.__dict__, "calibration": ([0.0, 1.0], [np.nan, np.nan])})
    with pytest.raises(SmokeCheckError, match="turnout"):
        smoke_check(SegmentScorer(broken, ref))


def test_in_process_scorer_matches_the_model(loaded, campaign):
    model, ref = loaded
    voters = campaign.voter_file.head(300)
    payload = SegmentScorer(model, ref).score_request(json.loads(voters.to_json(orient="records")), explain=True)
    expected = model.score(voters, allow_missing=True)
    np.testing.assert_allclose([s["turnout"] for s in payload["scores"]], expected["turnout"], atol=1e-9)
    assert [s["best_arm"] for s in payload["scores"]] == expected["best_arm"].tolist()


# -- logs ------------------------------------------------------------------------------
class _Body(BaseModel):
    age: int


def test_privacy_filter_drops_request_input_and_scrubs_the_rest():
    handler_output = []

    class Collect(logging.Handler):
        def emit(self, record):
            handler_output.append(self.format(record))

    handler = Collect()
    handler.addFilter(PrivacyFilter())
    logger = logging.getLogger("persuade.test.privacy")
    logger.addHandler(handler)
    try:
        try:
            _Body.model_validate_json(b'{"age": "call me at (212) 555-0147"}')
        except ValidationError:
            logger.error("Exception on /score [POST]", exc_info=True)
        try:
            raise RuntimeError("could not use jane.roe@example.org")
        except RuntimeError:
            logger.error("failed for %s", "+12125550147", exc_info=True)
    finally:
        logger.removeHandler(handler)
    text = "\n".join(handler_output)
    assert "555-0147" not in text and "jane.roe@example.org" not in text and "+12125550147" not in text
    assert "request body rejected" in text and "RuntimeError" in text and "[email]" in text


def test_audit_line_holds_no_request_content():
    record = AuditRecord(method="POST", path="/score", status=200, key_id="abc123", voters=3, explain=True)
    line = json.loads(record.line())
    assert line["audit"] == "persuade" and line["voters"] == 3 and line["key_id"] == "abc123"
    assert set(line) == {"audit", "method", "path", "time", "status", "key_id", "model", "model_version",
                         "voters", "explain", "warnings", "latency_ms"}


def test_frame_of_a_batch_is_the_pipeline_input(loaded):
    model, _ = loaded
    batch = VoterReader(model).read([{"voter_id": "a", "age": 30, "urbanicity": "rural"}])
    frame = batch.frame()
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == model.input_features
    assert model.transform(frame, allow_missing=True).shape == (1, len(model.pipeline.output_columns))


# -- the service's consent rule ----------------------------------------------------------
ARMS = [ArmInfo("Mail", "mail", "mail"), ArmInfo("Text", "text", "text"),
        ArmInfo("Robo", "phone", "prerecorded_call")]
WHEN = "2026-10-01T00:00:00+00:00"


def _batch(ids, phones=None) -> VoterBatch:
    passthrough = {"phone": np.array(phones, dtype=object)} if phones is not None else {}
    return VoterBatch(np.array(ids, dtype=object), {}, passthrough)


def _table(tmp_path, rows) -> Path:
    path = tmp_path / "consent.csv"
    pd.DataFrame(rows).reindex(columns=["voter_id", "phone", "event", "line_type", "scope", "source",
                                        "keyword", "timestamp"]).to_csv(path, index=False)
    return path


def test_without_a_table_only_consent_free_deliveries_are_allowed():
    decided = ConsentEligibility(None)(_batch(["a", "b"], ["517 555 0100", None]), ARMS)
    assert decided.allowed.tolist() == [[True, False, False], [True, False, False]]
    assert decided.reason.tolist() == [[None, "no_consent", "no_consent"],
                                       [None, "unverifiable_phone", "unverifiable_phone"]]


def test_consent_rule_joins_by_id_and_by_hashed_phone(tmp_path):
    path = _table(tmp_path, [
        {"voter_id": "a", "phone": "(517) 555-0101", "event": "consent", "scope": "texts", "source": "written",
         "timestamp": "2026-01-01T00:00:00Z"},
        {"phone": "(517) 555-0100", "event": "revocation", "keyword": "stop", "timestamp": "2026-02-01T00:00:00Z"},
        {"voter_id": "c", "event": "do_not_contact", "source": "internal"},
        {"voter_id": "d", "phone": "517 555 0102", "event": "consent", "scope": "texts", "source": "written",
         "timestamp": "2026-01-01T00:00:00Z"},
        {"phone": "+15175550199", "event": "line_type", "line_type": "landline"},
    ])
    rule = ConsentEligibility(path, WHEN, hasher=PhoneHasher("unit-test-hash-key-0123"))
    # "a" twice: each row is decided on its own number (the revoked one, the consented one);
    # "d" sent a phone that is not a number: no automated contact, and no error
    batch = _batch(["a", "a", "c", "d", "e"], ["517.555.0100", "517 555 0101", None, {"not": "a phone"},
                                               "5175550199"])
    decided = rule(batch, ARMS)
    assert decided.allowed[:, 1].tolist() == [False, True, False, False, False]
    assert decided.reason[:, 1].tolist() == ["revoked", None, "do_not_contact", "unverifiable_phone",
                                             "landline_cannot_text"]
    assert decided.reason[2].tolist() == ["do_not_contact"] * 3
    assert decided.allowed[4].tolist() == [True, False, True]  # a landline under the prerecorded cap
    facts = rule.describe()
    assert facts["events"]["revocation"] == 1 and facts["error"] is None
    assert facts["join"] == {"voters": 5, "phone_missing": 1, "phone_unparseable": 1,
                             "table_ids_matching_no_voter": 0, "table_phones_matching_no_voter": 1}


def test_consent_rule_refuses_a_bad_table_or_a_missing_key(tmp_path, monkeypatch):
    with pytest.raises(ConsentError, match="not found"):
        ConsentEligibility(tmp_path / "missing.parquet")
    bad = _table(tmp_path, [{"voter_id": "a", "event": "consent", "scope": "texts", "source": "written"}])
    with pytest.raises(ConsentError, match="timestamp"):
        ConsentEligibility(bad)
    monkeypatch.delenv(HASH_KEY_ENV, raising=False)
    by_phone = _table(tmp_path, [{"phone": "+15175550100", "event": "do_not_contact", "source": "internal"}])
    with pytest.raises(MissingHashKeyError):
        ConsentEligibility(by_phone)


def test_consent_rule_rereads_a_changed_table_and_keeps_the_last_good_one(tmp_path, monkeypatch):
    monkeypatch.setattr("serving.eligibility.CHECK_EVERY_SECONDS", 0.0)
    consent = {"voter_id": "a", "phone": "517 555 0100", "event": "consent", "scope": "texts", "source": "written",
               "timestamp": "2026-01-01T00:00:00Z"}
    path = _table(tmp_path, [consent])
    rule = ConsentEligibility(path, WHEN, hasher=PhoneHasher("unit-test-hash-key-0123"))
    assert rule(_batch(["a"], ["517 555 0100"]), ARMS).allowed[0, 1]
    _table(tmp_path, [consent, {"voter_id": "a", "event": "revocation", "keyword": "QUIT",
                                "timestamp": "2026-03-01T00:00:00Z"},
                      {"voter_id": "b", "event": "do_not_contact"}])
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert rule(_batch(["a"], ["517 555 0100"]), ARMS).reason[0, 1] == "revoked"
    path.write_text("voter_id,event\na,teleport\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    # the last good table's do-not-contact stays in force; automated contact waits for a good read
    decided = rule(_batch(["a", "b"], ["517 555 0100", None]), ARMS)
    assert decided.reason.tolist() == [[None, "consent_stale", "consent_stale"], ["do_not_contact"] * 3]
    assert "teleport" in rule.describe()["error"]


def test_consent_rule_without_phones_joins_by_id_only(tmp_path):
    path = _table(tmp_path, [
        {"phone": "+15175550100", "event": "do_not_contact", "source": "internal"},
        {"voter_id": "b", "event": "do_not_contact", "source": "internal"},
    ])
    decided = ConsentEligibility(path, WHEN, hasher=PhoneHasher("unit-test-hash-key-0123"))(_batch(["a", "b"]), ARMS)
    assert decided.allowed[:, 0].tolist() == [True, False]


def test_consent_rule_equals_the_full_decision_on_a_campaign(campaign, tmp_path):
    """The per-request shortcut (voters without events, events of the request only) decides as features.consent."""
    path = tmp_path / "consent.parquet"
    campaign.consent.to_parquet(path)
    hasher = PhoneHasher("unit-test-hash-key-0123")
    voters = campaign.voter_file.sample(3000, random_state=5)[["voter_id", "phone"]].reset_index(drop=True)
    voters["phone"] = voters["phone"].astype(object).where(voters.index % 7 != 0, None)  # some sent without
    voters = pd.concat([voters, pd.DataFrame({"voter_id": ["NEW-1", "NEW-2"], "phone": [None, "+1 202 555 0143"]})],
                       ignore_index=True)
    got = ConsentEligibility(path, WHEN, hasher=hasher)(_batch(voters.voter_id.tolist(), voters.phone.tolist()), ARMS)
    full = ConsentRules.from_path(path, as_of=WHEN, hasher=hasher).for_voters(voters, ARMS)
    for j, arm in enumerate(ARMS):
        assert got.allowed[:, j].tolist() == full[f"eligible_{arm.slug}"].tolist()
        want = [r if not ok else None for r, ok in zip(full[f"suppression_{arm.slug}"], full[f"eligible_{arm.slug}"],
                                                       strict=True)]
        assert got.reason[:, j].tolist() == want
    assert len(set(got.reason[:, 1].tolist())) >= 3, "the sample must exercise several reasons"


# -- no default model ------------------------------------------------------------------------
def test_without_a_model_uri_nothing_loads_and_the_status_says_how_to_name_one(caplog):
    """The service has no project default (it once followed GGL's champion): unready, and /model says why."""
    holder = ModelHolder(None, poll_seconds=0)
    with caplog.at_level(logging.WARNING, logger="persuade.serving"):
        status = holder.refresh()
    assert not holder.ready and holder.current is None and not status["changed"]
    assert status["state"] == "loading" and status["source"] is None
    assert "set PERSUADE_MODEL_URI" in status["message"] and "persuade serve --model URI" in status["message"]
    assert "set PERSUADE_MODEL_URI" in caplog.text
    assert holder.status()["message"] == status["message"]
    holder.start()  # nothing to follow: said once, no poller left retrying every few seconds
    assert holder._thread is None and not holder.ready
