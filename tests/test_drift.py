"""Drift at a glance (issue 23): the scored population against the training population.

PSI and its bands on hand-made shares; the bins (cut points halfway between training values,
unseen categories apart from missing values) and their counts, the same from the feature
frame, the service's float matrix, one voter at a time or in a batch; the reference learned at
training time travels in the MLflow model (the small synthetic model of
``small_model_fixtures``), and a model saved without one loads and says so. ``persuade score``
prints the summary and writes the full table into its provenance file, the list report shows
it, and a real ``bentoml serve`` answers ``GET /model`` with the drift of the voters it scored.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from cli_invoke import persuade

from features.drift import (
    MIN_VOTERS,
    NO_REFERENCE,
    SHIFTED,
    STABLE,
    TOO_FEW,
    DriftCounts,
    DriftReference,
    band,
    psi,
)
from features.drift_bins import MISSING, OTHER, ColumnBins, cut_points
from serving.api import ModelCard
from serving.batch import score_file
from serving.bundle import ScoringModel
from serving.flavor import load_model, save_model
from serving.launcher import ServiceProcess
from serving.model_check import smoke_check
from serving.model_holder import ServedModel, model_card
from serving.model_ref import ModelRef
from serving.provenance import ScoreProvenance
from serving.scoring import SegmentScorer
from training.cli_drift import drift_lines
from training.list_report import ListReport

KEY = "sk-drift-" + "0" * 16
PII = ("first_name", "last_name", "phone", "email", "address")


# -- PSI and its reading ----------------------------------------------------------------------
def test_psi_is_zero_for_identical_shares_and_the_hand_computed_value_for_a_shift():
    assert psi([0.2, 0.3, 0.5], [20, 30, 50]) == 0.0
    # 0.5/0.5 -> 0.25/0.75: (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
    assert psi([0.5, 0.5], [25, 75]) == pytest.approx(0.25 * np.log(2) + 0.25 * np.log(1.5), abs=1e-12)
    assert psi([0.5, 0.5], [25, 75]) == pytest.approx(0.2746530721670274, abs=1e-12)
    # a bin empty in training costs a finite amount: its share is floored at 1e-4
    expected = 2 * (0.45 - 0.5) * np.log(0.45 / 0.5) + (0.1 - 1e-4) * np.log(0.1 / 1e-4)
    assert psi([0.5, 0.5, 0.0], [45, 45, 10]) == pytest.approx(expected, abs=1e-12)
    assert psi([0.5, 0.5, 0.0], [50, 50, 0]) == 0.0
    assert np.isnan(psi([0.5, 0.5], [0, 0]))
    with pytest.raises(ValueError, match="bins"):
        psi([0.5, 0.5], [1, 2, 3])


def test_the_bands_are_read_at_their_edges():
    assert [band(v) for v in (0.0, 0.0999, 0.1, 0.25, 0.2501, 3.0)] == [
        "stable", "stable", "moderate", "moderate", "shifted", "shifted"]


# -- bins -------------------------------------------------------------------------------------
def test_cut_points_lie_halfway_between_training_values():
    ages = np.arange(20, 120, dtype=float)  # 100 distinct values, deciles at 29, 39, ...
    assert cut_points(ages, 10).tolist() == [29.5, 39.5, 49.5, 59.5, 69.5, 79.5, 89.5, 99.5, 109.5]
    assert cut_points(np.array([0.0] * 70 + [1.0] * 30), 10).tolist() == [0.5]  # a 0/1 feature: a bin per value
    assert cut_points(np.array([3.0, 3.0]), 10).size == 0
    column = ColumnBins.fit(pd.Series([0.0] * 70 + [1.0] * 20 + [np.nan] * 10), name="voted", role="feature")
    assert column.labels() == ["<= 0.5", "> 0.5", MISSING]
    np.testing.assert_allclose(column.shares, [0.7, 0.2, 0.1])


def reference_frames(n: int = 2000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    features = pd.DataFrame({
        "age": rng.integers(18, 90, n).astype(float),
        "voted": rng.integers(0, 2, n).astype(float),
        "party": pd.Categorical(rng.choice(["D", "R", "I"], n), categories=["D", "I", "R"]),
    })
    features.loc[: n // 20, "age"] = np.nan
    scores = pd.DataFrame({"turnout": rng.random(n), "uplift_phone": rng.normal(0, 0.02, n)})
    return features, scores


def test_a_reference_counts_unseen_categories_apart_from_missing_values_and_round_trips_as_json():
    features, scores = reference_frames()
    reference = DriftReference.fit(features=features, scores=scores)
    party = next(c for c in reference.columns if c.name == "party")
    assert party.labels() == ["D", "I", "R", OTHER, MISSING] and party.shares[3:].tolist() == [0.0, 0.0]
    again = DriftReference.from_dict(json.loads(json.dumps(reference.to_dict())))
    assert again.to_dict() == reference.to_dict()

    raw = pd.DataFrame({"party": ["D", "Green", None]})
    frame = pd.DataFrame({"age": [30.0, np.nan, 50.0], "voted": [1.0, 0.0, np.nan],
                          "party": pd.Categorical(["D", None, None], categories=["D", "I", "R"])})
    three = {"turnout": [0.1, 0.2, 0.3], "uplift_phone": [0.0, 0.0, np.nan]}
    counts = DriftCounts(again)
    counts.add(frame, three, raw=raw)
    by_bin = dict(zip(party.labels(), counts.counts()[again.offsets[2]:again.offsets[3]].tolist(), strict=True))
    assert by_bin == {"D": 1, "I": 0, "R": 0, OTHER: 1, MISSING: 1}
    blind = DriftCounts(again)
    blind.add(frame, three)  # without the raw values an unseen category cannot be told from a missing one
    assert blind.counts()[again.offsets[2] + 4] == 2


def test_counts_are_the_same_from_the_frame_the_matrix_one_voter_at_a_time_or_merged():
    features, scores = reference_frames()
    reference = DriftReference.fit(features=features, scores=scores)
    shifted = features.assign(age=features.age + 20)
    whole = DriftCounts(reference)
    whole.add(shifted, scores)
    matrix = np.column_stack([shifted.age, shifted.voted, shifted.party.cat.codes.replace(-1, np.nan)])
    singles, first, second = DriftCounts(reference), DriftCounts(reference), DriftCounts(reference)
    for i in range(300):  # one voter per call (the broadcast path)
        singles.add(matrix[i:i + 1], {c: scores[c].to_numpy()[i:i + 1] for c in scores})
    first.add(matrix[:300], scores.iloc[:300])  # one batch (a pass per cut rank)
    second.add(shifted.iloc[300:], scores.iloc[300:])
    np.testing.assert_array_equal(singles.counts(), first.counts())
    np.testing.assert_array_equal(first.merge(second).counts(), whole.counts())
    assert first.voters == whole.voters == len(features)


def test_a_shifted_feature_is_flagged_and_the_others_stay_stable():
    features, scores = reference_frames()
    fresh_features, fresh_scores = reference_frames(seed=1)  # the same population, drawn again
    reference = DriftReference.fit(features=features, scores=scores)
    same = DriftCounts(reference)
    same.add(fresh_features, fresh_scores)
    assert same.report()["status"] == STABLE
    moved = DriftCounts(reference)
    moved.add(fresh_features.assign(age=fresh_features.age + 20), fresh_scores)
    report = moved.report(bins=True)
    assert report["status"] == SHIFTED and report["voters"] == len(features)
    bands = {r["name"]: r["band"] for r in report["features"] + report["scores"]}
    assert bands == {"age": SHIFTED, "voted": STABLE, "party": STABLE, "turnout": STABLE, "uplift_phone": STABLE}
    assert report["features"][0]["name"] == "age"  # highest PSI first
    assert sum(b["scored"] for b in report["features"][0]["bins"]) == pytest.approx(1.0)
    few = DriftCounts(reference)
    few.add(fresh_features.head(MIN_VOTERS - 1), fresh_scores.head(MIN_VOTERS - 1))
    assert few.report()["status"] == TOO_FEW and {r["band"] for r in few.report()["features"]} == {TOO_FEW}


# -- the reference travels with the model -------------------------------------------------------
@pytest.fixture(scope="module")
def voters(small_campaign):
    """The campaign's voter file (PII columns included: they must never reach drift)."""
    return small_campaign.voter_file


@pytest.fixture(scope="module")
def older(voters):
    """The same voters twenty years older."""
    return voters.assign(age=voters.age + 20)


def test_the_trained_model_carries_its_reference_through_mlflow_and_flags_an_older_population(
        small_model, voters, older, tmp_path):
    model, _ = small_model  # loaded from the registry: the reference travelled in the persuade flavor
    reference = model.drift_reference
    assert [c.name for c in reference.features] == model.pipeline.output_columns
    assert [c.name for c in reference.scores] == model.score_columns
    text = json.dumps(reference.to_dict())
    assert not any(str(v) in text for v in voters.voter_id.head(50)) and "@example" not in text
    voters.to_parquet(tmp_path / "voters.parquet")
    older.to_parquet(tmp_path / "older.parquet")
    same = score_file(model, tmp_path / "voters.parquet", tmp_path / "a.parquet", chunk_size=1_000).drift.report()
    assert same["status"] == STABLE, same
    moved = score_file(model, tmp_path / "older.parquet", tmp_path / "b.parquet", chunk_size=1_000).drift.report()
    bands = {r["name"]: r["band"] for r in moved["features"]}
    assert moved["voters"] == len(older) and bands.pop("age") == SHIFTED
    assert set(bands.values()) == {STABLE}, bands


def test_a_model_saved_without_a_reference_loads_and_reports_none(small_model, voters, tmp_path):
    model, example = small_model
    old = dataclasses.replace(model, drift_reference=None)  # as models were saved before drift references
    save_model(old, tmp_path / "old", input_example=example)
    assert not (tmp_path / "old" / "bundle" / "drift_reference.json").exists()
    loaded = load_model(str(tmp_path / "old"))
    assert loaded.drift_reference is None and ScoringModel.load(tmp_path / "old" / "bundle").drift_reference is None
    voters.head(100).to_parquet(tmp_path / "v.parquet")
    assert score_file(loaded, tmp_path / "v.parquet", tmp_path / "s.parquet").drift is None
    scorer = SegmentScorer(loaded, ModelRef("old", "1", None, "models:/old/1"))
    scorer.score_request(json.loads(voters.head(5).to_json(orient="records")))
    card = model_card(ServedModel(loaded, scorer.ref, scorer, "2026-01-01T00:00:00Z"), {})
    assert card["drift"]["status"] == NO_REFERENCE and card["drift"]["voters"] == 0
    assert "no drift reference" in drift_lines(card["drift"])[0]
    save_model(model, tmp_path / "new", input_example=example)  # and a model with one keeps it
    assert load_model(str(tmp_path / "new")).drift_reference.to_dict() == model.drift_reference.to_dict()


def test_the_service_counts_what_the_batch_path_counts_and_not_its_smoke_check(small_model, older,
                                                                             tmp_path):
    model, _ = small_model
    segment = older.head(400).copy()
    segment["urbanicity"] = segment.urbanicity.astype(object)
    segment.loc[:19, "urbanicity"] = "on the moon"  # a category training never saw
    segment.loc[20:29, "urbanicity"] = None
    scorer = SegmentScorer(model, ModelRef("small", "1", None, "models:/small/1"))
    smoke_check(scorer)
    assert scorer.drift.voters == 0  # the probe segment is no voter
    records = json.loads(segment.to_json(orient="records"))
    scorer.score_request(records[:1])
    scorer.score_request(records[1:])
    direct = DriftCounts(model.drift_reference)
    direct.add(model.transform(segment), model.score(segment), raw=segment)
    np.testing.assert_array_equal(scorer.drift.counts(), direct.counts())
    segment.to_parquet(tmp_path / "segment.parquet")
    batch = score_file(model, tmp_path / "segment.parquet", tmp_path / "scores.parquet", chunk_size=150).drift
    np.testing.assert_array_equal(scorer.drift.counts(), batch.counts())
    urbanicity = next(i for i, c in enumerate(model.drift_reference.columns) if c.name == "urbanicity")
    start = model.drift_reference.offsets[urbanicity]
    labels = model.drift_reference.columns[urbanicity].labels()
    counted = dict(zip(labels, scorer.drift.counts()[start:start + len(labels)].tolist(), strict=True))
    assert counted[OTHER] == 20 and counted[MISSING] == 10


# -- persuade score, the list report ----------------------------------------------------------
def test_score_prints_the_summary_and_its_provenance_and_list_report_carry_the_table(
        small_trained, older, voters, tmp_path):
    uri = small_trained.model_uri
    older.to_parquet(tmp_path / "older.parquet", index=False)
    output = tmp_path / "scores.parquet"
    done = persuade("score", "--model", uri, "--input", str(tmp_path / "older.parquet"), "--output", str(output),
                    "--no-consent", env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("drift against the training population"))
    assert f"({len(older):,} voters scored)" in lines[start]
    assert lines[start + 2].split() == [lines[start + 2].split()[0], SHIFTED, "age"]
    assert all(len(line) <= 80 for line in lines[start:start + 4])
    assert "scores.parquet.provenance.json" in done.stdout
    provenance = ScoreProvenance.read(output)
    drift = provenance.drift
    assert drift["status"] == SHIFTED and drift["voters"] == len(older)
    age = next(r for r in drift["features"] if r["name"] == "age")
    assert age["band"] == SHIFTED and len(age["bins"]) == len(model_bins(small_trained, "age"))
    text = ScoreProvenance.path_for(output).read_text()
    for column in ("voter_id", *PII):
        assert not any(str(v) in text for v in voters[column].head(200)), column
    html = ListReport(explain_rows=50).build(output)
    assert "Drift: the scored voters against the training population" in html
    assert '<tr class="flag"><td class="text">age</td><td class="text">feature</td>' in html

    voters.to_parquet(tmp_path / "voters.parquet", index=False)
    same = persuade("score", "--model", uri, "--input", str(tmp_path / "voters.parquet"), "--output",
                    str(tmp_path / "same.parquet"), "--no-consent", env={"COLUMNS": "200"})
    assert same.returncode == 0, same.stderr[-2000:]
    assert any(line.startswith("drift against training: all stable") for line in same.stdout.splitlines())


def model_bins(trained, name: str) -> list[str]:
    from serving.registry import load_scoring_model

    model = load_scoring_model(trained.model_uri)[0]
    return next(c for c in model.drift_reference.columns if c.name == name).labels()


# -- GET /model -------------------------------------------------------------------------------
def test_the_service_answers_model_with_the_drift_of_the_voters_it_scored(small_trained, older):
    uri = small_trained.model_uri
    with ServiceProcess(model_uri=uri, api_keys=[KEY], env={"PERSUADE_RELOAD_SECONDS": "0",
                                                            "PERSUADE_WORKERS": "1"}) as service, \
            service.client(KEY) as client:
        before = client.get("/model").json()["drift"]
        assert before["voters"] == 0 and before["status"] == TOO_FEW  # the smoke check is not counted
        records = json.loads(older.head(601).to_json(orient="records"))
        for part in (records[:1], records[1:201], records[201:401], records[401:]):
            assert client.post("/score", json={"voters": part}).status_code == 200
        body = client.get("/model")
    service.cleanup()
    assert body.status_code == 200
    card = ModelCard.model_validate(body.json())
    drift = card.drift
    assert drift.voters == 601 and drift.status == SHIFTED and drift.training_voters > 0
    assert drift.features[0].name == "age" and drift.features[0].band == SHIFTED
    assert {s.name for s in drift.scores} == {"turnout", *(f"uplift_{a}" for a in ("mail", "phone", "text",
                                                                                   "canvass"))}
    assert drift.since == card.loaded_at
    assert not any(r["voter_id"] in body.text for r in records[:50])
