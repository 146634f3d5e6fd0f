"""The mobilization literature's rule as an uplift model: voters whose turnout is near 50% move most."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from features.config import GBMParams
from serving.bundle import TURNOUT_SCORE
from training.learners.base import Contrast, Design
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
