"""Uplift learners: recovery of known effects, exact SHAP additivity, the shared base."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from features.config import GBMParams, load_config
from features.tables import load_experiment
from training.fit import fit_and_evaluate
from training.learners import LEARNERS, Design, UpliftLearner
from training.learners.base import scaled_booster

ARMS = ["Mail", "Phone", "Text", "Canvass"]


def _recovery(result, truth: pd.DataFrame, outcome: str) -> pd.DataFrame:
    test = result.prepared.test[["voter_id"]].merge(truth, on="voter_id", how="left")
    rows = {}
    for name, scores in result.test_scores.items():
        if name in ("random", "turnout_05"):
            continue
        rows[name] = {a: spearmanr(scores[a], test[f"tau_{outcome}_{a.lower()}"]).statistic for a in ARMS}
    return pd.DataFrame(rows).T


def test_turnout_uplift_recovery_beats_plain_t_learner(trained, campaign):
    rho = _recovery(trained.result, campaign.truth, "voted")
    selected = rho.loc[trained.result.learner]
    assert (selected >= 0.6).all(), rho
    assert (selected >= rho.loc["t_default"] + 0.15).all(), rho


@pytest.fixture(scope="module")
def support_result(campaign_dir):
    cfg = load_config(campaign_dir / "synthetic_support.yaml")
    return fit_and_evaluate(load_experiment(cfg), cfg)


def test_support_uplift_is_in_outcome_units_and_recovered(support_result, campaign):
    rho = _recovery(support_result, campaign.truth, "support")
    assert (rho.loc[support_result.learner] >= 0.6).all(), rho
    test = support_result.prepared.test[["voter_id"]].merge(campaign.truth, on="voter_id")
    for arm in ARMS:
        predicted = support_result.test_scores[support_result.learner][arm].mean()
        true = test[f"tau_support_{arm.lower()}"].mean()
        assert abs(predicted - true) < 0.25, (arm, predicted, true)  # points on the 0-10 scale


def test_shap_of_each_arm_adds_up_to_the_uplift(trained):
    model = trained.result.model
    X = model.transform(trained.result.prepared.test.head(2000))
    uplift = model.predict_uplift(X)
    for j, arm in enumerate(model.arms):
        contrib = model.explain(X, arm.label)
        assert contrib.shape == (len(X), len(model.feature_names) + 1)
        np.testing.assert_allclose(contrib.sum(axis=1), uplift[:, j], atol=1e-9)


def test_scaled_booster_scales_prediction_and_contributions_exactly():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(3000, 4)), columns=list("abcd"))
    y = X.a * 2 + X.b**2 + rng.normal(size=3000)
    booster = lgb.train({"objective": "regression", "verbose": -1, "num_leaves": 7}, lgb.Dataset(X, y), 30)
    scaled = scaled_booster(booster, -0.37)
    np.testing.assert_allclose(scaled.predict(X), -0.37 * booster.predict(X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        scaled.predict(X, pred_contrib=True), -0.37 * booster.predict(X, pred_contrib=True), atol=1e-12
    )
    assert booster.num_trees() == scaled.num_trees() == 30


def test_learners_share_one_base_and_differ_only_in_targets():
    assert set(LEARNERS) == {"t", "x", "dr"}
    for cls in LEARNERS.values():
        assert issubclass(cls, UpliftLearner)
        assert "fit" not in vars(cls) and "predict" not in vars(cls)
        assert "_contrast_targets" in vars(cls)


def test_dr_targets_are_unbiased_for_a_constant_effect():
    rng = np.random.default_rng(5)
    n = 200_000
    t = (rng.random(n) < 0.25).astype(float)
    y = rng.normal(1 + 0.5 * t, 1)
    learner = LEARNERS["dr"](Design(["A"], "C"), GBMParams())
    target, weight = learner._contrast_targets(y, t, np.full(n, 1.2), np.full(n, 0.9), 0.25)
    assert abs(np.average(target, weights=weight) - 0.5) < 0.02
    x = LEARNERS["x"](Design(["A"], "C"), GBMParams())
    target, weight = x._contrast_targets(y, t, np.full(n, 1.5), np.full(n, 1.0), 0.25)
    assert abs(np.average(target, weights=weight) - 0.5) < 0.02


def test_predict_before_fit_is_an_error():
    learner = LEARNERS["t"](Design(["A"], "C"), GBMParams())
    with pytest.raises(RuntimeError, match="not fitted"):
        learner.predict(pd.DataFrame({"a": [1.0]}))
