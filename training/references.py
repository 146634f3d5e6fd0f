"""Reference targetings that a learned uplift ranking must beat on the same split.

- ``random``: no ranking at all (its Qini is zero in expectation).
- ``turnout_05``: rank by closeness of baseline turnout to 0.5, the mobilization
  literature's heuristic (mid-propensity voters move most).
- ``t_default``: a plain T-learner with LightGBM's default parameters, ranking by
  the difference of the treated and control outcome models.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightgbm as lgb
import numpy as np
import pandas as pd

from training.learners.base import n_threads


def turnout_05_score(turnout: np.ndarray) -> np.ndarray:
    """Higher for turnout probabilities closer to 0.5."""
    return -np.abs(np.asarray(turnout, dtype=float) - 0.5)


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

    def fit(self, X: pd.DataFrame, assigned: np.ndarray, y: np.ndarray) -> DefaultTLearner:
        cls = lgb.LGBMClassifier if self.binary else lgb.LGBMRegressor
        self.models_ = {}
        for label in [self.control, *self.arms]:
            rows = np.asarray(assigned) == label
            self.models_[label] = cls(random_state=self.seed, n_jobs=n_threads(), verbose=-1).fit(X[rows], y[rows])
        return self

    def _mean(self, label: str, X: pd.DataFrame) -> np.ndarray:
        model = self.models_[label]
        return model.predict_proba(X)[:, 1] if self.binary else model.predict(X)

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        base = self._mean(self.control, X)
        return pd.DataFrame({a: self._mean(a, X) - base for a in self.arms}, index=X.index)
