"""A 500-respondent persuasion survey from a minimal config: no tuning blocks, 0/1 arm codes, attrition."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from features.config import load_config
from features.synthetic_survey import make_survey, write_survey
from training.cli import main
from training.evaluation import difference_in_means


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    return write_survey(tmp_path_factory.mktemp("survey"), n=500, seed=3)


@pytest.fixture(scope="module")
def survey_cli(mlflow_store, survey):
    """``persuade train`` on the survey at 80 columns: what it printed, and the run it returned."""
    out = CliRunner(env={"COLUMNS": "80"}).invoke(main, ["train", "--config", str(survey)], standalone_mode=False)
    assert out.exit_code == 0, out.output
    return out.output, out.return_value


@pytest.fixture(scope="module")
def survey_run(survey_cli):
    return survey_cli[1]


def test_the_minimal_config_has_no_tuning_blocks(survey):
    raw = yaml.safe_load(survey.read_text())
    assert not {"uplift", "turnout", "split", "gates"} & set(raw)
    cfg = load_config(survey)
    assert cfg.uplift.final.min_child_samples is None  # scaled at training time


def test_leaf_minimums_scale_to_the_rows_per_arm():
    cfg = load_config_dict({"canvass": 212, "no canvass": 213})
    assert cfg.uplift.final.min_child_samples == 14  # 5% of the 272 rows one CV fit sees, not 5,000
    assert cfg.uplift.nuisance.min_child_samples == 5
    big = load_config_dict({"canvass": 120_000, "no canvass": 150_000})
    assert big.uplift.final.min_child_samples == 5000 and big.uplift.nuisance.min_child_samples == 100


def load_config_dict(rows: dict[str, int]):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        return load_config(write_survey(Path(tmp), n=50, seed=0)).scaled_to(rows)


def test_a_survey_without_turnout_trains_and_serves_its_average_effect_inside_the_difference_in_means(
        survey_run, survey):
    result = survey_run.result
    assert not result.model.has_turnout and result.turnout == {}
    assert "turnout_shape" not in set(result.arm_selection.candidate)  # no turnout model, no such reference
    frame = make_survey(500, seed=3).dropna(subset=["support"])
    dim = difference_in_means(frame.support, frame.treatment.astype(float), frame.household, n_boot=400, seed=1)
    served = result.model.score(frame.assign(respondent_id=frame.respondent_id))["uplift_canvass"]
    assert dim.low <= served.mean() <= dim.high, (served.mean(), dim)


def test_a_model_with_constant_scores_says_so_and_why(survey_run):
    result = survey_run.result
    assert result.constant_arms == ["canvass"] and result.served == {"canvass": "constant"}
    scores = result.model.score(result.prepared.test)
    assert scores.uplift_canvass.nunique() == 1
    gate = result.gates["beats_constant"]
    assert not gate["passed"] and "does not beat the constant-effect reference" in gate["detail"]


def test_persuade_train_prints_the_references_and_the_constant_statement(survey_cli):
    output = survey_cli[0]
    text = " ".join(output.split())
    assert "not detectable at this size" in text and "average effect" in text
    assert "constant" in text and "model" in text
    assert "95% CI" in text
    assert "served per arm: canvass: constant" in text
    assert np.all([len(line) <= 80 for line in output.splitlines()]), output
