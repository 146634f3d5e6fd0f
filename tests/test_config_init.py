"""``persuade init``: a run config drafted from an experiment table that ``persuade train`` accepts as it is."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from features.config import load_config
from features.schema import validate_experiment
from features.synthetic_survey import make_survey, write_survey
from features.tables import load_experiment
from training.cli import main
from training.config_draft import ConfigDraft
from training.config_init import draft_config, project_name, table_path_for
from training.fairness import FairnessAudit

GGL_TABLE = "data/ggl2008/ggl2008.parquet"


def _prose(text: str) -> str:
    """The YAML text with the comment marks of wrapped lines taken out, on one line."""
    return " ".join(" ".join(line.removeprefix("# ") for line in text.splitlines()).split())


def _draft(frame: pd.DataFrame, **kwargs) -> ConfigDraft:
    args = {"table": "survey.parquet", "arm_column": "treatment", "outcome": "support", "name": "survey", **kwargs}
    return draft_config(frame, **args)


@pytest.fixture(scope="module")
def survey_draft() -> ConfigDraft:
    return _draft(make_survey(500, seed=3))


def test_the_yaml_text_loads_back_as_exactly_the_drafted_values():
    tricky = ["yes", "1", "a: b", "x # y", "two\nlines", "Ünïcode", "", "null", "- dash", "[x]"]
    values = {"name": "x", "arms": {t or "empty": {"value": t, "channel": "mail"} for t in tricky},
              "control_value": 0, "features": tricky, "protected": [], "audit": {"age_bands": [30, 45]}}
    draft = ConfigDraft(values, header=["a header\nover two lines"], notes={"arms": ["why " * 60]},
                        item_notes={"features": {t: f"note on {t}" for t in tricky}, "arms": {"yes": "#1"}})
    text = draft.to_yaml()
    assert yaml.safe_load(text) == values
    assert all(len(line) <= 100 for line in text.splitlines() if line.startswith("#"))


def test_a_survey_with_a_0_1_treatment_is_drafted_with_codes_attrition_and_its_excluded_columns(survey_draft):
    values = survey_draft.values
    assert yaml.safe_load(survey_draft.to_yaml()) == values
    assert (values["arm_column"], values["control_label"], values["control_value"]) == ("treatment", "control", 0)
    assert values["arms"] == {"treatment": {"value": 1, "channel": "mail"}}
    assert values["outcome"] == {"column": "support", "kind": "support", "missing": "drop"}
    assert (values["id_column"], values["group_column"]) == ("respondent_id", "household")
    assert values["features"] == ["party", "ideology", "past_votes", "homeowner"]
    assert values["protected"] == ["age"] and values["pii"] == []
    assert values["audit"] == {"age_column": "age", "age_bands": [30, 45, 65]}
    assert survey_draft.excluded["age"].startswith("protected-like")
    assert survey_draft.excluded["conversation"].startswith("post-treatment-like")
    assert survey_draft.problems == []
    text = _prose(survey_draft.to_yaml())
    assert "control: 'control' (code 0), named like a control arm; 236 rows, 47.2% observed" in text
    assert "treatment: {value: 1, channel: mail} # 264 rows, 52.8% observed" in text
    assert "85 of 500 rows (17.0%) have no outcome (attrition)" in text
    assert "- conversation: post-treatment-like name" in text
    assert "every group has one arm: assignment looks to be by group" in text


def test_what_validation_still_refuses_is_listed_at_the_top():
    draft = _draft(make_survey(150, seed=3))
    assert any("fewer than gates.min_rows_per_arm=100" in p for p in draft.problems)
    text = _prose(draft.to_yaml())
    assert "Validation still refuses this data with this config (fix before training): - arm" in text


def test_a_column_constant_in_control_is_excluded_as_caused_by_contact_whatever_its_name():
    frame = make_survey(500, seed=3).rename(columns={"conversation": "flag_b"})
    draft = _draft(frame)
    assert "flag_b" not in draft.values["features"]
    assert draft.excluded["flag_b"].startswith("post-treatment-like: one value in every control row")


def test_a_column_that_differs_by_arm_is_excluded_by_the_balance_check_training_runs():
    frame = make_survey(500, seed=3).drop(columns="conversation")
    frame["engagement"] = np.random.default_rng(0).normal(0, 1, 500) + 1.5 * frame.treatment
    draft = _draft(frame)
    assert "engagement" not in draft.values["features"]
    assert draft.excluded["engagement"].startswith("predicts the assigned arm (the balance check training runs)")
    assert draft.values["features"] == ["party", "ideology", "past_votes", "homeowner"]


def test_personal_data_ids_and_constants_are_excluded_and_no_personal_value_is_written():
    frame = make_survey(500, seed=3)
    frame["first_name"] = [f"Alexandra{i}" for i in range(500)]
    frame["note"] = [f"(415) 555-{i:04d}" for i in range(500)]  # phone numbers under an innocent name
    frame["serial"] = np.arange(10_000, 10_500)
    frame["state"] = "MI"
    draft = _draft(frame)
    assert draft.values["pii"] == ["first_name", "note"]
    assert draft.excluded["first_name"].startswith("PII-like (name looks like personal data)")
    assert draft.excluded["note"].startswith("PII-like (values look like phone numbers)")
    assert draft.excluded["serial"].startswith("id-like")
    assert draft.excluded["state"].startswith("constant")
    text = draft.to_yaml()
    assert "Alexandra" not in text and "555" not in text


def test_text_arms_without_a_control_name_take_the_largest_group_as_control_and_say_so():
    rng = np.random.default_rng(1)
    frame = make_survey(600, seed=1).drop(columns="conversation")
    frame["treatment"] = rng.choice(["Script A", "Script B", "Door Visit"], 600, p=[0.25, 0.5, 0.25])
    draft = _draft(frame)
    assert draft.values["control_label"] == "Script B" and "control_value" not in draft.values
    assert draft.values["arms"] == {"Door Visit": {"channel": "canvass"}, "Script A": {"channel": "mail"}}
    text = _prose(draft.to_yaml())
    assert "no value is named like a control: the largest group" in text
    assert "channel of 'Script A': mail assumed" in text


def test_numeric_codes_without_a_zero_are_mapped_with_value_and_control_value():
    frame = make_survey(600, seed=1).drop(columns="conversation")
    frame["treatment"] = np.random.default_rng(2).choice([1, 2, 3], 600, p=[0.5, 0.25, 0.25])
    draft = _draft(frame, channel="phone")
    assert (draft.values["control_label"], draft.values["control_value"]) == ("control", 1)
    assert draft.values["arms"] == {"treatment_2": {"value": 2, "channel": "phone"},
                                    "treatment_3": {"value": 3, "channel": "phone"}}
    config = load_config_text(draft)
    assert config.arm_codes() == {1: "control", 2: "treatment_2", 3: "treatment_3"}


def load_config_text(draft: ConfigDraft):
    from features.config import RunConfig

    return RunConfig.model_validate(yaml.safe_load(draft.to_yaml()))


def test_a_0_1_outcome_is_turnout_and_without_a_group_column_the_id_groups():
    frame = make_survey(500, seed=3).drop(columns=["household", "conversation", "support"])
    frame["voted"] = (np.random.default_rng(0).random(500) < 0.5).astype(int)
    draft = _draft(frame, outcome="voted")
    assert draft.values["outcome"] == {"column": "voted", "kind": "turnout"}
    assert draft.values["group_column"] == "respondent_id"
    assert "no household, cluster or precinct column" in _prose(draft.to_yaml())


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"arm_column": "arm"}, r"arm column 'arm' is not in the data"),
    ({"outcome": "party"}, r"outcome column 'party' is not numeric"),
    ({"arm_column": "respondent_id", "id_column": "household"}, r"arm column 'respondent_id' has 500 distinct"),
])
def test_columns_that_cannot_play_their_role_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _draft(make_survey(500, seed=3), **kwargs)


def test_the_model_is_named_by_the_output_and_the_table_is_named_relative_to_the_config(tmp_path):
    assert project_name(tmp_path / "canvass 2024.yaml") == "canvass-2024"
    (tmp_path / "configs").mkdir()
    assert table_path_for(tmp_path / "data" / "x.parquet", tmp_path / "configs" / "x.yaml") == "data/x.parquet"
    assert table_path_for(tmp_path / "x.parquet", tmp_path / "sub" / "x.yaml") == str(tmp_path / "x.parquet")


def test_a_voter_file_age_column_is_the_audit_age_column(tmp_path):
    frame = make_survey(500, seed=3).rename(columns={"age": "vf_age"})
    frame["sex"] = np.random.default_rng(0).choice(["F", "M"], 500)
    draft = _draft(frame)
    assert draft.values["protected"] == ["vf_age", "sex"]
    assert draft.values["audit"] == {"age_column": "vf_age", "age_bands": [30, 45, 65]}
    audit = FairnessAudit.from_config(load_config_text(draft))
    assert audit.age_attribute == "vf_age"
    assert set(audit.groups(frame, "vf_age")) <= {"<30", "30-44", "45-64", "65+"}


# -- end to end ----------------------------------------------------------------------
def test_persuade_init_then_train_on_a_500_respondent_survey_needs_no_hand_edit(mlflow_store, tmp_path):
    write_survey(tmp_path / "data", n=500, seed=3)
    config = tmp_path / "configs" / "canvass.yaml"
    runner = CliRunner(env={"COLUMNS": "100"})
    out = runner.invoke(main, ["init", "--data", str(tmp_path / "data" / "survey.parquet"), "--arm-column",
                               "treatment", "--outcome", "support", "--channel", "canvass", "--output", str(config)])
    assert out.exit_code == 0, out.output
    assert "not a feature: conversation: post-treatment-like" in " ".join(out.output.split())
    written = config.read_text()
    assert yaml.safe_load(written)["data"] == {"table": "data/survey.parquet"}  # relative to the project
    trained = runner.invoke(main, ["train", "--config", str(config)])
    assert trained.exit_code == 0, trained.output
    assert config.read_text() == written
    import mlflow

    versions = mlflow.MlflowClient().search_model_versions("name='canvass'")
    assert len(versions) == 1
    again = runner.invoke(main, ["init", "--data", str(tmp_path / "data" / "survey.parquet"), "--arm-column",
                                 "treatment", "--outcome", "support", "--output", str(config)])
    assert again.exit_code == 2 and "exists: give --force" in " ".join(again.output.split())


def test_persuade_init_names_a_missing_column_and_writes_nothing(tmp_path):
    write_survey(tmp_path, n=100, seed=0)
    config = tmp_path / "new.yaml"
    out = CliRunner().invoke(main, ["init", "--data", str(tmp_path / "survey.parquet"), "--arm-column", "arm",
                                    "--outcome", "support", "--output", str(config)])
    assert out.exit_code == 2 and "arm column 'arm' is not in the data" in " ".join(out.output.split())
    assert not config.exists()


# -- GGL: drafted, loaded and validated (not trained: too slow for a test) ---------------
@pytest.fixture(scope="module")
def ggl_config(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ggl")
    out = CliRunner().invoke(main, ["init", "--data", GGL_TABLE, "--arm-column", "treatment", "--outcome",
                                    "primary_06", "--output", str(folder / "ggl.yaml")])
    assert out.exit_code == 0, out.output
    return folder / "ggl.yaml"


def test_the_ggl_draft_names_the_control_arms_outcome_and_features_and_excludes_sex_and_age(ggl_config):
    config, reference = load_config(ggl_config), load_config("configs/ggl2008.yaml")
    assert config.model_name == "ggl" and config.control_label == "No Postcard"
    assert sorted(config.arm_labels) == sorted(reference.arm_labels)
    assert config.outcome.column == "primary_06" and config.outcome.kind == "turnout"
    assert (config.id_column, config.group_column) == ("voter_id", "cluster")
    assert config.features == [f for f in reference.features if f != "general_04"]  # constant in GGL: excluded
    assert config.derived_features == ["past_vote_count"]
    assert config.protected == ["sex", "age"] and config.audit.age_attribute(config.protected) == "age"
    assert config.audit.age_bands == reference.audit.age_bands
    text = _prose(ggl_config.read_text())
    assert "- sex: protected-like" in text and "- age: protected-like" in text
    assert "- general_04: constant" in text
    assert "control: 'No Postcard', named like a control arm; 152,932 rows, 55.6% observed" in text


def test_the_ggl_draft_passes_the_validation_training_runs(ggl_config):
    config = load_config(ggl_config)
    report = validate_experiment(load_experiment(config), config)
    assert sum(report.rows_per_arm.values()) == 275_141 and report.balance.refused == {}
