"""The Spark engine (serving/spark.py) on a real local[2] session bound to 127.0.0.1.

Spark and the local engine must give the same rows, columns and numbers (to 1e-9) for
the same voters and the same registered model (the session's `champion_uri`).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from features.pipeline import FeatureError
from serving.batch import BatchScorer, reason_columns, score_file
from serving.bundle import best_arms
from serving.spark import score_dataset, score_frame, scoring_udf

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
TOL = 1e-9


@pytest.fixture(scope="module")
def voters_path(campaign_dir):
    return campaign_dir / "voter_file.parquet"


def read(path) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values("voter_id").reset_index(drop=True)


def assert_identical(spark_scores: pd.DataFrame, local_scores: pd.DataFrame) -> None:
    assert list(spark_scores.columns) == list(local_scores.columns)
    assert len(spark_scores) == len(local_scores)
    assert (spark_scores.voter_id.to_numpy() == local_scores.voter_id.to_numpy()).all()
    for col in local_scores.columns:
        a, b = spark_scores[col], local_scores[col]
        if pd.api.types.is_float_dtype(b):
            assert pd.api.types.is_float_dtype(a), col
            assert np.allclose(a.to_numpy(float), b.to_numpy(float), rtol=0, atol=TOL, equal_nan=True), col
        else:
            assert (a.astype("object").fillna("<NA>") == b.astype("object").fillna("<NA>")).all(), col


def test_spark_session_is_local_on_loopback(spark):
    conf = spark.sparkContext.getConf()
    assert spark.sparkContext.master == "local[2]"
    assert conf.get("spark.driver.host") == "127.0.0.1"
    assert conf.get("spark.driver.bindAddress") == "127.0.0.1"


def test_spark_scores_equal_local_scores(spark, champion_uri, model, voters_path, tmp_path):
    stats = score_dataset(champion_uri, voters_path, tmp_path / "spark.parquet", spark=spark)
    local = score_file(model, voters_path, tmp_path / "local.parquet")
    assert stats.rows == local.rows == 50_000
    assert (tmp_path / "spark.parquet").is_dir()  # a parquet folder, one part per task
    assert_identical(read(stats.output), read(local.output))
    assert spark.sparkContext._jsc is not None  # a session it was given is left running


def test_spark_reasons_equal_local_reasons(spark, model, voters_path, tmp_path):
    seen: list[int] = []
    stats = score_dataset(model, voters_path, tmp_path / "spark.parquet", spark=spark, explain=3,
                          chunk_size=8_000, on_chunk=seen.append)
    local = score_file(model, voters_path, tmp_path / "local.parquet", explain=3)
    scores = read(stats.output)
    assert list(scores.columns)[-len(reason_columns(3)):] == reason_columns(3)
    assert_identical(scores, read(local.output))
    assert sum(seen) == 50_000  # progress reported every scored row


def test_spark_equals_local_on_repeated_feature_vectors(spark, model, campaign, tmp_path):
    # Equal feature vectors are scored once per chunk: the shortcut must agree across engines.
    base = campaign.voter_file.head(1_000)
    frame = pd.concat([base.assign(voter_id=base.voter_id + f"-{r}") for r in range(8)], ignore_index=True)
    path = tmp_path / "repeated.parquet"
    frame.to_parquet(path, index=False)
    stats = score_dataset(model, path, tmp_path / "spark.parquet", spark=spark, explain=4)
    local = score_file(model, path, tmp_path / "local.parquet", explain=4, dedupe=False)
    assert_identical(read(stats.output), read(local.output))


def test_spark_reads_csv_like_the_local_engine(spark, model, campaign, tmp_path):
    csv = tmp_path / "voters.csv"
    campaign.voter_file.head(5_000).to_csv(csv, index=False)
    stats = score_dataset(model, csv, tmp_path / "spark.parquet", spark=spark)
    assert_identical(read(stats.output), read(score_file(model, csv, tmp_path / "local.parquet").output))


def test_score_frame_entry_point_ignores_other_columns(spark, champion_uri, model, campaign):
    voters = campaign.voter_file.head(3_000)
    frame = spark.createDataFrame(voters)  # names, phones, e-mails and addresses included
    scored = score_frame(frame, champion_uri).toPandas()
    assert list(scored.columns) == ["voter_id", "turnout", *[f"uplift_{a.slug}" for a in model.arms],
                                    "best_arm", "best_uplift"]
    expected = model.score(voters)
    assert_identical(scored.sort_values("voter_id").reset_index(drop=True),
                     expected.sort_values("voter_id").reset_index(drop=True))


def test_scoring_udf_keeps_other_columns_beside_the_scores(spark, model, campaign):
    voters = campaign.voter_file.head(2_000)
    frame = spark.createDataFrame(voters)
    score, columns = scoring_udf(frame, model, explain=2)
    assert columns == [model.id_column, *model.input_features]
    scored = frame.select("precinct", score.alias("s")).select("precinct", "s.*").toPandas()
    assert list(scored.columns) == ["precinct", "voter_id", "turnout", *[f"uplift_{a.slug}" for a in model.arms],
                                    "best_arm", "best_uplift", *reason_columns(2)]
    scored = scored.sort_values("voter_id").reset_index(drop=True)
    assert (scored.precinct.to_numpy() == voters.sort_values("voter_id").precinct.to_numpy()).all()
    local = BatchScorer(model, explain=2).score(voters).sort_values("voter_id").reset_index(drop=True)
    assert_identical(scored.drop(columns="precinct"), local)


def test_transform_runs_on_the_workers(spark, model, voters_path, tmp_path):
    blocked = model.arms[-1]
    labels = [a.label for a in model.arms]
    cols = [f"uplift_{a.slug}" for a in model.arms]

    def suppress(chunk: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
        scores = scores.copy()
        scores[f"uplift_{blocked.slug}"] = np.nan
        scores["best_arm"], scores["best_uplift"] = best_arms(scores[cols].to_numpy(float), labels)
        scores["suppressed"] = blocked.label
        return scores

    stats = score_dataset(model, voters_path, tmp_path / "spark.parquet", spark=spark, explain=2,
                          transform=suppress)
    local = score_file(model, voters_path, tmp_path / "local.parquet", explain=2, transform=suppress)
    scores = read(stats.output)
    assert_identical(scores, read(local.output))
    assert not (scores.best_arm == blocked.label).any() and (scores.suppressed == blocked.label).all()


def test_missing_column_is_a_clear_error(spark, model, campaign, tmp_path):
    path = tmp_path / "no_hh.parquet"
    campaign.voter_file.drop(columns="hh_size").head(100).to_parquet(path, index=False)
    with pytest.raises(FeatureError, match="hh_size"):
        score_dataset(model, path, tmp_path / "out.parquet", spark=spark)
    assert not (tmp_path / "out.parquet").exists()


def test_cli_engine_spark(spark, champion_uri, model, voters_path, tmp_path):
    from training.cli import main

    out = tmp_path / "cli_spark.parquet"
    result = CliRunner().invoke(main, ["score", "--engine", "spark", "--spark-master", "local[2]",
                                       "--model", champion_uri, "--input", str(voters_path),
                                       "--output", str(out), "--explain", "1"])
    assert result.exit_code == 0, result.output
    assert "scored 50,000 voters" in result.output
    local = score_file(model, voters_path, tmp_path / "local.parquet", explain=1)
    assert_identical(read(out), read(local.output))
