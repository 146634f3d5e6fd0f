"""The shared machinery of the multi-arm uplift meta-learners.

Every learner here works in three steps, and only the middle one differs:

1. **Nuisance** (:class:`training.learners.nuisance.CrossFitNuisance`): out-of-fold outcome models, cross-fitted
   over grouped folds: E[Y | X, arm=a] for control, each arm, and "any contact". By
   default the treated groups' models are boosted *from the control model*: its
   prediction is their starting point and a feature, so they learn only how contact
   moves the outcome, and their round count is chosen per group by out-of-fold loss.
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
Assignment propensities are per row (:class:`Design`): the design's shares in a randomized
experiment, each voter's recorded probabilities in a past program's rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.config import GBMParams
from features.settings import Settings

ANY = "__any__"


def n_threads() -> int:
    """LightGBM threads: ``PERSUADE_THREADS`` (see :class:`features.settings.Settings`)."""
    return Settings.from_env().threads


def lgb_params(params: GBMParams, objective: str, seed: int, n_jobs: int | None = None) -> dict:
    """LightGBM ``train`` parameters from a :class:`GBMParams`."""
    return {
        "objective": objective,
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
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
        # unset outside a run config (RunConfig.scaled_to fills a run's): LightGBM's own default
        **({} if params.min_child_samples is None else {"min_data_in_leaf": params.min_child_samples}),
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
    init_score: np.ndarray | None = None,
) -> lgb.Booster:
    """Fit one LightGBM booster (optionally continuing ``init_model`` or from raw scores ``init_score``)."""
    data = lgb.Dataset(X, label=y, weight=weight, init_score=init_score, free_raw_data=True)
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


def truncated_booster(booster: lgb.Booster, n_trees: int) -> lgb.Booster:
    """The first ``n_trees`` iterations of ``booster`` (itself when it has no more)."""
    if n_trees >= booster.current_iteration():
        return booster
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=n_trees))


def held_constant(X: pd.DataFrame, keep: Sequence[str] = ()) -> pd.DataFrame:
    """``X`` with every column but ``keep`` held at one value (categories and dtypes kept).

    LightGBM never splits on a constant column, so an ensemble fitted on this frame
    uses only ``keep`` (nothing at all when empty: one leaf, the mean of its targets),
    yet scores and explains the real frame like any other model of the same columns.
    """
    out = {}
    for column in X.columns:
        values = X[column]
        if column in keep:
            out[column] = values
        elif isinstance(values.dtype, pd.CategoricalDtype):
            out[column] = pd.Categorical.from_codes(np.zeros(len(X), dtype=int), dtype=values.dtype)
        else:
            out[column] = np.zeros(len(X), dtype=values.dtype)
    return pd.DataFrame(out, index=X.index)


@dataclass
class Design:
    """Who is control, who got which arm, and the probability each row had of each.

    Every contrast (an arm, or any contact, against control) has a per-row propensity
    ``e_i = p_arm,i / (p_arm,i + p_control,i)``, the probability that row ``i`` was in the
    treated side given that it was in the contrast. In a randomized experiment every row
    has the design's ``shares``; a past program (``training.programs``) records each
    voter's probabilities, passed as ``propensities``. A row whose ``e_i`` is 0 (it could
    not get the arm) or 1 (it could not be control) carries no information on the
    contrast and is never in it (:meth:`contrast`).

    ``min_propensity`` trims limited overlap (Crump, Hotz, Imbens and Mitnik, 2009): a row
    whose ``e_i`` is below it, or above one minus it, is not in the contrast either. Such a
    row is a voter a program almost never (or almost always) gave the arm; kept, its
    inverse-propensity weight (75 for an arm explored at 1.3%) makes the arm's targets
    mostly noise. Rows are trimmed by their probabilities, which depend on the voter and
    not on the outcome, so the contrast stays unbiased on the voters it keeps.
    ``training.programs.overlap_floor`` keeps it below every experiment row's ``e_i``.
    """

    arms: Sequence[str]
    control: str
    shares: Mapping[str, float] | None = None
    min_propensity: float = 0.0

    def propensity(self, label: str, assigned: np.ndarray, propensities: pd.DataFrame | None = None) -> np.ndarray:
        """Each row's P(label | label or control).

        Parameters
        ----------
        label : str
            An arm, or :data:`ANY` (any contact: the arms' probabilities summed).
        assigned : ndarray
            Each row's assigned label.
        propensities : DataFrame, optional
            Each row's probability of every label (columns: the control and the arms),
            rows as ``assigned``. Without it every row has the design's share, or the
            sample's when the design gives none.

        Returns
        -------
        ndarray of shape (len(assigned),)
            NaN where the row had probability 0 of both the label and control.
        """
        assigned = np.asarray(assigned)
        if propensities is not None:
            p = (sum(propensities[a].to_numpy(dtype=float) for a in self.arms) if label == ANY
                 else propensities[label].to_numpy(dtype=float))
            with np.errstate(invalid="ignore", divide="ignore"):
                return p / (p + propensities[self.control].to_numpy(dtype=float))
        if self.shares is not None:
            if label == ANY:
                p = sum(self.shares[a] for a in self.arms)
            else:
                p = self.shares[label]
            return np.full(len(assigned), p / (p + self.shares[self.control]))
        treated = assigned != self.control if label == ANY else assigned == label
        return np.full(len(assigned), float(treated.sum() / (treated.sum() + (assigned == self.control).sum())))

    def contrast(
        self, label: str, assigned: np.ndarray, propensities: pd.DataFrame | None = None, *, trim: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """The rows of one contrast (the label's and control's, with ``0 < e_i < 1``, trimmed to
        ``min_propensity <= e_i <= 1 - min_propensity`` unless ``trim`` is false) and every
        row's ``e_i``."""
        assigned = np.asarray(assigned)
        e = self.propensity(label, assigned, propensities)
        sides = self.treated_mask(label, assigned) | (assigned == self.control)
        with np.errstate(invalid="ignore"):
            rows = sides & (e > 0) & (e < 1)
            return (rows & self.overlapping(e) if trim else rows), e

    def overlapping(self, e: np.ndarray) -> np.ndarray:
        """Whether each propensity is within ``[min_propensity, 1 - min_propensity]``."""
        with np.errstate(invalid="ignore"):
            return (e >= self.min_propensity) & (e <= 1 - self.min_propensity)

    def treated_mask(self, label: str, assigned: np.ndarray) -> np.ndarray:
        return assigned != self.control if label == ANY else assigned == label


class Contrast(NamedTuple):
    """One contrast's training rows for the final models.

    The arm's level is the ``weight``-weighted mean of ``target``; the trees are grown on
    ``target`` weighted by ``tree_weight`` (:meth:`UpliftLearner._precision`). The two
    are the same unless a learner weighs rows by their precision, and then rows of limited
    overlap (:meth:`Design.overlapping`) have ``weight`` 0 and stay in the trees.
    """

    rows: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    tree_weight: np.ndarray


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
        self, y: np.ndarray, treated: np.ndarray, mu_t: np.ndarray, mu_c: np.ndarray, e: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Target and sample weight for each row of one treated-vs-control contrast.

        Parameters are restricted to rows of the contrast (treated or control); ``e`` is
        each row's propensity, in (0, 1).
        """

    def _precision(self, e: np.ndarray) -> np.ndarray | None:
        """Each contrast row's weight in the trees by its target's precision, or None (the default).

        None: the trees weigh the rows as the level does (their ``weight``) and leave out the
        rows of limited overlap (:meth:`Design.overlapping`). A learner that returns weights
        (``e`` is each contrast row's propensity) keeps those rows in its trees at their
        weight, and only the arm's level leaves them out.
        """
        return None

    def targets(
        self, label: str, assigned: np.ndarray, y: np.ndarray, mu: Mapping[str, np.ndarray],
        propensities: pd.DataFrame | None = None,
    ) -> Contrast:
        """Rows of the contrast (:meth:`Design.contrast`), their targets and weights."""
        rows, e = self.design.contrast(label, assigned, propensities, trim=False)
        precision = self._precision(e[rows])
        if precision is None:
            rows = rows & self.design.overlapping(e)
        treated = self.design.treated_mask(label, assigned)[rows].astype(float)
        e = e[rows]
        target, weight = self._contrast_targets(y[rows], treated, mu[label][rows], mu[self.design.control][rows], e)
        if precision is None:
            return Contrast(rows, target, weight, weight)
        return Contrast(rows, target, weight * self.design.overlapping(e), precision)

    def pooled_targets(
        self, X: pd.DataFrame, assigned: np.ndarray, y: np.ndarray, mu: Mapping[str, np.ndarray],
        propensities: pd.DataFrame | None = None,
    ) -> Contrast:
        """Rows, targets and weights of the pooled shape: the any-contact contrast's."""
        return self.targets(ANY, assigned, y, mu, propensities)

    def fit(
        self, X: pd.DataFrame, assigned: np.ndarray, y: np.ndarray, mu: Mapping[str, np.ndarray],
        propensities: pd.DataFrame | None = None,
    ) -> UpliftLearner:
        """Fit the final per-arm ensembles from cross-fitted nuisance predictions ``mu``.

        ``propensities``: each row's probability of every label (see :class:`Design`);
        default: the design's shares.
        """
        n = self.final_params.n_estimators
        fitted = self.fit_staged(X, assigned, y, mu, [n], propensities)[n]
        self.boosters_, self.arm_scale_ = fitted.boosters_, fitted.arm_scale_
        return self

    def fit_staged(
        self,
        X: pd.DataFrame,
        assigned: np.ndarray,
        y: np.ndarray,
        mu: Mapping[str, np.ndarray],
        n_estimators: Sequence[int],
        propensities: pd.DataFrame | None = None,
    ) -> dict[int, UpliftLearner]:
        """Fitted learners for several tree counts of the final models, from one boosting run.

        Boosting is sequential, so the first ``n`` trees of a run of ``max(n_estimators)``
        trees are the trees a run of ``n`` would grow; each learner returned equals
        ``fit`` with ``final_params.n_estimators = n`` (the arm levels and arm-specific
        rounds are recomputed on the truncated shape). This is what makes choosing the
        tree count by cross-validation affordable. ``propensities`` as in :meth:`fit`.

        Returns
        -------
        dict
            Tree count -> fitted learner (a new object; ``self`` is left unfitted).
        """
        assigned = np.asarray(assigned)
        y = np.asarray(y, dtype=float)
        top = self.final_params.model_copy(update={"n_estimators": max(n_estimators)})
        contrasts = {arm: self.targets(arm, assigned, y, mu, propensities) for arm in self.design.arms}
        if self.pool_arms:
            pooled = self.pooled_targets(X, assigned, y, mu, propensities)
            grown = {ANY: fit_booster(X[pooled.rows], pooled.target, top, "regression", self.seed,
                                      pooled.tree_weight)}
        else:
            grown = {
                arm: fit_booster(X[c.rows], c.target, top, "regression", self.seed, c.tree_weight)
                for arm, c in contrasts.items()
            }
        out: dict[int, UpliftLearner] = {}
        for n in sorted(set(n_estimators)):
            learner = type(self)(
                self.design, self.final_params.model_copy(update={"n_estimators": n}),
                pool_arms=self.pool_arms, arm_rounds=self.arm_rounds, arm_params=self.arm_params, seed=self.seed,
            )
            trees = {label: truncated_booster(b, n) for label, b in grown.items()}
            learner.boosters_, learner.arm_scale_ = {}, {}
            if not self.pool_arms:
                learner.boosters_.update(trees)
            else:
                shape = trees[ANY].predict(X)  # once for all arms: each arm averages it over its rows
                for arm, c in contrasts.items():
                    learner.boosters_[arm], learner.arm_scale_[arm] = self._arm_on_shape(
                        trees[ANY], shape[c.rows], c.target, c.weight
                    )
                if self.arm_rounds > 0:
                    learner.boosters_ = learner._arm_boosted(X, contrasts, self.arm_rounds)
            out[n] = learner
        return out

    @staticmethod
    def _arm_on_shape(
        shared: lgb.Booster, shape: np.ndarray, target: np.ndarray, weight: np.ndarray
    ) -> tuple[lgb.Booster, float]:
        """One arm's ensemble: the shared shape scaled to the arm's level.

        The level is the mean of the arm's own targets over its contrast rows; the scale
        makes the shape's mean over those rows equal to it.
        """
        level = float(np.average(target, weights=weight))
        mean_shape = float(shape[weight > 0].mean())
        scale = level / mean_shape if abs(mean_shape) > 1e-12 else 1.0
        return scaled_booster(shared, scale), scale

    def _arm_boosted(self, X: pd.DataFrame, contrasts: Mapping[str, Contrast], rounds: int) -> dict[str, lgb.Booster]:
        """Each arm's ensemble continued by ``rounds`` trees of its own, on its own targets."""
        return {
            arm: fit_booster(X[c.rows], c.target, self.arm_params or self.final_params, "regression", self.seed,
                             c.tree_weight, rounds=rounds, init_model=self.boosters_[arm])
            for arm, c in contrasts.items()
        }

    def with_arm_rounds(
        self, X: pd.DataFrame, assigned: np.ndarray, y: np.ndarray, mu: Mapping[str, np.ndarray], rounds: int,
        propensities: pd.DataFrame | None = None,
    ) -> UpliftLearner:
        """A copy of this fitted pooled learner whose arms add ``rounds`` arm-specific trees.

        The same as fitting with ``arm_rounds=rounds`` (the pooled shape is not grown
        again): each arm's shape, scaled to its level, is boosted further on that arm's
        own targets, so the arm's ranking can depart from the pooled one where its data
        carry it. Grouped CV compares the two per arm (:mod:`training.selection`).
        ``propensities`` as in :meth:`fit` (those the learner was fitted with).
        """
        if not self.pool_arms or not hasattr(self, "boosters_"):
            raise ValueError("with_arm_rounds continues a fitted learner with pooled arms")
        assigned, y = np.asarray(assigned), np.asarray(y, dtype=float)
        out = type(self)(self.design, self.final_params, pool_arms=True, arm_rounds=rounds,
                         arm_params=self.arm_params, seed=self.seed)
        out.arm_scale_, out.boosters_ = dict(self.arm_scale_), self.boosters_
        contrasts = {arm: self.targets(arm, assigned, y, mu, propensities) for arm in self.design.arms}
        out.boosters_ = out._arm_boosted(X, contrasts, rounds) if rounds > 0 else dict(self.boosters_)
        return out

    def predict(self, X: pd.DataFrame) -> pd.DataFrame:
        """Predicted uplift per arm (columns = arm labels)."""
        if not hasattr(self, "boosters_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return pd.DataFrame({arm: b.predict(X) for arm, b in self.boosters_.items()}, index=X.index)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(pool_arms={self.pool_arms}, arm_rounds={self.arm_rounds}, "
                f"final_params={self.final_params!r})")
