"""Streaming batch scoring (serving/batch.py), `persuade score`, and the synthetic voter file.

The model is the session's trained synthetic campaign (`champion_uri`, a real MLflow
store); the voter file is that campaign's, with its synthetic names, phones, e-mails
and addresses, which must never be read into or written out of scoring.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from features.pii import PHONE_PATTERN, PIIError, find_pii_columns, values_look_like_pii
from features.pipeline import FeatureError
from features.synthetic_voterfile import PAST_TURNOUT, PII_COLUMNS, write_voter_file
from serving.batch import BatchScorer, distinct_rows, iter_chunks, reason_columns, score_file
from serving.bundle import CONTROL_ARM, best_arms

PII = ["first_name", "last_name", "phone", "email", "address"]


@pytest.fixture(scope="module")
def voters_path(campaign_dir) -> Path:
    return campaign_dir / "voter_file.parquet"


@pytest.fixture(scope="module")
def voters(voters_path) -> pd.DataFrame:
    return pd.read_parquet(voters_path)


@pytest.fixture(scope="module")
def repeated_path(voters, tmp_path_factory) -> Path:
    """2,000 voters' features, each repeated 10 times under new ids: many equal feature vectors."""
    base = voters.head(2_000)
    frame = pd.concat([base.assign(voter_id=base.voter_id + f"-{r}") for r in range(10)], ignore_index=True)
    path = tmp_path_factory.mktemp("repeated") / "voters.parquet"
    frame.to_parquet(path, index=False)
    return path


def score_columns(model) -> list[str]:
    return ["voter_id", "turnout", *[f"uplift_{a.slug}" for a in model.arms], "best_arm", "best_uplift"]


def uplift_matrix(model, frame: pd.DataFrame) -> np.ndarray:
    return frame[[f"uplift_{a.slug}" for a in model.arms]].to_numpy(dtype=float)


def assert_same_scores(left: pd.DataFrame, right: pd.DataFrame, tol: float = 0.0) -> None:
    assert list(left.columns) == list(right.columns)
    assert len(left) == len(right)
    for col in left.columns:
        a, b = left[col], right[col]
        if pd.api.types.is_float_dtype(a):
            assert np.allclose(a.to_numpy(float), b.to_numpy(float), rtol=0, atol=tol, equal_nan=True), col
        else:
            assert (a.astype("object").fillna("<NA>") == b.astype("object").fillna("<NA>")).all(), col


# -- streaming ------------------------------------------------------------------------
def test_streams_in_bounded_chunks_and_matches_in_memory_scores(model, voters_path, voters, tmp_path):
    sizes: list[int] = []
    out = tmp_path / "scores.parquet"
    stats = score_file(model, voters_path, out, chunk_size=7_000, on_chunk=sizes.append)

    assert stats.rows == len(voters) == sum(sizes)
    assert max(sizes) <= 7_000 and len(sizes) == stats.chunks >= len(voters) // 7_000
    meta = pq.ParquetFile(out).metadata
    assert meta.num_row_groups == stats.chunks  # written incrementally, one row group per chunk
    assert max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= 7_000
    assert not out.with_name(out.name + ".partial").exists()

    scored = pd.read_parquet(out)
    expected = model.score(voters)
    assert list(scored.voter_id) == list(voters.voter_id)  # one row per voter, input order
    assert_same_scores(scored, expected[scored.columns], tol=1e-12)


def test_reading_is_lazy_so_memory_does_not_grow_with_the_file(model, voters, tmp_path):
    # 25 row groups of 2,000 voters. The dataset scanner's background read-ahead would
    # decode most of the file (about 6 MB here) before the first chunk is scored; the
    # lazy reader holds one row group (about 0.4 MB).
    path = tmp_path / "row_groups.parquet"
    pq.write_table(pa.Table.from_pandas(voters, preserve_index=False), path, row_group_size=2_000)
    chunks = iter_chunks(path, model, chunk_size=2_000)
    before = pa.total_allocated_bytes()
    first = next(chunks)
    held = pa.total_allocated_bytes() - before
    assert len(first) == 2_000
    assert held < 1.5 * 2**20, f"{held / 2**20:.1f} MB held after one chunk"
    assert sum(len(c) for c in chunks) == len(voters) - 2_000


def test_output_columns_and_best_arm(model, voters_path, tmp_path):
    scored = pd.read_parquet(score_file(model, voters_path, tmp_path / "s.parquet").output)
    assert list(scored.columns) == score_columns(model)
    uplift = uplift_matrix(model, scored)
    labels = np.array([a.label for a in model.arms], dtype=object)
    positive = uplift.max(axis=1) > 0
    assert (scored.best_arm[~positive] == CONTROL_ARM).all()
    assert (scored.best_arm[positive].to_numpy() == labels[uplift.argmax(axis=1)][positive]).all()
    assert np.allclose(scored.best_uplift, np.maximum(uplift.max(axis=1), 0.0))
    assert scored.turnout.between(0, 1).all()


def test_csv_input_scores_like_parquet(model, voters_path, voters, tmp_path):
    csv = tmp_path / "voters.csv"
    voters.to_csv(csv, index=False)
    from_csv = pd.read_parquet(score_file(model, csv, tmp_path / "csv.parquet", chunk_size=9_000).output)
    from_parquet = pd.read_parquet(score_file(model, voters_path, tmp_path / "pq.parquet").output)
    assert_same_scores(from_csv, from_parquet, tol=1e-12)


def test_gzipped_csv_with_ids_that_look_numeric_keeps_them_as_text(model, voters, tmp_path):
    frame = voters.head(500).assign(voter_id=[f"{i:010d}" for i in range(500)])
    path = tmp_path / "voters.csv.gz"
    frame.to_csv(path, index=False, compression="gzip")
    scored = pd.read_parquet(score_file(model, path, tmp_path / "gz.parquet").output)
    assert scored.voter_id.tolist() == frame.voter_id.tolist()  # leading zeros kept


# -- PII and extra columns ----------------------------------------------------------------
def test_pii_columns_are_neither_read_nor_written(model, voters, tmp_path):
    # A two-file dataset whose `phone` column has incompatible types in the two files:
    # reading that column at all would fail, so scoring proves it is never read.
    folder = tmp_path / "voters"
    folder.mkdir()
    half = len(voters) // 2
    voters.iloc[:half].to_parquet(folder / "part-0.parquet", index=False)
    second = pa.Table.from_pandas(voters.iloc[half:].drop(columns="phone"), preserve_index=False)
    second = second.append_column("phone", pa.array([[1, 2]] * second.num_rows, type=pa.list_(pa.int64())))
    pq.write_table(second, folder / "part-1.parquet")
    with pytest.raises(pa.ArrowNotImplementedError):
        pq.ParquetDataset(folder).read(columns=["phone"])

    seen: list[list[str]] = []

    def spy(chunk: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
        seen.append(list(chunk.columns))
        return scores

    out = score_file(model, folder, tmp_path / "s.parquet", chunk_size=10_000, transform=spy).output
    scored = pd.read_parquet(out)
    assert len(scored) == len(voters)
    assert all(cols == [model.id_column, *model.input_features] for cols in seen)
    assert not set(PII) & set(scored.columns)
    # by value: no phone numbers or e-mails anywhere (`uplift_phone` is an arm's uplift, not a phone)
    assert all(values_look_like_pii(scored[c].astype(str)) is None for c in scored.columns if c != "voter_id")
    text = pd.concat([scored[c].astype(str) for c in scored.columns]).unique()
    leaked = set(text) & set(pd.concat([voters[c].astype(str) for c in PII]).unique())
    assert leaked == set()


def test_a_transform_that_adds_phone_numbers_is_refused(model, voters_path, voters, tmp_path):
    phones = voters.set_index("voter_id").phone

    def leak(chunk: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
        return scores.assign(contact=phones.loc[chunk.voter_id].to_numpy())

    out = tmp_path / "leak.parquet"
    with pytest.raises(PIIError, match="contact"):
        score_file(model, voters_path, out, transform=leak)
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


# -- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize("drop", ["age", "urbanicity", "voter_id"])
def test_missing_column_is_a_clear_error_and_writes_nothing(model, voters, tmp_path, drop):
    path = tmp_path / "in.parquet"
    voters.drop(columns=drop).to_parquet(path, index=False)
    out = tmp_path / "out.parquet"
    with pytest.raises(FeatureError, match=drop):
        score_file(model, path, out)
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


@pytest.mark.parametrize("row", [2_500, 45_000])  # in the first CSV block, and far beyond it
def test_value_of_the_wrong_type_names_the_column(model, voters, tmp_path, row):
    bad = voters.astype({"party_score": "object"})
    bad.loc[row, "party_score"] = "high"
    csv = tmp_path / "bad.csv"
    bad.to_csv(csv, index=False)
    out = tmp_path / "a.parquet"
    with pytest.raises(FeatureError, match="'party_score'"):
        score_file(model, csv, out, chunk_size=1_000)
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()
    parquet = tmp_path / "bad.parquet"
    bad.head(3_000 if row < 3_000 else row + 1).astype({"party_score": "str"}).to_parquet(parquet, index=False)
    with pytest.raises(FeatureError, match="'party_score'"):
        score_file(model, parquet, tmp_path / "b.parquet", chunk_size=1_000)


def test_bad_parameters_are_refused(model, voters_path, tmp_path):
    with pytest.raises(ValueError, match="explain"):
        BatchScorer(model, explain=-1)
    with pytest.raises(ValueError, match="chunk_size"):
        list(iter_chunks(voters_path, model, chunk_size=0))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        score_file(model, tmp_path / "nowhere.parquet", tmp_path / "o.parquet")
    with pytest.raises(ValueError, match="is a folder"):
        score_file(model, voters_path, tmp_path)


def test_empty_input_writes_an_empty_file_with_the_columns(model, voters, tmp_path):
    path = tmp_path / "empty.parquet"
    voters.head(0).to_parquet(path, index=False)
    stats = score_file(model, path, tmp_path / "o.parquet", explain=2)
    scored = pd.read_parquet(stats.output)
    assert stats.rows == 0 and len(scored) == 0
    assert list(scored.columns) == score_columns(model) + reason_columns(2)
    assert pq.read_schema(stats.output).field("best_arm").type == pa.string()


# -- explanations --------------------------------------------------------------------------
def test_reasons_are_the_top_contributions_of_the_best_arm(model, voters_path, voters, tmp_path):
    k = 3
    scored = pd.read_parquet(score_file(model, voters_path, tmp_path / "e.parquet", chunk_size=12_000,
                                        explain=k).output)
    assert list(scored.columns) == score_columns(model) + reason_columns(k)
    uplift = uplift_matrix(model, scored)
    labels = [a.label for a in model.arms]
    top = np.array(labels, dtype=object)[uplift.argmax(axis=1)]
    assert (scored.reason_arm.astype(str).to_numpy() == top).all()
    positive = scored.best_arm != CONTROL_ARM
    assert (scored.reason_arm[positive].astype(str) == scored.best_arm[positive]).all()

    X = model.transform(voters)
    turnout = scored.turnout.to_numpy()
    names = np.array(model.feature_names, dtype=object)
    assert len(set(top)) >= 2  # several arms are explained, each with its own model
    for arm in sorted(set(top)):
        rows = np.flatnonzero(top == arm)
        phi = model.explain(X.iloc[rows], arm, turnout[rows])
        contrib = phi[:, :-1]
        order = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :k]
        got = scored.iloc[rows]
        assert np.allclose(got.reason_base, phi[:, -1], atol=1e-12)
        for i in range(k):
            assert (got[f"reason_{i + 1}"].astype(str).to_numpy() == names[order[:, i]]).all()
            assert np.allclose(got[f"reason_{i + 1}_contribution"],
                               np.take_along_axis(contrib, order[:, [i]], axis=1)[:, 0], atol=1e-12)
        sizes = np.abs(got[[f"reason_{i + 1}_contribution" for i in range(k)]].to_numpy())
        assert (np.diff(sizes, axis=1) <= 1e-15).all()  # sorted by absolute size


def test_all_reasons_add_up_to_the_uplift(model, voters_path, tmp_path):
    k = len(model.feature_names) + 2  # more than the model has: the extra ones are empty
    scored = pd.read_parquet(score_file(model, voters_path, tmp_path / "all.parquet", explain=k).output)
    n = len(model.feature_names)
    total = scored.reason_base + scored[[f"reason_{i + 1}_contribution" for i in range(n)]].sum(axis=1)
    slug = {a.label: a.slug for a in model.arms}
    explained = np.array([scored.at[i, f"uplift_{slug[a]}"] for i, a in enumerate(scored.reason_arm.astype(str))])
    assert np.allclose(total, explained, rtol=0, atol=1e-9)
    assert scored[f"reason_{k}"].isna().all() and scored[f"reason_{k}_contribution"].isna().all()
    listed = scored[[f"reason_{i + 1}" for i in range(n)]].astype(str).to_numpy()
    assert all(sorted(row) == sorted(model.feature_names) for row in listed[:200])


# -- distinct feature vectors -------------------------------------------------------------
def test_distinct_rows_maps_every_row_to_an_equal_one(model, voters):
    frame = pd.concat([voters.head(300)] * 3, ignore_index=True)
    base = frame.index % 300
    frame.loc[base % 7 == 0, "party_score"] = np.nan  # missing values group with missing values
    frame.loc[base % 11 == 0, "urbanicity"] = None
    X = model.transform(frame)
    first, codes = distinct_rows(X)
    assert len(first) == len(X.drop_duplicates()) <= 300
    pd.testing.assert_frame_equal(X.iloc[first[codes]].reset_index(drop=True), X.reset_index(drop=True))
    assert (first[codes[first]] == first).all()  # representatives are first occurrences
    assert distinct_rows(model.transform(voters)) is None  # mostly distinct: nothing to gain


def test_dedupe_changes_nothing_but_time(model, repeated_path, tmp_path):
    blocked = model.arms[0]
    labels = [a.label for a in model.arms]

    def suppress_some(chunk: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
        # Voters with equal features but different eligibility: their reasons differ.
        scores = scores.copy()
        hit = chunk.voter_id.str.endswith(("-0", "-3", "-6")).to_numpy()
        scores.loc[hit, f"uplift_{blocked.slug}"] = np.nan
        scores["best_arm"], scores["best_uplift"] = best_arms(uplift_matrix(model, scores), labels)
        return scores

    fast = score_file(model, repeated_path, tmp_path / "fast.parquet", chunk_size=6_000, explain=4,
                      transform=suppress_some)
    slow = score_file(model, repeated_path, tmp_path / "slow.parquet", chunk_size=6_000, explain=4,
                      transform=suppress_some, dedupe=False)
    a, b = pd.read_parquet(fast.output), pd.read_parquet(slow.output)
    assert_same_scores(a, b, tol=0.0)
    assert a.reason_arm.nunique() >= 2
    assert (a.reason_arm[a.voter_id.str.endswith("-0")] != blocked.label).all()


# -- the transform hook (eligibility) ---------------------------------------------------
def test_transform_hook_can_suppress_an_arm_and_reasons_follow(model, voters_path, tmp_path):
    plain = pd.read_parquet(score_file(model, voters_path, tmp_path / "p.parquet").output)
    wins = plain.best_arm[plain.best_arm != CONTROL_ARM].value_counts()
    blocked = next(a for a in model.arms if a.label == wins.index[0])  # the arm that is best most often
    labels = [a.label for a in model.arms]

    def suppress(chunk: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
        scores = scores.copy()
        scores[f"uplift_{blocked.slug}"] = np.nan
        arm, value = best_arms(uplift_matrix(model, scores), labels)
        scores["best_arm"], scores["best_uplift"] = arm, value
        scores[f"eligible_{blocked.slug}"] = False
        return scores

    scored = pd.read_parquet(score_file(model, voters_path, tmp_path / "t.parquet", transform=suppress,
                                        explain=2).output)
    assert (plain.best_arm == blocked.label).any()  # the suppression has something to change
    assert not (scored.best_arm == blocked.label).any()
    assert not (scored.reason_arm.astype(str) == blocked.label).any()
    assert list(scored.columns) == [*score_columns(model), f"eligible_{blocked.slug}", *reason_columns(2)]
    assert (scored[f"eligible_{blocked.slug}"] == False).all()  # noqa: E712
    assert np.allclose(scored.turnout, plain.turnout)


def test_a_transform_that_drops_rows_is_refused(model, voters_path, tmp_path):
    with pytest.raises(ValueError, match="every row"):
        score_file(model, voters_path, tmp_path / "x.parquet", transform=lambda chunk, s: s.iloc[1:])


# -- the CLI ------------------------------------------------------------------------------
def test_cli_score_streams_with_reasons(champion_uri, model, voters_path, tmp_path):
    from training.cli import main

    out = tmp_path / "cli.parquet"
    result = CliRunner().invoke(main, ["score", "--model", champion_uri, "--input", str(voters_path),
                                       "--output", str(out), "--chunk-size", "10000", "--explain", "2"])
    assert result.exit_code == 0, result.output
    assert "scored 50,000 voters" in result.output and "rows/s" in result.output
    expected = pd.read_parquet(score_file(model, voters_path, tmp_path / "api.parquet", explain=2).output)
    assert_same_scores(pd.read_parquet(out), expected)


def test_cli_missing_column_exits_with_the_column_name(champion_uri, voters, tmp_path):
    from training.cli import main

    path = tmp_path / "no_age.csv"
    voters.drop(columns="age").head(100).to_csv(path, index=False)
    result = CliRunner().invoke(main, ["score", "--model", champion_uri, "--input", str(path),
                                       "--output", str(tmp_path / "o.parquet")])
    assert result.exit_code == 2
    assert "age" in result.output and "Traceback" not in result.output


# -- the synthetic voter file ------------------------------------------------------------
def test_synthetic_voter_file_is_chunked_ggl_shaped_and_full_of_pii(tmp_path):
    path = write_voter_file(tmp_path / "vf.parquet", 25_001, seed=3, chunk_size=10_000)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == 25_001
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [10_000, 10_000, 5_001]
    frame = pd.read_parquet(path)
    ggl = ["hh_size", "neighbors", *PAST_TURNOUT]
    assert {*ggl, "voter_id", "sex", "age", "cluster", *PII_COLUMNS} == set(frame.columns)
    assert frame.voter_id.is_unique and frame.voter_id.str.fullmatch(r"VF-\d{9}").all()
    assert frame.phone.str.fullmatch(PHONE_PATTERN.pattern).all()
    for col, rate in PAST_TURNOUT.items():
        assert set(frame[col].unique()) <= {0, 1}
        assert abs(frame[col].mean() - rate) < 0.03, col
    assert abs((frame.hh_size == 2).mean() - 0.622) < 0.02 and frame.age.between(18, 106).all()
    assert (frame.neighbors == 21).mean() > 0.95 and frame.cluster.between(1, 10_000).all()
    # the PII guard finds the names by column name and the phones by value, whatever they are called
    found = find_pii_columns(frame.rename(columns={"phone": "contact"}).head(5_000))
    assert set(found) == {"first_name", "last_name", "contact"}
    assert "phone" in found["contact"]
    again = pd.read_parquet(write_voter_file(tmp_path / "again.parquet", 25_001, seed=3, chunk_size=10_000))
    assert again.equals(frame)
    other = pd.read_parquet(write_voter_file(tmp_path / "other.parquet", 25_001, seed=4, chunk_size=10_000))
    assert not other.phone.equals(frame.phone)


def test_synthetic_voter_file_refuses_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="n must be"):
        write_voter_file(tmp_path / "x.parquet", -1)
    with pytest.raises(ValueError, match="chunk_size"):
        write_voter_file(tmp_path / "x.parquet", 10, chunk_size=0)
