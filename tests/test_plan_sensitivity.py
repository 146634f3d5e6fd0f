"""How much a plan depends on each arm's average effect (serving.plan_sensitivity)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from click.testing import CliRunner
from consent_cases import AS_OF  # a decision time inside every US zone's calling window

from serving.plan_costs import PlanError, ProgramCosts
from serving.plan_file import read_plan_summary
from serving.plan_gains import ExpectedGains
from serving.plan_sensitivity import SENSITIVITY_COLUMNS, level_sensitivity, sensitivity_verdict, with_sensitivity
from serving.planning import plan_from_gains
from serving.registry import load_scoring_model
from training.cli import main
from training.evaluation import clustered_mean


@pytest.fixture(scope="module")
def champion(champion_uri):
    return load_scoring_model(champion_uri)[0]


def with_effects(model, **rel_se: float):
    """The model with arm effects whose relative standard error is ``rel_se[arm]`` (default 0.01)."""
    out = copy.copy(model)
    out.metadata = {**model.metadata, "arm_effects": {
        a.label: {"ate": 0.05, "se": 0.05 * rel_se.get(a.label, 0.01), "rows": 1000} for a in model.arms}}
    return out


def gains_of(model, per_arm: dict[str, float], n: int = 1000, seed: int = 0) -> ExpectedGains:
    """Gains of ``n`` voters: each listed arm at its value (plus a little noise), the others not allowed."""
    rng = np.random.default_rng(seed)
    gain = np.full((n, len(model.arms)), np.nan)
    for j, arm in enumerate(model.arms):
        if arm.label in per_arm:
            gain[:, j] = per_arm[arm.label] * (1 + 0.01 * rng.standard_normal(n))
    itt = np.nan_to_num(gain, nan=0.0)
    return ExpectedGains(itt, np.ones_like(itt), gain)


def test_a_near_tie_between_arms_is_flagged(champion):
    # Mail costs 0.6 and Phone 1.5: the same gain per unit of cost, so Mail's level decides
    model = with_effects(champion, Mail=0.1)
    gains = gains_of(model, {"Mail": 0.06, "Phone": 0.15})
    plan = plan_from_gains(model, np.arange(1000), gains, 60.0)
    table = level_sensitivity(model, gains, plan)
    assert list(table.columns) == SENSITIVITY_COLUMNS
    assert len(table) == 2 * len(model.arms)
    mail = table[table.arm == "Mail"].set_index("side")
    assert mail.loc["low", "scale"] == pytest.approx(1 - 1.959964 * 0.1, abs=1e-6)
    assert mail.loc["high", "scale"] == pytest.approx(1 + 1.959964 * 0.1, abs=1e-6)
    assert mail.loc["low", "replan_contacts_per_arm"].keys() == {"Phone"}
    assert mail.loc["high", "replan_contacts_per_arm"].keys() == {"Mail"}
    # the plan is a mix of the two (noise breaks the tie voter by voter): either end of
    # Mail's interval makes it lose, one end by over a tenth
    assert (mail.regret_share > 0.02).all() and mail.regret_share.max() > 0.1
    assert (mail.voters_moved > 0).all()
    # each scenario's value of the plan: its total, with the arm's contacts rescaled
    arm = plan.allocation.arm
    for row in table.itertuples():
        j = [a.label for a in model.arms].index(row.arm)
        own = gains.gain[arm == j, j].sum()
        assert row.plan_value == pytest.approx(plan.total_expected_gain + (row.scale - 1) * own)
        assert row.replan_value >= row.plan_value


def test_a_clear_choice_is_robust(champion):
    model = with_effects(champion, Mail=0.2, Phone=0.3)
    gains = gains_of(model, {"Mail": 0.2, "Phone": 0.02})
    plan = plan_from_gains(model, np.arange(1000), gains, 60.0)
    table = level_sensitivity(model, gains, plan)
    assert (table.voters_moved == 0).all() and (table.regret == 0).all()
    assert np.allclose(table.plan_value, table.replan_value)


def test_an_arm_whose_interval_includes_no_effect_drops_out_at_its_low_end(champion):
    model = with_effects(champion, Text=0.8)  # 0.05 +/- 0.078: the interval includes 0
    gains = gains_of(model, {"Text": 0.05, "Mail": 0.01})
    plan = plan_from_gains(model, np.arange(1000), gains, 30.0)
    assert "Text" in plan.contacts_per_arm()
    low = level_sensitivity(model, gains, plan).set_index(["arm", "side"]).loc[("Text", "low")]
    assert low.scale == 0.0
    assert "Text" not in low.replan_contacts_per_arm and low.replan_value > 0


def test_a_model_without_arm_effects_is_a_clear_error(champion):
    model = copy.copy(champion)
    model.metadata = {k: v for k, v in champion.metadata.items() if k != "arm_effects"}
    gains = gains_of(model, {"Mail": 0.05})
    plan = plan_from_gains(model, np.arange(1000), gains, 10.0)
    with pytest.raises(PlanError, match=r"sensitivity: .*retrain") as error:
        level_sensitivity(model, gains, plan)
    assert error.value.field == "sensitivity"


def test_the_plan_summary_carries_the_table_when_asked(champion):
    model = with_effects(champion)
    gains = gains_of(model, {"Mail": 0.05, "Phone": 0.1})
    plan = plan_from_gains(model, np.arange(1000), gains, 30.0, ProgramCosts())
    assert plan.summary()["sensitivity"] is None
    rows = with_sensitivity(model, gains, plan).summary()["sensitivity"]
    assert len(rows) == 2 * len(model.arms) and set(rows[0]) == set(SENSITIVITY_COLUMNS)


def test_the_verdict_names_the_arm_the_plan_hinges_on_or_none():
    calm = [{"arm": "Mail", "side": "low", "regret_share": 0.004, "voters_moved": 3},
            {"arm": "Phone", "side": "high", "regret_share": 0.0, "voters_moved": 0}]
    assert sensitivity_verdict(calm).startswith("The arm mix does not hinge on the arms' levels")
    tense = [*calm, {"arm": "Phone", "side": "low", "regret_share": 0.059, "voters_moved": 1200}]
    verdict = sensitivity_verdict(tense)
    assert "hinges most on Phone's average effect: at the low end" in verdict
    assert "5.9% of what a re-plan would gain (1,200 voters would change)" in verdict


# -- what training records ------------------------------------------------------------------
def test_clustered_standard_error_counts_groups_not_rows():
    rng = np.random.default_rng(0)
    v = rng.normal(size=400)
    mean, se = clustered_mean(v, np.arange(400))  # one row per group: the textbook standard error
    assert mean == pytest.approx(v.mean()) and se == pytest.approx(v.std(ddof=1) / np.sqrt(400))
    _, se_twice = clustered_mean(np.repeat(v, 2), np.repeat(np.arange(400), 2))  # each row copied within its group
    assert se_twice == pytest.approx(se)  # copies add no information


def test_training_records_each_arms_average_effect_with_its_error(champion, campaign):
    effects = champion.metadata["arm_effects"]
    assert set(effects) == {a.label for a in champion.arms}
    for arm in champion.arms:
        e = effects[arm.label]
        true_mean = campaign.truth[f"tau_voted_{arm.slug}"].mean()
        assert 0 < e["se"] < 0.02 and e["rows"] > 10_000
        assert abs(e["ate"] - true_mean) < 4 * e["se"], (arm.label, e, true_mean)


# -- the CLI ----------------------------------------------------------------------------------
def test_persuade_plan_sensitivity(champion_uri, campaign, tmp_path):
    voters = campaign.voter_file.sample(3000, random_state=4)
    voters.to_parquet(tmp_path / "voters.parquet")
    out = tmp_path / "plan.parquet"
    args = ["plan", "--model", champion_uri, "--input", str(tmp_path / "voters.parquet"), "--budget", "300",
            "--output", str(out), "--no-consent", "--as-of", AS_OF]
    result = CliRunner().invoke(main, [*args, "--sensitivity"])
    assert result.exit_code == 0, result.output
    assert "at an end of its 95% interval" in result.output
    rows = read_plan_summary(out)["sensitivity"]
    assert {(r["arm"], r["side"]) for r in rows} == {(a, s) for a in ("Mail", "Phone", "Text", "Canvass")
                                                     for s in ("low", "high")}
    assert all(r["regret"] >= 0 and r["replan_value"] >= r["plan_value"] for r in rows)
    plain = CliRunner().invoke(main, args)
    assert plain.exit_code == 0 and read_plan_summary(out)["sensitivity"] is None
