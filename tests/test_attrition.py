"""Survey attrition: ``outcome.missing: drop`` drops missing outcomes only when attrition does not differ by arm."""

from __future__ import annotations

import pytest
from survey_frames import survey_config, survey_frame

from features.attrition import observed_rows
from features.config import RunConfig
from features.schema import DataValidationError, validate_experiment
from features.tables import load_experiment


def _loaded(tmp_path, frame, **overrides):
    frame.to_parquet(tmp_path / "survey.parquet", index=False)
    config = RunConfig.model_validate(survey_config(tmp_path / "survey.parquet", **overrides))
    return load_experiment(config), config


def _problems(frame, config) -> str:
    with pytest.raises(DataValidationError) as info:
        validate_experiment(frame, config)
    return "\n".join(info.value.problems)


def test_random_attrition_is_dropped_and_counted_per_arm(tmp_path):
    raw = survey_frame(500, seed=2, missing=(0.15, 0.15))
    frame, config = _loaded(tmp_path, raw)
    report = validate_experiment(frame, config)
    table = report.attrition.table.set_index("arm")
    for code, label in ((0, "no canvass"), (1, "canvass")):
        arm = raw[raw.treatment == code]
        assert table.loc[label, "assigned"] == len(arm)
        assert table.loc[label, "observed"] == arm.support.notna().sum()
        assert table.loc[label, "missing_rate"] == pytest.approx(arm.support.isna().mean())
    assert 0.10 < raw.support.isna().mean() < 0.20 and report.attrition.p_value > config.outcome.attrition_p_value
    assert report.n_rows == raw.support.notna().sum() == sum(report.rows_per_arm.values())
    fitted = observed_rows(frame, config)
    assert len(fitted) == report.n_rows and fitted.support.notna().all()


def test_missing_outcomes_are_refused_by_default_with_the_option_named(tmp_path):
    raw = survey_frame(500, seed=2, missing=(0.15, 0.15))
    frame, config = _loaded(tmp_path, raw, outcome={"column": "support", "kind": "support"})
    msg = _problems(frame, config)
    assert f"outcome column 'support' has {raw.support.isna().sum()} missing values" in msg
    assert "outcome.missing: drop" in msg
    assert len(observed_rows(frame, config)) == len(frame)  # refuse never drops


def test_differential_attrition_is_refused_with_the_rates_per_arm(tmp_path):
    raw = survey_frame(500, seed=2, missing=(0.05, 0.30))
    frame, config = _loaded(tmp_path, raw)
    msg = _problems(frame, config)
    assert "differential attrition: outcome 'support' is missing at different rates by arm" in msg
    for code, label in ((0, "no canvass"), (1, "canvass")):
        arm = raw[raw.treatment == code]
        assert f"{label} {arm.support.isna().mean():.1%} ({arm.support.isna().sum()} of {len(arm)})" in msg
    assert "< outcome.attrition_p_value=0.01" in msg


def test_the_attrition_threshold_is_configurable(tmp_path):
    raw = survey_frame(500, seed=2, missing=(0.05, 0.30))
    frame, config = _loaded(tmp_path, raw, outcome={"column": "support", "kind": "support", "missing": "drop",
                                                    "attrition_p_value": 1e-30})
    report = validate_experiment(frame, config)
    assert 0 < report.attrition.p_value < 0.01  # beyond chance, but not below this config's threshold
