"""The CLI's model comes from the project, and a model whose gates failed is flagged wherever it is used.

No command defaults to one project's model: ``score``, ``plan``, ``serve`` and ``promote``
take the model from ``--model``/``--name``, else the run config's ``model_name``
(``--config``), else ``PERSUADE_MODEL_URI``; with none they exit 2 saying how to name one.
``persuade runs`` shows each run's outcome, the version it registered with its aliases and
the gates; a model whose gates failed is warned about when scored or planned, and its list
report promises no expected gain. Two versions of the small model are registered with gates
set in their metadata and run tags: one passed and promoted, one failed and never promoted.
"""

from __future__ import annotations

import copy
import csv
import io
import json

import mlflow
import pytest
import yaml
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from serving.flavor import log_model
from training.cli import main
from training.promotion import GATES
from training.tracking import configure, ensure_experiment

GOOD, FAILED = "persuade-defaults-good", "persuade-defaults-failed"
EXPERIMENT = "defaults-test"


@pytest.fixture(scope="module")
def runner():
    return CliRunner(env={"COLUMNS": "300"})  # rich wraps tables to the terminal width


def register(model, example, name: str, failed: tuple[str, ...]) -> tuple[str, str]:
    """A version of ``name``: ``model`` with the gates ``failed`` (metadata and run tags); (run id, version)."""
    gates = {gate: gate not in failed for gate in GATES}
    flagged = copy.copy(model)
    flagged.metadata = {**model.metadata, "gates": gates}
    client = configure()
    with mlflow.start_run(experiment_id=ensure_experiment(client, EXPERIMENT)) as run:
        mlflow.set_tags({"persuade.config": EXPERIMENT, "persuade.outcome_kind": "turnout",
                         "persuade.outcome_column": "voted",
                         **{f"gate.{g}": "passed" if ok else "failed" for g, ok in gates.items()}})
        info = log_model(flagged, input_example=example, registered_model_name=name)
    return run.info.run_id, str(info.registered_model_version)


@pytest.fixture(scope="module")
def versions(small_model, small_campaign, tmp_path_factory):
    """``{"good": (run, version), "failed": (run, version), "voters": path}``; good is @champion."""
    model, example = small_model
    found = {"good": register(model, example, GOOD, ()), "failed": register(model, example, FAILED,
                                                                               ("qini_best_arm",))}
    MlflowClient().set_registered_model_alias(GOOD, "champion", found["good"][1])
    voters = tmp_path_factory.mktemp("defaults") / "voters.parquet"
    small_campaign.voter_file.head(400).to_parquet(voters, index=False)
    found["voters"] = voters
    return found


@pytest.fixture
def no_model_in_env(monkeypatch):
    monkeypatch.delenv("PERSUADE_MODEL_URI", raising=False)


def test_a_command_that_needs_a_model_and_has_none_says_how_to_name_one(runner, versions, tmp_path,
                                                                       no_model_in_env):
    voters = str(versions["voters"])
    commands = {"score": ["score", "--input", voters, "--output", str(tmp_path / "s.parquet")],
                "plan": ["plan", "--input", voters, "--budget", "10", "--no-consent",
                         "--output", str(tmp_path / "p.parquet")],
                "promote": ["promote"], "serve": ["serve", "--port", "3999"]}
    for command, args in commands.items():
        out = runner.invoke(main, args)
        assert out.exit_code == 2, (command, out.output)
        text = " ".join(out.output.split())
        assert "no model named: give --" in text, (command, text)
        assert "--config CONFIG.yaml" in text and "PERSUADE_MODEL_URI" in text, command
        assert "registered models:" in text and (GOOD in text or "..." in text), command  # what the store holds
        assert not (tmp_path / "s.parquet").exists() and not (tmp_path / "p.parquet").exists()


def test_the_model_comes_from_the_option_the_config_or_the_environment(runner, versions, small_campaign, tmp_path,
                                                                       monkeypatch, no_model_in_env):
    good = versions["good"][1]
    config = yaml.safe_load(small_campaign.config_path.read_text())
    config["model_name"] = GOOD
    config_path = tmp_path / "project.yaml"
    config_path.write_text(yaml.safe_dump(config))
    voters = str(versions["voters"])

    def score(*extra: str) -> str:
        out = runner.invoke(main, ["score", "--input", voters, "--output", str(tmp_path / "s.parquet"), *extra])
        assert out.exit_code == 0, out.output
        (tmp_path / "s.parquet").unlink()
        return " ".join(out.output.split())

    assert f"with {GOOD} v{good}" in score("--config", str(config_path))  # models:/<model_name>@champion
    monkeypatch.setenv("PERSUADE_MODEL_URI", f"models:/{FAILED}/{versions['failed'][1]}")
    assert f"with {FAILED} v{versions['failed'][1]}" in score()
    assert f"with {GOOD} v{good}" in score("--model", f"models:/{GOOD}@champion")  # the option first
    out = runner.invoke(main, ["promote", "--config", str(config_path), "--version", good])
    assert out.exit_code == 0 and f"promoted {GOOD} version {good}" in out.output, out.output
    out = runner.invoke(main, ["promote", "--version", versions["failed"][1]])  # the name of PERSUADE_MODEL_URI
    assert out.exit_code == 1 and f"refusing to promote {FAILED}" in out.output, out.output
    out = runner.invoke(main, ["score", "--config", str(tmp_path / "missing.yaml"), "--input", voters,
                               "--output", str(tmp_path / "s.parquet")])
    assert out.exit_code == 2


def test_runs_shows_outcome_version_aliases_and_flags_a_failed_gate(runner, versions):
    client = configure()
    with mlflow.start_run(experiment_id=ensure_experiment(client, EXPERIMENT)) as run:  # logged before the tag
        mlflow.set_tags({"persuade.config": EXPERIMENT, "persuade.outcome_kind": "support"})
        mlflow.log_text(yaml.safe_dump({"outcome": {"column": "supports_measure", "kind": "support"}}), "config.yaml")
    out = runner.invoke(main, ["runs", "--experiment", EXPERIMENT])
    assert out.exit_code == 0, out.output
    blocks = {block.split()[0]: " ".join(block.split()) for block in out.output.strip().split("\n\n")}
    good, failed, old = blocks[versions["good"][0]], blocks[versions["failed"][0]], blocks[run.info.run_id]
    assert "voted (turnout)" in good and f"{GOOD} v{versions['good'][1]} @champion" in good and "all passed" in good
    assert f"{FAILED} v{versions['failed'][1]} gates" in failed  # registered, no alias
    assert "FAILED: qini_best_arm" in failed
    assert "supports_measure (support)" in old and "registered - gates" in old  # outcome from its config
    assert all(len(line) <= 80 for line in out.output.splitlines() if versions["good"][0] not in line)


def test_runs_and_evaluate_write_json_and_csv_for_scripts(runner, versions, small_trained):
    out = runner.invoke(main, ["runs", "--experiment", EXPERIMENT, "--format", "json"])
    assert out.exit_code == 0, out.output
    records = {r["run_id"]: r for r in json.loads(out.stdout)}  # nothing but the JSON on stdout
    good, failed = records[versions["good"][0]], records[versions["failed"][0]]
    assert good["registered"] == [f"{GOOD} v{versions['good'][1]} @champion"] and good["gates"] == "all passed"
    assert good["outcome"] == "voted (turnout)" and {"learner", "best_arm", "best_arm_qini", "turnout_auc"} <= set(good)
    assert failed["gates"].startswith("failed") and "qini_best_arm" in failed["gates"]
    out = runner.invoke(main, ["runs", "--experiment", EXPERIMENT, "--format", "csv"])
    assert out.exit_code == 0, out.output
    rows = {r["run_id"]: r for r in csv.DictReader(io.StringIO(out.stdout))}
    assert rows[versions["good"][0]]["registered"] == good["registered"][0]
    assert rows[versions["failed"][0]]["gates"] == failed["gates"]  # square brackets and all: no markup eaten
    run_id = small_trained.run_id  # a trained run: it logged its evaluation
    out = runner.invoke(main, ["evaluate", "--run", run_id, "--format", "json"])
    assert out.exit_code == 0, out.output
    evaluation = json.loads(out.stdout)
    tags = MlflowClient().get_run(run_id).data.tags
    assert evaluation["run_id"] == run_id and evaluation["gates"]["qini_best_arm"] == tags["gate.qini_best_arm"]
    assert set(evaluation["holdout_qini"]) >= {"t_default", "turnout_05"} and evaluation["ate"]
    # the reach rule is a candidate of the arms whose attempts do not always reach: only those
    assert set(evaluation["holdout_qini"]["turnout_05_reach"]) == {"Phone", "Canvass"}
    out = runner.invoke(main, ["evaluate", "--run", run_id, "--format", "csv"])
    table = list(csv.DictReader(io.StringIO(out.stdout)))
    assert {r["ranking"] for r in table} == set(evaluation["holdout_qini"])
    assert all(float(r["qini"]) == pytest.approx(evaluation["holdout_qini"][r["ranking"]][r["arm"]]) for r in table)


def test_a_failed_model_is_warned_about_and_its_list_promises_no_gain(runner, versions, tmp_path):
    voters = str(versions["voters"])
    reports = {}
    for which, name in (("good", GOOD), ("failed", FAILED)):
        uri = f"models:/{name}/{versions[which][1]}"
        scores, plan = tmp_path / f"{which}_scores.parquet", tmp_path / f"{which}_plan.parquet"
        out = runner.invoke(main, ["score", "--model", uri, "--input", voters, "--output", str(scores)])
        assert out.exit_code == 0, out.output
        scored = " ".join(out.output.split())
        out = runner.invoke(main, ["plan", "--model", uri, "--input", voters, "--budget", "40", "--no-consent",
                                   "--output", str(plan)])
        assert out.exit_code == 0, out.output
        planned = " ".join(out.output.split())
        for made in (scored, planned):
            assert ("FAILED its gates (qini_best_arm)" in made) == (which == "failed"), made
            assert ("was never promoted" in made) == (which == "failed"), made
        for kind, path in (("scores", scores), ("plan", plan)):
            out = runner.invoke(main, ["report", "--scores", str(path), "--shap-rows", "10",
                                       "--output", str(tmp_path / f"{which}_{kind}.html")])
            assert out.exit_code == 0, out.output
            reports[which, kind] = (tmp_path / f"{which}_{kind}.html").read_text()
    promises = {"scores": ["if every targeted voter is contacted", "At a contact budget", "cost_per_incremental"],
                "plan": ["LP bound (no plan gains more)", "95% interval", "mean_gain_per_contact",
                         "Expected gain along the priority order"]}
    for kind, phrases in promises.items():
        good, failed = reports["good", kind], reports["failed", kind]
        assert "FAILED its gates" not in good and "FAILED its gates (qini_best_arm)" in failed
        for phrase in phrases:
            assert phrase in good and phrase not in failed, (kind, phrase)
    assert "not shown: the model failed its gates" in reports["failed", "plan"]
    assert "not shown, the model failed its gates" in reports["failed", "scores"]


def test_user_text_prints_as_it_is_never_as_rich_markup(versions, tmp_path):
    """A folder called ``[bold]lists`` is printed with its brackets: the consoles read no markup."""
    folder = tmp_path / "[bold]lists"
    folder.mkdir()
    out = CliRunner().invoke(main, ["score", "--model", f"models:/{GOOD}@champion", "--input",
                                    str(versions["voters"]), "--output", str(folder / "s.parquet"), "--no-consent"])
    assert out.exit_code == 0, out.output
    assert f"->{folder / 's.parquet'}" in "".join(out.stdout.split()), out.stdout  # however rich wrapped it
    from training.cli_output import console, err, warning

    for printed_to in (console, err):
        with printed_to.capture() as captured:
            printed_to.print("model [red]x[/] at [x]")
            printed_to.print(warning("column [key] is missing"))
        assert captured.get() == "model [red]x[/] at [x]\nwarning: column [key] is missing\n"
