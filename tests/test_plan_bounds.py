"""``POST /plan`` bounded and honest as ``POST /score`` is (issue 20).

Against a real ``bentoml serve`` on 127.0.0.1 (one worker, the small synthetic model: the
session's ``small_service``, which ``test_request_bounds`` uses too, and its helpers):

- an id over 128 characters among 10,000 voters (one of 50,000 characters) is a 422 naming
  the voter, the field and the limit; 10,000 voters with ids at the limit are planned;
- the response's ``warnings`` name the voters whose values are outside the training range,
  of an unknown category or missing, with the codes of ``/score``, and the audit line
  counts them; an id that appears twice is a 422 naming each occurrence (a voter is planned
  once; it used to be one message about "duplicate voter ids" naming no voter).

In process: a plan's memory does not grow with the longest id (ids used to become
fixed-width numpy string arrays, as wide as the longest id, several times per plan), and
a large plan's expected gains are computed in slices (of at least ``GAINS_MIN_SLICE``
voters) while a single-voter ``/score`` request is answered beside it, with the same plan
as in one piece.
"""

from __future__ import annotations

import json
import threading
import tracemalloc

import numpy as np
from test_request_bounds import beside_one_small_request, problems
from test_service_reload import wait_for

from serving.api import encode
from serving.model_holder import ServedModel
from serving.model_ref import ModelRef
from serving.plan_api import GAINS_MIN_SLICE, PlanResponse, answer_plan, plan_payload, voter_gains
from serving.plan_design import DesignSpec
from serving.scoring import Eligibility, SegmentScorer
from serving.voters import VoterReader

N = 10_000


def plan(client, voters, budget: float = 50.0, **options):
    return client.post("/plan", json={"voters": voters, "budget": budget, **options})


def many_voters(small_campaign, n: int, id_of=str) -> list[dict]:
    """``n`` voters of the small campaign (repeated), each with the id ``id_of(i)``."""
    records = json.loads(small_campaign.voter_file.to_json(orient="records"))
    return [{**records[i % len(records)], "voter_id": id_of(i)} for i in range(n)]


# -- against the service ----------------------------------------------------------------------------------------
def test_an_id_over_the_limit_is_422_and_ids_at_the_limit_are_planned(small_client, small_campaign):
    voters = many_voters(small_campaign, N)
    voters[-1]["voter_id"] = "x" * 50_000
    found = problems(plan(small_client, voters))
    assert found == {(N - 1, "voter_id"): "must be at most 128 characters"}
    at_limit = plan(small_client, many_voters(small_campaign, N, lambda i: f"{i:0128d}"))
    assert at_limit.status_code == 200, at_limit.text[:300]
    body = PlanResponse.model_validate(at_limit.json())
    assert body.voters == N and sum(c.attempts for c in body.channels.values()) > 0
    assert all(len(c.voter_id) == 128 for ch in body.channels.values() for c in ch.contacts)


def test_warnings_name_the_voters_and_the_audit_line_counts_them(small_service, small_client, small_model,
                                                                 small_campaign):
    model, _ = small_model
    features = model.input_features
    complete = json.loads(small_campaign.voter_file[["voter_id", *features]].dropna().head(1)
                          .to_json(orient="records"))[0]
    odd = {**complete, "voter_id": "odd", "hh_size": -5, "primary_18": 7, "urbanicity": "moon"}
    r = plan(small_client, [{**complete, "voter_id": "fine"}, odd, {"voter_id": "bare"}])
    assert r.status_code == 200, r.text[:300]
    body = PlanResponse.model_validate(r.json())
    odd_codes = {"hh_size": "out_of_range", "primary_18": "out_of_range", "urbanicity": "unknown_category"}
    assert [w.model_dump() for w in body.warnings] == [
        {"voter_id": "odd", "warnings": [f"{odd_codes[f]}:{f}" for f in features if f in odd_codes]},
        {"voter_id": "bare", "warnings": [f"missing:{f}" for f in features]}]

    def audited() -> dict | None:
        lines = [json.loads(line) for line in small_service.log.splitlines() if line.startswith('{"audit"')]
        return next((a for a in lines if a["path"] == "/plan" and a.get("voters") == 3 and a.get("warnings")), None)

    wait_for(lambda: audited() is not None)
    assert audited()["warnings"] == {"out_of_range": 2, "unknown_category": 1, "missing": len(features)}


def test_an_id_that_appears_twice_is_422_naming_each_occurrence(small_client):
    found = problems(plan(small_client, [{"voter_id": "a"}, {"voter_id": "b"}, {"voter_id": "a"}, {"voter_id": 7},
                                   {"voter_id": "7"}]))
    assert set(found) == {(0, "voter_id"), (2, "voter_id"), (3, "voter_id"), (4, "voter_id")}
    assert all("appears more than once" in m for m in found.values())


# -- in process -------------------------------------------------------------------------------------------------
def test_a_plans_memory_does_not_grow_with_the_longest_id(small_model, small_campaign):
    """One id of 128 characters among 4,000 short ones: a fixed-width array of the ids is 2 MB, of short ids 64 KB."""
    model, _ = small_model
    reader, ref = VoterReader(model), ModelRef("small", "1", None, "models:/small/1")
    n = len(small_campaign.voter_file)

    def peak(longest: str) -> int:
        batch = reader.read(many_voters(small_campaign, n, lambda i: longest if i == n - 1 else f"v{i}"))
        gains = voter_gains(model, batch)  # the scoring step, outside the measure
        tracemalloc.start()
        try:
            plan_payload(model, ref, batch, 100.0, design=DesignSpec(holdout=0.1, seed=3), gains=gains)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    short, long = peak("v-last"), peak("x" * 128)
    assert long - short < 256 * 1024, f"the plan's peak grew by {(long - short) / 1e6:.1f} MB with one long id"


class SecondSliceWaits:
    """An eligibility rule allowing every arm whose second call (a plan's second slice) waits for ``answered``."""

    def __init__(self, answered: threading.Event):
        self.answered, self.calls = answered, 0

    def __call__(self, voters, arms) -> Eligibility:
        self.calls += 1
        if self.calls == 2 and not self.answered.wait(60):
            raise AssertionError("the small request was not answered while the plan's gains were computed")
        shape = (len(voters), len(arms))
        return Eligibility(np.ones(shape, dtype=bool), np.full(shape, None, dtype=object))


def test_a_large_plan_in_slices_lets_a_small_score_through_with_the_same_plan(small_model, small_campaign):
    model, _ = small_model
    ref = ModelRef("small", "1", None, "models:/small/1")
    answered = threading.Event()
    rule = SecondSliceWaits(answered)
    planner = ServedModel(model, ref, SegmentScorer(model, ref, rule), "now")
    scorer = SegmentScorer(model, ref)
    served = ServedModel(model, ref, scorer, "now")
    voters = many_voters(small_campaign, 2 * GAINS_MIN_SLICE + 100)  # three slices
    voters[5]["hh_size"] = -5  # a warning, carried across slices
    design = DesignSpec(holdout=0.2, seed=11)

    async def large(batcher) -> bytes:  # slices of at least GAINS_MIN_SLICE voters, whatever the batcher's 40
        body, _ = await answer_plan(batcher, planner, voters, budget=60.0, design=design)
        return body

    sliced, one, done = beside_one_small_request(large, served, voters, answered)
    assert done == ["small", "large"], "the small request waited for the whole plan"
    assert one["scores"][0]["voter_id"] == voters[0]["voter_id"]
    assert rule.calls == 3  # one eligibility per slice, each at least GAINS_MIN_SLICE voters
    batch = scorer.read(voters)
    whole = plan_payload(model, ref, batch, 60.0, eligibility=SecondSliceWaits(answered)(batch, model.arms),
                         design=design)
    assert json.loads(sliced) == json.loads(encode(whole))
    assert "out_of_range:hh_size" in {w["voter_id"]: w["warnings"] for w in whole["warnings"]}[voters[5]["voter_id"]]
