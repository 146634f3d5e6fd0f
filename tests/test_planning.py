"""Contact planning: the allocation against an exact MILP, the expected gains, the CLI and /plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from click.testing import CliRunner
from pydantic import ValidationError
from scipy.optimize import Bounds, LinearConstraint, milp

from features.config import ConfigError, load_config
from features.consent import ConsentTable, eligibility_for
from serving.api import encode
from serving.flavor import load_scoring_model
from serving.plan_api import PlanRequest, PlanResponse, plan_payload
from serving.planning import (
    Allocator,
    ChannelLimits,
    PlanError,
    ProgramCosts,
    allowed_from_scores,
    eligibility_arrays,
    expected_gains,
    load_costs,
    plan_contacts,
    read_plan_summary,
)
from serving.scoring import Eligibility
from serving.voters import VoterReader
from training.cli import main

PROJECT = Path(__file__).resolve().parent.parent
COST = np.array([0.6, 1.5, 0.1, 4.0])
CHANNELS = ["mail", "phone", "text", "canvass"]


# -- the allocation -----------------------------------------------------------------------
def exact_optimum(gain, cost, channels, budget, capacities) -> float:
    """The integer optimum by scipy's MILP (HiGHS branch and bound), for small problems."""
    n = gain.shape[0]
    vi, ai = np.nonzero(np.nan_to_num(gain, nan=-1.0) > 0)
    m = len(vi)
    if m == 0:
        return 0.0
    rows = [sp.csr_matrix((np.ones(m), (vi, np.arange(m))), shape=(n, m)), sp.csr_matrix(cost[ai][None, :])]
    ub = [np.ones(n), [budget]]
    for channel, cap in capacities.items():
        rows.append(sp.csr_matrix(np.array([channels[a] == channel for a in ai], dtype=float)[None, :]))
        ub.append([cap])
    res = milp(-gain[vi, ai], constraints=LinearConstraint(sp.vstack(rows), -np.inf, np.concatenate(ub)),
               integrality=np.ones(m), bounds=Bounds(0, 1))
    assert res.status == 0
    return float(-res.fun)


def check_feasible(allocation, gain, cost, channels, budget, capacities) -> None:
    picked = allocation.arm >= 0
    chosen = allocation.arm[picked]
    assert cost[chosen].sum() <= budget + 1e-9
    for channel, cap in capacities.items():
        assert (np.asarray(channels)[chosen] == channel).sum() <= cap
    assert np.all(gain[picked, chosen] > 0)  # never a non-positive or not-allowed (NaN) arm
    assert allocation.value == pytest.approx(gain[picked, chosen].sum())


@pytest.mark.parametrize("seed", range(12))
def test_allocation_is_certified_against_the_exact_optimum(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 80))
    gain = rng.normal(0.02, 0.03, (n, 4))
    gain[rng.random((n, 4)) < 0.15] = np.nan  # arms not allowed
    budget = float(rng.uniform(0.5, n * 0.8))
    capacities = {"phone": int(rng.integers(0, n // 3 + 1)), "text": int(rng.integers(0, n))}
    allocation = Allocator(budget, capacities).solve(gain, COST, CHANNELS)
    check_feasible(allocation, gain, COST, CHANNELS, budget, capacities)
    optimum = exact_optimum(gain, COST, CHANNELS, budget, capacities)
    assert allocation.value <= optimum + 1e-9 <= allocation.bound + 2e-9
    # a vertex of the LP splits at most one voter per binding coupling row (budget + 2 capacities)
    assert allocation.fractional <= 3
    assert allocation.gap <= allocation.fractional * np.nanmax(gain) + 1e-9


def test_large_segment_gap_is_tiny_and_column_generation_finds_the_full_lp():
    rng = np.random.default_rng(7)
    gain = rng.normal(0.02, 0.03, (4000, 4))
    capacities = {"phone": 300, "canvass": 100}
    start_small = Allocator(600.0, capacities, start_factor=0.05, min_entering=10).solve(gain, COST, CHANNELS)
    full = Allocator(600.0, capacities, start_factor=np.inf).solve(gain, COST, CHANNELS)
    assert start_small.rounds > 1 and start_small.columns < full.columns == full.candidates
    assert start_small.bound == pytest.approx(full.bound, rel=1e-7)
    assert start_small.rel_gap < 1e-3
    check_feasible(start_small, gain, COST, CHANNELS, 600.0, capacities)


def test_unlimited_budget_gives_each_voter_their_best_positive_arm():
    rng = np.random.default_rng(3)
    gain = rng.normal(0.0, 0.03, (500, 4))
    allocation = Allocator(1e9).solve(gain, COST, CHANNELS)
    best = np.where(gain.max(axis=1) > 0, gain.argmax(axis=1), -1)
    np.testing.assert_array_equal(allocation.arm, best)


def test_rounding_repair_drops_the_least_efficient_contacts():
    """A plan rounded at the LP's tolerance that breaks a limit loses its worst contacts first."""
    gain = np.array([[0.05, np.nan], [0.01, np.nan], [0.04, np.nan], [np.nan, 0.3], [np.nan, 0.2]])
    cost, arm_cap = np.array([1.0, 2.0]), np.array([-1, 0])
    arm = np.array([0, 0, 0, 1, 1])
    Allocator(budget=4.5, capacities={"phone": 1})._repair(arm, gain, cost, arm_cap, np.array([1.0]))
    # phone over capacity: drop its less efficient contact (0.2 / 2); then 5 > 4.5: drop the worst (0.01 / 1)
    assert arm.tolist() == [0, -1, 0, 1, -1]
    arm = np.array([0, 0, 0, 1, -1])
    Allocator(budget=5.0)._repair(arm, gain, cost, np.array([-1, -1]), np.zeros(0))
    assert arm.tolist() == [0, 0, 0, 1, -1]  # within every limit: untouched


def test_zero_budget_or_no_positive_gain_contacts_nobody():
    gain = np.full((20, 4), -0.01)
    assert (Allocator(100.0).solve(gain, COST, CHANNELS).arm == -1).all()
    assert (Allocator(0.0).solve(np.abs(gain), COST, CHANNELS).arm == -1).all()
    with pytest.raises(PlanError, match="budget"):
        Allocator(-1.0).solve(gain, COST, CHANNELS)


# -- costs ----------------------------------------------------------------------------------
def test_ggl_costs_file_gives_each_postcard_a_cost_of_one():
    costs = load_costs(PROJECT / "configs" / "costs.yaml")
    ggl = load_config(PROJECT / "configs" / "ggl2008.yaml")
    assert set(costs.arms) == set(ggl.arms)
    assert {a.cost for a in costs.arms.values()} == {1.0}
    assert costs.channels["mail"].capacity is None


@pytest.mark.parametrize(("text", "key"), [
    ("arms: {Phone: {cost: -1}}", "arms.Phone.cost"),
    ("arms: {Phone: {costs: 1}}", "arms.Phone.costs: unknown key"),
    ("channels: {fax: {capacity: 3}}", "channels.fax"),
    ("channels: {phone: {contact_rate: 1.5}}", "channels.phone.contact_rate"),
    ("budget: 5", "budget: unknown key"),
])
def test_bad_costs_file_names_the_key(tmp_path, text, key):
    path = tmp_path / "costs.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_costs(path)
    assert key in str(info.value)


@pytest.fixture(scope="module")
def model(champion_uri):
    return load_scoring_model(champion_uri)[0]


@pytest.fixture(scope="module")
def voters(campaign) -> pd.DataFrame:
    """3,000 synthetic voters with their PII columns (which planning must never read)."""
    return campaign.voter_file.sample(3000, random_state=4).reset_index(drop=True)


def test_costs_must_fit_the_model(model, voters):
    with pytest.raises(PlanError, match=r"costs.arms: unknown arm\(s\) \['Postcard'\]"):
        plan_contacts(model, voters, 100, ProgramCosts(arms={"Postcard": {"cost": 1}}))
    with pytest.raises(PlanError, match=r"costs\.channels\.mail\.contact_rate"):
        plan_contacts(model, voters, 100, ProgramCosts(channels={"mail": ChannelLimits(contact_rate=0.5)}))


# -- expected gains -------------------------------------------------------------------------
def test_expected_gain_is_p_reached_times_uplift_if_reached(model, voters):
    X = model.transform(voters)
    default = expected_gains(model, X)
    labels = [a.label for a in model.arms]
    # the experiment attempted every assigned voter: per attempt, the gain is the ITT uplift
    np.testing.assert_allclose(default.gain, default.itt, rtol=1e-12)
    phone = labels.index("Phone")
    p_exp = model.predict_contact_rate(X)["phone"]
    np.testing.assert_allclose(default.p_reached[:, phone], p_exp)
    assert (default.p_reached[:, labels.index("Mail")] == 1).all()

    rate = model.contact_rate_info["phone"]["reached_rate"]
    better = expected_gains(model, X, ProgramCosts(channels={"phone": ChannelLimits(contact_rate=0.6)}))
    p_plan = np.minimum(1.0, p_exp * 0.6 / rate)
    np.testing.assert_allclose(better.p_reached[:, phone], p_plan)
    np.testing.assert_allclose(better.gain[:, phone], p_plan * default.itt[:, phone] / p_exp)
    others = [j for j in range(len(labels)) if j != phone]
    np.testing.assert_allclose(better.gain[:, others], default.gain[:, others])


# -- plans ----------------------------------------------------------------------------------
def test_plan_respects_budget_capacities_and_priority(model, voters):
    costs = ProgramCosts(arms={"Canvass": {"cost": 5.0}}, channels={"text": {"capacity": 200}})
    plan = plan_contacts(model, voters, 400.0, costs)
    table = plan.table
    assert list(table.columns) == ["voter_id", "arm", "channel", "expected_gain", "p_reached", "cost"]
    assert table.cost.sum() <= 400.0 + 1e-9 and plan.spent == pytest.approx(table.cost.sum())
    assert (table.channel == "text").sum() <= 200
    assert (table.cost[table.arm == "Canvass"] == 5.0).all()
    assert table.voter_id.is_unique and (table.expected_gain > 0).all()
    ratio = (table.expected_gain / table.cost).to_numpy()
    assert np.all(np.diff(ratio) <= 1e-12)  # priority order: gain per cost
    assert sum(plan.suppression.values()) == len(voters)
    assert plan.suppression["contacted"] == len(table)
    low, high = plan.interval
    assert low < plan.total_expected_gain < high
    assert plan.allocation.bound >= plan.total_expected_gain
    assert set(plan.by_channel()) == set(table.channel)
    for part in plan.by_channel().values():
        assert np.all(np.diff((part.expected_gain / part.cost).to_numpy()) <= 1e-12)
    pii = set(voters.first_name) | set(voters.phone) | set(voters.email)
    assert not pii & set(table.astype(str).to_numpy().ravel())


def test_ineligible_arms_are_never_planned(model, voters):
    dnc = voters.voter_id.iloc[:300]
    consent = ConsentTable.from_frame(pd.DataFrame({"voter_id": dnc, "event": "do_not_contact"}))
    table = eligibility_for(voters[["voter_id"]], model.arms, consent)
    allowed, reasons = eligibility_arrays(table, voters.voter_id, model)
    plan = plan_contacts(model, voters, 3000.0, allowed=allowed, reasons=reasons)
    assert not plan.table.voter_id.isin(dnc).any()
    assert "Text" not in set(plan.table.arm)  # no consent to texts in this table
    assert plan.not_allowed["do_not_contact"] == 300 * len(model.arms)
    assert plan.not_allowed["no_consent"] == len(voters) - 300
    assert plan.suppression["not_eligible"] > 0

    # the same mask read off scores whose ineligible uplift is NaN
    scores = model.score(voters)
    scores.loc[~allowed[:, 0], "uplift_mail"] = np.nan
    mask = allowed_from_scores(scores, model)
    assert (mask[:, 0] == allowed[:, 0]).all() and mask[:, 1:].all()


def test_bad_voters_are_refused_naming_the_field(model, voters):
    with pytest.raises(ValueError, match="age"):
        plan_contacts(model, voters.drop(columns=["age"]), 100.0)
    with pytest.raises(PlanError, match="duplicate voter ids"):
        plan_contacts(model, pd.concat([voters.head(5), voters.head(5)]), 100.0)
    with pytest.raises(PlanError, match="eligibility: expected shape"):
        plan_contacts(model, voters, 100.0, allowed=np.ones((3, 4), dtype=bool))


# -- the CLI ----------------------------------------------------------------------------------
def test_persuade_plan_writes_the_ordered_list(champion_uri, voters, tmp_path):
    voters.to_parquet(tmp_path / "voters.parquet")
    costs = tmp_path / "costs.yaml"
    costs.write_text("channels:\n  phone: {capacity: 100, contact_rate: 0.5}\n")
    out = tmp_path / "plan.parquet"
    result = CliRunner().invoke(main, ["plan", "--model", champion_uri, "--input", str(tmp_path / "voters.parquet"),
                                       "--budget", "500", "--costs", str(costs), "--output", str(out)])
    assert result.exit_code == 0, result.output
    plan = pd.read_parquet(out)
    assert list(plan.columns[:4]) == ["voter_id", "arm", "channel", "expected_gain"]
    assert plan.cost.sum() <= 500 + 1e-9 and (plan.channel == "phone").sum() <= 100
    assert np.all(np.diff((plan.expected_gain / plan.cost).to_numpy()) <= 1e-12)
    summary = read_plan_summary(out)
    assert summary["provenance"]["model"]["version"] is not None
    assert summary["total_expected_gain"] == pytest.approx(plan.expected_gain.sum())
    assert "expected incremental turnout" in result.output and "LP bound" in result.output
    raw = out.read_bytes()
    assert not any(name.encode() in raw for name in set(voters.last_name) | set(voters.phone.head(50)))


def test_persuade_plan_applies_consent(champion_uri, voters, tmp_path):
    voters.to_parquet(tmp_path / "voters.parquet")
    dnc = voters.voter_id.iloc[:50]
    pd.DataFrame({"voter_id": dnc, "event": "do_not_contact"}).to_parquet(tmp_path / "consent.parquet")
    out = tmp_path / "plan.parquet"
    result = CliRunner().invoke(main, ["plan", "--model", champion_uri, "--input", str(tmp_path / "voters.parquet"),
                                       "--budget", "2000", "--consent", str(tmp_path / "consent.parquet"),
                                       "--output", str(out)])
    assert result.exit_code == 0, result.output
    plan = pd.read_parquet(out)
    assert not plan.voter_id.isin(dnc).any() and "Text" not in set(plan.arm)
    summary = read_plan_summary(out)
    assert summary["not_allowed"]["do_not_contact"] == 50 * 4
    assert summary["provenance"]["consent"].endswith("consent.parquet")


def test_persuade_plan_reports_bad_input(champion_uri, voters, tmp_path):
    voters.drop(columns=["hh_size"]).to_parquet(tmp_path / "voters.parquet")
    args = ["plan", "--model", champion_uri, "--input", str(tmp_path / "voters.parquet"), "--output",
            str(tmp_path / "plan.parquet")]
    result = CliRunner().invoke(main, [*args, "--budget", "10"])
    assert result.exit_code == 2 and "hh_size" in result.output
    bad = tmp_path / "costs.yaml"
    bad.write_text("arms: {Nope: {cost: 1}}\n")
    voters.to_parquet(tmp_path / "voters.parquet")
    result = CliRunner().invoke(main, [*args, "--budget", "10", "--costs", str(bad)])
    assert result.exit_code == 2 and "costs.arms" in result.output and "Nope" in result.output
    assert not (tmp_path / "plan.parquet").exists()


# -- POST /plan ----------------------------------------------------------------------------
def test_plan_request_validation_names_the_field():
    with pytest.raises(ValidationError, match="budget"):
        PlanRequest.model_validate({"voters": [], "budget": 0})
    with pytest.raises(ValidationError, match=r"costs\.arms\.Mail\.cost"):
        PlanRequest.model_validate({"voters": [], "budget": 5, "costs": {"arms": {"Mail": {"cost": "x"}}}})
    with pytest.raises(ValidationError, match="budjet"):
        PlanRequest.model_validate({"voters": [], "budget": 5, "budjet": 5})


def test_plan_payload_matches_the_response_model(model, champion_uri, voters):
    _, ref = load_scoring_model(champion_uri)
    records = voters.head(800).to_dict("records")  # PII fields included: the reader drops them
    request = PlanRequest.model_validate({"voters": records, "budget": 120, "costs": {
        "channels": {"canvass": {"capacity": 5}}}})
    batch = VoterReader(model).read(request.voters)
    k = len(model.arms)
    allowed = np.ones((len(batch.ids), k), dtype=bool)
    allowed[:100, [a.label for a in model.arms].index("Text")] = False
    reason = np.where(allowed, None, "no_consent").astype(object)
    payload = plan_payload(model, ref, batch, request.budget, request.costs, Eligibility(allowed, reason))
    response = PlanResponse.model_validate(payload)
    encode(payload)  # JSON-ready
    assert response.model.version == ref.version
    assert response.spent <= 120 + 1e-9
    contacts = [c for ch in response.channels.values() for c in ch.contacts]
    assert sorted(c.priority for c in contacts) == list(range(1, len(contacts) + 1))
    assert response.channels["canvass"].attempts <= 5 if "canvass" in response.channels else True
    for channel in response.channels.values():
        assert [c.priority for c in channel.contacts] == sorted(c.priority for c in channel.contacts)
        assert channel.expected_gain == pytest.approx(sum(c.expected_gain for c in channel.contacts))
    blocked = set(batch.ids[:100])
    assert not any(c.voter_id in blocked and c.arm == "Text" for c in contacts)
    assert response.suppression.not_allowed == {"no_consent": 100}
    assert response.total_expected_gain == pytest.approx(sum(c.expected_gain for c in contacts))
    assert response.interval.low < response.total_expected_gain < response.interval.high
    assert response.solver.lp_bound >= response.total_expected_gain
    text = encode(payload).decode()
    assert not any(name in text for name in set(voters.head(800).last_name))
