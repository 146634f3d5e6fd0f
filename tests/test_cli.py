"""The modelers' CLI against a real MLflow store: runs, evaluate, promote, score."""

from __future__ import annotations

import re
import tempfile

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from features.synthetic import make_campaign
from training.cli import main


@pytest.fixture(scope="module")
def grid_trained(mlflow_store, tmp_path_factory):
    """A small synthetic campaign trained with the synthetic config's whole grid.

    Every learner, both treated outcome-model shapes (15 and 2 leaves) and the turnout
    score with and without, chosen by grouped CV (run once): what the selection tests read.
    The champion (``trained``) fixes the shape and the turnout score at this grid's choices
    on its own campaign, so these choices are made and logged here, on 4,000 voters.
    """
    from small_model_fixtures import write_small_campaign

    from training.run import train

    grid = write_small_campaign(tmp_path_factory.mktemp("grid"), "persuade-grid-test", "grid-test",
                                uplift={"nuisance_treated_leaves": [15, 2]}, split={"cv_repeats": 1})
    return train(grid.config_path)


@pytest.fixture(scope="module")
def runner():
    return CliRunner(env={"COLUMNS": "250"})  # rich wraps tables to the terminal width


def test_train_logged_everything_a_reviewer_needs(trained):
    client = MlflowClient()
    run = client.get_run(trained.run_id)
    arts = {a.path for a in client.list_artifacts(trained.run_id)}
    assert {"config.yaml", "features.json", "data", "evaluation", "plots"} <= arts
    plots = {a.path for a in client.list_artifacts(trained.run_id, "plots")}
    assert "plots/qini_canvass.png" in plots and "plots/turnout_calibration.png" in plots
    assert run.data.tags["persuade.validation"] == "clean"
    assert len(run.data.tags["persuade.data_sha256"]) == 64
    assert "canvass_qini" in run.data.metrics and "turnout_auc" in run.data.metrics
    assert run.data.params["learner"] == trained.result.learner
    import mlflow

    features = mlflow.artifacts.load_dict(f"runs:/{trained.run_id}/features.json")
    assert "sex" in features["excluded"] and "phone" in features["excluded"]
    assert not {"sex", "phone", "first_name"} & set(features["features"])
    fingerprint = mlflow.artifacts.load_dict(f"runs:/{trained.run_id}/data/fingerprint.json")
    assert fingerprint["rows"] == 50_000 and sum(fingerprint["rows_per_arm"].values()) == 50_000


def test_selection_is_logged_for_both_metrics_and_decided_by_the_configured_one(grid_trained, tmp_path):
    import mlflow

    result = grid_trained.result
    metric = mlflow.get_run(grid_trained.run_id).data.params["selection_metric"]
    assert set(result.selection_tables) == {"policy_value", "qini", "dr_qini"}
    assert result.selection is result.selection_tables[metric]
    assert result.selection["mean"].idxmax() == (result.learner, result.final_size, result.turnout_score_feature)
    for name, table in result.selection_tables.items():
        logged = pd.read_csv(mlflow.artifacts.download_artifacts(
            run_id=grid_trained.run_id, artifact_path=f"evaluation/selection_cv_{name}.csv", dst_path=tmp_path))
        arms = [a.label for a in result.model.arms]
        assert list(logged.columns) == ["learner", "size", "turnout_score", *arms, "mean"]
        assert logged["mean"].to_numpy() == pytest.approx(table["mean"].to_numpy())
    qini, dr = (result.selection_tables[m]["mean"] for m in ("qini", "dr_qini"))
    assert not qini.equals(dr)  # two estimates of one estimand: close, not the same numbers


def test_the_outcome_models_round_choice_is_logged(grid_trained, tmp_path):
    """Each treated group's outcome model is boosted from control: its round count and losses are logged."""
    import mlflow

    result = grid_trained.result
    params = mlflow.get_run(grid_trained.run_id).data.params
    assert params["nuisance_from_control"] == "True"
    logged = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=grid_trained.run_id, artifact_path="evaluation/nuisance_rounds.csv", dst_path=tmp_path))
    assert list(logged.group) == [*(a.slug for a in result.model.arms), "any_contact"]
    losses = logged.filter(like="loss_").to_numpy()
    chosen = [int(c.split("_")[1]) for c in logged.filter(like="loss_").columns[losses.argmin(axis=1)]]
    assert list(logged.chosen_rounds) == chosen
    for slug, rounds in zip(logged.group, logged.chosen_rounds, strict=True):
        assert params[f"nuisance_rounds_{slug}"] == str(rounds)


def test_the_outcome_model_shape_is_chosen_by_grouped_cv_and_logged(grid_trained, tmp_path):
    """The synthetic grid compares 15- and 2-leaf treated outcome models; CV's choice is the run's model."""
    import mlflow

    result = grid_trained.result
    params = mlflow.get_run(grid_trained.run_id).data.params
    logged = pd.read_csv(mlflow.artifacts.download_artifacts(
        run_id=grid_trained.run_id, artifact_path="evaluation/selection_cv_outcome_shapes.csv", dst_path=tmp_path))
    assert params["nuisance_treated_leaves_compared"] == "15,2"
    assert list(logged.treated_leaves) == [15, 2]
    metric = params["selection_metric"]
    best = logged.loc[logged[metric].idxmax()]
    assert logged.chosen.tolist() == [i == best.name for i in logged.index]
    assert params["nuisance_treated_leaves"] == str(best.treated_leaves) == str(result.nuisance_treated_leaves)
    assert (best.learner, best["size"], bool(best.turnout_score)) == (
        result.learner, result.final_size, result.turnout_score_feature)
    assert best[metric] == pytest.approx(result.selection["mean"].max())
    assert logged[metric].nunique() == 2  # the two shapes' outcome models really differ


def test_logged_pyfunc_has_signature_and_gives_the_bundle_scores(trained):
    import mlflow

    info = mlflow.models.get_model_info(trained.model_uri)
    assert info.signature is not None
    assert "uplift_canvass" in info.signature.outputs.input_names()
    from features.consent import ConsentRules

    pyfunc = mlflow.pyfunc.load_model(trained.model_uri)
    sample = trained.result.prepared.test.head(50)
    model = trained.result.model  # without a consent table (params), nobody has consent
    pd.testing.assert_frame_equal(pyfunc.predict(sample), ConsentRules().apply(model.score(sample), sample, model.arms))


def test_runs_and_evaluate(runner, trained, tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # the folders the commands make for themselves
    out = runner.invoke(main, ["runs"])
    assert out.exit_code == 0, out.output
    assert trained.run_id in out.output and "all passed" in out.output
    out = runner.invoke(main, ["evaluate", "--run", trained.run_id])
    assert out.exit_code == 0, out.output
    assert "t_default" in out.output and "turnout_05" in out.output and "gate.qini_best_arm: passed" in out.output
    out = runner.invoke(main, ["evaluate", "--run", "0" * 32])
    assert out.exit_code == 2 and "error" in out.output
    assert not list(scratch.iterdir())  # nothing downloaded is left behind in the user's temp folder


def test_score_writes_one_row_per_voter(runner, trained, campaign, tmp_path, champion_uri):
    voters = campaign.voter_file.head(3000)
    voters.to_csv(tmp_path / "voters.csv", index=False)
    out = runner.invoke(main, ["score", "--model", champion_uri, "--input", str(tmp_path / "voters.csv"),
                               "--output", str(tmp_path / "scores.parquet")])
    assert out.exit_code == 0, out.output
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    assert list(scores.columns) == ["voter_id", "turnout", "uplift_mail", "uplift_phone", "uplift_text",
                                    "uplift_canvass", "best_arm", "best_uplift"]
    assert scores.voter_id.tolist() == voters.voter_id.tolist()
    uplift = scores[[c for c in scores.columns if c.startswith("uplift_")]]
    assert ((scores.best_arm == "control") == (uplift.max(axis=1) <= 0)).all()
    assert (scores.best_uplift >= 0).all() and scores.turnout.between(0, 1).all()
    assert not {"phone", "first_name", "email"} & set(scores.columns)


def test_score_missing_feature_is_a_clear_error(runner, campaign, tmp_path, champion_uri):
    campaign.voter_file.head(100).drop(columns=["party_score"]).to_parquet(tmp_path / "v.parquet")
    out = runner.invoke(main, ["score", "--model", champion_uri, "--input", str(tmp_path / "v.parquet"),
                               "--output", str(tmp_path / "s.parquet")])
    assert out.exit_code == 2
    assert "missing feature columns ['party_score']" in out.output
    assert not (tmp_path / "s.parquet").exists()


def test_promote_refuses_a_model_with_no_effect_and_keeps_the_champion(runner, trained, tmp_path):
    client = MlflowClient()
    null = make_campaign(5_000, seed=11, effect_scale=0.0)  # no effect: the gate fails at any size
    config_path = null.write(tmp_path)
    cfg = yaml.safe_load(config_path.read_text())
    cfg["model_name"] = trained.model_name  # a new version of the same registered model
    cfg["name"] = "synthetic-null"
    cfg["uplift"].update(learners=["dr"], turnout_score_feature=False)  # the gate is the point, not the grid
    cfg["split"].update(folds=3, cv_repeats=1)  # the refused gate is judged on the hold-out, not in CV
    config_path.write_text(yaml.safe_dump(cfg))
    out = runner.invoke(main, ["train", "--config", str(config_path)])
    assert out.exit_code == 0, out.output
    assert re.search(r"outcome\s+models\s+of\s+(15|2)-leaf\s+trees\s+\(of\s+15,\s+2\)", out.output), out.output
    before = client.get_model_version_by_alias(trained.model_name, "champion").version
    out = runner.invoke(main, ["promote", "--name", trained.model_name])
    assert out.exit_code == 1
    assert "refusing to promote" in out.output and "qini_best_arm" in out.output
    assert client.get_model_version_by_alias(trained.model_name, "champion").version == before


def test_promote_unknown_model_is_an_error(runner, mlflow_store):
    out = runner.invoke(main, ["promote", "--name", "no-such-model"])
    assert out.exit_code == 2
