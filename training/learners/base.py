"""The shared machinery of the multi-arm uplift meta-learners.

Every learner here works in three steps, and only the middle one differs:

1. **Nuisance** (:class:`CrossFitNuisance`): out-of-fold outcome models, cross-fitted
   over grouped folds: E[Y | X, arm=a] for control, each arm, and "any contact".
2. **Targets** (``UpliftLearner._contrast_targets``, per learner): a per-row target whose
   regression on X estimates the CATE of a treated group against control (T: the
   difference of outcome models; X: imputed effects; DR: the doubly-robust score).
3. **Final models** (here): one LightGBM regressor per arm, fitted on those targets.
   With ``pool_arms`` a shared shape is first boosted on the "any contact vs control"
   contrast (all treated voters at once, a much less noisy target); each arm's ensemble
   is that shape with its leaves scaled to the arm's own average effect, optionally
   followed by arm-specific trees (``arm_rounds``).

Each arm's final model is a single tree ensemble whose prediction *is* the uplift, so
its TreeSHAP values add up to the uplift exactly (base value + contributions).
Assignment propensities come from the design (configured shares) in randomized data.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.config import GBMParams

ANY = "__any__"


def n_threads() -> int:
    """LightGBM threads: ``PERSUADE_THREADS`` or 2 (the cores of the reference machine)."""
    return int(os.environ.get("PERSUADE_THREADS", "2"))


def lgb_params(params: GBMParams, objective: str, seed: int, n_jobs: int | None = None) -> dict:
    """LightGBM ``train`` parameters from a :class:`GBMParams`."""
    return {
        "objective": objective,
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_data_in_leaf": params.min_child_samples,
        "max_depth": params.max_depth,
        "lambda_l2": params.reg_lambda,
        "bagging_fraction": params.subsample,
        "bagging_freq": 1 if params.subsample < 1 else 0,
        "feature_fraction": params.colsample_bytree,
        "seed": seed,
        "num_threads": n_jobs or n_threads(),
        "verbose": -1,
        "deterministic": True,
        "force_col_wise": True,
    }


def fit_booster(
    X: pd.DataFrame,
    y: np.ndarray,
    params: GBMParams,
    objective: str,
    seed: int,
    weight: np.ndarray | None = None,
    rounds: int | None = None,
    init_model: lgb.Booster | None = None,
) -> lgb.Booster:
    """Fit one LightGBM booster (optionally continuing ``init_model``)."""
    data = lgb.Dataset(X, label=y, weight=weight, free_raw_data=True)
    return lgb.train(
        lgb_params(params, objective, seed),
        data,
        num_boost_round=rounds if rounds is not None else params.n_estimators,
        init_model=init_model,
        keep_training_booster=init_model is not None,
    )


def scaled_booster(booster: lgb.Booster, scale: float) -> lgb.Booster:
    """A copy of ``booster`` whose every leaf value is multiplied by ``scale``.

    The result is still one tree ensemble: its prediction and each TreeSHAP
    contribution are exactly ``scale`` times the original's.
    """
    copy = lgb.Booster(model_str=booster.model_to_string())
    for tree in copy.dump_model(num_iteration=-1)["tree_info"]:
        t = tree["tree_index"]
        for leaf in range(tree["num_leaves"]):
            copy.set_leaf_output(t, leaf, scale * copy.get_leaf_output(t, leaf))
    return copy


@dataclass
class Design:
    """Who is control, who got which arm, and the design's assignment shares."""

    arms: Sequence[str]
    control: str
    shares: Mapping[str, float] | None = None

    def propensity(self, label: str, assigned: np.ndarray) -> float:
        """P(label | label or control): from the design if known, else the sample."""
        if self.shares is not None:
            if label == ANY:
                p = sum(self.shares[a] for a in self.arms)
            else:
                p = self.shares[label]
            return p / (p + self.shares[self.control])
        treated = assigned != self.control if label == ANY else assigned == label
        return float(treated.sum() / (treated.sum() + (assigned == self.control).sum()))

    def treated_mask(self, label: str, assigned: np.ndarray) -> np.ndarray:
        return assigned != self.control if label == ANY else assigned == label


class CrossFitNuisance:
    """Out-of-fold outcome models per arm (and for any contact), over grouped folds.

    Parameters
    ----------
    design : Design
    params : GBMParams
        Parameters of the outcome models.
    binary : bool
        Outcome is 0/1 (classifiers) or numeric (regressors).
    seed : int
    """

    def __init__(self, design: Design, params: GBMParams, binary: bool, seed: int = 0):
        self.design = design
        self.params = params
        self.binary = binary
        self.seed = seed

    def fit_predict(
        self, X: pd.DataFrame, assigned: np.ndarray, y: np.ndarray, folds: np.ndarray, progress=None
    ) -> dict[str, np.ndarray]:
        """Out-of-fold predictions ``mu[label]`` for every row, for control, arms and ANY."""
        labels = [self.design.control, *self.design.arms, ANY]
        mu = {label: np.zeros(len(y)) for label in labels}
        objective = "binary" if self.binary else "regression"
        for k in np.unique(folds):
            train, test = folds != k, folds == k
            for label in labels:
                rows = train & self.design.treated_mask(label, assigned) if label != self.design.control \
                    else train & (assigned == label)
                model = fit_booster(X[rows], y[rows], self.params, objective, self.seed)
                mu[label][test] = model.predict(X[test])
                if progress is not None:
                    progress()
        return mu


class UpliftLearner(ABC):
    """Base of the multi-arm meta-learners (fit on nuisance, predict per arm).

    Parameters
    ----------
    design : Design
        Arms, control label and assignment shares.
    final_params : GBMParams
        Parameters of the final (explained) uplift ensembles.
    pool_arms : bool
        Boost a shared shape on the any-contact contrast first.
    arm_rounds : int
        Arm-specific boosting rounds on top of the shared shape (when pooling).
    arm_params : GBMParams, optional
        Parameters of those rounds (default: ``final_params``).
    seed : int
    """

    name: str = "base"

    def __init__(
        self,
        design: Design,
        final_params: GBMParams,
        pool_arms: bool = True,
        arm_rounds: int = 30,
        arm_params: GBMParams | None = None,
        seed: int = 0,
    ):
        self.design = design
        self.final_params = final_params
        self.pool_arms = pool_arms
        self.arm_rounds = arm_rounds
        self.arm_params = arm_params
        self.seed = seed

    @abstractmethod
    def _contrast_targets(
        self, y: np.ndarray, treated: np.ndarray, mu_t: np.ndarray, mu_c: np.ndarray, e: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Target and sample weight for each row of one treated-vs-control contrast.

        Parameters are restricted to rows of the contrast (treated or control).
        """

    def targets(
        self, label: str, assigned: np.ndarray, y: np.ndarray, mu: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows of the contrast, their targets and weights."""
        treated_all = self.design.treated_mask(label, assigned)
        rows = treated_all | (assigned == self.design.control)
        e = self.design.propensity(label, assigned)
        target, weight = self._contrast_targets(
            y[rows], treated_all[rows].astype(float), mu[label][rows], mu[self.design.control][rows], e
        )
        return rows, target, weight

    def fit(
        self, X: pd.DataFrame, assigned: np.ndarray, y: np.ndarray, mu: Mapping[str, np.ndarray]
    ) -> UpliftLearner:
        """Fit the final per-arm ensembles from cross-fitted nuisance predictions ``mu``."""
        assigned = np.asarray(assigned)
        y = np.asarray(y, dtype=float)
        shared = None
        if self.pool_arms:
            rows, target, weight = self.targets(ANY, assigned, y, mu)
            shared = fit_booster(X[rows], target, self.final_params, "regression", self.seed, weight)
        self.boosters_: dict[str, lgb.Booster] = {}
        self.arm_scale_: dict[str, float] = {}
        for arm in self.design.arms:
            rows, target, weight = self.targets(arm, assigned, y, mu)
            if shared is None:
                booster = fit_booster(X[rows], target, self.final_params, "regression", self.seed, weight)
            else:
                # The arm's level: the shared shape scaled so that its mean over the arm's
                # contrast rows equals the mean of the arm's own targets.
                level = float(np.average(target, weights=weight))
                shape = float(shared.predict(X[rows]).mean())
                scale = level / shape if abs(shape) > 1e-12 else 1.0
                booster = scaled_booster(shared, scale)
                self.arm_scale_[arm] = scale
                if self.arm_rounds > 0:
                    booster = fit_booster(
                        X[rows], target, self.arm_params or self.final_params, "regression", self.seed,
                        weight, rounds=self.arm_rounds, init_model=booster,
                    )
            self.boosters_[arm] = booster
        return self

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        """Predicted uplift per arm (columns = arm labels)."""
        if not hasattr(self, "boosters_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return pd.DataFrame({arm: b.predict(X) for arm, b in self.boosters_.items()}, index=X.index)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(pool_arms={self.pool_arms}, arm_rounds={self.arm_rounds}, "
                f"final_params={self.final_params!r})")
