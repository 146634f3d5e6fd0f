"""Evaluation of uplift rankings and turnout probabilities on randomized outcomes.

Curves are computed at tie-block boundaries, so a score with many ties (a few binary
features) is not flattered or punished by the row order. Confidence intervals come
from a cluster bootstrap: whole groups are resampled, as they were randomized and held
out.

Units: a Qini curve point is the incremental outcomes (treated outcomes minus control
outcomes scaled to the treated count) among the top fraction *x*, divided by all
voters of the comparison; the Qini coefficient is the area between that curve and the
straight line of random targeting. Both are per voter, so they compare across splits.
A policy curve point (:func:`policy_points`) is what contacting every voter of the top
fraction would add, per voter: the Qini point over the treated share among the top, on
the scale of the voters' effects, which is what a plan's value and the doubly-robust CV
metric read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

KS = (0.1, 0.2, 0.3)


def _order_and_blocks(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-score, kind="stable")
    s = score[order]
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    return order, ends


def _cum(values: np.ndarray, order: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Cumulative sums along the last axis, in the ranking's row ``order``, at block ends, with a leading 0."""
    c = np.cumsum(values[..., order], axis=-1)[..., ends]
    zero = np.zeros((*c.shape[:-1], 1))
    return np.concatenate([zero, c], axis=-1)


def _side_sums(w: np.ndarray, y: np.ndarray, rows: np.ndarray, taken: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative weights and weighted outcomes of one side's ``rows`` (in ranking order).

    ``taken[j]``: how many of ``rows`` rank at or above block end ``j``. Both sums have a
    leading 0, as :func:`_cum`'s.
    """
    w_side = w[..., rows]
    at = np.maximum(taken - 1, 0)

    def cum(values: np.ndarray) -> np.ndarray:
        c = np.cumsum(values, axis=-1)[..., at] if len(rows) else np.zeros((*values.shape[:-1], len(taken)))
        c[..., taken == 0] = 0.0
        return np.concatenate([np.zeros((*c.shape[:-1], 1)), c], axis=-1)

    return cum(w_side), cum(w_side * y[rows])


def single_propensity(propensity: np.ndarray | float) -> float:
    """The one propensity of a contrast: the design's share, or the mean of per-row propensities.

    The rows of a randomized design share one (returned as it is); a past program's rows
    each have their own, and a design with their mean as its one share is the one the
    weighted estimates (:func:`balancing_weights`) compare with.
    """
    e = np.asarray(propensity, dtype=float)
    if e.ndim == 0:
        return float(e)
    return float(e[0]) if len(e) and bool(np.all(e == e[0])) else float(e.mean())


def balancing_weights(treated: np.ndarray, propensity: np.ndarray | float | None) -> np.ndarray | None:
    """Row weights that turn per-row propensities into one: None when the rows share one.

    A contrast whose rows had different chances of the treated side (a past program's
    targeted design) is re-weighted to the mean propensity ``e``: treated rows weigh
    ``e / e_i`` and control rows ``(1 - e) / (1 - e_i)`` (inverse-propensity weighting,
    stabilized), so each part of the curve compares treated and control voters in the
    proportions a design with the one share ``e`` would have drawn. A randomized design
    needs no weights, and its estimates are the plain ones.
    """
    e_i = None if propensity is None else np.asarray(propensity, dtype=float)
    if e_i is None or e_i.ndim == 0 or bool(np.all(e_i == e_i[0])):
        return None
    e = single_propensity(e_i)
    t = np.asarray(treated, dtype=float)
    return t * e / e_i + (1 - t) * (1 - e) / (1 - e_i)


def _side_curves(
    score: np.ndarray, y: np.ndarray, treated: np.ndarray, weights: np.ndarray | None,
    propensity: np.ndarray | None,
) -> tuple[np.ndarray, ...]:
    """Each side's cumulative weight and weighted outcome at the ranking's block ends, and all voters' weight.

    Returns ``(n_t, y_t, n_c, y_c, n_all)``, each with a leading 0 (:func:`_cum`); with a
    (B, n) ``weights`` matrix, each is (B, k).
    """
    score = np.asarray(score, dtype=float)
    y = np.asarray(y, dtype=float)
    t = np.asarray(treated, dtype=float)
    if not np.all((t == 0) | (t == 1)):
        raise ValueError("treated must be 0 (control) or 1 (treated) for every row")
    order, ends = _order_and_blocks(score)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    balance = balancing_weights(t, propensity)
    if balance is not None:
        w = w * balance
    # The sums over one side (treated or control) run over that side's rows only, gathered in
    # the ranking's order: a sum of a side's products with the other side's zeros in between
    # is the same sum, exactly (adding 0.0 changes no float), and a (B, n) bootstrap matrix
    # is gathered and summed about half as often as with the zeros written out.
    is_t = t[order] == 1
    n_t, y_t = _side_sums(w, y, order[is_t], np.cumsum(is_t)[ends])
    n_c, y_c = _side_sums(w, y, order[~is_t], np.cumsum(~is_t)[ends])
    return n_t, y_t, n_c, y_c, _cum(w, order, ends)


def qini_points(
    score: np.ndarray, y: np.ndarray, treated: np.ndarray, weights: np.ndarray | None = None,
    propensity: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Qini curve: fraction targeted (x) and incremental outcomes per voter (q).

    ``weights`` may be a (B, n) matrix of bootstrap weights; q is then (B, k).
    ``propensity``: each row's propensity, when the rows did not share one
    (:func:`balancing_weights`).
    """
    n_t, y_t, n_c, y_c, n_all = _side_curves(score, y, treated, weights, propensity)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = y_t - y_c * np.where(n_c > 0, n_t / n_c, 0.0)
    total = n_all[..., -1:]
    return n_all / total, q / total


def policy_points(
    score: np.ndarray, y: np.ndarray, treated: np.ndarray, weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Policy curve: fraction targeted (x) and incremental outcomes per voter had the top x all been contacted.

    At each point, ``x`` times the difference in mean outcome between the treated and the
    control voters among the top ``x`` (0 where a side has none yet): the randomized
    estimate of what contacting every one of them would add, per voter of the comparison.
    A Qini point counts only the treated voters' increment, so it is this times the
    treated share among the top; this one is on the scale of :func:`policy_gain` and of
    the voters' true effects. ``weights`` as :func:`qini_points`'.
    """
    n_t, y_t, n_c, y_c, n_all = _side_curves(score, y, treated, weights, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = np.where((n_t > 0) & (n_c > 0), y_t / n_t - y_c / n_c, 0.0)
    x = n_all / n_all[..., -1:]
    return x, x * lift


def _area(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    random_line = x * q[..., -1:]
    return np.trapezoid(q - random_line, x, axis=-1)


def qini_coefficient(
    score: np.ndarray, y: np.ndarray, treated: np.ndarray, propensity: np.ndarray | None = None
) -> float:
    """Area between the Qini curve and random targeting (per voter).

    ``propensity``: each row's propensity, when the rows did not share one (a past
    program's rows): the curve is then inverse-propensity weighted (:func:`balancing_weights`).
    """
    x, q = qini_points(score, y, treated, propensity=propensity)
    return float(_area(x, q))


def dr_qini_coefficient(score: np.ndarray, pseudo: np.ndarray, share: np.ndarray | float) -> float:
    """The Qini coefficient's estimand, from doubly-robust scores instead of raw outcomes.

    ``pseudo`` is each voter's AIPW score (:func:`training.learners.dr.aipw_score`) and
    ``share`` the design's treated share of the comparison, or each row's propensity (then
    their mean, :func:`single_propensity`). The curve point at *x* is ``share`` times the
    sum of the scores of the top *x*, per voter: in expectation the same incremental
    outcomes per voter as :func:`qini_points` (weighted to that share when the rows'
    propensities differ), but the outcome models take out the part of each outcome that X
    predicts and the design share replaces the sample's treated/control ratio, so it
    varies less from sample to sample. Used to rank candidate models in cross-validation;
    the hold-out tables keep the plain Qini.
    """
    score = np.asarray(score, dtype=float)
    pseudo = np.asarray(pseudo, dtype=float)
    order, ends = _order_and_blocks(score)
    q = single_propensity(share) * _cum(pseudo, order, ends) / len(pseudo)
    x = np.r_[0.0, ends + 1] / len(pseudo)
    return float(_area(x, q))


def policy_gain(score: np.ndarray, pseudo: np.ndarray, budgets) -> np.ndarray:
    """Doubly-robust value of contacting the top ``k`` of voters by ``score``, above random.

    For each budget ``k`` (a fraction of the voters), the sum of the AIPW scores
    ``pseudo`` of the top ``k`` voters divided by all voters: the incremental outcomes
    per voter that contacting them captures. Random targeting captures ``k`` times the
    mean score; the gain is the difference, so a constant score (every voter tied)
    gains exactly 0. Within a block of tied scores the block's voters are taken in
    random order, in expectation (linear interpolation between block ends).

    Parameters
    ----------
    score : array of shape (n,)
        The ranking: higher is contacted first.
    pseudo : array of shape (n,)
        Each voter's AIPW score (:func:`training.learners.dr.aipw_score`).
    budgets : sequence of float
        Fractions of the voters contacted, in (0, 1].

    Returns
    -------
    ndarray of shape (len(budgets),)
    """
    score = np.asarray(score, dtype=float)
    pseudo = np.asarray(pseudo, dtype=float)
    budgets = np.asarray(budgets, dtype=float)
    n = len(pseudo)
    order, ends = _order_and_blocks(score)
    captured = _cum(pseudo, order, ends)
    x = np.r_[0.0, ends + 1] / n
    return (np.interp(budgets, x, captured) - budgets * captured[-1]) / n


def holdout_policy_gain(
    score: np.ndarray, y: np.ndarray, treated: np.ndarray, groups: np.ndarray, budgets,
    n_boot: int = 200, seed: int = 0, *, weights: np.ndarray | None = None,
) -> pd.DataFrame:
    """Incremental outcomes per voter of contacting the top ``k`` by ``score``, above random, with intervals.

    The plain estimate of randomized outcomes (the policy curve of :func:`policy_points`
    at ``k`` minus ``k`` times its end point, the average effect: in outcome units per
    voter of the comparison, had the top ``k`` all been contacted), interpolated within
    tied blocks, with a cluster-bootstrap 95% interval and standard error
    (whole groups resampled, as they were randomized and held out). ``weights``, the
    (n_boot, n) matrix of :func:`cluster_bootstrap_weights`, may be given to share one
    draw across rankings of the same voters; else it is drawn from ``groups``.

    Returns
    -------
    DataFrame
        One row per budget: ``budget``, ``gain``, ``low``, ``high``, ``se``.
    """
    budgets = np.asarray(budgets, dtype=float)

    def at_budgets(x: np.ndarray, q: np.ndarray) -> np.ndarray:
        x, q = np.broadcast_to(x, np.shape(q)), np.atleast_2d(q)
        return np.array([np.interp(budgets, xr, qr) - budgets * qr[-1] for xr, qr in zip(np.atleast_2d(x), q,
                                                                                           strict=True)])

    estimate = at_budgets(*policy_points(score, y, treated))[0]
    w = cluster_bootstrap_weights(groups, n_boot, seed) if weights is None else weights
    draws = at_budgets(*policy_points(score, y, treated, w))
    low, high = np.nanpercentile(draws, [2.5, 97.5], axis=0)
    return pd.DataFrame({"budget": budgets, "gain": estimate, "low": low, "high": high,
                         "se": np.nanstd(draws, axis=0, ddof=1)})


def auuc(score: np.ndarray, y: np.ndarray, treated: np.ndarray) -> float:
    """Area under the uplift curve: mean over x of (uplift among top x) * x (:func:`policy_points`)."""
    x, q = policy_points(score, y, treated)
    return float(np.trapezoid(q, x))


def uplift_at_k(score: np.ndarray, y: np.ndarray, treated: np.ndarray, k: float) -> float:
    """Observed uplift (treated mean - control mean) among the top ``k`` fraction."""
    score = np.asarray(score, dtype=float)
    n_top = max(1, round(k * len(score)))
    top = np.argsort(-score, kind="stable")[:n_top]
    yt, tt = np.asarray(y, dtype=float)[top], np.asarray(treated, dtype=bool)[top]
    if tt.sum() == 0 or (~tt).sum() == 0:
        return float("nan")
    return float(yt[tt].mean() - yt[~tt].mean())


def cluster_bootstrap_weights(groups: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) row weights: each group drawn with multinomial counts."""
    uniq, inverse = np.unique(np.asarray(groups), return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(uniq), np.full(len(uniq), 1 / len(uniq)), size=n_boot)
    return counts[:, inverse].astype(float)


@dataclass
class Interval:
    estimate: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


def _interval(estimate: float, draws: np.ndarray) -> Interval:
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return Interval(float(estimate), float(low), float(high))


def qini_interval(score, y, treated, groups, n_boot: int = 200, seed: int = 0) -> Interval:
    """Qini coefficient with a cluster-bootstrap 95% interval."""
    w = cluster_bootstrap_weights(groups, n_boot, seed)
    x, q = qini_points(score, y, treated, w)
    return _interval(qini_coefficient(score, y, treated), _area(x, q))


def difference_in_means(y, treated, groups, n_boot: int = 200, seed: int = 0) -> Interval:
    """Treated minus control mean with a cluster-bootstrap 95% interval."""
    y = np.asarray(y, dtype=float)
    t = np.asarray(treated, dtype=float)
    est = y[t == 1].mean() - y[t == 0].mean()
    w = cluster_bootstrap_weights(groups, n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = (w @ (y * t)) / (w @ t) - (w @ (y * (1 - t))) / (w @ (1 - t))
    return _interval(est, draws)


def clustered_mean(values: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """Mean of ``values`` and its cluster-robust standard error (whole groups are the units).

    ``se = sqrt(G / (G - 1) * sum_g (sum_{i in g} (v_i - mean))^2) / n``: the sandwich
    estimator of a mean when rows of one group (household, precinct) are correlated,
    as in a design randomized by group.
    """
    values = np.asarray(values, dtype=float)
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    n, mean = len(values), float(values.mean())
    sums = np.bincount(inverse, weights=values - mean)
    g = len(sums)
    se = float(np.sqrt(g / max(g - 1, 1) * np.sum(sums**2)) / n) if n else float("nan")
    return mean, se


def decile_table(pred: np.ndarray, y: np.ndarray, treated: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Predicted vs observed uplift by decile of predicted uplift (decile 1 = highest)."""
    pred = np.asarray(pred, dtype=float)
    ranks = pd.Series(-pred).rank(method="first").to_numpy()
    decile = np.ceil(ranks / len(pred) * n_bins).astype(int).clip(1, n_bins)
    frame = pd.DataFrame({"decile": decile, "pred": pred, "y": y, "t": np.asarray(treated, dtype=int)})
    rows = []
    for d, g in frame.groupby("decile"):
        yt, yc = g.y[g.t == 1], g.y[g.t == 0]
        obs = yt.mean() - yc.mean() if len(yt) and len(yc) else np.nan
        se = np.sqrt(yt.var(ddof=1) / max(len(yt), 1) + yc.var(ddof=1) / max(len(yc), 1))
        rows.append({
            "decile": int(d), "n_treated": len(yt), "n_control": len(yc),
            "predicted_uplift": float(g.pred.mean()), "observed_uplift": float(obs),
            "observed_se": float(se),
        })
    return pd.DataFrame(rows)


def uplift_metrics(score, y, treated, groups, n_boot: int = 200, seed: int = 0) -> dict[str, float]:
    """Qini (with CI), AUUC and uplift@k for one arm against control."""
    q = qini_interval(score, y, treated, groups, n_boot, seed)
    out = {"qini": q.estimate, "qini_low": q.low, "qini_high": q.high, "auuc": auuc(score, y, treated)}
    for k in KS:
        out[f"uplift_at_{int(k * 100)}"] = uplift_at_k(score, y, treated, k)
    return out


def calibration_table(prob: np.ndarray, y: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Mean predicted vs observed rate by decile of predicted probability."""
    prob = np.asarray(prob, dtype=float)
    ranks = pd.Series(prob).rank(method="first").to_numpy()
    decile = np.ceil(ranks / len(prob) * n_bins).astype(int).clip(1, n_bins)
    frame = pd.DataFrame({"decile": decile, "pred": prob, "y": y})
    table = frame.groupby("decile").agg(n=("y", "size"), predicted=("pred", "mean"), observed=("y", "mean"))
    return table.reset_index()


def turnout_metrics(prob: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """AUC, log loss, Brier score and the largest decile calibration gap."""
    prob = np.clip(np.asarray(prob, dtype=float), 1e-6, 1 - 1e-6)
    cal = calibration_table(prob, y)
    return {
        "auc": float(roc_auc_score(y, prob)),
        "log_loss": float(log_loss(y, prob)),
        "brier": float(brier_score_loss(y, prob)),
        "max_calibration_gap": float((cal.predicted - cal.observed).abs().max()),
    }
