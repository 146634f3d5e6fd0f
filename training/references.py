"""Reference targetings that a learned uplift ranking must beat on the same split.

- ``random``: no ranking at all (its Qini is zero in expectation).
- ``turnout_05``: rank by closeness of baseline turnout to 0.5, the mobilization
  literature's heuristic (mid-propensity voters move most); grouped CV can also serve it
  (:class:`training.learners.TurnoutMidRule`).
- ``t_default``: a plain T-learner with LightGBM's default parameters, ranking by
  the difference of the treated and control outcome models (per arm on its own
  contrast when past programs' rows, with their propensities, train it).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightgbm as lgb
import numpy as np
import pandas as pd

from training.learners.base import Design, n_threads
from training.learners.turnout_rule import turnout_05_score

__all__ = ["DefaultTLearner", "random_score", "turnout_05_score"]


def random_score(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(n)


class DefaultTLearner:
    """T-learner with LightGBM defaults: one outcome model per arm and for control.

    Parameters
    ----------
    arms : sequence of str
    control : str
    binary : bool
        Classifiers (probability difference) or regressors.
    seed : int
    """

    def __init__(self, arms: Sequence[str], control: str, binary: bool = True, seed: int = 0):
        self.arms = list(arms)
        self.control = control
        self.binary = binary
        self.seed = seed

    def fit(
        self, X: pd.DataFrame, assigned: np.ndarray, y: np.ndarray, propensities: pd.DataFrame | None = None
    ) -> DefaultTLearner:
        """Fit the arms' and control's outcome models.

        With ``propensities`` (per-row probability of each label, as past programs record
        them) each arm is the difference of two models fitted on its own contrast
        (:meth:`training.learners.Design.contrast`): a control voter who could not get the
        arm never shapes that arm's control model. Without it one control model serves
        every arm.
        """
        assigned = np.asarray(assigned)
        shared = None if propensities is not None else self._fit_model(X, y, assigned == self.control)
        design = Design(self.arms, self.control)
        self.models_ = {}
        for arm in self.arms:
            if shared is not None:
                self.models_[arm] = (self._fit_model(X, y, assigned == arm), shared)
                continue
            rows, _ = design.contrast(arm, assigned, propensities)
            self.models_[arm] = (self._fit_model(X, y, rows & (assigned == arm)),
                                 self._fit_model(X, y, rows & (assigned == self.control)))
        return self

    def _fit_model(self, X: pd.DataFrame, y: np.ndarray, rows: np.ndarray):
        cls = lgb.LGBMClassifier if self.binary else lgb.LGBMRegressor
        return cls(random_state=self.seed, n_jobs=n_threads(), verbose=-1).fit(X[rows], np.asarray(y)[rows])

    def _mean(self, model, X: pd.DataFrame) -> np.ndarray:
        return model.predict_proba(X)[:, 1] if self.binary else model.predict(X)

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({arm: self._mean(treated, X) - self._mean(control, X)
                             for arm, (treated, control) in self.models_.items()}, index=X.index)
