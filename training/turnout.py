"""Turnout model: P(outcome) without contact, fitted on the control group.

Calibration is checked by decile on cross-fitted (out-of-fold) predictions; when the
largest decile gap exceeds the configured tolerance, an isotonic map fitted on those
out-of-fold predictions corrects it, and the correction travels with the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression

from features.config import GBMParams
from training.evaluation import calibration_table
from training.learners.base import fit_booster


@dataclass
class TurnoutModel:
    """A fitted turnout booster and its optional isotonic correction."""

    booster: lgb.Booster
    calibration: tuple[list[float], list[float]] | None
    oof_gap: float
    oof: np.ndarray
    fold_boosters: dict[int, lgb.Booster] = field(default_factory=dict)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self._calibrated(self.booster.predict(X))

    def predict_without_fold(self, k: int, X: pd.DataFrame) -> np.ndarray:
        """Turnout from the model fitted on the control rows outside fold ``k`` (calibrated).

        What cross-validation on fold ``k`` uses as a feature: the booster never saw an
        outcome of the fold. The isotonic correction, when there is one, is the model's own
        (fitted once on every fold's out-of-fold predictions), so CV judges candidates on
        the same calibrated score the refitted models see; that one-dimensional monotone
        map is the only part fitted with the fold's outcomes among the others.
        """
        return self._calibrated(self.fold_boosters[k].predict(X))

    def _calibrated(self, p: np.ndarray) -> np.ndarray:
        return p if self.calibration is None else np.interp(p, *self.calibration)


def fit_fold_boosters(
    X: pd.DataFrame, y: np.ndarray, folds: np.ndarray, params: GBMParams, seed: int = 0
) -> dict[int, lgb.Booster]:
    """Fold ``k`` -> the turnout classifier fitted on the rows outside fold ``k``."""
    return {int(k): fit_booster(X[folds != k], np.asarray(y, dtype=float)[folds != k], params, "binary", seed)
            for k in np.unique(folds)}


def fit_turnout(
    X: pd.DataFrame,
    y: np.ndarray,
    folds: np.ndarray,
    params: GBMParams,
    tolerance: float,
    seed: int = 0,
) -> TurnoutModel:
    """Fit the turnout classifier on control rows ``X, y`` (grouped ``folds`` for the check)."""
    y = np.asarray(y, dtype=float)
    oof = np.zeros(len(y))
    fold_boosters = fit_fold_boosters(X, y, folds, params, seed)
    for k, booster in fold_boosters.items():
        oof[folds == k] = booster.predict(X[folds == k])
    table = calibration_table(oof, y)
    gap = float((table.predicted - table.observed).abs().max())
    calibration = None
    if gap > tolerance:
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(oof, y)
        calibration = (iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist())
        oof = np.interp(oof, *calibration)
    booster = fit_booster(X, y, params, "binary", seed)
    return TurnoutModel(booster=booster, calibration=calibration, oof_gap=gap, oof=oof,
                        fold_boosters=fold_boosters)
