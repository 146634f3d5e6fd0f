"""Every validation error of the data contract, and that a bad file registers nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from features.config import RunConfig
from features.schema import DataValidationError, validate_experiment
from features.synthetic import make_campaign, synthetic_config


@pytest.fixture(scope="module")
def small():
    campaign = make_campaign(6000, seed=3)
    return campaign.flat


def _config(**overrides) -> RunConfig:
    data = synthetic_config("/tmp/unused")
    data.update(overrides)
    return RunConfig.model_validate(data)


def _problems(frame, config) -> str:
    with pytest.raises(DataValidationError) as info:
        validate_experiment(frame, config)
    return "\n".join(info.value.problems)


def test_clean_frame_passes_with_counts(small):
    report = validate_experiment(small, _config())
    assert report.n_rows == len(small)
    assert set(report.rows_per_arm) == {"Control", "Mail", "Phone", "Text", "Canvass"}
    assert report.srm_p_value > 0.001


def test_missing_ids(small):
    frame = small.copy()
    frame.loc[[3, 7], "voter_id"] = None
    assert "2 missing ids" in _problems(frame, _config())


def test_duplicate_ids(small):
    frame = small.copy()
    frame.loc[5, "voter_id"] = frame.loc[4, "voter_id"]
    msg = _problems(frame, _config())
    assert "1 duplicate ids" in msg and frame.loc[4, "voter_id"] in msg


def test_unknown_arm_label(small):
    frame = small.copy()
    frame.loc[0:20, "arm"] = "Robocall"
    assert "unknown arm labels ['Robocall']" in _problems(frame, _config())


def test_turnout_outcome_must_be_binary(small):
    frame = small.copy()
    frame.loc[0, "voted"] = 2
    assert "declared 'turnout' but has values other than 0/1" in _problems(frame, _config())


def test_support_outcome_must_be_numeric_and_vary(small):
    cfg = _config(outcome={"column": "support", "kind": "support"})
    validate_experiment(small, cfg)  # a 0-10 numeric scale is fine
    frame = small.copy()
    frame["support"] = frame["support"].astype(str) + " pts"
    assert "must be numeric" in _problems(frame, cfg)
    frame = small.copy()
    frame["support"] = 4.0
    assert "is constant" in _problems(frame, cfg)


def test_outcome_with_missing_values(small):
    frame = small.copy()
    frame.loc[0, "voted"] = np.nan
    assert "1 missing values" in _problems(frame, _config())


def test_outcome_or_arm_column_as_feature(small):
    msg = _problems(small, _config(features=["age", "voted", "arm"]))
    assert "feature 'voted' is the outcome column" in msg
    assert "feature 'arm' is the arm column" in msg


def test_protected_or_configured_pii_column_as_feature(small):
    msg = _problems(small, _config(features=["age", "sex", "phone"]))
    assert "feature 'sex' is a protected attribute" in msg
    assert "feature 'phone' is a PII column" in msg


def test_phone_values_under_an_innocent_name_are_refused(small):
    frame = small.copy()
    frame["contact_key"] = frame["phone"]
    msg = _problems(frame, _config(features=["age", "contact_key"]))
    assert "feature 'contact_key' looks like PII (values look like phone numbers)" in msg


def test_email_values_under_an_innocent_name_are_refused(small):
    frame = small.copy()
    frame["memo"] = frame["email"]
    msg = _problems(frame, _config(features=["age", "memo"]))
    assert "feature 'memo' looks like PII (values look like e-mail addresses)" in msg


def test_pii_column_names_are_refused(small):
    frame = small.copy()
    frame["home_address"] = frame["address"]
    assert "feature 'home_address' looks like PII" in _problems(frame, _config(features=["age", "home_address"]))


def test_too_few_rows_per_arm(small):
    frame = small[small.arm != "Text"].copy()
    frame = pd.concat([frame, small[small.arm == "Text"].head(40)])
    cfg = _config(control_share=None, arms={k: {**v, "share": None} for k, v in synthetic_config("/x")["arms"].items()})
    assert "arm 'Text' has 40 rows, fewer than gates.min_rows_per_arm=100" in _problems(frame, cfg)


def test_sample_ratio_mismatch(small):
    # Drop two thirds of the Canvass voters: the design says 15%, the file has 5%.
    canvass = small.index[small.arm == "Canvass"]
    frame = small.drop(canvass[: 2 * len(canvass) // 3])
    assert "sample-ratio mismatch" in _problems(frame, _config())


def test_missing_feature_and_required_columns(small):
    msg = _problems(small.drop(columns=["age", "precinct"]), _config())
    assert "required columns missing: ['precinct']" in msg
    assert "feature columns missing from the input: ['age']" in msg


def test_all_problems_are_listed_at_once(small):
    frame = small.copy()
    frame.loc[5, "voter_id"] = frame.loc[4, "voter_id"]
    frame.loc[0, "voted"] = 3
    err = None
    try:
        validate_experiment(frame, _config(features=["age", "sex"]))
    except DataValidationError as exc:
        err = exc
    assert err is not None and len(err.problems) == 3


def test_bad_training_file_registers_nothing(mlflow_store, tmp_path, small):
    """A run over a bad file stops before MLflow: no run, no registered model."""
    from mlflow.tracking import MlflowClient

    from training.run import train

    frame = small.copy()
    frame.loc[1, "voter_id"] = frame.loc[0, "voter_id"]
    frame.to_parquet(tmp_path / "bad.parquet")
    cfg = synthetic_config("/x")
    cfg.pop("data")
    cfg.update(name="bad-file", model_name="persuade-bad-file", data={"table": str(tmp_path / "bad.parquet")})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    client = MlflowClient()
    with pytest.raises(DataValidationError, match="duplicate ids"):
        train(path)
    assert client.get_experiment_by_name("bad-file") is None
    assert not client.search_registered_models(filter_string="name='persuade-bad-file'")
