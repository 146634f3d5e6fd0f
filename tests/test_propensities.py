"""Per-row propensities: each contrast's e_i, rows that never learn or judge an arm, and no change without programs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from program_fixtures import GOLDEN, fit_summary, small_config

from features.config import GBMParams, RunConfig
from features.synthetic import make_campaign
from training.evaluation import dr_qini_coefficient, qini_coefficient
from training.fit import fit_and_evaluate
from training.learners import ANY, LEARNERS, Design
from training.references import DefaultTLearner
from training.selection import arm_contrasts, fold_metrics

SHARES = {"C": 0.5, "A": 0.25, "B": 0.25}


def test_a_run_without_programs_is_the_run_before_per_row_propensities(monkeypatch, tmp_path):
    """The pin: the same predictions, CV values and choices as the code before (tests/data/no_programs_fit.json)."""
    monkeypatch.setenv("PERSUADE_THREADS", "1")  # the golden file was written with one thread
    raw = small_config(tmp_path)
    raw["uplift"]["references"] = ["constant", "turnout_shape"]  # the candidates the golden file was written with
    config = RunConfig.model_validate(raw)
    result = fit_and_evaluate(make_campaign(4000, seed=3).flat, config)
    now, before = fit_summary(result, config.uplift.learners), json.loads(GOLDEN.read_text())
    assert now["choices"] == before["choices"]

    def close(a, b):
        if isinstance(a, dict):
            assert a.keys() == b.keys()
            for key in a:
                close(a[key], b[key])
        elif not isinstance(a, str):
            np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=0, atol=1e-12)

    close({k: v for k, v in now.items() if k != "choices"}, {k: v for k, v in before.items() if k != "choices"})


def _data(n: int = 6000, seed: int = 11):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    assigned = rng.choice(["C", "A", "B"], n, p=[0.5, 0.25, 0.25])
    y = X.c + np.where(assigned == "A", 0.3 * (X.a > 0), 0.0) + np.where(assigned == "B", 0.2 * X.b, 0.0)
    mu = {label: rng.normal(size=n) * 0.1 for label in ["C", "A", "B", ANY]}
    return X, assigned, (y + rng.normal(size=n)).to_numpy(), mu


def _recorded(assigned: np.ndarray) -> pd.DataFrame:
    """Propensities a program might record: the first 1,000 control rows could not get A, rows 1000-1500 of
    arm A could not be control (no holdout), the rest vary per row."""
    n = len(assigned)
    p_a = np.linspace(0.1, 0.6, n)
    frame = pd.DataFrame({"C": 1 - p_a - 0.1, "A": p_a, "B": np.full(n, 0.1)})
    no_a = np.flatnonzero(assigned == "C")[:1000]
    frame.loc[no_a, ["C", "A", "B"]] = [0.8, 0.0, 0.2]
    always_a = np.flatnonzero(assigned == "A")[:500]
    frame.loc[always_a, ["C", "A", "B"]] = [0.0, 1.0, 0.0]
    return frame


def test_each_row_has_its_own_propensity_of_each_contrast():
    design = Design(["A", "B"], "C", SHARES)
    assigned = np.array(["C", "A", "B", "C", "A"])
    recorded = pd.DataFrame({"C": [0.5, 0.2, 0.6, 1.0, 0.0], "A": [0.3, 0.8, 0.0, 0.0, 1.0],
                             "B": [0.2, 0.0, 0.4, 0.0, 0.0]})
    np.testing.assert_allclose(design.propensity("A", assigned, recorded), [0.375, 0.8, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(design.propensity(ANY, assigned, recorded), [0.5, 0.8, 0.4, 0.0, 1.0])
    rows, _ = design.contrast("A", assigned, recorded)
    assert rows.tolist() == [True, True, False, False, False]  # row 3 could not get A, row 4 could not be control
    assert design.contrast(ANY, assigned, recorded)[0].tolist() == [True, True, True, False, False]
    # without recorded propensities every row has the design's share, as a per-row array
    np.testing.assert_array_equal(design.propensity("A", assigned), np.full(5, 0.25 / 0.75))


@pytest.mark.parametrize("name", ["dr", "x", "t"])
def test_design_shares_as_per_row_propensities_fit_exactly_the_same_learner(name):
    """Experiment rows carry their design shares as per-row propensities: the fit must not move."""
    X, assigned, y, mu = _data()
    design = Design(["A", "B"], "C", SHARES)
    shares = pd.DataFrame({label: np.full(len(y), share) for label, share in SHARES.items()})
    params = GBMParams(n_estimators=20, learning_rate=0.1, num_leaves=4, min_child_samples=50)
    plain = LEARNERS[name](design, params, arm_rounds=5, seed=3).fit(X, assigned, y, mu)
    per_row = LEARNERS[name](design, params, arm_rounds=5, seed=3).fit(X, assigned, y, mu, shares)
    pd.testing.assert_frame_equal(plain.predict(X), per_row.predict(X), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["dr", "x", "t"])
def test_rows_without_a_chance_of_an_arm_never_learn_it(name):
    """Control rows that could not get A, A rows that could not be control: never in A's contrast, whatever their y."""
    X, assigned, y, mu = _data()
    recorded = _recorded(assigned)
    excluded = ((recorded.A == 0) & (assigned == "C")) | ((recorded.C == 0) & (assigned == "A"))
    design = Design(["A", "B"], "C", SHARES)
    learner = LEARNERS[name](design, GBMParams(n_estimators=20, learning_rate=0.1, num_leaves=4,
                                                min_child_samples=50), pool_arms=False, seed=3)
    rows = learner.targets("A", assigned, y, mu, recorded)[0]
    assert not (rows & excluded.to_numpy()).any()
    assert rows.sum() == ((assigned == "A") | (assigned == "C")).sum() - excluded.sum()
    assert learner.targets("B", assigned, y, mu, recorded)[0][np.flatnonzero(assigned == "C")[:1000]].all()
    changed = np.where(excluded, y + 50.0, y)  # outcomes of the excluded rows only
    first = learner.fit(X, assigned, y, mu, recorded).predict(X)
    second = LEARNERS[name](design, learner.final_params, pool_arms=False, seed=3).fit(
        X, assigned, changed, mu, recorded).predict(X)
    np.testing.assert_array_equal(first["A"], second["A"])
    if name != "t":  # B's contrast has those control rows: the change reaches it (T's targets have no outcome)
        assert not np.allclose(first["B"], second["B"])
    t_first = DefaultTLearner(["A", "B"], "C", binary=False).fit(X, assigned, y, recorded).predict(X)
    t_second = DefaultTLearner(["A", "B"], "C", binary=False).fit(X, assigned, changed, recorded).predict(X)
    np.testing.assert_array_equal(t_first["A"], t_second["A"])


def test_rows_without_a_chance_of_an_arm_never_judge_it():
    """The AIPW scores and every CV metric of arm A ignore the rows outside A's contrast."""
    X, assigned, y, mu = _data()
    recorded = _recorded(assigned)
    design = Design(["A", "B"], "C", SHARES)
    excluded = (((recorded.A == 0) & (assigned == "C")) | ((recorded.C == 0) & (assigned == "A"))).to_numpy()
    contrasts = arm_contrasts(assigned, y, mu, design, recorded)
    assert not (contrasts["A"].rows & excluded).any() and np.isnan(contrasts["A"].pseudo[excluded]).all()
    np.testing.assert_allclose(contrasts["A"].propensity[contrasts["A"].rows],
                               (recorded.A / (recorded.A + recorded.C)).to_numpy()[contrasts["A"].rows])
    changed = arm_contrasts(assigned, np.where(excluded, y + 50.0, y), mu, design, recorded)
    fold = np.arange(len(y)) % 2 == 0
    scores = pd.DataFrame({"A": X.a.to_numpy()[fold], "B": X.b.to_numpy()[fold]})
    first = {(arm, m): v for arm, m, v in fold_metrics(scores, fold, y, contrasts, [0.1, 0.3])}
    again = {(arm, m): v for arm, m, v in fold_metrics(scores, fold, np.where(excluded, y + 50.0, y), changed,
                                                      [0.1, 0.3])}
    assert {k: v for k, v in first.items() if k[0] == "A"} == {k: v for k, v in again.items() if k[0] == "A"}
    assert first[("B", "qini")] != again[("B", "qini")]


def test_qini_with_per_row_propensities_estimates_what_a_randomized_design_would():
    """Targeted contact (high x treated more often) biases the plain Qini; the weighted one is the estimand."""
    rng = np.random.default_rng(3)
    n, reps = 40_000, 30
    errors = {"plain": [], "weighted": [], "dr": []}
    for _ in range(reps):
        x = rng.random(n)
        tau, base, e = 0.1 * x, 0.3 + 0.4 * x, 0.2 + 0.6 * x
        t = (rng.random(n) < e).astype(float)
        y = (rng.random(n) < base + t * tau).astype(float)
        score = x + 1e-3 * rng.random(n)
        truth = dr_qini_coefficient(score, tau, e.mean())  # the estimand at the mean propensity, from the true effects
        pseudo = tau + t * (y - base - tau) / e - (1 - t) * (y - base) / (1 - e)
        errors["plain"].append(qini_coefficient(score, y, t) - truth)
        errors["weighted"].append(qini_coefficient(score, y, t, e) - truth)
        errors["dr"].append(dr_qini_coefficient(score, pseudo, e) - truth)  # per-row shares: their mean
    z = {name: np.mean(v) / (np.std(v) / np.sqrt(reps)) for name, v in errors.items()}
    assert abs(z["weighted"]) < 3 and abs(z["dr"]) < 3, z
    assert z["plain"] < -10, z  # biased far beyond its noise


def test_rows_with_limited_overlap_leave_the_contrast():
    """min_propensity trims rows whose e is below it or above one minus it; 0 keeps every informative row."""
    assigned = np.array(["C", "A", "A", "C", "A", "C"])
    recorded = pd.DataFrame({"C": [0.95, 0.95, 0.5, 0.5, 0.04, 0.9], "A": [0.05, 0.05, 0.5, 0.5, 0.96, 0.1],
                             "B": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]})
    kept = Design(["A", "B"], "C", SHARES, min_propensity=0.1).contrast("A", assigned, recorded)[0]
    assert kept.tolist() == [False, False, True, True, False, True]
    assert Design(["A", "B"], "C", SHARES).contrast("A", assigned, recorded)[0].all()


def test_the_overlap_floor_never_trims_an_experiment_row():
    from training.programs import TrainingRows, overlap_floor

    experiment = pd.DataFrame({"C": np.full(4, 0.9), "A": np.full(4, 0.06), "B": np.full(4, 0.04)})
    program = pd.DataFrame({"C": [0.99, 0.5], "A": [0.01, 0.5], "B": [0.0, 0.0]})
    rows = TrainingRows(None, pd.concat([experiment, program], ignore_index=True),
                        np.arange(6) < 4, {})
    floor = overlap_floor(rows, ["A", "B"], "C", 0.1)
    assert floor == pytest.approx(0.04 / 0.94)  # B's experiment rows: e = 0.0426, below the configured 0.1
    assigned = np.array(["C", "A", "B", "C", "A", "C"])
    design = Design(["A", "B"], "C", min_propensity=floor)
    for arm in ("A", "B"):
        rows_in = design.contrast(arm, assigned, rows.propensities)[0]
        sides = (assigned == arm) | (assigned == "C")
        assert rows_in[:4].tolist() == sides[:4].tolist()  # every experiment row of the contrast is in it
    assert not design.contrast("A", assigned, rows.propensities)[0][4]  # the program's A row at e = 0.01
    no_programs = TrainingRows(None, None, np.ones(4, dtype=bool), {})
    assert overlap_floor(no_programs, ["A", "B"], "C", 0.1) == 0.0


def test_trimming_limited_overlap_makes_an_explored_arms_effect_less_noisy():
    """An experiment (2,000 voters, half given A) plus a program that explored A at 1% of its 20,000
    voters: with the program's rows (e = 0.01) trimmed, the AIPW average effect of A is closer to the
    truth (+5 points) over 20 seeded draws, outcome models off by 5 points included."""
    from training.learners.dr import aipw_score
    from training.programs import TrainingRows, overlap_floor

    n_exp, n_prog = 2000, 20000
    p = pd.DataFrame({"C": np.r_[np.full(n_exp, 0.5), np.full(n_prog, 0.99)],
                      "A": np.r_[np.full(n_exp, 0.5), np.full(n_prog, 0.01)], "B": 0.0})
    rows = TrainingRows(None, p, np.arange(len(p)) < n_exp, {})
    errors = {0.0: [], 0.1: []}
    for seed in range(20):
        rng = np.random.default_rng(seed)
        assigned = np.where(rng.random(len(p)) < p.A.to_numpy(), "A", "C")
        y = (rng.random(len(p)) < np.where(assigned == "A", 0.55, 0.5)).astype(float)
        treated = (assigned == "A").astype(float)
        for configured in errors:
            design = Design(["A", "B"], "C", min_propensity=overlap_floor(rows, ["A"], "C", configured))
            kept, e = design.contrast("A", assigned, p)
            score = aipw_score(y[kept], treated[kept], np.full(kept.sum(), 0.6), np.full(kept.sum(), 0.5), e[kept])
            errors[configured].append(abs(score.mean() - 0.05))
    assert np.mean(errors[0.1]) < 0.8 * np.mean(errors[0.0])  # 0.018 against 0.027


def test_dr_trees_weigh_rows_by_their_precision_and_keep_the_average_effect():
    """Where propensities differ, DR's trees weigh each row by e (1 - e), scaled to mean one, and
    learn the effect's shape better than unweighted trees; the arm's level is still the plain mean
    of its AIPW scores, without the rows of limited overlap. 3,000 experiment rows at e = 0.5 and
    12,000 program rows at e = 0.05 (a noisy arm explored at 5%), effect 1 + 0.5 x, 3 seeded draws."""
    from scipy.stats import spearmanr

    from training.learners.dr import DRLearner, aipw_score

    class Unweighted(DRLearner):
        def _precision(self, e):
            return np.ones_like(e)

    n_exp, n_prog = 3000, 12000
    params = GBMParams(n_estimators=40, learning_rate=0.1, num_leaves=4, min_child_samples=100)
    gains = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=n_exp + n_prog)
        X = pd.DataFrame({"x": x, "z": rng.normal(size=len(x))})
        p_a = np.r_[np.full(n_exp, 0.5), np.full(n_prog, 0.05)]
        recorded = pd.DataFrame({"C": 1 - p_a, "A": p_a})
        assigned = np.where(rng.random(len(x)) < p_a, "A", "C")
        tau = 1.0 + 0.5 * x
        y = x + np.where(assigned == "A", tau, 0.0) + rng.normal(scale=2.0, size=len(x))
        mu = {"C": x, "A": x + tau, ANY: x + tau}
        design = Design(["A"], "C")
        weighted = DRLearner(design, params, pool_arms=False, seed=seed)
        contrast = weighted.targets("A", assigned, y, mu, recorded)
        e = p_a[contrast.rows]
        np.testing.assert_allclose(contrast.tree_weight, e * (1 - e) / np.mean(e * (1 - e)))
        np.testing.assert_array_equal(contrast.weight, 1.0)  # the level's weights stay plain
        if seed == 0:  # rows with limited overlap stay in the trees, at their weight, and leave the level
            trimmed = DRLearner(Design(["A"], "C", min_propensity=0.1), params).targets("A", assigned, y, mu,
                                                                                        recorded)
            assert trimmed.rows.sum() == len(x)
            np.testing.assert_array_equal(trimmed.weight, (np.arange(len(x)) < n_exp).astype(float))
            np.testing.assert_array_equal(trimmed.tree_weight, contrast.tree_weight)
            x_contrast = LEARNERS["x"](Design(["A"], "C", min_propensity=0.1), params).targets("A", assigned, y, mu,
                                                                                              recorded)
            assert x_contrast.rows.sum() == n_exp  # X weighs no row by precision: it leaves them out of its trees
            np.testing.assert_array_equal(x_contrast.tree_weight, x_contrast.weight)
            kept = np.arange(len(x)) < n_exp  # the level: the experiment rows' AIPW mean, and the shape's there
            pooled = DRLearner(Design(["A"], "C", min_propensity=0.1), params, arm_rounds=0, seed=seed).fit(
                X, assigned, y, mu, recorded)
            level = aipw_score(y[kept], (assigned[kept] == "A").astype(float), mu["A"][kept], mu["C"][kept],
                               p_a[kept]).mean()
            assert pooled.predict(X[kept])["A"].mean() == pytest.approx(level, abs=1e-9)
        fits = {name: cls(design, params, pool_arms=pooled, arm_rounds=0, seed=seed).fit(X, assigned, y, mu, recorded)
                for name, cls, pooled in [("weighted", DRLearner, False), ("plain", Unweighted, False),
                                          ("pooled", DRLearner, True)]}
        rho = {name: spearmanr(f.predict(X)["A"], tau)[0] for name, f in fits.items()}
        assert rho["pooled"] == pytest.approx(rho["weighted"])  # one arm: its pooled shape is its own
        gains.append(rho["weighted"] - rho["plain"])
        treated = (assigned == "A").astype(float)
        rows = contrast.rows
        level = aipw_score(y[rows], treated[rows], mu["A"][rows], mu["C"][rows], e).mean()
        assert fits["pooled"].predict(X[rows])["A"].mean() == pytest.approx(level, abs=1e-9)
    assert min(gains) > 0 and np.mean(gains) > 0.02  # 0.90 against 0.87 on average
