"""Uplift metrics on constructed data where the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluation import (
    auuc,
    cluster_bootstrap_weights,
    decile_table,
    difference_in_means,
    dr_qini_coefficient,
    holdout_policy_gain,
    policy_gain,
    policy_points,
    qini_coefficient,
    qini_interval,
    qini_points,
    turnout_metrics,
    uplift_at_k,
)
from training.learners.dr import aipw_score


def _experiment(n=40_000, seed=0):
    rng = np.random.default_rng(seed)
    tau = rng.uniform(0, 0.3, n)
    t = rng.random(n) < 0.5
    y = (rng.random(n) < 0.3 + t * tau).astype(float)
    groups = rng.integers(0, 2000, n)
    return tau, t.astype(float), y, groups


def test_true_effect_ranks_above_random_and_reverse():
    tau, t, y, _ = _experiment()
    good = qini_coefficient(tau, y, t)
    rand = qini_coefficient(np.random.default_rng(1).random(len(y)), y, t)
    bad = qini_coefficient(-tau, y, t)
    assert good > 0.005 > abs(rand)
    assert bad < -0.005
    assert auuc(tau, y, t) > auuc(-tau, y, t)


def test_the_policy_curve_is_the_top_voters_difference_in_means_times_their_share():
    tau, t, y, _ = _experiment(n=5000)
    x, q = policy_points(tau, y, t)  # no ties: one point per voter
    top = np.argsort(-tau)[:1500]
    mine = t[top] == 1
    assert q[1500] == pytest.approx(0.3 * (y[top][mine].mean() - y[top][~mine].mean()), rel=1e-12)
    assert x[1500] == pytest.approx(0.3) and q[-1] == pytest.approx(y[t == 1].mean() - y[t == 0].mean())
    assert np.trapezoid(q, x) == pytest.approx(auuc(tau, y, t), rel=1e-12)


@pytest.mark.parametrize("share", [0.15, 0.5])
def test_the_holdout_value_of_a_ranking_is_on_the_scale_of_the_true_effects_whatever_the_treated_share(share):
    """What contacting the top k adds per voter: a Qini point would read it times the treated share."""
    rng = np.random.default_rng(8)
    n = 100_000
    score = rng.random(n)
    tau = 0.25 * score  # the ranking is the true effect's order
    t = (rng.random(n) < share).astype(float)
    y = (rng.random(n) < 0.3 + tau * t).astype(float)
    table = holdout_policy_gain(score, y, t, rng.integers(0, 5000, n), [0.1, 0.3], n_boot=100, seed=0)
    truth = policy_gain(score, tau, [0.1, 0.3])  # every voter's known effect, no noise
    assert np.abs(table.gain - truth).max() < 3 * table.se.max()
    assert (table.gain - share * truth > 3 * table.se).all()  # not the Qini point, which counts the treated only


def test_constant_score_has_zero_qini_whatever_the_row_order():
    tau, t, y, _ = _experiment()
    order = np.argsort(-tau)  # rows sorted by true effect: a stable sort would flatter a tie
    assert abs(qini_coefficient(np.zeros(len(y)), y[order], t[order])) < 1e-12


def _qini_points_written_out(score, y, t, w):
    """The curve as its definition reads: every sum over every row, the other side's rows as zeros."""
    order = np.argsort(-score, kind="stable")
    ends = np.flatnonzero(np.r_[score[order][1:] != score[order][:-1], True])
    w, t, y = w[..., order], t[order], y[order]

    def cum(v):
        c = np.cumsum(v, axis=-1)[..., ends]
        return np.concatenate([np.zeros((*c.shape[:-1], 1)), c], axis=-1)

    n_t, n_c, y_t, y_c, n_all = cum(w * t), cum(w * (1 - t)), cum(w * y * t), cum(w * y * (1 - t)), cum(w)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = y_t - y_c * np.where(n_c > 0, n_t / n_c, 0.0)
    return n_all / n_all[..., -1:], q / n_all[..., -1:]


@pytest.mark.parametrize("ties", [False, True])
def test_qini_points_are_the_written_out_sums_to_the_last_bit(ties):
    """Each side's sums run over its own rows only (training/evaluation.py): the same floats."""
    tau, t, y, groups = _experiment(n=5_000, seed=4)
    score = np.round(tau, 2) if ties else tau
    for w in (np.ones(len(y)), cluster_bootstrap_weights(groups, 30, seed=2)):
        got = qini_points(score, y, t, None if w.ndim == 1 else w)
        for mine, written in zip(got, _qini_points_written_out(score, y, t, w), strict=True):
            np.testing.assert_array_equal(mine, written)
    for side in (np.ones(3), np.zeros(3)):  # one side empty
        for mine, written in zip(qini_points(score[:3], y[:3], side), _qini_points_written_out(
                score[:3], y[:3], side, np.ones(3)), strict=True):
            np.testing.assert_array_equal(mine, written)


def test_a_treated_indicator_other_than_0_or_1_is_refused():
    tau, t, y, _ = _experiment(n=100)
    with pytest.raises(ValueError, match="treated must be 0"):
        qini_points(tau, y, t * 0.5)


def test_uplift_at_k_follows_the_ranking():
    tau, t, y, _ = _experiment()
    top = uplift_at_k(tau, y, t, 0.1)
    assert abs(top - tau[np.argsort(-tau)[: len(tau) // 10]].mean()) < 0.03
    assert top > uplift_at_k(-tau, y, t, 0.1) + 0.15


def test_intervals_cover_and_order():
    tau, t, y, groups = _experiment()
    q = qini_interval(tau, y, t, groups, n_boot=100)
    assert q.low < q.estimate < q.high and q.low > 0
    dim = difference_in_means(y, t, groups, n_boot=100)
    assert dim.low < tau.mean() < dim.high


def test_decile_table_is_monotone_for_the_true_effect():
    tau, t, y, _ = _experiment()
    table = decile_table(tau, y, t)
    assert table.decile.tolist() == list(range(1, 11))
    assert table.predicted_uplift.is_monotonic_decreasing
    assert table.observed_uplift.iloc[0] > table.observed_uplift.iloc[-1] + 0.15
    assert (table.n_treated + table.n_control).sum() == len(y)


def test_turnout_metrics_of_a_calibrated_model():
    rng = np.random.default_rng(2)
    p = rng.uniform(0.05, 0.95, 50_000)
    y = (rng.random(len(p)) < p).astype(float)
    m = turnout_metrics(p, y)
    assert 0.75 < m["auc"] < 0.85
    assert m["max_calibration_gap"] < 0.02
    assert turnout_metrics(np.clip(p + 0.2, 0, 1), y)["max_calibration_gap"] > 0.1


def test_dr_qini_estimates_the_qini_with_less_spread_when_x_predicts_the_outcome():
    """Same estimand as the Qini, from AIPW scores: it agrees on average and varies less."""
    rng = np.random.default_rng(3)
    n, e, reps = 20_000, 0.3, 200
    x = rng.uniform(-3, 3, n)
    base = 0.05 + 0.85 / (1 + np.exp(-2 * x))  # turnout without contact, well predicted by x
    tau = 0.08 * (x > 0)  # the effect: only for half of the voters
    plain, dr = [], []
    for _ in range(reps):
        t = (rng.random(n) < e).astype(float)
        y = (rng.random(n) < base + t * tau).astype(float)
        plain.append(qini_coefficient(tau + 1e-3 * x, y, t))
        dr.append(dr_qini_coefficient(tau + 1e-3 * x, aipw_score(y, t, base + tau, base, e), e))
    plain, dr = np.array(plain), np.array(dr)
    assert abs(dr.mean() - plain.mean()) < 3 * plain.std() / np.sqrt(reps)
    assert dr.std() < 0.7 * plain.std()
    assert abs(np.mean(dr) - dr_qini_coefficient(tau + 1e-3 * x, tau, e)) < 3 * dr.std() / np.sqrt(reps)


def test_dr_qini_of_a_constant_score_is_zero_and_of_the_reverse_negative():
    tau, t, y, _ = _experiment()
    pseudo = aipw_score(y, t, np.full(len(y), 0.3) + tau, np.full(len(y), 0.3), 0.5)
    assert abs(dr_qini_coefficient(np.zeros(len(y)), pseudo, 0.5)) < 1e-12
    assert dr_qini_coefficient(tau, pseudo, 0.5) > 0.005
    assert dr_qini_coefficient(-tau, pseudo, 0.5) < -0.005
