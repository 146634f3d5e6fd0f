"""TreeSHAP by lookup tables: the same contributions as LightGBM's own pred_contrib."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from serving.bundle import CHECKED_TABLES
from serving.registry import load_scoring_model
from serving.treeshap_tables import TreeShapTables, UnsupportedTrees


def _frame(n: int = 4000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Continuous, integer, mostly-zero and categorical features, with missing values."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({
        "a": rng.normal(size=n),
        "b": rng.integers(0, 5, n).astype(float),
        "z": np.where(rng.random(n) < 0.3, 0.0, rng.normal(size=n)),
        "c": pd.Categorical(rng.choice(list("pqrstu"), n)),
    })
    X.loc[rng.random(n) < 0.1, "a"] = np.nan
    X.loc[rng.random(n) < 0.1, "c"] = np.nan
    y = X.a.fillna(1) * (X.b > 2) + (X.c == "p") * X.z + 2 * X.c.isin(["q", "s"]) + rng.normal(size=n)
    return X, y.to_numpy()


def _matrix(X: pd.DataFrame) -> np.ndarray:
    """The float matrix LightGBM predicts on (categories as codes, missing as NaN)."""
    M = X.copy()
    M["c"] = M.c.cat.codes.replace(-1, np.nan).astype(float)
    return M.to_numpy(float)


def _splits(booster: lgb.Booster) -> set[tuple[str, str]]:
    """The (decision type, missing type) pairs of the booster's splits."""
    kinds, stack = set(), [t["tree_structure"] for t in booster.dump_model()["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_feature" in node:
            kinds.add((node["decision_type"], node["missing_type"]))
            stack += [node["left_child"], node["right_child"]]
    return kinds


@pytest.mark.parametrize("leaves", [2, 4, 8, 9])
@pytest.mark.parametrize("zero_as_missing", [False, True])
def test_tables_equal_lightgbms_pred_contrib(leaves, zero_as_missing):
    X, y = _frame()
    params = {"num_leaves": leaves, "verbose": -1, "min_data_in_leaf": 20, "zero_as_missing": zero_as_missing,
              "max_cat_to_onehot": 4, "cat_smooth": 1, "min_data_per_group": 5}
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=40)
    kinds = _splits(booster)
    assert any(d == "==" for d, _ in kinds)  # categorical splits are exercised
    assert ("<=", "Zero" if zero_as_missing else "NaN") in kinds  # and the missing-value rule
    M = _matrix(X)
    ref = booster.predict(M, pred_contrib=True)
    ours = TreeShapTables(booster).contributions(M)
    assert ours.shape == ref.shape == (len(X), X.shape[1] + 1)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.sum(axis=1), booster.predict(M), rtol=0, atol=1e-9)
    # A slice of the trees, as predict(start_iteration, num_iteration) takes it.
    part = TreeShapTables(booster, start_iteration=10, num_iteration=20).contributions(M)
    np.testing.assert_allclose(part, booster.predict(M, pred_contrib=True, start_iteration=10, num_iteration=20),
                               rtol=0, atol=1e-12)


def test_values_on_a_threshold_and_missing_values_go_where_lightgbm_sends_them():
    X, y = _frame(2000, seed=3)
    booster = lgb.train({"num_leaves": 4, "verbose": -1, "min_data_in_leaf": 20}, lgb.Dataset(X, y), 30)
    thresholds = [t["tree_structure"]["threshold"] for t in booster.dump_model()["tree_info"]
                  if t["tree_structure"].get("decision_type") == "<="]
    M = _matrix(X.head(len(thresholds)))
    feature = [t["tree_structure"]["split_feature"] for t in booster.dump_model()["tree_info"]
               if t["tree_structure"].get("decision_type") == "<="]
    M[np.arange(len(thresholds)), feature] = thresholds  # exactly on each root's threshold
    M = np.vstack([M, np.full((1, M.shape[1]), np.nan), np.full((1, M.shape[1]), -0.5)])  # all missing; code -0.5
    np.testing.assert_allclose(TreeShapTables(booster).contributions(M), booster.predict(M, pred_contrib=True),
                               rtol=0, atol=1e-12)


def test_best_iteration_is_the_default_as_in_predict():
    X, y = _frame(3000, seed=1)
    train, valid = lgb.Dataset(X.iloc[:2000], y[:2000]), lgb.Dataset(X.iloc[2000:], y[2000:])
    booster = lgb.train({"num_leaves": 4, "verbose": -1, "learning_rate": 0.3}, train, 200, valid_sets=[valid],
                        callbacks=[lgb.early_stopping(5, verbose=False)], keep_training_booster=True)
    assert 0 < booster.best_iteration < booster.num_trees()
    M = _matrix(X)
    np.testing.assert_allclose(TreeShapTables(booster).contributions(M), booster.predict(M, pred_contrib=True),
                               rtol=0, atol=1e-12)


def test_deep_trees_and_bad_input_are_refused():
    X, y = _frame(2000)
    deep = lgb.train({"num_leaves": 31, "verbose": -1, "min_data_in_leaf": 5}, lgb.Dataset(X, y), 3)
    with pytest.raises(UnsupportedTrees, match="splits"):
        TreeShapTables(deep)
    tables = TreeShapTables(lgb.train({"num_leaves": 4, "verbose": -1}, lgb.Dataset(X, y), 3))
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        tables.contributions(np.zeros((3, 5)))
    assert tables.contributions(np.zeros((0, 4))).shape == (0, 5)


def test_scoring_model_explains_with_checked_tables_and_falls_back_for_deep_trees(champion_uri, campaign):
    model, _ = load_scoring_model(champion_uri)
    X = model.transform(campaign.voter_file.head(3000), allow_missing=True)
    X.iloc[::50, 0] = np.nan  # a missing value in some rows
    for arm in model.arms:
        booster = model.uplift[arm.label]
        contrib = model.explain(X, arm.label)
        assert isinstance(CHECKED_TABLES[booster], TreeShapTables)  # the tables explained it, after their check
        np.testing.assert_allclose(contrib, booster.predict(model.uplift_inputs(X), pred_contrib=True),
                                   rtol=0, atol=1e-12)
    # An arm whose trees are too deep for tables is explained by pred_contrib itself.
    label = model.arms[0].label
    Xu = model.uplift_inputs(X)
    deep = lgb.train({"objective": "regression", "num_leaves": 31, "min_data_in_leaf": 5, "verbose": -1},
                     lgb.Dataset(Xu, np.random.default_rng(0).normal(size=len(Xu))), 5)
    changed = type(model)(**{**model.__dict__, "uplift": {**model.uplift, label: deep}})
    contrib = changed.explain(X, label)
    assert CHECKED_TABLES[deep] is None
    np.testing.assert_allclose(contrib, deep.predict(Xu, pred_contrib=True), rtol=0, atol=1e-12)
