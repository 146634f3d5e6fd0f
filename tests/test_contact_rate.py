"""The contact-rate model: flag validation, recovery of the synthetic truth, MLflow, bundle."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from mlflow.artifacts import download_artifacts
from mlflow.tracking import MlflowClient
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from features.config import RunConfig
from features.schema import DataValidationError
from features.synthetic import synthetic_config
from serving.bundle import ScoringModel
from serving.plan_gains import expected_gains
from serving.registry import load_scoring_model
from training.contact_rate import ContactRateModel, read_contact_flags
from training.splits import prepare


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> RunConfig:
    folder = tmp_path_factory.mktemp("cfg")
    return RunConfig.model_validate({**synthetic_config(folder), "base_dir": folder})


def _frame(arms, attempted, reached) -> pd.DataFrame:
    return pd.DataFrame({"arm": arms, "attempted": attempted, "reached": reached})


def test_no_reached_column_means_no_model(config):
    assert read_contact_flags(pd.DataFrame({"arm": ["Phone", "Control"]}), config) is None


def test_flags_are_read_per_channel(config):
    flags = read_contact_flags(_frame(["Phone", "Control", "Canvass"], [1, 0, 1], [0, 0, 1]), config)
    assert flags.channel.tolist() == ["phone", "", "canvass"]
    assert flags.attempted.tolist() == [True, False, True]
    assert flags.reached.tolist() == [False, False, True]


def test_without_attempted_column_assigned_voters_count_as_attempted(config):
    flags = read_contact_flags(pd.DataFrame({"arm": ["Phone", "Control"], "reached": [1, 0]}), config)
    assert flags.attempted.tolist() == [True, False]


@pytest.mark.parametrize(("attempted", "reached", "message"), [
    ([1, 0, 1], [2, 0, 1], "'reached' must be 0/1"),
    ([1, 0, 1], [None, 0, 1], "'reached' has 1 missing values"),
    ([1, 0, 0], [1, 0, 1], "1 voters are reached but not 'attempted'"),
    ([1, 1, 1], [1, 0, 1], "1 control voters ('Control') are flagged attempted"),
    (["yes", "no", "yes"], [1, 0, 1], "'attempted' must be 0/1"),
])
def test_bad_flags_are_refused_naming_the_column(config, attempted, reached, message):
    with pytest.raises(DataValidationError, match="contact log column") as info:
        read_contact_flags(_frame(["Phone", "Control", "Canvass"], attempted, reached), config)
    assert message in str(info.value)


def test_model_recovers_true_contact_rates(campaign, config):
    """Fitted on the training groups, P(reached) on the hold-out is as good as the truth allows."""
    frame = campaign.flat
    prep = prepare(frame, config)
    flags = read_contact_flags(prep.train, config)
    model = ContactRateModel(config.contact_rate.params, seed=0).fit(prep.X_train, flags)
    assert sorted(model.boosters_) == ["canvass", "phone"]  # mail and text reach everyone: no model
    truth = campaign.truth.set_index("voter_id").loc[prep.test.voter_id]
    predicted = model.predict(prep.X_test)
    test_flags = read_contact_flags(prep.test, config)
    for channel, arm in (("phone", "phone"), ("canvass", "canvass")):
        p_true = truth[f"p_reach_{arm}"].to_numpy()
        p = predicted[channel]
        assert np.abs(p - p_true).mean() < 0.06
        rows = (test_flags.channel == channel) & test_flags.attempted
        y = test_flags.reached[rows]
        assert roc_auc_score(y, p[rows]) > roc_auc_score(y, p_true[rows]) - 0.03
        info = model.info_[channel]
        assert info["attempt_rate"] == 1.0
        assert info["reached_rate"] == pytest.approx(flags.reached[flags.channel == channel].mean())
    assert np.corrcoef(predicted["phone"], truth.p_reach_phone)[0, 1] > 0.85
    metrics, tables = model.evaluate(prep.X_test, test_flags)
    assert set(metrics) == {"phone", "canvass"}
    assert all(len(t) == 10 for t in tables.values())


def test_training_logs_and_ships_the_contact_rate_model(trained, champion_uri, campaign, tmp_path):
    run = MlflowClient().get_run(trained.run_id)
    for channel in ("phone", "canvass"):
        for key in ("auc", "brier", "log_loss", "max_calibration_gap", "observed_rate", "predicted_rate"):
            assert f"contact_rate_{channel}_{key}" in run.data.metrics
        assert run.data.metrics[f"contact_rate_{channel}_auc"] > 0.55
    assert not any(k.startswith(("contact_rate_mail", "contact_rate_text")) for k in run.data.metrics)
    folder = download_artifacts(run_id=trained.run_id, artifact_path="evaluation", dst_path=str(tmp_path))
    logged = json.loads(open(f"{folder}/contact_rate.json").read())
    assert set(logged["channels"]) == {"phone", "canvass"}
    calibration = pd.read_csv(f"{folder}/contact_rate_calibration_phone.csv")
    assert list(calibration.columns) == ["decile", "n", "predicted", "observed"]

    model, _ = load_scoring_model(champion_uri)
    assert sorted(model.contact_rate) == ["canvass", "phone"]
    assert model.contact_rate_info["phone"]["reached_rate"] == pytest.approx(0.37, abs=0.03)
    assert "uplift_deciles" in model.metadata

    # uplift of a reached voter = ITT / P(reached): against the generator's truth on the hold-out
    test = trained.result.prepared.test
    truth = campaign.truth.set_index("voter_id").loc[test.voter_id]
    gains = expected_gains(model, model.transform(test))
    phone = [a.label for a in model.arms].index("Phone")
    if_reached = gains.itt[:, phone] / gains.p_reached[:, phone]
    assert spearmanr(if_reached, truth.tau_reached_voted_phone).statistic > 0.5
    assert if_reached.mean() == pytest.approx(truth.tau_reached_voted_phone.mean(), rel=0.25)


def test_bundle_round_trip_and_backward_compatibility(trained, tmp_path):
    model = trained.result.model
    X = trained.result.prepared.X_test.head(200)
    saved = ScoringModel.load(model.save(tmp_path / "with"))
    for channel, p in model.predict_contact_rate(X).items():
        np.testing.assert_allclose(saved.predict_contact_rate(X)[channel], p, rtol=0, atol=1e-12)
    assert saved.contact_rate_info == model.contact_rate_info

    old = ScoringModel(pipeline=model.pipeline, turnout=model.turnout, uplift=model.uplift, arms=model.arms,
                       control_label=model.control_label, id_column=model.id_column, outcome=model.outcome)
    path = old.save(tmp_path / "without")
    assert not (path / "contact_rate").exists()
    assert "contact_rate" not in json.loads((path / "manifest.json").read_text())
    loaded = ScoringModel.load(path)
    assert loaded.contact_rate == {} and loaded.predict_contact_rate(X) == {}
