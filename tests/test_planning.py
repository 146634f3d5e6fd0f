"""Contact planning: the allocation against an exact MILP, the expected gains, the CLI, /plan and its report."""

from __future__ import annotations

import base64
import html as htmllib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from click.testing import CliRunner
from consent_cases import AS_OF  # a decision time inside every US zone's calling window
from pydantic import ValidationError
from scipy.optimize import Bounds, LinearConstraint, milp

from features.config import ConfigError, load_config
from features.consent import ConsentTable, eligibility_for
from serving.allocation import Allocator
from serving.api import encode
from serving.plan_api import PlanRequest, PlanResponse, plan_payload
from serving.plan_costs import ChannelLimits, PlanError, ProgramCosts, load_costs
from serving.plan_file import PLAN_METADATA_KEY, read_contacts, read_plan_summary
from serving.plan_gains import expected_gains
from serving.planning import allowed_from_scores, eligibility_arrays, plan_contacts
from serving.registry import load_scoring_model
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
def voters(campaign) -> pd.DataFrame:
    """3,000 synthetic voters with their PII columns (which planning must never read)."""
    return campaign.voter_file.sample(3000, random_state=4).reset_index(drop=True)


def test_costs_must_fit_the_model(model, voters):
    with pytest.raises(PlanError, match=r"costs.arms: unknown arm\(s\) \['Postcard'\]") as error:
        plan_contacts(model, voters, 100, ProgramCosts(arms={"Postcard": {"cost": 1}}))
    assert error.value.field == "costs.arms"
    with pytest.raises(PlanError, match=r"costs\.channels\.mail\.contact_rate") as error:
        plan_contacts(model, voters, 100, ProgramCosts(channels={"mail": ChannelLimits(contact_rate=0.5)}))
    assert error.value.field == "costs.channels.mail.contact_rate"


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
    table = eligibility_for(voters[["voter_id", "phone"]], model.arms, consent)
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
                                       "--budget", "500", "--costs", str(costs), "--output", str(out),
                                       "--no-consent", "--as-of", AS_OF])
    assert result.exit_code == 0, result.output
    plan = read_contacts(out)  # the file has every voter considered; the contacts come first
    assert list(plan.columns[:5]) == ["voter_id", "time_zone", "arm", "channel", "expected_gain"]
    assert plan.time_zone[plan.channel.isin(["phone", "text"])].notna().all()  # quiet hours without a table too
    assert len(pd.read_parquet(out)) == len(voters)
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
    plan = read_contacts(out)
    assert not plan.voter_id.isin(dnc).any() and "Text" not in set(plan.arm)
    summary = read_plan_summary(out)
    assert summary["not_allowed"]["do_not_contact"] == 50 * 4
    assert summary["provenance"]["consent"].endswith("consent.parquet")


def test_persuade_plan_reports_bad_input(champion_uri, voters, tmp_path):
    voters.drop(columns=["hh_size"]).to_parquet(tmp_path / "voters.parquet")
    args = ["plan", "--model", champion_uri, "--input", str(tmp_path / "voters.parquet"), "--output",
            str(tmp_path / "plan.parquet"), "--no-consent", "--as-of", AS_OF]
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


# -- the plan report ---------------------------------------------------------------------------
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fact(html: str, key: str) -> str:
    """The value of ``key`` in the report's key-value tables (the same wherever it is shown)."""
    found = re.findall(rf"<tr><th>{re.escape(htmllib.escape(key))}</th><td>(.*?)</td></tr>", html)
    assert len(set(found)) == 1, (key, found)
    return htmllib.unescape(found[0])


def _amount(text: str) -> float:
    return float(text.split()[0].replace(",", ""))


def _table_after(html: str, heading: str) -> pd.DataFrame:
    """The first table after ``heading``, as text cells."""
    part = html[html.index(heading):]
    part = part[:part.index("</table>")]
    rows = [[htmllib.unescape(re.sub("<[^>]+>", "", cell)) for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", part)]
    head, *body = rows
    return pd.DataFrame(body, columns=head)


def _plan_report(plan_path: Path, out: Path, *extra: str):
    result = CliRunner().invoke(main, ["report", "--scores", str(plan_path), "--output", str(out),
                                       "--shap-rows", "60", *extra])
    result.output_text = " ".join(result.output.split())  # rich wraps long lines
    return result


@pytest.fixture(scope="module")
def planned(champion_uri, voters, tmp_path_factory) -> Path:
    """A plan made with ``persuade plan`` under a consent table (50 voters on do-not-contact)."""
    folder = tmp_path_factory.mktemp("planned")
    voters.to_parquet(folder / "voters.parquet")
    pd.DataFrame({"voter_id": voters.voter_id.iloc[:50], "event": "do_not_contact"}).to_parquet(
        folder / "consent.parquet")
    (folder / "costs.yaml").write_text("channels:\n  mail: {capacity: 700}\n  phone: {capacity: 120}\n")
    out = folder / "plan.parquet"
    result = CliRunner().invoke(main, ["plan", "--model", champion_uri, "--input", str(folder / "voters.parquet"),
                                       "--budget", "1200", "--costs", str(folder / "costs.yaml"),
                                       "--consent", str(folder / "consent.parquet"),
                                       "--as-of", "2026-10-01T00:00:00Z", "--output", str(out), "--sensitivity"])
    assert result.exit_code == 0, result.output
    return out


def test_plan_report_shows_the_plans_totals_suppression_and_model(planned, trained, voters, tmp_path):
    out = tmp_path / "x.html"
    result = _plan_report(planned, out)
    assert result.exit_code == 0, result.output
    assert f"list report: {out.resolve()}" in result.output_text
    html = out.read_text(encoding="utf-8")
    summary = read_plan_summary(planned)
    plan = read_contacts(planned)
    assert summary["provenance"]["model"]["uri"] == trained.model_uri
    assert Path(summary["provenance"]["input"]).is_absolute()
    assert summary["provenance"]["consent_applied"]["as_of"].startswith("2026-10-01")

    # the totals are the plan's
    assert _fact(html, "voters considered") == f"{len(voters):,}" == f"{summary['voters']:,}"
    assert _fact(html, "voters contacted") == f"{summary['suppression']['contacted']:,}" == f"{len(plan):,}"
    assert _amount(_fact(html, "budget")) == 1200
    assert _amount(_fact(html, "spent")) == pytest.approx(summary["spent"], abs=0.005)
    assert _amount(_fact(html, "expected incremental votes")) == pytest.approx(summary["total_expected_gain"],
                                                                               abs=0.005)
    interval = summary["interval"]
    assert _fact(html, "95% interval") == f"{interval['low']:,.2f} to {interval['high']:,.2f}"
    assert _amount(_fact(html, "LP bound (no plan gains more)")) == pytest.approx(summary["solver"]["lp_bound"],
                                                                                  abs=0.005)
    assert f"{summary['solver']['rel_gap']:.2e} relative" in _fact(html, "gap to the bound")
    assert "rows add up to its stored summary" in html

    # per arm and per channel
    arms = _table_after(html, "<h3>Contacts per arm</h3>").set_index("arm")
    for label in ("Mail", "Phone", "Text", "Canvass"):
        assert int(arms.loc[label, "contacts"].replace(",", "")) == summary["contacts_per_arm"].get(label, 0)
    assert int(arms.loc["total", "contacts"].replace(",", "")) == len(plan)
    assert _amount(arms.loc["total", "cost"]) == pytest.approx(summary["spent"], abs=0.005)
    assert arms.loc["Text", "contacts"] == "0"  # nobody consented to texts
    channels = _table_after(html, "<h3>Contacts per channel</h3>").set_index("channel")
    assert set(channels.index) == set(summary["channels"])
    for channel, totals in summary["channels"].items():
        assert int(channels.loc[channel, "attempts"].replace(",", "")) == totals["attempts"]
        assert _amount(channels.loc[channel, "expected_incremental"]) == pytest.approx(totals["expected_gain"],
                                                                                      abs=0.005)
    assert int(channels.loc["mail", "attempts"].replace(",", "")) <= 700
    assert len(channels) >= 2  # the mail capacity sends the rest of the budget to other channels

    # what the plan would lose if an arm's average effect sat at an end of its interval
    heading = htmllib.escape("If an arm's average effect were at an end of its 95% interval")
    sensitivity = _table_after(html, f"<h3>{heading}</h3>").set_index(["arm", "side"])
    assert len(sensitivity) == len(summary["sensitivity"]) == 2 * 4
    for row in summary["sensitivity"]:
        shown = sensitivity.loc[(row["arm"], row["side"])]
        assert int(shown.voters_moved.replace(",", "")) == row["voters_moved"]
        assert _amount(shown.plan_loses_votes) == pytest.approx(row["regret"], abs=0.005)
    worst = max(summary["sensitivity"], key=lambda r: r["regret_share"])
    assert f"{worst['regret_share']:.1%} of what a re-plan would gain" in htmllib.unescape(html)

    # suppressed, by reason
    outcomes = _table_after(html, "<h3>Every voter considered, once</h3>").set_index("outcome")
    for key, count in summary["suppression"].items():
        assert int(outcomes.loc[key, "voters"].replace(",", "")) == count
    pairs = _table_after(html, "<h3>(voter, arm) pairs not allowed, by reason</h3>").set_index("reason")
    assert summary["not_allowed"]["do_not_contact"] == 50 * 4
    for reason, count in summary["not_allowed"].items():
        assert int(pairs.loc[reason, "voter_arm_pairs"].replace(",", "")) == count
    assert "on the internal do-not-contact list" in html  # the legend of the reason codes

    # the model and its run
    assert f"{trained.model_name} version {trained.version}" in html
    assert _fact(html, "training run") == trained.run_id
    assert _fact(html, "consent table").startswith("consent.parquet (fingerprint ")

    # the reasons behind the contacts, and the pictures
    for label, n in summary["contacts_per_arm"].items():
        tally = _table_after(html, f"<h3>{label}: {min(n, 60):,} contacted voters explained</h3>")
        assert set(tally.reason) <= set(trained.result.model.feature_names)
        assert sum(int(v) for v in tally.voters) == min(n, 60)
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) >= 2 + len(summary["contacts_per_arm"])
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG_MAGIC)
    assert 'alt="Expected gain along the priority order"' in html

    # aggregates only
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    assert "SYN-" not in text
    for column in ("voter_id", "first_name", "last_name", "phone", "email", "address"):
        leaked = [v for v in voters[column].astype(str).unique() if v in text]
        assert not leaked, (column, leaked[:3])


def _with_provenance(src: Path, dst: Path, **changes) -> Path:
    """A copy of a plan file whose stored provenance has ``changes`` (None deletes a key)."""
    table = pq.read_table(src)
    meta = dict(table.schema.metadata)
    stored = json.loads(meta[PLAN_METADATA_KEY])
    provenance = {**stored["provenance"], **changes}
    stored["provenance"] = {k: v for k, v in provenance.items() if v is not None}
    meta[PLAN_METADATA_KEY] = json.dumps(stored).encode()
    pq.write_table(table.replace_schema_metadata(meta), dst)
    return dst


def test_plan_report_finds_its_model_by_name_and_version_or_asks_for_it(planned, trained, tmp_path):
    model = read_plan_summary(planned)["provenance"]["model"]
    no_uri = _with_provenance(planned, tmp_path / "no_uri.parquet", model={**model, "uri": None},
                              consent_applied=None, consent=None)
    result = _plan_report(no_uri, tmp_path / "a.html")
    assert result.exit_code == 0, result.output
    html = (tmp_path / "a.html").read_text(encoding="utf-8")
    assert f"(models:/{trained.model_name}/{trained.version})" in html
    assert "This plan was made without eligibility (no --consent)" in html  # no consent table recorded
    assert "Text (0 contacts planned) must not be used from it" in html

    no_model = _with_provenance(planned, tmp_path / "no_model.parquet", model={})
    result = _plan_report(no_model, tmp_path / "b.html")
    assert result.exit_code == 2 and not (tmp_path / "b.html").exists()
    assert "no_model.parquet: the plan's provenance names no model" in result.output_text
    assert "pass --model" in result.output_text and "Traceback" not in result.output_text
    result = _plan_report(no_model, tmp_path / "b.html", "--model", trained.model_uri)
    assert result.exit_code == 0, result.output


def test_report_of_a_parquet_that_is_neither_scores_nor_a_plan_is_a_clear_error(champion_uri, tmp_path):
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"voter_id": ["a"], "arm": ["Mail"]}).to_parquet(bad)
    result = _plan_report(bad, tmp_path / "x.html", "--model", champion_uri)
    assert result.exit_code == 2 and not (tmp_path / "x.html").exists()
    assert "bad.parquet: not a persuade scores file or plan" in result.output_text
    assert "persuade.plan metadata" in result.output_text and "Traceback" not in result.output_text
    text = tmp_path / "notes.parquet"
    text.write_text("voter_id,best_arm\n")
    result = _plan_report(text, tmp_path / "x.html", "--model", champion_uri)
    assert result.exit_code == 2 and "notes.parquet: not a parquet file" in result.output_text
