"""A support outcome without a turnout model (issue 18, item 5), through every consumer.

The synthetic campaign's support config without its ``turnout:`` block is trained once
(small: 8,000 voters, one learner and size) into the session's temp MLflow store. The
model has no turnout model; its bundle, ``persuade score`` (local and Spark), the batch
engine, the real ``bentoml serve`` service (``/score``, ``/plan``, ``/model``, the
OpenAPI spec), ``persuade plan``, the model report and the list report must all work and
leave turnout out, and nothing about its support outcome may be labelled votes.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import replace

import httpx
import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from cli_invoke import Done
from cli_invoke import persuade as run_persuade
from mlflow import MlflowClient
from rich.console import Console

from features.phones import HASH_KEY_ENV
from features.synthetic import make_campaign
from serving.api import ModelCard, ScoreResponse
from serving.arms import shared_trees
from serving.batch import BatchScorer, reason_columns, score_file
from serving.bundle import ScoringModel
from serving.eligibility import ConsentEligibility
from serving.launcher import ServiceProcess
from serving.plan_api import PlanResponse, plan_payload
from serving.registry import ModelRef, load_scoring_model
from serving.scoring import SegmentScorer, checked_ensembles
from training.demo import print_plan, print_response
from training.model_report import ModelReport
from training.report_blocks import NO_TURNOUT_NOTE
from training.run import train

N = 8_000
MODEL_NAME = "persuade-support-alone"
KEY = "sk-support-" + secrets.token_hex(12)
TOL = 1e-9


@pytest.fixture(scope="module", autouse=True)
def _hash_key():
    """The synthetic config has a consent table with phone numbers: reports hash them for the join."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(HASH_KEY_ENV, "support-test-key-" + secrets.token_hex(8))
        yield


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """The synthetic campaign (8,000 voters) and its support config without a turnout column."""
    folder = tmp_path_factory.mktemp("support_alone")
    campaign = make_campaign(N, seed=11)
    path = campaign.write(folder, outcome="support")
    cfg = yaml.safe_load(path.read_text())
    del cfg["turnout"]  # the support survey has no turnout outcome
    cfg.update(name="support-alone", model_name=MODEL_NAME)
    cfg["uplift"].update(learners=["dr"], final_sizes=[{"n_estimators": 60, "num_leaves": 4}], nuisance_rounds=[20],
                         nuisance_treated_leaves=[15], turnout_score_feature=False)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return campaign, folder, path


@pytest.fixture(scope="module")
def support_run(mlflow_store, program):
    _, _, config_path = program
    return train(config_path)


@pytest.fixture(scope="module")
def model_uri(support_run) -> str:
    return support_run.model_uri


@pytest.fixture(scope="module")
def model(model_uri) -> ScoringModel:
    return load_scoring_model(model_uri)[0]


@pytest.fixture(scope="module")
def voters(program) -> pd.DataFrame:
    """400 voters of the voter file, PII columns included (never read)."""
    return program[0].voter_file.sample(400, random_state=5).reset_index(drop=True)


def persuade(*args: str) -> Done:
    return run_persuade(*args, env={"COLUMNS": "200"})  # tables unabridged


def uplift_columns(model: ScoringModel) -> list[str]:
    return [f"uplift_{a.slug}" for a in model.arms]


# -- training and the bundle ---------------------------------------------------------------
def test_the_run_fits_and_logs_no_turnout_model(support_run):
    result = support_run.result
    assert not result.model.has_turnout and result.model.turnout is None
    assert result.turnout == {} and result.calibration.empty
    assert "turnout_05" not in result.test_scores  # no reference built on a turnout score the run does not have
    params = MlflowClient().get_run(support_run.run_id).data.params
    assert not [k for k in params if k.startswith("turnout_") and not k.startswith("turnout_score")], \
        "turnout model parameters logged for a run without a turnout model"


def test_bundle_roundtrip_has_no_turnout(support_run, model, voters, model_uri, tmp_path):
    assert not model.has_turnout and model.turnout is None
    folder = model.save(tmp_path / "bundle")
    assert not (folder / "turnout.txt").exists()
    assert json.loads((folder / "manifest.json").read_text())["has_turnout"] is False
    again = ScoringModel.load(folder)
    scores = again.score(voters)
    assert list(scores.columns) == ["voter_id", *uplift_columns(model), "best_arm", "best_uplift"]
    trained = support_run.result.model.score(voters)
    assert np.allclose(scores[uplift_columns(model)], trained[uplift_columns(model)], rtol=0, atol=TOL)
    assert np.isnan(again.predict_turnout(again.transform(voters))).all()
    # the pyfunc of the flavor: its output signature and its predictions have no turnout either
    outputs = mlflow.models.get_model_info(model_uri).signature.outputs.input_names()
    assert "turnout" not in outputs and set(uplift_columns(model)) <= set(outputs)
    predicted = mlflow.pyfunc.load_model(model_uri).predict(voters[[model.id_column, *model.input_features]])
    assert "turnout" not in predicted.columns


# -- batch scoring -------------------------------------------------------------------------
def test_batch_engine_scores_and_explains_without_turnout(model, voters, tmp_path):
    k = len(model.feature_names)
    scorer = BatchScorer(model, explain=k)
    assert scorer.ensembles.fast == (shared_trees(list(model.uplift.values())) is not None)
    out = scorer.score(voters)
    assert list(out.columns) == ["voter_id", *uplift_columns(model), "best_arm", "best_uplift", *reason_columns(k)]
    expected = model.score(voters)
    assert np.allclose(out[uplift_columns(model)], expected[uplift_columns(model)], rtol=0, atol=TOL)
    # every feature's contribution plus the base value is the explained arm's uplift
    slug = {a.label: a.slug for a in model.arms}
    explained = np.array([out.loc[i, f"uplift_{slug[a]}"] for i, a in enumerate(out.reason_arm.astype(str))])
    total = out.reason_base + out[[f"reason_{i + 1}_contribution" for i in range(k)]].sum(axis=1)
    assert np.allclose(total, explained, rtol=0, atol=1e-6)
    path = tmp_path / "voters.parquet"
    voters.to_parquet(path, index=False)
    stats = score_file(model, path, tmp_path / "scores.parquet", chunk_size=150)
    assert stats.rows == len(voters)
    assert "turnout" not in pq.read_schema(stats.output).names


def test_shared_trees_fast_path_holds_without_turnout(model):
    # Arms whose ensembles share their trees are scored and explained in one pass, once the fast
    # path agrees with ScoringModel on the probe segment: a NaN turnout on both sides must agree.
    first = model.uplift[model.arms[0].label]
    pooled = replace(model, uplift={a.label: first for a in model.arms})
    assert shared_trees(list(pooled.uplift.values())) is not None
    assert checked_ensembles(pooled).fast


def test_persuade_score_and_the_list_report(model, model_uri, voters, tmp_path):
    path = tmp_path / "voters.parquet"
    voters.to_parquet(path, index=False)
    out = tmp_path / "scores.parquet"
    done = persuade("score", "--model", model_uri, "--input", str(path), "--output", str(out), "--explain", "2")
    assert done.returncode == 0, done.stderr
    scores = pd.read_parquet(out)
    assert list(scores.columns) == ["voter_id", *uplift_columns(model), "best_arm", "best_uplift",
                                    *reason_columns(2)]
    assert np.allclose(scores[uplift_columns(model)], model.score(voters)[uplift_columns(model)], rtol=0, atol=TOL)
    done = persuade("report", "--scores", str(out), "--output", str(tmp_path / "list.html"), "--shap-rows", "50")
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "list.html").read_text(encoding="utf-8")
    assert f"{len(voters):,} voters scored" in html
    assert not re.search(r"\bvotes\b", html), "a support list labelled in votes"


def test_spark_engine_writes_no_turnout_column(model, voters, spark, tmp_path):
    from serving.spark import score_dataset

    path = tmp_path / "voters.parquet"
    voters.to_parquet(path, index=False)
    stats = score_dataset(model, path, tmp_path / "spark.parquet", spark=spark)
    scores = pd.read_parquet(stats.output).sort_values("voter_id").reset_index(drop=True)
    assert list(scores.columns) == ["voter_id", *uplift_columns(model), "best_arm", "best_uplift"]
    expected = model.score(voters).sort_values("voter_id").reset_index(drop=True)
    assert np.allclose(scores[uplift_columns(model)], expected[uplift_columns(model)], rtol=0, atol=TOL)


def test_persuade_plan_counts_support_points_not_votes(model_uri, voters, tmp_path):
    path = tmp_path / "voters.parquet"
    voters.to_parquet(path, index=False)
    done = persuade("plan", "--model", model_uri, "--input", str(path), "--output", str(tmp_path / "plan.parquet"),
                    "--budget", "40", "--no-consent")
    assert done.returncode == 0, done.stderr
    assert "expected incremental support" in " ".join(done.stdout.split())
    assert len(pd.read_parquet(tmp_path / "plan.parquet")) > 0
    done = persuade("report", "--scores", str(tmp_path / "plan.parquet"), "--output", str(tmp_path / "plan.html"),
                    "--shap-rows", "50")
    assert done.returncode == 0, done.stderr
    assert not re.search(r"\bvotes\b", (tmp_path / "plan.html").read_text(encoding="utf-8"))


def test_runs_table_shows_no_turnout_auc(support_run):
    done = persuade("runs", "--experiment", "support-alone")
    assert done.returncode == 0, done.stderr
    assert support_run.run_id[:8] in done.stdout and "nan" not in done.stdout


# -- the HTTP service ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def service(model_uri):
    svc = ServiceProcess(model_uri=model_uri, api_keys=[KEY],
                         env={"PERSUADE_RELOAD_SECONDS": "0", "PERSUADE_WORKERS": "1"})  # one worker is enough here
    with svc:
        yield svc
    svc.cleanup()


@pytest.fixture(scope="module")
def client(service):
    with service.client(KEY) as c:
        yield c


@pytest.fixture(scope="module")
def in_process(model, support_run):
    """What the service computes, in this process: the same model and the same (table-less) consent rule."""
    rule = ConsentEligibility.from_env({})
    ref = ModelRef(name=support_run.model_name, version=support_run.version, run_id=support_run.run_id, uri="")
    return SegmentScorer(model, ref, rule, rule.passthrough), rule, ref


def records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def test_score_answers_without_turnout(client, voters, in_process):
    scorer, _, _ = in_process
    r = client.post("/score", json={"voters": records(voters), "explain": True, "top_k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    ScoreResponse.model_validate(body)
    assert all("turnout" not in s for s in body["scores"])
    assert body["summary"]["outcome"] == "support"
    expected = scorer.score_request(records(voters), explain=True, top_k=3)
    for got, want in zip(body["scores"], expected["scores"], strict=True):
        assert got["voter_id"] == want["voter_id"] and got["best_arm"] == want["best_arm"]
        got_uplift = np.array([np.nan if v is None else v for v in got["uplift"].values()])  # null: not allowed
        assert list(got["uplift"]) == list(want["uplift"])
        assert np.allclose(got_uplift, list(want["uplift"].values()), rtol=0, atol=TOL, equal_nan=True)
    small = client.post("/score", json={"voters": records(voters.head(3))})  # the adaptive-batch path
    assert small.status_code == 200, small.text
    assert [set(s) & {"turnout"} for s in small.json()["scores"]] == [set()] * 3
    shown = Console(record=True, width=200)
    print_response(shown, body)  # the demo's display of a response
    text = shown.export_text()
    assert "support points" in text and "votes" not in text and "turnout" not in text


def test_plan_and_model_card_without_turnout(client, voters, model, in_process):
    scorer, rule, ref = in_process
    r = client.post("/plan", json={"voters": records(voters), "budget": 40})
    assert r.status_code == 200, r.text
    body = PlanResponse.model_validate(r.json())
    assert body.outcome == "support" and body.spent <= 40 + 1e-9
    batch = scorer.read(records(voters))
    expected = plan_payload(model, ref, batch, 40, None, rule(batch, model.arms))
    assert body.total_expected_gain == pytest.approx(expected["total_expected_gain"], abs=TOL)
    assert body.total_expected_gain > 0
    shown = Console(record=True, width=200)
    print_plan(shown, r.json())
    assert "expected extra support points" in shown.export_text()
    card = ModelCard.model_validate(client.get("/model").json())
    assert card.has_turnout is False and card.outcome["kind"] == "support"


def test_openapi_says_turnout_is_there_only_with_a_turnout_model(service):
    spec = httpx.get(f"{service.base_url}/docs.json").json()
    voter = spec["components"]["schemas"]["VoterScore"]
    assert "turnout" not in voter.get("required", [])
    assert "Present only when the served model has a turnout model" in voter["properties"]["turnout"]["description"]
    assert spec["components"]["schemas"]["ModelCard"]["properties"]["has_turnout"]["type"] == "boolean"


# -- the model report ----------------------------------------------------------------------
def test_model_report_leaves_turnout_out_and_says_why(support_run):
    html = ModelReport(shap_rows=300).build(support_run.run_id)
    sections = re.findall(r"<h2[^>]*>(.*?)</h2>", html)
    assert "What drives the scores (global SHAP)" in sections and "Fairness audit" in sections
    assert not [s for s in sections if "turnout" in s.lower()]
    assert NO_TURNOUT_NOTE in html
    assert "SHAP bar: turnout" not in html and "Turnout calibration" not in html
    assert len(re.findall(r'<img src="data:image/png;base64,', html)) == 4 * 4  # per arm: 2 SHAP, Qini, deciles
    assert not re.search(r"\bvotes\b", html)
    assert '<th class="text">turnout</th>' not in html  # no turnout model parameters in the card
