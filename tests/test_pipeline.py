"""The shared feature transform: fixed at fit time, identical after a save/load."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features.pipeline import FeatureError, FeaturePipeline


def _frame():
    return pd.DataFrame({
        "age": [30, 40, 50, 60],
        "urbanicity": pd.Series(["urban", "rural", "suburban", "urban"], dtype="str"),
        "primary_18": [1, 0, 1, 1],
        "general_18": [1, 1, 0, 1],
        "name": ["a", "b", "c", "d"],
    })


def test_fit_transform_types_and_derived():
    pipe = FeaturePipeline(["age", "urbanicity", "primary_18", "general_18"], ["past_vote_count"]).fit(_frame())
    X = pipe.transform(_frame())
    assert list(X.columns) == ["age", "urbanicity", "primary_18", "general_18", "past_vote_count"]
    assert X["urbanicity"].dtype == "category"
    assert list(X["urbanicity"].cat.categories) == ["rural", "suburban", "urban"]
    assert X["past_vote_count"].tolist() == [2.0, 1.0, 1.0, 2.0]
    assert "name" not in X


def test_unseen_category_becomes_missing_and_categories_stay_fixed():
    pipe = FeaturePipeline(["urbanicity"]).fit(_frame())
    X = pipe.transform(pd.DataFrame({"urbanicity": ["exurb", "urban"]}))
    assert X["urbanicity"].isna().tolist() == [True, False]
    assert list(X["urbanicity"].cat.categories) == ["rural", "suburban", "urban"]


def test_missing_columns_error_or_nan():
    pipe = FeaturePipeline(["age", "urbanicity"]).fit(_frame())
    with pytest.raises(FeatureError, match=r"missing from the input: \['age'\]"):
        pipe.transform(pd.DataFrame({"urbanicity": ["urban"]}))
    X = pipe.transform(pd.DataFrame({"urbanicity": ["urban"]}), allow_missing=True)
    assert np.isnan(X["age"].iloc[0])


def test_non_numeric_value_is_named():
    pipe = FeaturePipeline(["age"]).fit(_frame())
    with pytest.raises(FeatureError, match="feature 'age' must be numeric; got 'old'"):
        pipe.transform(pd.DataFrame({"age": ["41", "old"]}))
    assert pipe.transform(pd.DataFrame({"age": ["41"]}))["age"].iloc[0] == 41.0


def test_json_round_trip_gives_identical_transform():
    pipe = FeaturePipeline(["age", "urbanicity", "primary_18", "general_18"], ["past_vote_count"]).fit(_frame())
    again = FeaturePipeline.from_dict(json.loads(json.dumps(pipe.to_dict())))
    pd.testing.assert_frame_equal(pipe.transform(_frame()), again.transform(_frame()))


def test_unknown_derived_feature():
    with pytest.raises(FeatureError, match="unknown derived features"):
        FeaturePipeline(["age"], ["zodiac_sign"])


def test_past_vote_count_is_the_row_sum_and_missing_only_when_every_election_is():
    from features.pipeline import _past_vote_count

    frame = pd.DataFrame({"general_20": [1.0, np.nan, 0.0, np.nan], "primary_20": ["1", "0", None, None],
                          "general_22": pd.array([1, 1, None, None], dtype="Int64"),
                          "primary_22": [True, False, True, False]})
    inputs = list(frame.columns)
    expected = frame.apply(pd.to_numeric, errors="coerce").sum(axis=1, min_count=1)
    got = _past_vote_count(frame, inputs)
    np.testing.assert_array_equal(got, expected.to_numpy(dtype=float))
    assert got.tolist()[:3] == [4.0, 1.0, 1.0]
    both_missing = frame.assign(primary_22=[True, False, True, None])
    assert np.isnan(_past_vote_count(both_missing, inputs)[3])
