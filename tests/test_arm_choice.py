"""Each arm's served model against the references: the metric, the candidates and the one-SE rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from features.config import GBMParams, load_config
from features.tables import load_experiment
from serving.arms import shared_trees
from training.arm_choice import (
    CONSTANT,
    MODEL,
    MODEL_PER_ARM,
    TURNOUT_05,
    TURNOUT_05_BOOSTED,
    TURNOUT_05_REACH,
    TURNOUT_SHAPE,
    TURNOUT_SHAPE_BOOSTED,
    ArmCandidate,
    arm_candidates,
    arm_cv_records,
    fit_candidates,
    is_constant,
    one_standard_error_choice,
    simplicity_order,
)
from training.choice_summary import HEADERS
from training.evaluation import policy_gain
from training.learners import ANY, CrossFitNuisance, Design
from training.learners.base import held_constant
from training.selection import arm_contrasts, training_arm_effects
from training.turnout import fit_turnout

ORDER = [CONSTANT, TURNOUT_05, TURNOUT_SHAPE, TURNOUT_05_REACH, TURNOUT_05_BOOSTED, TURNOUT_SHAPE_BOOSTED, MODEL,
         MODEL_PER_ARM]
REACH_ARMS = ["Phone", "Canvass"]  # the synthetic program's arms whose attempts do not always reach


# -- the metric ---------------------------------------------------------------------------
def test_policy_gain_of_a_constant_score_is_zero_and_of_the_truth_is_what_the_top_holds():
    rng = np.random.default_rng(0)
    tau = rng.normal(0.05, 0.05, 10_000)
    assert policy_gain(np.zeros_like(tau), tau, [0.1, 0.2, 0.3]) == pytest.approx([0, 0, 0], abs=1e-15)
    top = np.sort(tau)[::-1]
    expected = [top[:1000].sum() / 10_000 - 0.1 * tau.mean(), top[:3000].sum() / 10_000 - 0.3 * tau.mean()]
    assert policy_gain(tau, tau, [0.1, 0.3]) == pytest.approx(expected)
    assert (policy_gain(-tau, tau, [0.1, 0.3]) < 0).all()  # ranking backwards loses


def test_policy_gain_takes_a_tied_block_in_random_order():
    """Two blocks of tied scores: the budget's share of the boundary block counts its mean."""
    score = np.r_[np.ones(4), np.zeros(6)]
    pseudo = np.r_[1.0, 1.0, 0.0, 0.0, np.zeros(6)]  # the top block's mean is 0.5
    # top 20%: 2 of the 4 tied top voters, in expectation 2 * 0.5 = 1.0; random would get 0.2 * 2.0
    assert policy_gain(score, pseudo, [0.2])[0] == pytest.approx((1.0 - 0.4) / 10)


def test_holdout_policy_gain_reads_the_policy_curve_at_each_budget_with_an_interval():
    from training.evaluation import holdout_policy_gain, policy_points

    rng = np.random.default_rng(4)
    n = 20_000
    x = rng.random(n)
    t = (rng.random(n) < 0.5).astype(float)
    y = (rng.random(n) < 0.3 + 0.2 * t * x).astype(float)  # contact moves high-x voters most
    groups = rng.integers(0, 2000, n)
    table = holdout_policy_gain(x, y, t, groups, [0.1, 0.3], n_boot=100, seed=0)
    xs, q = policy_points(x, y, t)
    assert table.gain.tolist() == pytest.approx([np.interp(b, xs, q) - b * q[-1] for b in (0.1, 0.3)])
    assert (table.low < table.gain).all() and (table.gain < table.high).all() and (table.gain > 0).all()
    flat = holdout_policy_gain(np.zeros(n), y, t, groups, [0.1, 0.3], n_boot=50, seed=0)
    assert flat[["gain", "low", "high", "se"]].to_numpy() == pytest.approx(np.zeros((2, 4)), abs=1e-12)


# -- the one-standard-error rule -----------------------------------------------------------
def _records(values: dict[str, list[float]], arm: str = "A", repeats: int = 1) -> pd.DataFrame:
    rows = []
    for candidate, per_fold in values.items():
        for i, v in enumerate(per_fold):
            rows.append({"candidate": candidate, "repeat": i % repeats, "fold": i // repeats, "arm": arm,
                         "metric": "policy_value", "value": v})
    return pd.DataFrame(rows)


def test_the_simplest_candidate_within_one_standard_error_of_the_best_is_served():
    # the model is ahead by 0.2 on average, but its lead over the constant varies by 1.0 from fold to fold
    table = one_standard_error_choice(_records({CONSTANT: [0, 0, 0, 0, 0], MODEL: [1.2, -0.8, 1.0, -0.6, 0.2]}),
                                      ORDER, "policy_value", 5)
    chosen = table.set_index("candidate")
    assert chosen.loc[MODEL, "best"] and chosen.loc[CONSTANT, "chosen"] and not chosen.loc[MODEL, "chosen"]
    assert chosen.loc[CONSTANT, "gap"] == pytest.approx(0.2)
    assert chosen.loc[CONSTANT, "gap_se"] == pytest.approx(np.std([1.2, -0.8, 1.0, -0.6, 0.2], ddof=1) / np.sqrt(5))


def test_a_lead_beyond_one_standard_error_serves_the_better_candidate():
    table = one_standard_error_choice(
        _records({CONSTANT: [0] * 5, TURNOUT_SHAPE: [0.5, 0.6, 0.4, 0.5, 0.6], MODEL: [1.0, 1.1, 0.9, 1.0, 1.2]}),
        ORDER, "policy_value", 5).set_index("candidate")
    assert chosen_name(table) == MODEL


def test_the_turnout_references_two_forms_are_equally_simple_and_the_better_one_counts():
    assert simplicity_order(ORDER) == [(CONSTANT,), (TURNOUT_05, TURNOUT_SHAPE, TURNOUT_05_REACH),
                                       (TURNOUT_05_BOOSTED, TURNOUT_SHAPE_BOOSTED), (MODEL,), (MODEL_PER_ARM,)]
    # both forms within one SE of the model, ahead of the constant: the better of the two is served,
    # whichever it is, though the fixed rule is listed first
    rule_worse = {CONSTANT: [0] * 5, TURNOUT_05: [0.2, 0.5, 0.1, 0.6, 0.3], TURNOUT_SHAPE: [0.9, 0.1, 1.3, -0.3, 0.8],
                  MODEL: [1.0, 0.0, 1.5, -0.5, 1.0]}
    assert chosen_name(one_standard_error_choice(_records(rule_worse), simplicity_order(ORDER), "policy_value", 5)
                       .set_index("candidate")) == TURNOUT_SHAPE
    rule_better = {**rule_worse, TURNOUT_05: rule_worse[TURNOUT_SHAPE], TURNOUT_SHAPE: rule_worse[TURNOUT_05]}
    assert chosen_name(one_standard_error_choice(_records(rule_better), simplicity_order(ORDER), "policy_value", 5)
                       .set_index("candidate")) == TURNOUT_05
    # listed one by one, the simpler rule would be served even where the learned shape is better
    assert chosen_name(one_standard_error_choice(_records(rule_worse), ORDER, "policy_value", 5)
                       .set_index("candidate")) == TURNOUT_05


def test_stability_is_the_share_of_repeats_that_choose_the_same():
    # repeat 0's folds favour the model clearly, repeat 1's do not
    values = {CONSTANT: [0] * 6, MODEL: [1.0, 0.1, 1.1, -0.2, 0.9, 0.0]}
    table = one_standard_error_choice(_records(values, repeats=2), ORDER, "policy_value", 3).set_index("candidate")
    assert table.loc[chosen_name(table), "stability"] == pytest.approx(0.5)


def chosen_name(table: pd.DataFrame) -> str:
    return table.index[table.chosen][0]


# -- the candidates are ensembles -----------------------------------------------------------
@pytest.fixture(scope="module")
def small_program(campaign_dir):
    from training.splits import prepare

    cfg = load_config(campaign_dir / "synthetic_voted.yaml").with_uplift(
        learners=["dr"], final_sizes=[{"n_estimators": 40, "num_leaves": 4}], nuisance_rounds=[20],
        nuisance_treated_leaves=[15], arm_rounds=10, reference_size={"n_estimators": 30, "num_leaves": 3})
    cfg = cfg.scaled_to(load_experiment(cfg).arm.value_counts().to_dict())
    prep = prepare(load_experiment(cfg).head(12_000), cfg)
    assigned = prep.assigned("train", cfg)
    y = prep.train.voted.to_numpy(dtype=float)
    design = Design(cfg.arm_labels, cfg.control_label, cfg.design_shares())
    nuisance = CrossFitNuisance(design, GBMParams(n_estimators=30, min_child_samples=50), True, seed=1)
    ctrl = assigned == cfg.control_label
    turnout = fit_turnout(prep.X_train[ctrl], y[ctrl], prep.folds[ctrl], GBMParams(n_estimators=30), 1.0, 1)
    mu = nuisance.fit_predict(prep.X_train, assigned, y, prep.folds)
    nested = nuisance.fit_predict_nested(prep.X_train, assigned, y, prep.folds)
    return cfg, prep, assigned, y, design, turnout, mu, nested


@pytest.fixture(scope="module")
def small_flags(small_program):
    """The contact flags of the small program's training rows."""
    from training.contact_rate import read_contact_flags

    cfg, prep = small_program[:2]
    return read_contact_flags(prep.train, cfg)


@pytest.fixture(scope="module")
def small_reach(small_program, small_flags):
    """Arm -> its channel's contact-rate booster, fitted on the small program's training rows."""
    from training.contact_rate import ContactRateModel

    cfg, prep = small_program[:2]
    reach = ContactRateModel(cfg.contact_rate.params, 1).fit(prep.X_train, small_flags).arm_boosters(cfg.arm_channels)
    assert sorted(reach) == sorted(REACH_ARMS)
    return reach


def test_held_constant_keeps_columns_dtypes_and_categories():
    X = pd.DataFrame({"a": [1.5, 2.5, 3.5], "n": [1, 2, 3],
                      "c": pd.Categorical(["x", "y", "x"], categories=["x", "y", "z"])})
    held = held_constant(X, keep=["n"])
    assert list(held.columns) == ["a", "n", "c"] and (held.dtypes == X.dtypes).all()
    assert list(held.c.cat.categories) == ["x", "y", "z"] and held.c.nunique() == 1 and held.a.nunique() == 1
    assert held.n.tolist() == [1, 2, 3]


def test_references_are_one_ensemble_per_arm_that_uses_only_what_they_may(small_program, small_reach):
    cfg, prep, assigned, y, design, turnout, mu, _ = small_program
    candidates = arm_candidates(cfg, learner="dr", size="40x4", turnout_score=False, has_turnout=True,
                                reach_arms=list(small_reach))
    assert [c.name for c in candidates] == ORDER == list(HEADERS)  # persuade train names every one
    score = turnout.predict(prep.X_train)
    fitted = fit_candidates(candidates, prep.X_train, score, assigned, y, mu, cfg, design, score_column=True,
                            reach=small_reach)
    effects = training_arm_effects(arm_contrasts(assigned, y, mu, design), prep.train.precinct)
    X = candidates[-1].frame(prep.X_train, score, score_column=True)
    for arm in cfg.arm_labels:
        constant = fitted[CONSTANT].boosters_[arm]
        assert is_constant(constant)
        assert constant.predict(X) == pytest.approx(np.full(len(X), effects[arm]["ate"]))  # the DR average effect
        shaped = fitted[TURNOUT_SHAPE].boosters_[arm]
        used = dict(zip(shaped.feature_name(), shaped.feature_importance(), strict=True))
        assert used["turnout_score"] > 0 and sum(used.values()) == used["turnout_score"]
        contrib = shaped.predict(X, pred_contrib=True)  # exact additive reasons, all on the turnout score
        assert contrib.sum(axis=1) == pytest.approx(shaped.predict(X))
        # the rule: nothing learned but the arm's level; it orders voters by closeness of turnout to 0.5
        rule = fitted[TURNOUT_05].boosters_[arm]
        used = dict(zip(rule.feature_name(), rule.feature_importance(), strict=True))
        assert used["turnout_score"] > 0 and sum(used.values()) == used["turnout_score"]
        X_rule = candidates[1].frame(prep.X_train, score, score_column=True)  # the score, features held
        ruled = rule.predict(X_rule)
        assert spearmanr(ruled, -np.abs(score - 0.5)).statistic * np.sign(effects[arm]["ate"]) > 0.99
        contrast = np.isin(assigned, [arm, cfg.control_label])
        assert ruled[contrast].mean() == pytest.approx(effects[arm]["ate"])  # the DR average effect, reshaped
        assert rule.predict(X_rule, pred_contrib=True).sum(axis=1) == pytest.approx(ruled)
        # the rule among the voters an attempt reaches: the rule's values times the arm's
        # contact rate, on the features and the score; an arm always reached keeps the rule's order
        among = fitted[TURNOUT_05_REACH].boosters_[arm]
        X_among = candidates[ORDER.index(TURNOUT_05_REACH)].frame(prep.X_train, score, score_column=True)
        reached = among.predict(X_among)
        reach = small_reach[arm].predict(prep.X_train) if arm in small_reach else 1.0
        sign = np.sign(effects[arm]["ate"])
        assert spearmanr(reached, (0.5 - np.abs(score - 0.5)) * reach).statistic * sign > 0.97
        assert reached[contrast].mean() == pytest.approx(effects[arm]["ate"])
        assert among.predict(X_among, pred_contrib=True).sum(axis=1) == pytest.approx(reached)
        used = dict(zip(among.feature_name(), among.feature_importance(), strict=True))
        assert (sum(used.values()) > used["turnout_score"]) == (arm in small_reach)
        if arm not in small_reach:
            assert reached == pytest.approx(ruled, rel=1e-12)  # the rule's own ensemble
        else:  # the rule's trees, scaled, then their continuation: the service explains the rule's once
            assert among.num_trees() == 2 * rule.num_trees()
            assert shared_trees([rule, among]).n_trees == rule.num_trees()
        assert not is_constant(fitted[MODEL].boosters_[arm])
        assert fitted[MODEL_PER_ARM].boosters_[arm].num_trees() == fitted[MODEL].boosters_[arm].num_trees() + 10
        # the turnout shape continued on the features: its first trees are the shape's, the
        # ten after them are the arm's own and may split on any feature; reasons stay exact
        boosted = fitted[TURNOUT_SHAPE_BOOSTED].boosters_[arm]
        assert boosted.num_trees() == shaped.num_trees() + 10
        assert boosted.predict(X, num_iteration=shaped.num_trees()) == pytest.approx(shaped.predict(X))
        grown = dict(zip(boosted.feature_name(), boosted.feature_importance(), strict=True))
        assert sum(grown.values()) - grown["turnout_score"] > 0
        assert boosted.predict(X, pred_contrib=True).sum(axis=1) == pytest.approx(boosted.predict(X))
        # the rule continued the same way: its ten own trees are grown with arm_params, not
        # the rule's exact fit (rate 0.5, leaves of 20), so they move the level by small steps
        ruled_on = fitted[TURNOUT_05_BOOSTED].boosters_[arm]
        X_on = candidates[ORDER.index(TURNOUT_05_BOOSTED)].frame(prep.X_train, score, score_column=True)
        assert ruled_on.num_trees() == rule.num_trees() + 10
        assert ruled_on.predict(X_on, num_iteration=rule.num_trees()) == pytest.approx(ruled)
        own = ruled_on.dump_model()["tree_info"][rule.num_trees():]
        assert max(t["num_leaves"] for t in own) <= cfg.uplift.arm_params.num_leaves
        grown = dict(zip(ruled_on.feature_name(), ruled_on.feature_importance(), strict=True))
        assert sum(grown.values()) - grown["turnout_score"] > 0


def test_the_model_candidates_keep_the_learner_cv_chose_and_the_references_their_own(small_program):
    """The references are fitted by the DR learner (the rule by its own); the model by whichever learner won."""
    cfg = small_program[0]
    by_name = {c.name: c for c in arm_candidates(cfg, learner="x", size="40x4", turnout_score=True,
                                                  has_turnout=True, reach_arms=REACH_ARMS)}
    assert {name: c.learner for name, c in by_name.items()} == {
        CONSTANT: "dr", TURNOUT_05: TURNOUT_05, TURNOUT_SHAPE: "dr", TURNOUT_05_REACH: TURNOUT_05_REACH,
        TURNOUT_05_BOOSTED: TURNOUT_05, TURNOUT_SHAPE_BOOSTED: "dr", MODEL: "x", MODEL_PER_ARM: "x"}
    assert by_name[TURNOUT_05_REACH].arms == set(REACH_ARMS) and by_name[MODEL].arms is None
    assert by_name[MODEL].turnout_score and by_name[MODEL].final == cfg.uplift.final_candidates()["40x4"]


def test_the_rule_needs_the_turnout_score_and_says_so():
    from training.learners import TurnoutMidRule

    X = pd.DataFrame({"age": np.arange(40.0)})
    assigned = np.array(["C", "A"] * 20)
    mu = {label: np.zeros(40) for label in ("C", "A", ANY)}
    with pytest.raises(ValueError, match="needs the 'turnout_score' column"):
        TurnoutMidRule(Design(["A"], "C"), GBMParams(n_estimators=5)).fit(X, assigned, np.zeros(40), mu)


def test_without_a_turnout_model_there_is_no_turnout_shaped_reference(small_program):
    cfg = small_program[0]
    names = [c.name for c in arm_candidates(cfg, learner="dr", size="40x4", turnout_score=False, has_turnout=False)]
    assert names == [CONSTANT, MODEL, MODEL_PER_ARM]
    assert [c.name for c in arm_candidates(cfg, learner="dr", size="40x4", turnout_score=False, has_turnout=False,
                                           reach_arms=REACH_ARMS)] == names  # the reach rule is the rule's
    no_arm_trees = small_program[0].model_copy(
        update={"uplift": small_program[0].uplift.model_copy(update={"arm_rounds": 0})})
    assert [c.name for c in arm_candidates(no_arm_trees, learner="dr", size="40x4", turnout_score=False,
                                           has_turnout=True)] == [CONSTANT, TURNOUT_05, TURNOUT_SHAPE, MODEL]
    assert ArmCandidate(CONSTANT, "dr", GBMParams(), features=False, turnout_score=False).frame(
        pd.DataFrame({"a": [1.0, 2.0]}), None).a.nunique() == 1


def test_cv_refits_the_contact_rate_model_without_the_held_out_fold(small_program, small_flags):
    """Changing who was reached in one fold leaves that fold's CV value of the reach rule as it was."""
    from training.contact_rate import ContactFlags

    cfg, prep, assigned, y, design, turnout, mu, nested = small_program
    reach_rule = [c for c in arm_candidates(cfg, learner="dr", size="40x4", turnout_score=False, has_turnout=True,
                                            reach_arms=REACH_ARMS) if c.name == TURNOUT_05_REACH]
    contrasts = arm_contrasts(assigned, y, mu, design)

    def values(flags):
        records = pd.DataFrame(arm_cv_records(reach_rule, prep.X_train, assigned, y, contrasts, nested, prep.folds,
                                              turnout, cfg, design, repeat=0, flags=flags))
        return records[records.metric == "policy_value"].set_index(["fold", "arm"]).value.sort_index()

    before = values(small_flags)
    assert set(before.index.get_level_values("arm")) == set(REACH_ARMS)  # a candidate of those arms only
    fold = int(prep.folds[0])
    inside = prep.folds == fold
    flipped = ContactFlags(small_flags.channel, small_flags.attempted,
                           np.where(inside, small_flags.attempted & ~small_flags.reached, small_flags.reached))
    after = values(flipped)
    assert after.loc[fold].tolist() == before.loc[fold].tolist()  # the fold's own flags never fitted its model
    others = before.index.get_level_values("fold") != fold
    assert (after[others] != before[others]).all()  # every other fold's model saw them


def test_the_references_cv_scores_are_pinned_on_the_seeded_program(small_program, small_flags, small_reach):
    """Grouped CV of the candidates on the seeded synthetic program: a change that moves them must say why."""
    cfg, prep, assigned, y, design, turnout, mu, nested = small_program
    candidates = arm_candidates(cfg, learner="dr", size="40x4", turnout_score=False, has_turnout=True,
                                reach_arms=list(small_reach))
    records = pd.DataFrame(arm_cv_records(candidates, prep.X_train, assigned, y, arm_contrasts(assigned, y, mu, design),
                                          nested, prep.folds, turnout, cfg, design, repeat=0, flags=small_flags))
    table = one_standard_error_choice(records, simplicity_order(ORDER), "policy_value", cfg.split.folds)
    value = table.set_index(["arm", "candidate"]).value.unstack("candidate")[ORDER] * 1000
    assert (value[CONSTANT] == 0).all()  # ties everyone: exactly random targeting
    pinned = {
        "Mail": [0.0, PIN["Mail"][0], PIN["Mail"][1]],
        "Canvass": [0.0, PIN["Canvass"][0], PIN["Canvass"][1]],
    }
    for arm, expected in pinned.items():
        assert value.loc[arm, [CONSTANT, TURNOUT_SHAPE, MODEL]].tolist() == pytest.approx(expected, abs=1e-6), arm
        assert value.loc[arm, TURNOUT_05] == pytest.approx(PIN_RULE[arm], abs=1e-6), arm
    # the fixed rule is served where it is the best ranking in CV; Phone, whose true effect
    # is P(reached) times the rule's bump, serves the rule continued on the features (the
    # reach model's inputs), 19.31 against the rule's 12.96, a gap of 1.7 SEs
    assert value.loc["Phone", TURNOUT_05_BOOSTED] == pytest.approx(19.309, abs=1e-3)
    # the rule among the voters an attempt reaches is a candidate of Phone and Canvass only; on
    # 12,000 voters its contact-rate models are noisy and it ranks below the rule
    assert value.loc[REACH_ARMS, TURNOUT_05_REACH].tolist() == pytest.approx(PIN_REACH, abs=1e-6)
    assert value.loc[["Mail", "Text"], TURNOUT_05_REACH].isna().all()
    assert dict(zip(table.loc[table.chosen, "arm"], table.loc[table.chosen, "candidate"], strict=True)) == {
        "Mail": TURNOUT_05, "Phone": TURNOUT_05_BOOSTED, "Text": TURNOUT_05, "Canvass": TURNOUT_05}


PIN = {"Mail": (12.312276475065739, 4.115351901740466), "Canvass": (7.130791184682531, 3.3844844631983158)}
PIN_RULE = {"Mail": 16.841013826672008, "Canvass": 15.989347965073001}
PIN_REACH = [5.8818928747912915, 14.768225394213898]  # Phone, Canvass
