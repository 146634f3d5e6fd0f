"""Balance and leakage check before fitting: randomized data passes, a feature predicting the arm is refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from survey_frames import FEATURES, survey_config, survey_frame

from features.balance import grouped_auc
from features.config import RunConfig, load_config
from features.schema import DataValidationError, validate_experiment
from features.synthetic import synthetic_config
from features.tables import load_experiment

PROJECT = Path(__file__).resolve().parent.parent


def _loaded(tmp_path, frame, **overrides):
    frame.to_parquet(tmp_path / "survey.parquet", index=False)
    config = RunConfig.model_validate(survey_config(tmp_path / "survey.parquet", **overrides))
    return load_experiment(config), config


def _problems(frame, config) -> list[str]:
    with pytest.raises(DataValidationError) as info:
        validate_experiment(frame, config)
    return info.value.problems


@pytest.mark.parametrize("seed", range(5))
def test_a_randomized_survey_passes(tmp_path, seed):
    frame, config = _loaded(tmp_path, survey_frame(500, seed=seed, missing=(0.15, 0.15)))
    balance = validate_experiment(frame, config).balance
    assert balance.refused == {} and set(balance.table.feature) == set(FEATURES)
    assert set(balance.table.level[balance.table.feature == "party"]) == {"dem", "rep", "ind"}  # one-hot
    assert 0.3 < balance.auc < 0.7


def test_a_post_treatment_column_is_refused_by_name(tmp_path):
    frame, config = _loaded(tmp_path, survey_frame(500, seed=4, missing=(0.15, 0.15)),
                            features=[*FEATURES, "conversation"])
    problems = _problems(frame, config)
    assert len(problems) == 1
    assert problems[0].startswith("feature 'conversation' predicts the assigned arm: standardized mean difference")
    assert "post-treatment" in problems[0] and "between 'canvass' and control" in problems[0]


def test_a_leak_in_the_spread_is_caught_by_the_classifier(tmp_path):
    """Same mean in both arms (no standardized difference): only the grouped-CV classifier sees it."""
    frame, config = _loaded(tmp_path, survey_frame(4000, seed=5), features=[*FEATURES, "spread"])
    problems = _problems(frame, config)
    assert len(problems) == 1
    assert problems[0].startswith("feature 'spread' predicts the assigned arm: a grouped-CV classifier of assigned "
                                  "vs control reaches AUC")
    balance = validate_experiment(frame, config.model_copy(update={"balance": config.balance.model_copy(
        update={"max_auc": 0.99})})).balance  # the classifier's threshold is what refused it
    spread = balance.table[balance.table.feature == "spread"]
    assert spread.smd.abs().max() < config.balance.max_abs_smd and balance.auc > 0.6


def test_thresholds_and_the_switch_are_configurable(tmp_path):
    frame, config = _loaded(tmp_path, survey_frame(500, seed=4), features=[*FEATURES, "conversation"],
                            balance={"max_abs_smd": 5, "max_auc": 0.99})
    balance = validate_experiment(frame, config).balance
    assert balance.refused == {} and balance.table.smd.abs().max() > 1  # measured, below these thresholds
    off = config.model_copy(update={"balance": config.balance.model_copy(update={"enabled": False})})
    assert validate_experiment(frame, off).balance is None


def test_the_synthetic_program_passes(campaign):
    report = validate_experiment(campaign.flat, RunConfig.model_validate(synthetic_config("/tmp/unused")))
    summary = report.balance.summary()
    assert summary["refused"] == [] and summary["features"] == 10 and summary["max_abs_smd"] < 0.1


def test_ggl_passes():
    config = load_config(PROJECT / "configs" / "ggl2008.yaml")
    summary = validate_experiment(load_experiment(config), config).balance.summary()
    assert summary["refused"] == [] and summary["features"] == len(config.features)
    assert summary["max_abs_smd"] < 0.05 and abs(summary["classifier_auc"] - 0.5) < 0.01


def test_grouped_auc_is_each_folds_auc_and_tests_against_chance():
    rng = np.random.default_rng(0)
    labels = rng.random(4000) < 0.4
    groups, folds = np.arange(4000) // 2, (np.arange(4000) // 2) % 4
    noise = rng.normal(size=4000)
    auc, p = grouped_auc(noise, labels, folds, groups)
    expected = [roc_auc_score(labels[folds == k], noise[folds == k]) for k in range(4)]
    pairs = [labels[folds == k].sum() * (~labels[folds == k]).sum() for k in range(4)]
    assert auc == pytest.approx(np.dot(expected, pairs) / sum(pairs)) and p > 0.01
    auc, p = grouped_auc(noise + 0.5 * labels, labels, folds, groups)
    assert auc > 0.6 and p < 1e-10
