"""The attrition and balance tables of a real training run: its MLflow artifacts, the model's metadata,
the ``persuade train`` output and the model report."""

from __future__ import annotations

import re

import mlflow
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from survey_frames import FEATURES, survey_config, survey_frame

from serving.registry import load_scoring_model
from training.cli import main
from training.model_report import ModelReport


@pytest.fixture(scope="module")
def survey_run(mlflow_store, tmp_path_factory):
    """A 500-respondent survey with 15% random attrition trained through ``persuade train``."""
    folder = tmp_path_factory.mktemp("survey_checks")
    raw = survey_frame(500, seed=6, missing=(0.15, 0.15))
    raw.to_parquet(folder / "survey.parquet", index=False)
    path = folder / "survey.yaml"
    path.write_text(yaml.safe_dump(survey_config(folder / "survey.parquet", name="survey-checks",
                                                 model_name="persuade-survey-checks")))
    out = CliRunner(env={"COLUMNS": "100"}).invoke(main, ["train", "--config", str(path)])
    assert out.exit_code == 0, out.output
    run_id = re.search(r"run id\s+([0-9a-f]{32})", out.output).group(1)
    return raw, " ".join(out.output.replace("│", " ").split()), run_id  # table cells as words


def test_the_run_logs_both_tables_and_keeps_their_summary_in_the_model(survey_run, tmp_path):
    raw, _, run_id = survey_run
    folder = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="data", dst_path=str(tmp_path))
    attrition = pd.read_csv(f"{folder}/attrition.csv").set_index("arm")
    assert attrition.loc["canvass", "assigned"] == (raw.treatment == 1).sum()
    assert attrition.loc["no canvass", "observed"] == raw.support[raw.treatment == 0].notna().sum()
    balance = pd.read_csv(f"{folder}/balance.csv")
    assert set(balance.feature) == set(FEATURES) and not balance.refused.any()
    model, _ = load_scoring_model(f"runs:/{run_id}/model", tmp_path / "model")
    checks = model.metadata
    assert [r["arm"] for r in checks["attrition"]["per_arm"]] == ["no canvass", "canvass"]
    assert checks["balance"]["refused"] == [] and 0 < checks["balance"]["classifier_auc"] < 1


def test_persuade_train_prints_attrition_per_arm_and_the_balance_line(survey_run):
    raw, text, _ = survey_run
    lost = raw.support.isna()
    assert f"Outcome attrition per arm ({lost.sum():,} rows dropped" in text
    arm = raw[raw.treatment == 1]
    assert f"canvass {len(arm)} {arm.support.notna().sum()} {arm.support.isna().sum()} " in text
    assert "balance: 5 features checked" in text and "No feature predicts the assigned arm" in text


def test_the_model_report_shows_attrition_and_the_balance_table(survey_run):
    raw, _, run_id = survey_run
    report = ModelReport(shap_rows=50)
    html = report.build(run_id)
    section = html[html.index('id="data-checks"'):]
    section = section[:section.index("</section>")]
    assert "Outcome attrition per arm" in section and "Balance and leakage of the features" in section
    control = raw.support[raw.treatment == 0]
    assert f">{len(control)}</td>" in section and f">{control.notna().sum()}</td>" in section
    assert "past_votes" in section and "No feature predicts the assigned arm beyond chance" in section
