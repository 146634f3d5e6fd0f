"""Holdouts and exploration in a plan: reproducible draws, exact probabilities, consent kept."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from consent_cases import AS_OF  # a decision time inside every US zone's calling window

from features.consent import ConsentTable, eligibility_for
from serving.plan_api import PlanRequest, PlanResponse, plan_payload
from serving.plan_costs import PlanError, ProgramCosts
from serving.plan_design import (
    MIN_HELD_PER_STRATUM,
    DesignSpec,
    check_design,
    design_fingerprint,
    held_count,
    probability_columns,
    randomize,
)
from serving.plan_file import PLAN_METADATA_KEY, read_contacts, read_plan_summary
from serving.plan_gains import expected_gains
from serving.plan_sensitivity import with_sensitivity
from serving.planning import eligibility_arrays, plan_contacts, plan_from_gains
from serving.registry import load_scoring_model
from serving.scoring import Eligibility
from serving.voters import VoterReader
from training.cli import main

LABELS = ["a", "b", "c"]


def toy(n: int = 2000, seed: int = 0, forbidden: float = 0.25, targeted: float = 0.4):
    """Expected gains with arms not allowed (NaN) and a targeting of allowed, positive arms."""
    rng = np.random.default_rng(seed)
    gain = rng.normal(0.02, 0.02, (n, len(LABELS)))
    gain[rng.random(gain.shape) < forbidden] = np.nan
    best = np.nan_to_num(gain, nan=-np.inf)
    arm = np.where((rng.random(n) < targeted) & (best.max(axis=1) > 0), best.argmax(axis=1), -1)
    return gain, arm


# -- the draws ----------------------------------------------------------------------------------
def test_same_seed_same_assignment_other_seed_another():
    gain, arm = toy()
    spec = DesignSpec(holdout=0.1, explore=0.05, seed=11)
    first, again = (randomize(arm, gain, LABELS, spec, 11) for _ in range(2))
    np.testing.assert_array_equal(first.assigned, again.assigned)
    np.testing.assert_array_equal(first.holdout, again.holdout)
    np.testing.assert_array_equal(first.propensity, again.propensity)
    other = randomize(arm, gain, LABELS, spec, 12)
    assert (other.assigned != first.assigned).sum() > 20 and (other.holdout != first.holdout).any()
    assert first.description["seed"] == 11


def test_probabilities_are_exact_sum_to_one_and_are_zero_where_consent_forbids():
    gain, arm = toy(n=600, seed=1)
    spec = DesignSpec(holdout=0.2, explore=0.1)
    first = randomize(arm, gain, LABELS, spec, 0)
    p = first.propensity
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    assert (p[:, :3][np.isnan(gain)] == 0).all()
    assert (p[~np.isfinite(gain).any(axis=1), 3] == 1).all()  # nobody may get any arm: control for sure
    # the recorded probabilities are the design's: 4,000 redraws land on them (z-scores of a binomial)
    draws = 4000
    counts = np.zeros_like(p)
    for seed in range(draws):
        drawn = randomize(arm, gain, LABELS, spec, seed).assigned
        counts[np.arange(len(arm)), np.where(drawn >= 0, drawn, 3)] += 1
    share = counts / draws
    assert (share[p == 0] == 0).all() and (share[p == 1] == 1).all()  # never an arm of probability 0
    inside = (p > 0) & (p < 1)
    z = (share - p)[inside] / np.sqrt(p * (1 - p) / draws)[inside]
    assert np.abs(z).max() < 5.0 and abs(z.mean()) < 0.1


def test_exploration_never_assigns_an_arm_consent_forbids():
    gain, arm = toy(n=3000, seed=2, forbidden=0.6)
    allowed = np.isfinite(gain)
    for seed in range(25):
        drawn = randomize(arm, gain, LABELS, DesignSpec(explore=0.5), seed)
        explored = np.flatnonzero(drawn.explored & (drawn.assigned >= 0))
        assert len(explored) > 300
        assert allowed[explored, drawn.assigned[explored]].all()
        assert not drawn.explored[~allowed.any(axis=1)].any()  # a voter who may get no arm is never explored
        assert drawn.description["exploration"]["explored"] == round(0.5 * allowed.any(axis=1).sum())


def test_holdout_share_is_exact_per_stratum_of_arm_and_score_band():
    gain, arm = toy(n=20_000, seed=3, targeted=0.5)
    drawn = randomize(arm, gain, LABELS, DesignSpec(holdout=0.1), 5)
    strata = pd.DataFrame(drawn.description["strata"])
    assert set(strata.arm) == set(LABELS) and strata.band.max() == 5  # five score bands per arm
    for row in strata.itertuples():
        assert abs(row.held_out - 0.1 * row.voters) <= 0.5
        members = np.flatnonzero(arm == LABELS.index(row.arm))
        g = gain[members, LABELS.index(row.arm)]
        inside = members[(g <= row.gain_high) & (g >= row.gain_low)]
        assert len(inside) == row.voters and drawn.holdout[inside].sum() == row.held_out
    assert (strata.groupby("arm").gain_low.min() > 0).all()
    assert not drawn.holdout[arm < 0].any()  # only targeted voters are held out
    assert (drawn.assigned[drawn.holdout] == -1).all()
    # a small arm gets fewer bands, so each still holds out a few voters
    assert held_count(0.1, 3) == 1 and held_count(0.1, 2) == 1 and held_count(0.9, 2) == 1
    small = randomize(np.where(np.arange(len(arm)) < 30, 0, -1), np.abs(np.nan_to_num(gain)) + 0.01,
                      LABELS, DesignSpec(holdout=0.1), 1)
    assert len(small.description["strata"]) == 1 and MIN_HELD_PER_STRATUM > 3


def test_a_lone_voter_of_an_arm_is_held_out_by_a_coin_so_control_stays_possible():
    """An arm planned for one voter: held out with probability ``holdout``, recorded as that."""
    gain, arm = toy(n=400, seed=4)
    arm = np.where(arm == 2, -1, arm)
    arm[np.flatnonzero(np.isfinite(gain[:, 2]))[0]] = 2  # the third arm goes to one voter
    lone = int(np.flatnonzero(arm == 2)[0])
    spec = DesignSpec(holdout=0.1)
    drawn = [randomize(arm, gain, LABELS, spec, seed) for seed in range(2000)]
    assert {d.propensity[lone, 3] for d in drawn} == {0.1}  # P(control) = the holdout share, never 0
    held = np.mean([d.holdout[lone] for d in drawn])
    assert abs(held - 0.1) < 5 * np.sqrt(0.1 * 0.9 / 2000)
    assert held_count(0.1, 1) == 0 and held_count(0.9, 1) == 0  # complete randomization is for two or more


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"holdout": 1.0}, "holdout"), ({"holdout": -0.1}, "holdout"), ({"explore": 1.5}, "explore"),
    ({"explore": float("nan")}, "explore"), ({"seed": -3}, "seed"), ({"holdout": True}, "holdout"),
])
def test_bad_design_names_the_field(kwargs, field):
    with pytest.raises(PlanError) as error:
        DesignSpec(**kwargs)
    assert error.value.field == field and str(error.value).startswith(f"{field}: ")


def test_fingerprint_covers_the_design_the_ids_and_the_probabilities():
    gain, arm = toy(n=300)
    drawn = randomize(arm, gain, LABELS, DesignSpec(holdout=0.2, explore=0.1), 4)
    ids = np.array([f"v{i}" for i in range(300)])
    rows = drawn.frame(ids)
    design = {**drawn.description, "fingerprint": ""}
    design["fingerprint"] = design_fingerprint(design, ids, drawn.propensity)
    np.testing.assert_array_equal(check_design(rows, design), drawn.propensity)
    changed = rows.copy()
    changed.loc[5, "p_a"], changed.loc[5, "p_control"] = changed.p_a[5] + 0.1, changed.p_control[5] - 0.1
    swapped = rows.iloc[[1, 0, *range(2, 300)]]
    for bad in (changed, swapped, rows.iloc[:-1], rows.assign(voter_id=np.roll(ids, 1))):
        with pytest.raises(PlanError, match="design fingerprint"):
            check_design(bad, design)
    with pytest.raises(PlanError, match="probability 0"):  # an arm the voter may not get, written in afterwards
        forbidden = int(np.flatnonzero(np.isnan(gain[:, 0]))[0])
        check_design(rows.assign(assigned=np.where(np.arange(300) == forbidden, "a", rows.assigned)), design)
    with pytest.raises(PlanError, match="not a plan with a recorded design"):
        check_design(rows.drop(columns="p_control"), design)


# -- plans of the synthetic model ------------------------------------------------------------
@pytest.fixture(scope="module")
def voters(campaign) -> pd.DataFrame:
    return campaign.voter_file.sample(4000, random_state=9).reset_index(drop=True)


def test_holdout_costs_the_held_out_voters_expected_gain(model, voters):
    plain = plan_contacts(model, voters, 600.0)
    plan = plan_contacts(model, voters, 600.0, design=DesignSpec(holdout=0.1, seed=3))
    rows, held = plan.assignment, plan.assignment.holdout.to_numpy()
    assert len(rows) == len(voters) and rows.voter_id.is_unique and held.sum() > 10
    # the targeting is the plain plan's; the holdout takes a tenth of it out, by stratum
    np.testing.assert_array_equal(plan.allocation.arm, plain.allocation.arm)
    assert held.sum() == pytest.approx(0.1 * len(plain.table), abs=len(plan.design["strata"]))
    assert not plan.table.voter_id.isin(rows.voter_id[held]).any()
    assert set(plan.table.voter_id) | set(rows.voter_id[held]) == set(plain.table.voter_id)
    slug = {a.label: a.slug for a in model.arms}
    planned = plain.table.set_index("voter_id").arm
    forgone = sum(rows.loc[i, f"gain_{slug[planned[v]]}"] for i, v in zip(np.flatnonzero(held), rows.voter_id[held],
                                                                         strict=True))
    cost = plan.randomization["held_out"]
    assert cost["voters"] == held.sum() and cost["expected_gain_forgone"] == pytest.approx(forgone)
    assert cost["expected_gain_forgone"] == pytest.approx(plain.total_expected_gain - plan.total_expected_gain)
    assert cost["interval"]["low"] < cost["expected_gain_forgone"] < cost["interval"]["high"]
    assert cost["cost_not_spent"] == pytest.approx(plain.spent - plan.spent)
    assert plan.suppression["randomized_out"] == held.sum() and sum(plan.suppression.values()) == len(voters)
    # the contact lists stay contacts only, and every voter considered is in the plan's rows
    listed = sum(len(part) for part in plan.by_channel().values())
    assert listed == len(plan.table) == (rows.assigned != "control").sum()
    probabilities = rows[probability_columns([a.label for a in model.arms])].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    assert (probabilities[held, -1] > 0).all() and (probabilities[~held & (rows.assigned != "control"), -1] > 0).all()


def test_exploration_is_paid_for_within_the_budget_and_keeps_consent(model, voters):
    dnc = voters.voter_id.iloc[:400]
    consent = ConsentTable.from_frame(pd.DataFrame({"voter_id": dnc, "event": "do_not_contact"}))
    allowed, reasons = eligibility_arrays(eligibility_for(voters[["voter_id", "phone"]], model.arms, consent),
                                          voters.voter_id, model)
    costs = ProgramCosts(channels={"canvass": {"capacity": 150}})
    gains = expected_gains(model, model.transform(voters), costs, allowed)
    plan = plan_from_gains(model, voters.voter_id, gains, 900.0, costs, reasons, design=DesignSpec(0.1, 0.05, seed=5))
    rows = plan.assignment.set_index("voter_id").loc[voters.voter_id.astype(str)]
    labels = [a.label for a in model.arms]
    probabilities = rows[probability_columns(labels)].to_numpy()
    assert (probabilities[:, :-1][~allowed] == 0).all()
    assert (rows.assigned.to_numpy()[:400] == "control").all()  # do-not-contact: never explored into contact
    assert "Text" not in set(plan.table.arm)  # nobody consented to texts
    explored = plan.randomization["explored"]
    assert explored["contacts"] > 100 and plan.spent <= 900.0
    assert (plan.table.channel == "canvass").sum() <= 150
    budget, capacities = plan.targeting_limits  # the exploration's share set aside before the targeting
    assert budget < 900.0 - 0.9 * explored["cost"] and capacities["canvass"] < 150
    # an exploration that alone would not fit is refused, naming the field
    for limit, costs_ in ((100.0, costs), (5000.0, ProgramCosts(channels={"canvass": {"capacity": 20}}))):
        with pytest.raises(PlanError, match=r"explore: exploring 5\.0% of the eligible voters") as error:
            plan_from_gains(model, voters.voter_id, gains, limit, costs_, reasons, design=DesignSpec(explore=0.05))
        assert error.value.field == "explore"
    # the sensitivity re-plans within the targeting's own limits
    table = with_sensitivity(model, gains, plan, costs).sensitivity
    assert (table.regret >= 0).all() and (table.replan_value >= table.plan_value).all()


# -- persuade plan --------------------------------------------------------------------------------
def _plan(champion_uri, folder, *extra):
    out = folder / "plan.parquet"
    result = CliRunner().invoke(main, ["plan", "--model", champion_uri, "--input", str(folder / "voters.parquet"),
                                       "--budget", "500", "--output", str(out), "--no-consent", "--as-of", AS_OF,
                                       *extra])
    result.output_text = " ".join(result.output.split())
    return result, out


def test_persuade_plan_records_a_reproducible_design(champion_uri, voters, tmp_path):
    voters.to_parquet(tmp_path / "voters.parquet")
    result, out = _plan(champion_uri, tmp_path, "--holdout", "0.1", "--explore", "0.05", "--seed", "7")
    assert result.exit_code == 0, result.output
    first, summary = pd.read_parquet(out), read_plan_summary(out)
    assert len(first) == len(voters) and set(first.voter_id) == set(voters.voter_id)
    design = summary["design"]
    assert (design["seed"], design["holdout"], design["explore"]) == (7, 0.1, 0.05)
    assert re.fullmatch(r"[0-9a-f]{64}", design["fingerprint"]) and design["cluster_column"] == "precinct"
    np.testing.assert_array_equal(check_design(first, design), first[design["probabilities"]].to_numpy())
    held = summary["randomization"]["held_out"]
    assert (f"held out {held['voters']:,} targeted voters: {held['expected_gain_forgone']:,.1f} expected "
            f"incremental votes forgone [95% interval") in result.output_text
    assert "seed 7, holdout 10%" in result.output_text
    contacts = read_contacts(out)
    assert len(contacts) == summary["suppression"]["contacted"] and contacts.arm.notna().all()
    assert list(contacts.voter_id) == list(first.voter_id[:len(contacts)])
    assert contacts.cost.sum() == pytest.approx(summary["spent"])
    assert (first.assigned[len(contacts):] == "control").all() and first.arm[len(contacts):].isna().all()

    again, _ = _plan(champion_uri, tmp_path, "--holdout", "0.1", "--explore", "0.05", "--seed", "7")
    assert again.exit_code == 0
    second = pd.read_parquet(out)
    pd.testing.assert_frame_equal(first, second)
    assert read_plan_summary(out)["design"]["fingerprint"] == design["fingerprint"]
    other, _ = _plan(champion_uri, tmp_path, "--holdout", "0.1", "--explore", "0.05", "--seed", "8")
    assert other.exit_code == 0
    third = pd.read_parquet(out).set_index("voter_id").loc[first.voter_id]
    assert (third.assigned.to_numpy() != first.assigned.to_numpy()).sum() > 20
    assert read_plan_summary(out)["design"]["fingerprint"] != design["fingerprint"]


def test_persuade_plan_refuses_a_share_of_one(champion_uri, voters, tmp_path):
    voters.head(50).to_parquet(tmp_path / "voters.parquet")
    for flag in ("--holdout", "--explore"):
        result, out = _plan(champion_uri, tmp_path, flag, "1")
        assert result.exit_code == 2 and f"Invalid value for '{flag}'" in result.output_text
        assert not out.exists()


def test_plan_report_shows_the_design_and_its_cost(champion_uri, voters, tmp_path):
    voters.to_parquet(tmp_path / "voters.parquet")
    _, out = _plan(champion_uri, tmp_path, "--holdout", "0.2", "--seed", "2")
    report = tmp_path / "plan.html"
    result = CliRunner().invoke(main, ["report", "--scores", str(out), "--output", str(report), "--shap-rows", "40"])
    assert result.exit_code == 0, result.output
    html = report.read_text(encoding="utf-8")
    summary = read_plan_summary(out)
    held = summary["randomization"]["held_out"]
    assert "Randomization and what it costs" in html
    assert f"<th>expected incremental votes forgone</th><td>{held['expected_gain_forgone']:,.2f}" in html
    assert f"<th>voters held out</th><td>{held['voters']:,}</td>" in html
    assert summary["design"]["fingerprint"] in html
    assert f"<th>voters contacted</th><td>{summary['suppression']['contacted']:,}</td>" in html
    assert "rows add up to its stored summary" in html
    assert "SYN-" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)


# -- POST /plan's payload ---------------------------------------------------------------------
def test_plan_payload_with_a_design(model, champion_uri, voters):
    _, ref = load_scoring_model(champion_uri)
    request = PlanRequest.model_validate({"voters": voters.head(500).to_dict("records"), "budget": 300,
                                          "holdout": 0.25, "explore": 0.05, "seed": 4})
    batch = VoterReader(model).read(request.voters)
    allowed = np.ones((len(batch.ids), len(model.arms)), dtype=bool)
    allowed[:, [a.label for a in model.arms].index("Text")] = False
    reason = np.where(allowed, None, "no_consent").astype(object)
    design = DesignSpec(request.holdout, request.explore, request.seed)
    payload = plan_payload(model, ref, batch, request.budget, None, Eligibility(allowed, reason, None), design=design)
    response = PlanResponse.model_validate(json.loads(json.dumps(payload)))
    assert response.design is not None and response.design.description["seed"] == 4
    assigned = {v.voter_id: v for v in response.design.voters}
    assert set(assigned) == set(batch.ids.astype(str))
    contacts = {c.voter_id: c.arm for ch in response.channels.values() for c in ch.contacts}
    assert contacts == {v: a.assigned for v, a in assigned.items() if a.assigned != "control"}
    assert all(not a.holdout or a.voter_id not in contacts for a in assigned.values())
    assert response.design.held_out == sum(a.holdout for a in assigned.values()) > 0
    assert response.suppression.randomized_out >= response.design.held_out
    for a in assigned.values():
        assert sum(a.probabilities.values()) == pytest.approx(1.0, abs=1e-12)
        assert a.probabilities["Text"] == 0 and a.assigned != "Text"
    plain = plan_payload(model, ref, batch, request.budget, None, Eligibility(allowed, reason, None))
    assert plain["design"] is None
    with pytest.raises(PlanError, match="holdout"):
        DesignSpec(PlanRequest.model_validate({"voters": [], "budget": 1, "holdout": 1.2}).holdout)


def test_the_plan_file_keeps_every_row_and_its_metadata(champion_uri, voters, tmp_path):
    voters.head(300).to_parquet(tmp_path / "voters.parquet")
    _, out = _plan(champion_uri, tmp_path, "--holdout", "0.3", "--seed", "1")
    meta = json.loads(pq.read_schema(out).metadata[PLAN_METADATA_KEY])
    assert {"design", "randomization", "provenance"} <= set(meta)
    rows = pd.read_parquet(out)
    slugs = [c[2:] for c in meta["design"]["probabilities"][:-1]]
    expected = {"voter_id", "time_zone", "arm", "channel", "expected_gain", "p_reached", "cost", "assigned", "holdout",
                *meta["design"]["probabilities"], *(f"gain_{s}" for s in slugs), "baseline", "cluster"}
    assert expected == set(rows.columns)
    assert rows.baseline.between(0, 1).all()  # the turnout model's prediction without contact
