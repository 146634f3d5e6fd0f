"""The mobilization literature's rule as an uplift model: voters whose turnout is near 50% move most."""

from __future__ import annotations

from collections.abc import Mapping

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.config import GBMParams
from serving.bundle import TURNOUT_SCORE
from training.learners.base import Contrast, Design, fit_booster, held_constant
from training.learners.dr import DRLearner

RULE_FIT = {"learning_rate": 0.5, "min_child_samples": 20, "subsample": 1.0, "colsample_bytree": 1.0}


def turnout_05_score(turnout: np.ndarray) -> np.ndarray:
    """Higher for turnout probabilities closer to 0.5: ``-|p - 0.5|``."""
    return -np.abs(np.asarray(turnout, dtype=float) - 0.5)


class TurnoutMidRule(DRLearner):
    """Each arm's average effect times the fixed shape ``0.5 - |p - 0.5|`` of the turnout score ``p``.

    The rule a campaign already applies when it contacts the voters whose turnout is
    near 50%, as a candidate that grouped CV can serve: the shape is not learned from
    outcomes; it is one tree ensemble fitted on the turnout score alone to the rule's
    own values (a target without noise, so the trees reproduce the rule's order to
    within their resolution), then scaled to each arm's doubly-robust average effect
    like any pooled shape. It serves and explains itself like the other candidates.

    Parameters are those of :class:`training.learners.base.UpliftLearner`; the shape is
    always pooled (one rule for every arm), and ``final_params`` give its trees and leaves
    (the rate and leaf size are :data:`RULE_FIT`'s); arm-specific rounds on top of the rule
    are fitted to noisy targets like any learner's, with ``arm_params`` (default: the
    ``final_params`` given). ``X`` must hold the ``turnout_score`` column.
    """

    name = "turnout_05"

    def __init__(self, design: Design, final_params: GBMParams, pool_arms: bool = True, arm_rounds: int = 0,
                 arm_params: GBMParams | None = None, seed: int = 0):
        # the rule's values carry no noise: a high rate and small leaves reproduce it in the trees given
        exact = final_params.model_copy(update=RULE_FIT)
        super().__init__(design, exact, pool_arms=True, arm_rounds=arm_rounds, arm_params=arm_params or final_params,
                         seed=seed)

    def pooled_targets(
        self, X: pd.DataFrame, assigned: np.ndarray, y: np.ndarray, mu: Mapping[str, np.ndarray],
        propensities: pd.DataFrame | None = None,
    ) -> Contrast:
        """Every row, the rule's value of its turnout score, weight one."""
        if TURNOUT_SCORE not in X.columns:
            raise ValueError(f"the turnout_05 rule needs the {TURNOUT_SCORE!r} column")
        rule = 0.5 + turnout_05_score(X[TURNOUT_SCORE].to_numpy())
        return Contrast(np.ones(len(X), dtype=bool), rule, np.ones(len(X)), np.ones(len(X)))


class TurnoutMidReachRule(TurnoutMidRule):
    """The rule ``0.5 - |p - 0.5|`` times each voter's chance of being reached on the arm's channel.

    An attempted call or door knock moves only the voters it reaches, so the effect of
    assigning a voter to such an arm is ``P(reached | x)`` times the effect of reaching
    them (the exclusion restriction; :mod:`training.contact_rate`). This reference is the
    rule a campaign applies among the voters it can reach: nothing is learned from the
    outcomes but each arm's level. Each arm's ensemble starts with the rule's own trees
    (:class:`TurnoutMidRule`'s, on the turnout score alone) and continues them, on the
    voter features and the score, to the noise-free values ``(0.5 - |p - 0.5|) *
    P(reached | x)`` (the rule times the arm's contact rate); it is then scaled to the
    arm's doubly-robust average effect. So the arms share the rule's trees (the service
    explains them once for all arms, :mod:`serving.arms`), and the reasons split into
    the rule's (the turnout score) and the contact rate's (the features that say who
    answers). An arm always reached keeps the rule's trees alone.

    Parameters
    ----------
    design, final_params, seed
        As :class:`training.learners.base.UpliftLearner`'s (the arms' shapes are never
        pooled and have no arm-specific rounds).
    reach : mapping of str to Booster
        Arm -> a binary LightGBM booster of P(reached | attempted) on the voter features
        (``X`` without the turnout score): a channel's contact-rate model. An arm without
        one is always reached, and its shape is the rule's.
    """

    name = "turnout_05_reach"

    def __init__(self, design: Design, final_params: GBMParams, *, reach: Mapping[str, lgb.Booster], seed: int = 0):
        super().__init__(design, final_params, seed=seed)
        self.pool_arms = False
        self.reach = dict(reach)

    def fit(
        self, X: pd.DataFrame, assigned: np.ndarray, y: np.ndarray, mu: Mapping[str, np.ndarray],
        propensities: pd.DataFrame | None = None,
    ) -> TurnoutMidReachRule:
        """Fit each arm's shape on every row of ``X`` and scale it to the arm's level (``mu``, as ``fit``'s)."""
        rule = self.pooled_targets(X, assigned, y, mu, propensities).target
        assigned, y = np.asarray(assigned), np.asarray(y, dtype=float)
        # the rule's own ensemble, on the score alone: :class:`TurnoutMidRule`'s trees
        own = fit_booster(held_constant(X, keep=[TURNOUT_SCORE]), rule, self.final_params, "regression", self.seed)
        features = X.drop(columns=TURNOUT_SCORE)
        self.boosters_, self.arm_scale_ = {}, {}
        for arm in self.design.arms:
            booster = own
            if arm in self.reach:  # continued on every input to the rule's values times the contact rate
                booster = fit_booster(X, rule * self.reach[arm].predict(features), self.final_params, "regression",
                                      self.seed, init_model=own)
            c = self.targets(arm, assigned, y, mu, propensities)
            self.boosters_[arm], self.arm_scale_[arm] = self._arm_on_shape(booster, booster.predict(X)[c.rows],
                                                                           c.target, c.weight)
        return self
