"""Uplift learners: recovery of known effects, exact SHAP additivity, the shared base."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from scipy.special import logit
from scipy.stats import spearmanr

from features.config import GBMParams, load_config
from features.tables import load_experiment
from training.fit import fit_and_evaluate
from training.learners import LEARNERS, CrossFitNuisance, Design, UpliftLearner
from training.learners.base import scaled_booster

ARMS = ["Mail", "Phone", "Text", "Canvass"]


def _recovery(result, truth: pd.DataFrame, outcome: str) -> pd.DataFrame:
    test = result.prepared.test[["voter_id"]].merge(truth, on="voter_id", how="left")
    rows = {}
    for name, scores in result.test_scores.items():
        if name in ("random", "turnout_05"):
            continue
        rows[name] = {a: spearmanr(scores[a], test[f"tau_{outcome}_{a.lower()}"]).statistic
                      for a in ARMS if a in scores.columns}  # a reference of some arms scores only those
    return pd.DataFrame(rows).T


def test_turnout_uplift_recovery_beats_plain_t_learner(trained, campaign):
    rho = _recovery(trained.result, campaign.truth, "voted")
    selected = rho.loc["served"]  # each arm's candidate grouped CV chose (training.arm_choice)
    assert (selected >= 0.6).all(), rho
    assert (selected >= rho.loc["t_default"] + 0.15).all(), rho


@pytest.fixture(scope="module")
def support_result(campaign_dir):
    # One learner, one outcome-model shape, no turnout-score choice: this test is about the
    # support scale's units and recovery; the selection among them is tested on turnout.
    # The assertions read the learner's hold-out scores, never the served choice, so grouped
    # CV runs once over three folds (the outcome models cross-fitted on three folds; the
    # same 50,000 voters, learner, size and hold-out). The outcome models' rounds are chosen
    # from the config's list without its 150: out-of-fold loss chooses 20 to 80 for every
    # group here and rises from 80 on, and 150 rounds were the largest fits of the run.
    cfg = load_config(campaign_dir / "synthetic_support.yaml").with_uplift(
        learners=["dr"], nuisance_treated_leaves=[15], turnout_score_feature=False,
        nuisance_rounds=[10, 20, 30, 50, 80])
    cfg = cfg.model_copy(update={"split": cfg.split.model_copy(update={"folds": 3, "cv_repeats": 1})})
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


@pytest.mark.parametrize("pool_arms, arm_rounds, subsample", [(True, 0, 1.0), (True, 5, 0.7), (False, 0, 1.0)])
def test_staged_fit_equals_a_fit_with_each_tree_count(pool_arms, arm_rounds, subsample):
    """Choosing the tree count by CV reuses one boosting run; each stage must be the real fit."""
    rng = np.random.default_rng(11)
    n = 6000
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    assigned = rng.choice(["C", "A", "B"], n, p=[0.5, 0.25, 0.25])
    tau = {"A": 0.3 * (X.a > 0), "B": 0.2 + 0.2 * X.b}
    y = X.c + sum(np.where(assigned == arm, effect, 0.0) for arm, effect in tau.items()) + rng.normal(size=n)
    mu = {label: rng.normal(size=n) * 0.1 for label in ["C", "A", "B", "__any__"]}
    design = Design(["A", "B"], "C", {"C": 0.5, "A": 0.25, "B": 0.25})
    params = GBMParams(n_estimators=40, learning_rate=0.1, num_leaves=4, min_child_samples=50, subsample=subsample)
    staged = LEARNERS["x"](design, params, pool_arms=pool_arms, arm_rounds=arm_rounds, seed=3).fit_staged(
        X, assigned, y, mu, [15, 40]
    )
    assert sorted(staged) == [15, 40]
    for trees in (15, 40):
        params_n = params.model_copy(update={"n_estimators": trees})
        direct = LEARNERS["x"](design, params_n, pool_arms=pool_arms, arm_rounds=arm_rounds, seed=3).fit(
            X, assigned, y, mu
        )
        assert staged[trees].final_params.n_estimators == trees
        pd.testing.assert_frame_equal(staged[trees].predict(X), direct.predict(X), rtol=0, atol=1e-12)
        for arm in ("A", "B"):
            assert staged[trees].boosters_[arm].num_trees() == trees + (arm_rounds if pool_arms else 0)


def test_arm_rounds_added_to_a_fitted_pooled_learner_equal_a_fit_with_them():
    """The per-arm-shape candidate continues the pooled fit: it must be the fit it stands for."""
    rng = np.random.default_rng(12)
    n = 6000
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    assigned = rng.choice(["C", "A", "B"], n, p=[0.5, 0.25, 0.25])
    y = X.c + np.where(assigned == "A", 0.3 * (X.a > 0), 0.0) + np.where(assigned == "B", 0.2 * X.b, 0.0)
    y = y + rng.normal(size=n)
    mu = {label: rng.normal(size=n) * 0.1 for label in ["C", "A", "B", "__any__"]}
    design = Design(["A", "B"], "C", {"C": 0.5, "A": 0.25, "B": 0.25})
    params = GBMParams(n_estimators=30, learning_rate=0.1, num_leaves=4, min_child_samples=50)
    pooled = LEARNERS["dr"](design, params, pool_arms=True, arm_rounds=0, seed=3).fit(X, assigned, y, mu)
    direct = LEARNERS["dr"](design, params, pool_arms=True, arm_rounds=8, seed=3).fit(X, assigned, y, mu)
    added = pooled.with_arm_rounds(X, assigned, y, mu, 8)
    pd.testing.assert_frame_equal(added.predict(X), direct.predict(X), rtol=0, atol=1e-12)
    assert pooled.boosters_["A"].num_trees() == 30 and added.boosters_["A"].num_trees() == 38  # a copy
    with pytest.raises(ValueError, match="pooled arms"):
        LEARNERS["dr"](design, params, pool_arms=False).fit(X, assigned, y, mu).with_arm_rounds(X, assigned, y, mu, 8)


@pytest.mark.parametrize("from_control", [False, True])
def test_nested_nuisance_for_a_fold_never_sees_that_folds_outcomes(from_control):
    """CV of the final models must not leak the judged fold's outcomes through the targets."""
    rng = np.random.default_rng(2)
    n = 4000
    X = pd.DataFrame(rng.normal(size=(n, 2)), columns=["a", "b"])
    assigned = rng.choice(["C", "A"], n)
    folds = rng.integers(0, 4, n)
    y = X.a + (assigned == "A") * 0.5 + rng.normal(size=n)
    nuisance = CrossFitNuisance(Design(["A"], "C"), GBMParams(n_estimators=20, min_child_samples=20), False, seed=1,
                                from_control=from_control, rounds=[2, 5, 20])
    nested = nuisance.fit_predict_nested(X, assigned, y, folds)
    changed = y.copy()
    changed[folds == 2] += 5.0 * rng.normal(size=(folds == 2).sum())
    assert set(nested) == {0, 1, 2, 3}
    for label, values in nuisance.fit_predict_nested(X, assigned, changed, folds)[2].items():
        np.testing.assert_array_equal(values, nested[2][label])  # fold 2's outcomes reach no target
        assert len(values) == (folds != 2).sum()
    plain = nuisance.fit_predict(X, assigned, y, folds)
    plain_changed = nuisance.fit_predict(X, assigned, changed, folds)
    outside = folds != 2
    assert not np.allclose(plain["C"][outside], plain_changed["C"][outside])  # the plain cross-fit does leak


def test_treated_leaves_shape_only_the_models_boosted_from_control():
    """Two-leaf treated trees: control's model is unchanged, and one round moves each fold's log-odds in 2 steps."""
    rng = np.random.default_rng(5)
    n = 8000
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    assigned = rng.choice(["C", "A"], n)
    p = 1 / (1 + np.exp(-(np.sin(2 * X.a) + 0.5 * X.b + (assigned == "A") * (0.3 + 0.5 * X.a))))
    y = (rng.random(n) < p).astype(float)
    folds = rng.integers(0, 4, n)
    params = GBMParams(n_estimators=30, num_leaves=15, min_child_samples=50)

    def fit(treated_leaves):
        return CrossFitNuisance(Design(["A"], "C"), params, True, seed=1, from_control=True, rounds=[1],
                                treated_leaves=treated_leaves).fit_predict(X, assigned, y, folds)

    default, same, two = fit(None), fit(15), fit(2)
    for label in default:
        np.testing.assert_array_equal(same[label], default[label])  # the nuisance's own leaves: no change
    np.testing.assert_array_equal(two["C"], default["C"])
    for mu, most in ((two, 2), (default, 15)):
        step = logit(mu["A"]) - logit(mu["C"])  # the arm's intercept plus its one tree, per fold
        counts = [len(np.unique(step[folds == k].round(9))) for k in range(4)]
        assert max(counts) <= most and (most == 2 or min(counts) > 2), counts
    with pytest.raises(ValueError, match="needs from_control"):
        CrossFitNuisance(Design(["A"], "C"), params, True, treated_leaves=2).fit_predict(X, assigned, y, folds)


@pytest.fixture(scope="module")
def small_campaign(campaign_dir):
    """12,000 voters of the synthetic campaign, split and transformed."""
    from training.splits import prepare

    cfg = load_config(campaign_dir / "synthetic_voted.yaml")
    prep = prepare(load_experiment(cfg).head(12_000), cfg)
    design = Design(cfg.arm_labels, cfg.control_label, cfg.design_shares())
    return cfg, prep, design


def test_arm_outcome_models_boosted_from_control_predict_better_out_of_fold(small_campaign):
    """A sixth of the rows per arm cannot relearn the wiggly baseline: starting from control's model must win."""
    cfg, prep, design = small_campaign
    assigned, y = prep.assigned("train", cfg), prep.train.voted.to_numpy(dtype=float)
    params = cfg.uplift.nuisance

    def loss(p, rows):
        p = np.clip(p[rows], 1e-12, 1 - 1e-12)
        return -np.mean(y[rows] * np.log(p) + (1 - y[rows]) * np.log(1 - p))

    separate = CrossFitNuisance(design, params, True, seed=1).fit_predict(prep.X_train, assigned, y, prep.folds)
    boosted = CrossFitNuisance(design, params, True, seed=1, from_control=True, rounds=[5, 10, 20, 40, 150])
    mu = boosted.fit_predict(prep.X_train, assigned, y, prep.folds)
    np.testing.assert_array_equal(mu[cfg.control_label], separate[cfg.control_label])  # control's model is unchanged
    assert set(boosted.losses_.columns) == {5, 10, 20, 40, 150}
    for arm in cfg.arm_labels:
        rows = assigned == arm
        assert boosted.rounds_[arm] == boosted.losses_.loc[arm].idxmin()
        assert loss(mu[arm], rows) == pytest.approx(boosted.losses_.loc[arm].min(), rel=1e-9)
        assert loss(mu[arm], rows) < loss(separate[arm], rows) - 0.002, arm


def test_arm_outcome_models_boosted_from_control_keep_the_arms_average_effect():
    """The start is control's model plus the arm's own intercept: a few shrunken rounds must not shrink the effect."""
    rng = np.random.default_rng(4)
    n = 20_000
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    assigned = rng.choice(["C", "A"], n, p=[0.5, 0.5])
    p = 1 / (1 + np.exp(-(np.sin(2 * X.a) + 0.5 * X.b + 0.8 * (assigned == "A"))))
    y = (rng.random(n) < p).astype(float)
    folds = rng.integers(0, 4, n)
    nuisance = CrossFitNuisance(Design(["A"], "C"), GBMParams(n_estimators=50, min_child_samples=50), True, seed=1,
                                from_control=True, rounds=[1])
    mu = nuisance.fit_predict(X, assigned, y, folds)
    observed = y[assigned == "A"].mean() - y[assigned == "C"].mean()
    assert observed > 0.15
    assert np.mean(mu["A"] - mu["C"]) == pytest.approx(observed, abs=0.02)


def test_cv_candidates_with_the_turnout_score_never_see_the_judged_folds_outcomes(campaign_dir):
    """The turnout score is a feature of a candidate: in CV it must come from a model blind to the fold."""
    from training.selection import cv_fold_scores
    from training.splits import prepare
    from training.turnout import fit_turnout

    cfg = load_config(campaign_dir / "synthetic_voted.yaml").with_uplift(
        learners=["t"], turnout_score_feature="select", final_sizes=[{"n_estimators": 30, "num_leaves": 4}])
    prep = prepare(load_experiment(cfg).head(12_000), cfg)
    assigned = prep.assigned("train", cfg)
    design = Design(cfg.arm_labels, cfg.control_label, cfg.design_shares())
    nuisance = CrossFitNuisance(design, GBMParams(n_estimators=20, min_child_samples=50), True, seed=1)
    ctrl = assigned == cfg.control_label

    def fold_two(y):
        # No recalibration (tolerance 1): an isotonic map, fitted once on every fold's
        # out-of-fold predictions, would be the one part of the score that saw the fold.
        turnout = fit_turnout(prep.X_train[ctrl], y[ctrl], prep.folds[ctrl], GBMParams(n_estimators=20), 1.0, 1)
        nested = nuisance.fit_predict_nested(prep.X_train, assigned, y, prep.folds)
        scores = {(s.turnout_score, s.size): s.scores for s in cv_fold_scores(
            prep.X_train, assigned, y, nested, prep.folds, cfg, design, turnout) if s.fold == 2}
        return turnout, scores

    y = prep.train.voted.to_numpy(dtype=float)
    changed = y.copy()
    changed[prep.folds == 2] = 1 - changed[prep.folds == 2]
    turnout, scores = fold_two(y)
    turnout_changed, scores_changed = fold_two(changed)
    assert set(scores) == {(False, "30x4"), (True, "30x4")}
    for key, frame in scores.items():
        pd.testing.assert_frame_equal(frame, scores_changed[key], rtol=0, atol=0)
    assert not np.allclose(turnout.predict(prep.X_train), turnout_changed.predict(prep.X_train))  # it could leak
    assert not scores[True, "30x4"].equals(scores[False, "30x4"])  # the score is really a feature
