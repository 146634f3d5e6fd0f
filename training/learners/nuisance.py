"""Step 1 of the meta-learners: cross-fitted outcome (nuisance) models over grouped folds.

See :mod:`training.learners.base` for the three steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.metrics import log_loss, mean_squared_error

from features.config import GBMParams
from training.learners.base import ANY, Design, fit_booster

CONTROL_OUTCOME = "control_outcome_raw"  # the control model's raw score, a feature of the treated groups' models


def best_rounds(losses: pd.DataFrame) -> dict[str, int]:
    """The round count with the lowest out-of-fold loss, per treated group (a row of ``losses``)."""
    return {label: int(row.idxmin()) for label, row in losses.iterrows()}


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
    from_control : bool
        Boost each treated group's model from the control model of the same folds: the
        control model's raw score (log-odds, or the value) is its initial score and a
        feature (:data:`CONTROL_OUTCOME`), so its trees model only the difference contact
        makes, and how that difference varies with the baseline. Fitted separately, the
        arm models (a sixth of the rows each, in a 40%-control design) relearn the whole
        baseline, and their errors do not cancel in ``mu_a - mu_0``. The control model
        never sees a treated row, so each treated row's initial score is out of sample.
    rounds : sequence of int
        With ``from_control``, candidate round counts of the treated groups' models. Each
        group's count is the one with the lowest out-of-fold loss (log-loss or squared
        error) on its own rows: the outcome models are judged as predictors of the
        outcome, never by an uplift metric. ``params.n_estimators`` is ignored for them.
    treated_leaves : int, optional
        With ``from_control``, leaves per tree of the treated groups' models (default
        ``params.num_leaves``). Log-loss cannot choose it: it judges the outcome, not the
        difference contact makes, and it ranks small trees last even where they rank
        voters' uplift better. The caller compares shapes by grouped-CV uplift metrics.

    Attributes
    ----------
    losses_ : DataFrame
        After :meth:`fit_predict` with ``from_control``: out-of-fold loss per treated
        group (rows) and round count (columns).
    rounds_ : dict
        The chosen round count per treated group.
    """

    def __init__(
        self,
        design: Design,
        params: GBMParams,
        binary: bool,
        seed: int = 0,
        from_control: bool = False,
        rounds: Sequence[int] = (10, 20, 30, 50, 80, 150),
        treated_leaves: int | None = None,
    ):
        self.design = design
        self.params = params
        self.binary = binary
        self.seed = seed
        self.from_control = from_control
        self.rounds = rounds
        self.treated_leaves = treated_leaves

    def fit_predict(
        self, X: pd.DataFrame, assigned: np.ndarray, y: np.ndarray, folds: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Out-of-fold predictions ``mu[label]`` for every row, for control, arms and ANY."""
        mu, losses = self._cross_fit(X, np.asarray(assigned), np.asarray(y, dtype=float), folds)
        if losses is not None:
            self.losses_ = losses
        return mu

    @property
    def rounds_(self) -> dict[str, int]:
        """The chosen round count per treated group (from ``losses_``)."""
        return best_rounds(self.losses_)

    def _link(self, raw: np.ndarray) -> np.ndarray:
        return expit(raw) if self.binary else raw

    def _intercept(self, y: np.ndarray, raw: np.ndarray) -> float:
        """The constant c that best fits ``y`` from ``raw + c`` (LightGBM's boost from average, on an offset).

        Without it the trees would have to learn the group's average effect too, and a
        few shrunken rounds would leave it biased towards no effect.
        """
        if not self.binary:
            return float(np.mean(y - raw))
        c = 0.0
        for _ in range(50):  # Newton's method on the log-likelihood: concave, converges in a few steps
            p = expit(raw + c)
            step = float(np.sum(y - p) / max(np.sum(p * (1 - p)), 1e-12))
            c += step
            if abs(step) < 1e-10:
                break
        return c

    def _loss(self, y: np.ndarray, p: np.ndarray) -> float:
        return float(log_loss(y, p, labels=[0, 1]) if self.binary else mean_squared_error(y, p))

    def _cross_fit(
        self, X: pd.DataFrame, assigned: np.ndarray, y: np.ndarray, folds: np.ndarray
    ) -> tuple[dict[str, np.ndarray], pd.DataFrame | None]:
        if self.treated_leaves is not None and not self.from_control:
            raise ValueError("treated_leaves shapes the models boosted from control: it needs from_control=True")
        control = self.design.control
        treated_labels = [*self.design.arms, ANY]
        objective = "binary" if self.binary else "regression"
        rounds = sorted(set(self.rounds)) if self.from_control else []
        treated_params = (self.params if self.treated_leaves is None
                          else self.params.model_copy(update={"num_leaves": self.treated_leaves}))
        mu = {label: np.zeros(len(y)) for label in [control, *treated_labels]}
        staged = {label: {r: np.zeros(len(y)) for r in rounds} for label in treated_labels}
        for k in np.unique(folds):
            train, test = folds != k, folds == k
            rows = train & (assigned == control)
            base = fit_booster(X[rows], y[rows], self.params, objective, self.seed)
            mu[control][test] = base.predict(X[test])
            if self.from_control:
                raw = base.predict(X, raw_score=True)
                X_base = X.assign(**{CONTROL_OUTCOME: raw})
            for label in treated_labels:
                rows = train & self.design.treated_mask(label, assigned)
                if not self.from_control:
                    mu[label][test] = fit_booster(X[rows], y[rows], self.params, objective, self.seed).predict(X[test])
                    continue
                start = raw + self._intercept(y[rows], raw[rows])
                model = fit_booster(X_base[rows], y[rows], treated_params, objective, self.seed,
                                    rounds=max(rounds), init_score=start[rows])
                # Staged predictions, each stage adding only its own trees (a tree is walked once).
                total, done = start[test].copy(), 0
                for r in rounds:
                    total += model.predict(X_base[test], raw_score=True, start_iteration=done, num_iteration=r - done)
                    staged[label][r][test], done = self._link(total), r
        if not self.from_control:
            return mu, None
        losses = pd.DataFrame(
            [[self._loss(y[m], staged[label][r][m]) for r in rounds]
             for label, m in ((lb, self.design.treated_mask(lb, assigned)) for lb in treated_labels)],
            index=treated_labels, columns=rounds,
        )
        for label, r in best_rounds(losses).items():
            mu[label] = staged[label][r]
        return mu, losses

    def fit_predict_nested(
        self, X: pd.DataFrame, assigned: np.ndarray, y: np.ndarray, folds: np.ndarray
    ) -> dict[int, dict[str, np.ndarray]]:
        """Nuisance for cross-validating the final models: one set per held-out fold.

        For fold ``k``, the rows outside ``k`` get out-of-fold predictions cross-fitted
        over the other folds only, so no outcome of fold ``k`` reaches the targets a
        learner is fitted on before it is judged on ``k``; with ``from_control``, the
        round counts are chosen on those folds too. (The cross-fitted ``mu`` of
        :meth:`fit_predict` does not have this property: fold ``k``'s outcomes are in the
        models that predict the other folds, which leaks into a CV score on ``k`` and
        favours learners and sizes that copy the outcome models.)

        Returns
        -------
        dict
            Fold ``k`` -> ``mu`` over the rows with ``folds != k`` (in their order).
        """
        out = {}
        assigned, y = np.asarray(assigned), np.asarray(y, dtype=float)
        for k in np.unique(folds):
            keep = folds != k
            out[int(k)] = self._cross_fit(X[keep], assigned[keep], y[keep], folds[keep])[0]
        return out
