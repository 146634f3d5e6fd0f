"""Past programs as training data: the config entry, the checks of their files, their rows, and persuade train."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from program_fixtures import small_config

from features.config import ConfigError, RunConfig, load_config
from features.schema import DataValidationError
from features.synthetic import make_campaign
from serving.registry import load_scoring_model
from training.cli import main
from training.learners import Design
from training.program_simulation import LABELS, simulate_program
from training.programs import load_programs, with_programs
from training.splits import prepare

NAME = "fall-2026-text"


def _scores(campaign, seed: int) -> np.ndarray:
    """The true effects as the program's ranking; 30% of voters may not get Text (probability 0)."""
    scores = np.column_stack([campaign.truth[f"tau_voted_{a.lower()}"].to_numpy() for a in LABELS])
    scores[np.random.default_rng(seed).random(len(scores)) < 0.3, LABELS.index("Text")] = np.nan
    return scores


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """An experiment of 3,000 voters and a program of 2,500 other voters (holdout 20%, exploration 20%)."""
    folder = tmp_path_factory.mktemp("programs")
    make_campaign(3000, seed=3).write(folder)
    other = make_campaign(2500, seed=4)
    program = simulate_program(other, _scores(other, 0), target_share=0.3, holdout=0.2, explore=0.2, seed=5)
    program.write(folder, NAME)
    return folder


def _config(folder: Path, **program) -> dict:
    entry = {"name": NAME, **{k: str(folder / f"{NAME}_{k}.parquet") for k in ("plan", "outcomes", "voters")}}
    return {**small_config(folder), "programs": [{**entry, **program}]}


def _yaml(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("change, message", [
    (lambda c: c["programs"][0].update(budget=10), r"programs\.0\.budget: unknown key"),
    (lambda c: c["programs"][0].pop("outcomes"), r"programs\.0\.outcomes: Field required"),
    (lambda c: c["programs"][0].update(name="fall 2026"), r"programs\.0\.name: String should match"),
    (lambda c: c["programs"].append(dict(c["programs"][0])), "programs: a name is given twice"),
    (lambda c: c["programs"][0].update(voters="nowhere.parquet"), r"programs\[0\]\.voters: file not found"),
    (lambda c: c["arms"].update(control=c["arms"].pop("Mail")), "an arm named 'control' cannot be told"),
])
def test_a_program_entry_is_checked_like_the_rest_of_the_config(folder, tmp_path, change, message):
    data = _config(folder)
    change(data)
    with pytest.raises(ConfigError, match=message):
        load_config(_yaml(tmp_path, data))


def _broken(folder: Path, tmp_path: Path, key: str, edit) -> RunConfig:
    """The config with the program's ``key`` file replaced by ``edit(frame)`` (a plan keeps its metadata)."""
    source = folder / f"{NAME}_{key}.parquet"
    table = pq.read_table(source)
    out = pa.Table.from_pandas(edit(table.to_pandas()), preserve_index=False)
    if key == "plan" and edit.__name__ != "no_metadata":
        out = out.replace_schema_metadata({**(out.schema.metadata or {}), **table.schema.metadata})
    pq.write_table(out, tmp_path / source.name)
    return RunConfig.model_validate(_config(folder, **{key: str(tmp_path / source.name)}))


def _edit(name, fn):
    fn.__name__ = name
    return fn


def _tampered(frame):
    frame = frame.copy()
    frame.loc[frame.index[0], "p_canvass"] += 0.01
    return frame


@pytest.mark.parametrize("key, edit, message", [
    ("plan", _edit("no_metadata", lambda f: f), r"programs\[0\]\.plan: .*not a plan written by persuade plan"),
    ("plan", _edit("tampered", _tampered), r"programs\[0\]\.plan: design\.fingerprint: the plan's rows do not match"),
    ("plan", _edit("drop", lambda f: f.drop(columns="p_control")), r"programs\[0\]\.plan: .*missing \['p_control'\]"),
    ("outcomes", _edit("short", lambda f: f.iloc[10:]), r"programs\[0\]\.outcomes: 10 voters of the plan have no row"),
    ("outcomes", _edit("extra", lambda f: pd.concat([f, f.iloc[:3].assign(voter_id=["X1", "X2", "X3"])])),
     r"programs\[0\]\.outcomes: 3 ids are not voters of the plan"),
    ("outcomes", _edit("dup", lambda f: pd.concat([f, f.iloc[:2]])),
     r"programs\[0\]\.outcomes: 2 duplicate values in id column 'voter_id'"),
    ("outcomes", _edit("nan", lambda f: f.assign(voted=f.voted.where(f.index > 4))),
     r"programs\[0\]\.outcomes: outcome column 'voted' has 5 missing values"),
    ("outcomes", _edit("column", lambda f: f.drop(columns="voted")),
     r"programs\[0\]\.outcomes: columns \['voted'\] are missing"),
    ("voters", _edit("short", lambda f: f.iloc[7:]), r"programs\[0\]\.voters: 7 voters of the plan have no row"),
    ("voters", _edit("feature", lambda f: f.drop(columns="age")),
     r"programs\[0\]\.voters: columns \['age'\] are missing"),
    ("voters", _edit("group", lambda f: f.assign(precinct=f.precinct.where(f.index > 0))),
     r"programs\[0\]\.voters: group column 'precinct' has missing values"),
])
def test_a_program_whose_files_do_not_fit_is_refused_with_the_field_named(folder, tmp_path, key, edit, message):
    config = _broken(folder, tmp_path, key, edit)
    with pytest.raises(DataValidationError, match=message):
        load_programs(config)


def test_a_plan_must_use_the_configs_arms(folder):
    data = _config(folder)
    fewer = dict(data, arms={k: v for k, v in data["arms"].items() if k != "Mail"}, control_share=0.55)
    with pytest.raises(DataValidationError, match=r"programs\[0\]\.plan: assigned labels \['Mail'\] are not arms"):
        load_programs(RunConfig.model_validate(fewer))
    more = dict(data, arms={**{k: dict(v, share=0.12) for k, v in data["arms"].items()},
                            "Robocall": {"channel": "phone", "share": 0.12}})
    with pytest.raises(DataValidationError, match=r"no probability column \['p_robocall'\]"):
        load_programs(RunConfig.model_validate(more))


def test_program_rows_join_the_training_rows_with_their_recorded_propensities(folder):
    config = RunConfig.model_validate(_config(folder))
    (program,) = load_programs(config)
    plan = pd.read_parquet(folder / f"{NAME}_plan.parquet")
    assert len(program.frame) == len(plan) == 2500 and program.fingerprint["design"] == program.design
    frame = pd.read_parquet(folder / "voter_file.parquet").merge(
        pd.read_parquet(folder / "contact_log.parquet"), on="voter_id").merge(
        pd.read_parquet(folder / "outcomes.parquet"), on="voter_id")
    experiment = prepare(frame, config)
    rows = with_programs(experiment, [program], config)
    train, recorded = rows.prepared.train, rows.propensities
    assert len(train) == len(experiment.train) + 2500 and rows.dropped == {NAME: 0}
    assert rows.experiment.sum() == len(experiment.train) and rows.prepared.test.equals(experiment.test)
    shares = config.design_shares()
    np.testing.assert_array_equal(recorded[rows.experiment].to_numpy(),
                                  np.tile([shares[c] for c in recorded.columns], (rows.experiment.sum(), 1)))
    ours = recorded[~rows.experiment].reset_index(drop=True)
    np.testing.assert_array_equal(ours["Control"], plan.p_control)
    np.testing.assert_array_equal(ours["Text"], plan.p_text)
    assert (train.loc[~rows.experiment, "arm"].to_numpy() == np.where(plan.assigned == "control", "Control",
                                                                       plan.assigned)).all()
    # voters who could not get Text (consent) are in no Text contrast, and in the other arms' contrasts
    design = Design(config.arm_labels, config.control_label, shares)
    assigned = rows.prepared.assigned("train", config)
    no_text = ~rows.experiment & (recorded["Text"].to_numpy() == 0) & (assigned == "Control")
    assert no_text.sum() > 100
    assert not (design.contrast("Text", assigned, recorded)[0] & no_text).any()
    assert design.contrast("Mail", assigned, recorded)[0][no_text].mean() > 0.5


def test_program_rows_in_the_held_out_groups_are_left_out(folder, tmp_path):
    """A program on the experiment's own precincts: its voters there never train, so the hold-out stays unseen."""
    other = make_campaign(2500, seed=4)
    simulate_program(other, _scores(other, 0), target_share=0.3, holdout=0.2, explore=0.2, seed=5,
                     group_offset=0).write(tmp_path, NAME)
    config = RunConfig.model_validate(_config(tmp_path))
    shutil.copy(folder / "voter_file.parquet", tmp_path)
    frame = make_campaign(3000, seed=3).flat
    experiment = prepare(frame, config)
    (program,) = load_programs(config)
    rows = with_programs(experiment, [program], config)
    held = set(experiment.test.precinct.astype(str))
    expected = int(program.frame.precinct.astype(str).isin(held).sum())
    assert rows.dropped == {NAME: expected} and expected > 100
    assert not set(rows.prepared.train.precinct[~rows.experiment]) & held


def test_persuade_train_with_a_program_registers_a_model_that_names_it(folder, tmp_path, mlflow_store, monkeypatch):
    monkeypatch.setenv("PERSUADE_THREADS", "1")
    data = _config(folder)
    data.update(name="program-learning", model_name="persuade-program-learning")
    result = CliRunner(env={"COLUMNS": "250"}).invoke(main, ["train", "--config", str(_yaml(tmp_path, data))])
    assert result.exit_code == 0, result.output
    client = MlflowClient()
    (version,) = client.search_model_versions("name='persuade-program-learning'")
    run = client.get_run(version.run_id)
    (program,) = load_programs(RunConfig.model_validate(data))
    named = f"{NAME} (design {program.design[:12]})"
    assert run.data.tags["persuade.programs"] == named and run.data.params["programs"] == named
    logged = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/data/fingerprint.json")
    assert logged["programs"] == [program.fingerprint] and logged["rows"] == 3000  # the experiment's own sha256
    used = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/data/programs.json")
    assert used == [{"name": NAME, "design": program.design, "rows": 2500, "held_out": 0}]
    model, _ = load_scoring_model(f"models:/persuade-program-learning/{version.version}", tmp_path / "model")
    assert model.metadata["fingerprint"]["programs"][0]["design"] == program.design
    assert model.metadata["fingerprint"]["programs"][0]["name"] == NAME


def test_persuade_train_refuses_a_program_that_does_not_fit_and_registers_nothing(folder, tmp_path, mlflow_store):
    source = pd.read_parquet(folder / f"{NAME}_outcomes.parquet")
    source.iloc[5:].to_parquet(tmp_path / "outcomes.parquet", index=False)
    data = _config(folder, outcomes=str(tmp_path / "outcomes.parquet"))
    data.update(name="program-refused", model_name="persuade-program-refused")
    result = CliRunner(env={"COLUMNS": "250"}).invoke(main, ["train", "--config", str(_yaml(tmp_path, data))])
    assert result.exit_code != 0
    assert "programs[0].outcomes: 5 voters of the plan have no row" in result.output
    assert not MlflowClient().search_model_versions("name='persuade-program-refused'")
