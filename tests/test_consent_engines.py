"""Every engine decides consent as the local one: Spark (local[2] on 127.0.0.1) and the MLflow pyfunc.

Issue 19, finding 7: the Spark engine refused ``--consent``; the pyfunc's ``predict``
returned best arms with no consent applied.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from consent_cases import AS_OF, hash_key  # noqa: F401

from features.consent import ConsentRules
from features.table_files import open_dataset
from serving.batch import score_file
from serving.spark import score_dataset
from training.cli import main

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


@pytest.fixture(scope="module")
def files(campaign, tmp_path_factory):
    """8,000 voters (some numbers missing or unparseable, some ids padded) and the campaign's consent table."""
    folder = tmp_path_factory.mktemp("consent_engines")
    voters = campaign.voter_file.head(8000).copy()
    phone = voters.phone.astype(object)
    phone[voters.index % 17 == 0] = None
    phone[voters.index % 23 == 0] = "(415) 555-2671 x12"
    voters["phone"] = phone
    voters["voter_id"] = voters.voter_id.where(voters.index % 5 != 0, " " + voters.voter_id + " ")
    voters.to_parquet(folder / "voters.parquet", row_group_size=3000)
    campaign.consent.to_parquet(folder / "consent.parquet")
    return folder


def _sorted(path) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values("voter_id").reset_index(drop=True)


def _assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Spark's output ``a`` is the local engine's ``b``: the same columns and values."""
    assert list(a.columns) == list(b.columns)
    for col in b.columns:
        if pd.api.types.is_float_dtype(b[col]):
            assert np.allclose(a[col].to_numpy(float), b[col].to_numpy(float), rtol=0, atol=1e-9, equal_nan=True), col
        else:
            assert (a[col].astype(object).fillna("<NA>") == b[col].astype(object).fillna("<NA>")).all(), col


def test_spark_applies_consent_with_the_local_decisions(spark, model, files, tmp_path):
    rules = ConsentRules.from_path(files / "consent.parquet", as_of=AS_OF)
    columns = open_dataset(files / "voters.parquet").schema.names
    local_transform = rules.transform(model.arms, model.id_column, columns)
    assert local_transform.columns == ["phone"]
    local = score_file(model, files / "voters.parquet", tmp_path / "local.parquet", chunk_size=2500,
                       transform=local_transform, explain=2)
    stats = score_dataset(model, files / "voters.parquet", tmp_path / "spark.parquet", spark=spark, explain=2,
                          transform=rules.transform(model.arms, model.id_column, columns), chunk_size=2000)
    a, b = _sorted(stats.output), _sorted(local.output)
    _assert_same(a, b)
    assert "phone_hash" in a.columns and len(a) == 8000
    reasons = set(b.suppression_text.dropna())
    assert {"unverifiable_phone", "no_consent", "revoked"} <= reasons and b.eligible_text.any()
    assert stats.consent == local_transform.tally  # the diagnostics, tallied on the workers
    assert stats.consent.phone_unparseable == sum(i % 23 == 0 for i in range(8000))
    assert stats.consent.phone_missing == sum(i % 17 == 0 and i % 23 != 0 for i in range(8000))


def test_spark_keeps_quiet_hours_as_the_local_engine(spark, model, files, tmp_path):
    """Both engines place voters in the same zones (number and state) and keep the same calling window."""
    voters = pd.read_parquet(files / "voters.parquet")
    voters["state"] = pd.Series(np.where(voters.index % 3 == 0, "FL", "ny"), dtype=object).where(
        voters.index % 3 != 1, None)
    path = tmp_path / "voters_with_state.parquet"
    voters.to_parquet(path, row_group_size=3000)
    quiet = "2026-10-01T12:30:00Z"  # 08:30 in New York, 07:30 in Chicago, 05:30 in California
    rules = ConsentRules.from_path(files / "consent.parquet", as_of=quiet)
    columns = open_dataset(path).schema.names
    local_transform = rules.transform(model.arms, model.id_column, columns)
    assert local_transform.columns == ["phone", "state"]
    local = score_file(model, path, tmp_path / "local.parquet", chunk_size=2500, transform=local_transform)
    stats = score_dataset(model, path, tmp_path / "spark.parquet", spark=spark, chunk_size=2000,
                          transform=rules.transform(model.arms, model.id_column, columns))
    a, b = _sorted(stats.output), _sorted(local.output)
    _assert_same(a, b)
    assert list(b.columns[:3]) == ["voter_id", "phone_hash", "time_zone"]
    assert {"unknown_timezone", "outside_calling_hours"} <= set(b.suppression_phone.dropna())
    assert b.eligible_phone.any() and b.eligible_mail.mean() > 0.9
    for zones in b.time_zone[b.eligible_phone].unique():  # a live call only where it is 8 a.m.-9 p.m. in each zone
        assert all(8 <= pd.Timestamp(quiet).tz_convert(zone).hour < 21 for zone in zones.split()), zones


def test_cli_engine_spark_takes_consent(model, files, tmp_path, champion_uri, spark):
    result = CliRunner().invoke(main, ["score", "--model", champion_uri, "--input", str(files / "voters.parquet"),
                                       "--output", str(tmp_path / "spark.parquet"), "--engine", "spark",
                                       "--consent", str(files / "consent.parquet"), "--as-of", AS_OF])
    assert result.exit_code == 0, result.output
    scores = pd.read_parquet(tmp_path / "spark.parquet")
    assert not (scores.best_arm[~scores.eligible_text] == "Text").any()
    assert "join: numbers missing" in " ".join(result.output.split())


def test_pyfunc_predict_never_returns_an_arm_that_needs_consent_without_a_table(trained, model, files, campaign):
    import mlflow

    pyfunc = mlflow.pyfunc.load_model(trained.model_uri)
    sample = campaign.voter_file.head(400)
    bare = pyfunc.predict(sample)
    raw = model.score(sample)
    assert (raw.best_arm == "Text").any(), "the sample must hold voters whose raw best arm is Text"
    assert not (bare.best_arm == "Text").any() and bare.uplift_text.isna().all()
    assert set(bare.suppression_text) == {"no_consent"} and bare.eligible_mail.all()
    with_table = pyfunc.predict(sample, params={"consent_table": str(files / "consent.parquet"), "as_of": AS_OF})
    expected = ConsentRules.from_path(files / "consent.parquet", as_of=AS_OF).apply(raw, sample, model.arms)
    pd.testing.assert_frame_equal(with_table.reset_index(drop=True), expected.reset_index(drop=True))
    assert with_table.eligible_text.any() and (with_table.best_arm == "Text").any()
