"""Grouped-CV choice of the final uplift models: the model's candidates, then per arm against references.

Two stages, both judged on the training groups only (the hold-out is for reporting):

1. **The model** (:func:`select_learner`, :func:`select_outcome_shape`): every learner,
   size of its final models, whether they see the turnout score and the treated groups'
   outcome-model shape, ranked by ``uplift.selection_metric`` averaged over the arms.
2. **Per arm, the model against what a campaign already has** (:func:`select_per_arm`):
   the constant effect (each arm's average effect: every voter tied, as random
   targeting), the rule "voters near 50% turnout first" and the turnout shape (the
   average effect times a fixed or a learned shape of the turnout score alone), the
   turnout shape continued on the features, the model, and the model with
   arm-specific trees on its pooled shape (:mod:`training.arm_choice`).
   Grouped CV is repeated over several fold seeds; each arm serves the simplest
   candidate whose policy value is within one standard error of the best one's
   (:func:`one_standard_error_choice`), so a model is never more complex than the
   data support.

Every candidate is one LightGBM ensemble per arm (a reference is an ensemble fitted on
inputs held constant but for the turnout score, or all of them), so whatever wins keeps
exact additive SHAP reasons.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.config import GBMParams, RunConfig
from serving.bundle import TURNOUT_SCORE
from training.evaluation import clustered_mean, dr_qini_coefficient, policy_gain, qini_coefficient
from training.learners import LEARNERS, RULES, Design, UpliftLearner
from training.learners.dr import aipw_score
from training.turnout import TurnoutModel

SELECTION_METRICS = ("policy_value", "qini", "dr_qini")
CANDIDATE_KEYS = ["learner", "size", "turnout_score"]


def make_learner(
    name: str, config: RunConfig, design: Design, final: GBMParams, *, arm_rounds: int = 0
) -> UpliftLearner:
    """The run's learner ``name`` (or a reference's rule) with final models ``final`` (pooled arms:
    ``arm_rounds`` of their own)."""
    spec = config.uplift
    return (LEARNERS[name] if name in LEARNERS else RULES[name])(
        design, final, pool_arms=spec.pool_arms, arm_rounds=arm_rounds if spec.pool_arms else 0,
        arm_params=spec.arm_params, seed=config.split.seed,
    )


def rows_of(propensities: pd.DataFrame | None, rows: np.ndarray) -> pd.DataFrame | None:
    """The per-row propensities of ``rows`` (a boolean mask), or None when the design's shares apply."""
    return None if propensities is None else propensities[rows]


def with_turnout_score(X: pd.DataFrame, score: np.ndarray) -> pd.DataFrame:
    """The final uplift models' input when they see the turnout score."""
    return X.assign(**{TURNOUT_SCORE: score})


@dataclass
class ArmContrast:
    """One arm against control over the training rows, as CV scores it."""

    rows: np.ndarray  # boolean: the arm's and control's rows whose propensity is in (0, 1) (Design.contrast)
    treated: np.ndarray  # 1.0 for the arm's rows, else 0.0
    propensity: np.ndarray  # each row's P(arm | arm or control): the design's share, or a program's recorded one
    pseudo: np.ndarray  # AIPW score of every row (meaningful on ``rows``, NaN elsewhere)


def arm_contrasts(
    assigned: np.ndarray, y: np.ndarray, mu: dict[str, np.ndarray], design: Design,
    propensities: pd.DataFrame | None = None,
) -> dict[str, ArmContrast]:
    """Each arm's contrast, its AIPW scores from the cross-fitted outcome models ``mu``.

    ``propensities``: each row's probability of every label (:class:`Design`); default:
    the design's shares.
    """
    out = {}
    for arm in design.arms:
        rows, e = design.contrast(arm, assigned, propensities)
        treated = (assigned == arm).astype(float)
        pseudo = np.full(len(y), np.nan)
        pseudo[rows] = aipw_score(y[rows], treated[rows], mu[arm][rows], mu[design.control][rows], e[rows])
        out[arm] = ArmContrast(rows=rows, treated=treated, propensity=e, pseudo=pseudo)
    return out


def training_arm_effects(
    contrasts: dict[str, ArmContrast], groups: np.ndarray
) -> dict[str, dict[str, float]]:
    """Each arm's average effect on the training rows and its standard error.

    The mean of the arm's AIPW scores (cross-fitted outcome models, each row's propensity):
    the doubly-robust estimate of the average effect the final models' arm level rests
    on (and the level of the constant reference), with a cluster-robust standard error
    over the randomization groups. The planner reads it to say how much a plan depends
    on each arm's level (``serving.plan_sensitivity``).
    """
    out = {}
    for arm, c in contrasts.items():
        ate, se = clustered_mean(c.pseudo[c.rows], np.asarray(groups)[c.rows])
        out[arm] = {"ate": ate, "se": se, "rows": int(c.rows.sum())}
    return out


def fold_metrics(
    scores: pd.DataFrame, rows: np.ndarray, y: np.ndarray, contrasts: dict[str, ArmContrast], budgets: Sequence[float]
) -> Iterator[tuple[str, str, float]]:
    """(arm, metric, value) of one held-out fold's predicted ``scores`` (the fold's ``rows``)."""
    for arm, c in contrasts.items():
        r = c.rows[rows]
        score = scores[arm].to_numpy()[r]
        t, yy, pp, e = c.treated[rows][r], y[rows][r], c.pseudo[rows][r], c.propensity[rows][r]
        yield arm, "policy_value", float(policy_gain(score, pp, budgets).mean())
        yield arm, "qini", qini_coefficient(score, yy, t, e)
        yield arm, "dr_qini", dr_qini_coefficient(score, pp, e)


@dataclass
class FoldScores:
    """One candidate's predictions on one held-out CV fold."""

    learner: str
    size: str
    turnout_score: bool  # the final models saw the turnout score as a feature
    fold: int
    rows: np.ndarray  # boolean mask of the fold over the training rows
    scores: pd.DataFrame  # predicted uplift per arm for those rows

    @property
    def candidate(self) -> dict[str, str | bool]:
        """The candidate's key, as the columns :data:`CANDIDATE_KEYS`."""
        return {"learner": self.learner, "size": self.size, "turnout_score": self.turnout_score}


def cv_fold_scores(
    X: pd.DataFrame,
    assigned: np.ndarray,
    y: np.ndarray,
    nested_mu: dict[int, dict[str, np.ndarray]],
    folds: np.ndarray,
    config: RunConfig,
    design: Design,
    turnout: TurnoutModel | None = None,
    propensities: pd.DataFrame | None = None,
) -> Iterator[FoldScores]:
    """Held-out predictions of every candidate model, fold by fold.

    A candidate is a learner, a size of its final models and whether they see the
    turnout score (``uplift.turnout_score_options()``; never without a turnout model).
    Each is fitted on all folds but one and predicts the held-out fold ``k``, from the
    nuisance ``nested_mu[k]`` that never saw fold ``k``
    (:meth:`CrossFitNuisance.fit_predict_nested`) and, as its turnout score, the turnout
    model fitted without fold ``k`` (:meth:`TurnoutModel.predict_without_fold`). Sizes
    that differ only in their tree count come from one boosting run
    (:meth:`UpliftLearner.fit_staged`). The hold-out split is never touched.
    ``propensities``: each training row's probability of every label (:class:`Design`).
    """
    by_leaves: dict[int, dict[str, GBMParams]] = {}  # sizes that differ only in tree count share one run
    for size, final in config.uplift.final_candidates().items():
        by_leaves.setdefault(final.num_leaves, {})[size] = final
    options = config.uplift.turnout_score_options() if turnout is not None else [False]
    inputs = {(False, int(k)): X for k in np.unique(folds)}
    if True in options:
        inputs |= {(True, int(k)): with_turnout_score(X, turnout.predict_without_fold(int(k), X))
                   for k in np.unique(folds)}
    for name in config.uplift.learners:
        for scored in options:
            for sizes in by_leaves.values():
                largest = max(sizes.values(), key=lambda params: params.n_estimators)
                for k in np.unique(folds):
                    fit_rows, eval_rows, Xk = folds != k, folds == k, inputs[scored, int(k)]
                    staged = make_learner(name, config, design, largest).fit_staged(
                        Xk[fit_rows], assigned[fit_rows], y[fit_rows], nested_mu[int(k)],
                        [params.n_estimators for params in sizes.values()], rows_of(propensities, fit_rows),
                    )
                    for size, params in sizes.items():
                        scores = staged[params.n_estimators].predict(Xk[eval_rows])
                        yield FoldScores(name, size, scored, int(k), eval_rows, scores)


def select_learner(
    X: pd.DataFrame,
    assigned: np.ndarray,
    y: np.ndarray,
    contrasts: dict[str, ArmContrast],
    nested_mu: dict[int, dict[str, np.ndarray]],
    folds: np.ndarray,
    config: RunConfig,
    design: Design,
    turnout: TurnoutModel | None = None,
    propensities: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """Grouped-CV score of every candidate model, by selection metric.

    Three metrics of the held-out fold ``k`` (:func:`cv_fold_scores`, :func:`fold_metrics`):
    ``policy_value``, the AIPW estimate of what contacting the top ``audit.budgets`` of
    the fold by the candidate's score captures above random (averaged over budgets);
    ``qini``, the Qini coefficient of its outcomes; and ``dr_qini``, the same estimand
    from the AIPW scores. The AIPW scores of ``contrasts`` come from cross-fitted
    outcome models that never saw fold ``k``. Returns, per metric, the mean over folds
    per arm and over arms, indexed by (learner, size, turnout_score); the configured
    ``uplift.selection_metric`` chooses.
    """
    arms = config.arm_labels
    records = []
    for cv in cv_fold_scores(X, assigned, y, nested_mu, folds, config, design, turnout, propensities):
        for arm, metric, value in fold_metrics(cv.scores, cv.rows, y, contrasts, config.audit.budgets):
            records.append({**cv.candidate, "fold": cv.fold, "arm": arm, "metric": metric, "value": value})
    long = pd.DataFrame(records)
    tables = {}
    for metric in SELECTION_METRICS:
        part = long[long.metric == metric]
        table = part.groupby([*CANDIDATE_KEYS, "arm"], sort=False).value.mean().unstack("arm")[arms]
        table.columns.name = None
        table["mean"] = table.mean(axis=1)
        tables[metric] = table
    return tables


@dataclass
class OutcomeShapeChoice:
    """The outcome models grouped CV chose among the treated-model shapes, and why."""

    models: object  # the chosen shape's training.fit.OutcomeModels
    selection_tables: dict[str, pd.DataFrame]  # select_learner's tables with the chosen shape's models
    shapes: pd.DataFrame  # one row per shape: its best candidate, both metrics there, chosen


def select_outcome_shape(
    shapes: Sequence,
    X: pd.DataFrame,
    assigned: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    config: RunConfig,
    design: Design,
    turnout: TurnoutModel | None = None,
    propensities: pd.DataFrame | None = None,
) -> OutcomeShapeChoice:
    """Choose the treated groups' outcome-model shape by grouped CV, with the learner and size.

    Every shape's nested outcome models (``shapes``: :class:`training.fit.OutcomeModels`)
    feed :func:`select_learner`; the shape whose best candidate scores highest on
    ``uplift.selection_metric`` wins (the first listed on a tie). The out-of-fold loss
    that picks each shape's round count cannot compare shapes by what they are for:
    small trees predict the outcome worse and can still rank the difference contact
    makes better. All shapes are judged by the same AIPW scores, those of the first
    shape's cross-fitted models, so the doubly-robust metrics compare them on one
    yardstick (the Qini of the outcomes needs none).
    """
    metric = config.uplift.selection_metric
    contrasts = arm_contrasts(assigned, y, shapes[0].mu, design, propensities)
    rows, tables = [], []
    for models in shapes:
        by_metric = select_learner(X, assigned, y, contrasts, models.nested, folds, config, design, turnout,
                                   propensities)
        best = by_metric[metric]["mean"].idxmax()
        rows.append({"treated_leaves": models.treated_leaves, **dict(zip(CANDIDATE_KEYS, best, strict=True)),
                     **{name: float(table.loc[best, "mean"]) for name, table in by_metric.items()}})
        tables.append(by_metric)
    table = pd.DataFrame(rows)
    pick = int(table[metric].to_numpy().argmax())
    table["chosen"] = np.arange(len(table)) == pick
    return OutcomeShapeChoice(models=shapes[pick], selection_tables=tables[pick], shapes=table)
