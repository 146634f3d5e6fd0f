"""Fit a run's models on the training groups and judge them on the grouped hold-out.

The steps, in order: split by group, fit the feature transform, fit the turnout model
on control, cross-fit the outcome (nuisance) models (at each candidate shape of the
treated groups' models), select the uplift learner, the size of its final models
(trees x leaves), whether they see the turnout score and the outcome models' shape by
grouped-CV Qini on the training groups, refit every learner at its selected candidate,
and evaluate the learners and the references (plain T-learner, turnout closest to 0.5,
random) on the hold-out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.config import GBMParams, RunConfig
from features.pipeline import FeaturePipeline
from serving.bundle import TURNOUT_SCORE, ArmInfo, ScoringModel
from training.contact_rate import ContactRateReport, fit_contact_rate
from training.evaluation import (
    KS,
    auuc,
    calibration_table,
    clustered_mean,
    decile_table,
    difference_in_means,
    dr_qini_coefficient,
    qini_coefficient,
    turnout_metrics,
    uplift_at_k,
    uplift_metrics,
)
from training.learners import LEARNERS, CrossFitNuisance, Design, UpliftLearner
from training.learners.base import best_rounds
from training.learners.dr import aipw_score
from training.references import DefaultTLearner, random_score, turnout_05_score
from training.splits import group_folds, holdout_mask
from training.turnout import TurnoutModel, fit_turnout

Progress = Callable[[str], None]


def _noop(_: str) -> None:
    return None


@dataclass
class Prepared:
    """The grouped train/hold-out split, transformed."""

    pipeline: FeaturePipeline
    train: pd.DataFrame
    test: pd.DataFrame
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    folds: np.ndarray

    def assigned(self, part: str, config: RunConfig) -> np.ndarray:
        return getattr(self, part)[config.arm_column].astype(str).to_numpy()


def prepare(frame: pd.DataFrame, config: RunConfig) -> Prepared:
    """Split ``frame`` by group into train and hold-out and fit the feature transform."""
    held = holdout_mask(frame[config.group_column], config.split.holdout_fraction, config.split.seed)
    train = frame.loc[~held].reset_index(drop=True)
    test = frame.loc[held].reset_index(drop=True)
    pipeline = FeaturePipeline(config.features, config.derived_features).fit(train)
    return Prepared(
        pipeline=pipeline,
        train=train,
        test=test,
        X_train=pipeline.transform(train),
        X_test=pipeline.transform(test),
        folds=group_folds(train[config.group_column], config.split.folds, config.split.seed),
    )


@dataclass
class FitResult:
    """Everything a run logs: the scoring model, the selection and the hold-out evaluation."""

    model: ScoringModel
    learner: str
    final_size: str
    turnout_score_feature: bool
    selection: pd.DataFrame  # the configured metric's table of selection_tables
    holdout: pd.DataFrame
    arm_metrics: dict[str, dict[str, float]]
    ate: pd.DataFrame
    deciles: dict[str, pd.DataFrame]
    turnout: dict[str, float]
    calibration: pd.DataFrame
    test_scores: dict[str, pd.DataFrame]
    prepared: Prepared
    gates: dict[str, dict] = field(default_factory=dict)
    contact_rate: ContactRateReport | None = None
    selection_tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    nuisance_losses: pd.DataFrame | None = None  # out-of-fold loss per treated group x round count
    arm_effects: dict[str, dict[str, float]] = field(default_factory=dict)  # see training_arm_effects
    outcome_shapes: pd.DataFrame | None = None  # see select_outcome_shape

    @property
    def nuisance_treated_leaves(self) -> int | None:
        """Leaves per tree of the treated groups' outcome models, as grouped CV chose them."""
        if self.outcome_shapes is None:
            return None
        return int(self.outcome_shapes.loc[self.outcome_shapes.chosen, "treated_leaves"].iloc[0])

    @property
    def nuisance_rounds(self) -> dict[str, int]:
        """The outcome models' chosen round count per treated group (boosted from control; else empty)."""
        return {} if self.nuisance_losses is None else best_rounds(self.nuisance_losses)

    def flat_metrics(self) -> dict[str, float]:
        out: dict[str, float] = {f"turnout_{k}": v for k, v in self.turnout.items()}
        for arm, metrics in self.arm_metrics.items():
            slug = next(a.slug for a in self.model.arms if a.label == arm)
            out.update({f"{slug}_{k}": v for k, v in metrics.items()})
        for _, row in self.ate.iterrows():
            slug = next(a.slug for a in self.model.arms if a.label == row.arm)
            out[f"{slug}_predicted_ate"] = row.predicted_ate
            out[f"{slug}_observed_ate"] = row.observed_ate
            out[f"{slug}_observed_ate_low"] = row.observed_low
            out[f"{slug}_observed_ate_high"] = row.observed_high
        for arm, effect in self.arm_effects.items():
            slug = next(a.slug for a in self.model.arms if a.label == arm)
            out[f"{slug}_training_ate"] = effect["ate"]
            out[f"{slug}_training_ate_se"] = effect["se"]
        for (name, arm), value in self.holdout["qini"].items():
            slug = next(a.slug for a in self.model.arms if a.label == arm)
            out[f"ref_{name}_{slug}_qini"] = value
        return out


def _make_learner(name: str, config: RunConfig, design: Design, final: GBMParams) -> UpliftLearner:
    spec = config.uplift
    return LEARNERS[name](
        design, final, pool_arms=spec.pool_arms, arm_rounds=spec.arm_rounds,
        arm_params=spec.arm_params, seed=config.split.seed,
    )


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


@dataclass
class ArmContrast:
    """One arm against control over the training rows, as CV scores it."""

    rows: np.ndarray  # boolean: the arm's and control's rows
    treated: np.ndarray  # 1.0 for the arm's rows, else 0.0
    share: float  # the design's treated share of the contrast
    pseudo: np.ndarray  # AIPW score of every row (meaningful on ``rows``)


def arm_contrasts(
    assigned: np.ndarray, y: np.ndarray, mu: dict[str, np.ndarray], design: Design
) -> dict[str, ArmContrast]:
    """Each arm's contrast, its AIPW scores from the cross-fitted outcome models ``mu``."""
    out = {}
    for arm in design.arms:
        treated = (assigned == arm).astype(float)
        e = design.propensity(arm, assigned)
        out[arm] = ArmContrast(
            rows=(assigned == arm) | (assigned == design.control), treated=treated, share=e,
            pseudo=aipw_score(y, treated, mu[arm], mu[design.control], e),
        )
    return out


def training_arm_effects(
    contrasts: dict[str, ArmContrast], groups: np.ndarray
) -> dict[str, dict[str, float]]:
    """Each arm's average effect on the training rows and its standard error.

    The mean of the arm's AIPW scores (cross-fitted outcome models, design propensity):
    the doubly-robust estimate of the average effect the final models' arm level rests
    on, with a cluster-robust standard error over the randomization groups. The planner
    reads it to say how much a plan depends on each arm's level
    (``serving.plan_sensitivity``).
    """
    out = {}
    for arm, c in contrasts.items():
        ate, se = clustered_mean(c.pseudo[c.rows], np.asarray(groups)[c.rows])
        out[arm] = {"ate": ate, "se": se, "rows": int(c.rows.sum())}
    return out


SELECTION_METRICS = ("qini", "dr_qini")
CANDIDATE_KEYS = ["learner", "size", "turnout_score"]


def with_turnout_score(X: pd.DataFrame, score: np.ndarray) -> pd.DataFrame:
    """The final uplift models' input when they see the turnout score."""
    return X.assign(**{TURNOUT_SCORE: score})


def cv_fold_scores(
    X: pd.DataFrame,
    assigned: np.ndarray,
    y: np.ndarray,
    nested_mu: dict[int, dict[str, np.ndarray]],
    folds: np.ndarray,
    config: RunConfig,
    design: Design,
    turnout: TurnoutModel | None = None,
) -> Iterator[FoldScores]:
    """Held-out predictions of every candidate final model, fold by fold.

    A candidate is a learner, a size of its final models and whether they see the
    turnout score (``uplift.turnout_score_options()``). Each is fitted on all folds but
    one and predicts the held-out fold ``k``, from the nuisance ``nested_mu[k]`` that
    never saw fold ``k`` (:meth:`CrossFitNuisance.fit_predict_nested`) and, as its turnout
    score, the turnout model fitted without fold ``k``
    (:meth:`TurnoutModel.predict_without_fold`). Sizes that differ only in their tree
    count come from one boosting run (:meth:`UpliftLearner.fit_staged`). The hold-out
    split is never touched.
    """
    by_leaves: dict[int, dict[str, GBMParams]] = {}  # sizes that differ only in tree count share one run
    for size, final in config.uplift.final_candidates().items():
        by_leaves.setdefault(final.num_leaves, {})[size] = final
    options = config.uplift.turnout_score_options()
    if True in options and turnout is None:
        raise ValueError("candidates with the turnout score need the turnout model")
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
                    staged = _make_learner(name, config, design, largest).fit_staged(
                        Xk[fit_rows], assigned[fit_rows], y[fit_rows], nested_mu[int(k)],
                        [params.n_estimators for params in sizes.values()],
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
) -> dict[str, pd.DataFrame]:
    """Grouped-CV score of every candidate final model, by selection metric.

    Two metrics of the held-out fold ``k`` (:func:`cv_fold_scores`): ``qini``, the Qini
    coefficient of its outcomes, and ``dr_qini``, the same estimand from the AIPW scores
    of ``contrasts`` (:func:`arm_contrasts`), whose outcome models are the cross-fitted
    ``mu`` (fitted on the other folds, so they never saw fold ``k`` either). Returns,
    per metric, the mean over folds per arm and over arms, indexed by (learner, size,
    turnout_score); the configured ``uplift.selection_metric`` chooses.
    """
    arms = config.arm_labels
    records = []
    for cv in cv_fold_scores(X, assigned, y, nested_mu, folds, config, design, turnout):
        for arm, c in contrasts.items():
            r = c.rows[cv.rows]
            score = cv.scores[arm].to_numpy()[r]
            t, yy, pp = c.treated[cv.rows][r], y[cv.rows][r], c.pseudo[cv.rows][r]
            base = {**cv.candidate, "fold": cv.fold, "arm": arm}
            records.append({**base, "metric": "qini", "value": qini_coefficient(score, yy, t)})
            records.append({**base, "metric": "dr_qini", "value": dr_qini_coefficient(score, pp, c.share)})
    long = pd.DataFrame(records)
    tables = {}
    for metric in SELECTION_METRICS:
        part = long[long.metric == metric]
        table = part.groupby([*CANDIDATE_KEYS, "arm"], sort=False).value.mean().unstack("arm")[arms]
        table.columns.name = None
        table["mean"] = table.mean(axis=1)
        tables[metric] = table
    return tables


def holdout_table(
    test_scores: dict[str, pd.DataFrame], y: np.ndarray, assigned: np.ndarray, arms, control
) -> pd.DataFrame:
    """Qini, AUUC and uplift@k of every ranking and arm (index: ranking, arm)."""
    rows = []
    for name, scores in test_scores.items():
        for arm in arms:
            r = (assigned == arm) | (assigned == control)
            s, yy, t = scores[arm].to_numpy()[r], y[r], (assigned[r] == arm).astype(float)
            row = {"ranking": name, "arm": arm, "qini": qini_coefficient(s, yy, t), "auuc": auuc(s, yy, t)}
            for k in KS:
                row[f"uplift_at_{int(k * 100)}"] = uplift_at_k(s, yy, t, k)
            rows.append(row)
    return pd.DataFrame(rows).set_index(["ranking", "arm"])


def fit_turnout_model(prep: Prepared, config: RunConfig) -> TurnoutModel:
    """The turnout model, fitted on the training control rows (grouped folds for its check)."""
    ctrl = prep.assigned("train", config) == config.control_label
    return fit_turnout(
        prep.X_train[ctrl], prep.train.loc[ctrl, config.turnout_column].to_numpy(dtype=float), prep.folds[ctrl],
        config.turnout.params, config.turnout.calibration_tolerance, config.split.seed,
    )


@dataclass
class OutcomeModels:
    """The cross-fitted outcome (nuisance) models' predictions on the training rows."""

    mu: dict[str, np.ndarray]  # out-of-fold, per label (control, arms, any contact)
    nested: dict[int, dict[str, np.ndarray]]  # per CV fold k: cross-fitted without fold k
    losses: pd.DataFrame | None  # out-of-fold loss per treated group x round count (boosted from control)
    treated_leaves: int  # leaves per tree of the treated groups' outcome models


def fit_outcome_models(
    prep: Prepared, config: RunConfig, design: Design, treated_leaves: int | None = None
) -> OutcomeModels:
    """Cross-fitted outcome models' predictions on the training rows: plain and nested (for CV).

    ``treated_leaves`` is one of ``uplift.treated_leaves_options()`` (default: the first).
    """
    spec = config.uplift
    leaves = spec.treated_leaves_options()[0] if treated_leaves is None else treated_leaves
    nuisance = CrossFitNuisance(
        design, spec.nuisance, config.outcome.kind == "turnout", config.split.seed,
        from_control=spec.nuisance_from_control, rounds=spec.nuisance_rounds,
        treated_leaves=leaves if spec.nuisance_from_control else None,
    )
    assigned = prep.assigned("train", config)
    y = prep.train[config.outcome.column].to_numpy(dtype=float)
    mu = nuisance.fit_predict(prep.X_train, assigned, y, prep.folds)
    return OutcomeModels(
        mu=mu, nested=nuisance.fit_predict_nested(prep.X_train, assigned, y, prep.folds),
        losses=getattr(nuisance, "losses_", None), treated_leaves=leaves,
    )


@dataclass
class OutcomeShapeChoice:
    """The outcome models grouped CV chose among the treated-model shapes, and why."""

    models: OutcomeModels  # the chosen shape's
    selection_tables: dict[str, pd.DataFrame]  # select_learner's tables with the chosen shape's models
    shapes: pd.DataFrame  # one row per shape: its best candidate, both metrics there, chosen


def select_outcome_shape(
    shapes: Sequence[OutcomeModels],
    X: pd.DataFrame,
    assigned: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    config: RunConfig,
    design: Design,
    turnout: TurnoutModel | None = None,
) -> OutcomeShapeChoice:
    """Choose the treated groups' outcome-model shape by grouped CV, with the learner and size.

    Every shape's nested outcome models feed :func:`select_learner`; the shape whose best
    candidate scores highest on ``uplift.selection_metric`` wins (the first listed on a
    tie). The out-of-fold loss that picks each shape's round count cannot compare shapes
    by what they are for: small trees predict the outcome worse and can still rank the
    difference contact makes better. All shapes are judged by the same AIPW scores, those
    of the first shape's cross-fitted models, so DR-Qini compares them on one yardstick
    (the Qini of the outcomes needs none).
    """
    metric = config.uplift.selection_metric
    contrasts = arm_contrasts(assigned, y, shapes[0].mu, design)
    rows, tables = [], []
    for models in shapes:
        by_metric = select_learner(X, assigned, y, contrasts, models.nested, folds, config, design, turnout)
        best = by_metric[metric]["mean"].idxmax()
        rows.append({"treated_leaves": models.treated_leaves, **dict(zip(CANDIDATE_KEYS, best, strict=True)),
                     **{name: float(table.loc[best, "mean"]) for name, table in by_metric.items()}})
        tables.append(by_metric)
    table = pd.DataFrame(rows)
    pick = int(table[metric].to_numpy().argmax())
    table["chosen"] = np.arange(len(table)) == pick
    return OutcomeShapeChoice(models=shapes[pick], selection_tables=tables[pick], shapes=table)


def fit_and_evaluate(frame: pd.DataFrame, config: RunConfig, progress: Progress = _noop) -> FitResult:
    """Fit all models of a run on ``frame`` (validated) and evaluate them on the hold-out."""
    arms = config.arm_labels
    control = config.control_label
    seed = config.split.seed
    binary = config.outcome.kind == "turnout"
    design = Design(arms, control, config.design_shares())

    progress("split and feature transform")
    prep = prepare(frame, config)
    contact = fit_contact_rate(prep, config)  # P(reached | attempted) when the log has the flags
    a_tr, a_te = prep.assigned("train", config), prep.assigned("test", config)
    y_tr = prep.train[config.outcome.column].to_numpy(dtype=float)
    y_te = prep.test[config.outcome.column].to_numpy(dtype=float)
    turnout_col = config.turnout_column

    progress("turnout model")
    ctrl = a_tr == control
    turnout = fit_turnout_model(prep, config)
    p_test = turnout.predict(prep.X_test)

    progress("cross-fitted outcome models")
    shapes = [fit_outcome_models(prep, config, design, leaves) for leaves in config.uplift.treated_leaves_options()]

    progress("learner, size, turnout-score and outcome-shape selection (grouped CV)")
    choice = select_outcome_shape(shapes, prep.X_train, a_tr, y_tr, prep.folds, config, design, turnout)
    del shapes  # the other shapes' outcome models (plain and nested) are not needed past the choice
    outcome_models, selection_tables = choice.models, choice.selection_tables
    mu = outcome_models.mu
    arm_effects = training_arm_effects(arm_contrasts(a_tr, y_tr, mu, design), prep.train[config.group_column])
    selection = selection_tables[config.uplift.selection_metric]
    best = {name: selection.loc[name, "mean"].idxmax() for name in config.uplift.learners}  # (size, score)
    chosen = str(selection["mean"].idxmax()[0])
    candidates = config.uplift.final_candidates()
    # The turnout score of the training rows: cross-fitted for control rows (the turnout
    # model saw them); treated rows were never in the turnout model's training set.
    score_tr = turnout.predict(prep.X_train)
    score_tr[ctrl] = turnout.oof

    progress("refit learners and references")
    test_scores: dict[str, pd.DataFrame] = {}
    fitted: dict[str, UpliftLearner] = {}
    for name in config.uplift.learners:
        size, scored = best[name]
        X_fit = with_turnout_score(prep.X_train, score_tr) if scored else prep.X_train
        X_eval = with_turnout_score(prep.X_test, p_test) if scored else prep.X_test
        fitted[name] = _make_learner(name, config, design, candidates[size]).fit(X_fit, a_tr, y_tr, mu)
        test_scores[name] = fitted[name].predict(X_eval)
    ref_t = DefaultTLearner(arms, control, binary, seed).fit(prep.X_train, a_tr, y_tr)
    test_scores["t_default"] = ref_t.predict(prep.X_test)
    test_scores["turnout_05"] = pd.DataFrame({a: turnout_05_score(p_test) for a in arms})
    test_scores["random"] = pd.DataFrame({a: random_score(len(p_test), seed + i) for i, a in enumerate(arms)})

    progress("hold-out evaluation")
    groups_te = prep.test[config.group_column].to_numpy()
    holdout = holdout_table(test_scores, y_te, a_te, arms, control)
    arm_metrics, deciles, ate_rows = {}, {}, []
    chosen_scores = test_scores[chosen]
    for arm in arms:
        r = (a_te == arm) | (a_te == control)
        t = (a_te[r] == arm).astype(float)
        arm_metrics[arm] = uplift_metrics(
            chosen_scores[arm].to_numpy()[r], y_te[r], t, groups_te[r], config.gates.qini_bootstrap, seed
        )
        deciles[arm] = decile_table(chosen_scores[arm].to_numpy()[r], y_te[r], t)
        dim = difference_in_means(y_te[r], t, groups_te[r], config.gates.qini_bootstrap, seed)
        ate_rows.append({
            "arm": arm, "predicted_ate": float(chosen_scores[arm].mean()), "observed_ate": dim.estimate,
            "observed_low": dim.low, "observed_high": dim.high,
        })
    ate = pd.DataFrame(ate_rows)
    ate["consistent"] = (ate.predicted_ate >= ate.observed_low) & (ate.predicted_ate <= ate.observed_high)

    ctrl_te = a_te == control
    y_turn_te = prep.test[turnout_col].to_numpy(dtype=float)
    turnout_eval = turnout_metrics(p_test[ctrl_te], y_turn_te[ctrl_te])
    turnout_eval["oof_calibration_gap"] = turnout.oof_gap
    turnout_eval["recalibrated"] = float(turnout.calibration is not None)

    arm_infos = [ArmInfo(a, s.channel.value, s.resolved_delivery.value, s.cost) for a, s in config.arms.items()]
    model = ScoringModel(
        pipeline=prep.pipeline,
        turnout=turnout.booster,
        uplift=fitted[chosen].boosters_,
        arms=arm_infos,
        control_label=control,
        id_column=config.id_column,
        outcome={"column": config.outcome.column, "kind": config.outcome.kind},
        calibration=turnout.calibration,
        turnout_score_feature=bool(best[chosen][1]),
    )
    if contact is not None:
        model.contact_rate, model.contact_rate_info = contact.model.boosters_, contact.model.info_
    result = FitResult(
        model=model, learner=chosen, final_size=str(best[chosen][0]),
        turnout_score_feature=bool(best[chosen][1]), selection=selection,
        selection_tables=selection_tables, holdout=holdout,
        arm_metrics=arm_metrics, ate=ate, deciles=deciles, turnout=turnout_eval,
        calibration=calibration_table(p_test[ctrl_te], y_turn_te[ctrl_te]),
        test_scores=test_scores, prepared=prep, contact_rate=contact,
        nuisance_losses=outcome_models.losses, arm_effects=arm_effects, outcome_shapes=choice.shapes,
    )
    result.gates = evaluate_gates(result)
    return result


def evaluate_gates(result: FitResult) -> dict[str, dict]:
    """The promotion gates, computed at training time and logged with the run."""
    best_arm = max(result.arm_metrics, key=lambda a: result.arm_metrics[a]["qini"])
    best = result.arm_metrics[best_arm]
    inconsistent = result.ate.loc[~result.ate.consistent, "arm"].tolist()
    return {
        "qini_best_arm": {
            "passed": bool(best["qini"] > 0 and best["qini_low"] > 0),
            "detail": f"best arm {best_arm!r}: Qini {best['qini']:.6f}, 95% CI "
                      f"[{best['qini_low']:.6f}, {best['qini_high']:.6f}]",
        },
        "ate_consistency": {
            "passed": not inconsistent,
            "detail": "predicted ATE of every arm within the bootstrap CI of the difference in means"
            if not inconsistent else f"predicted ATE outside the observed CI for {inconsistent}",
        },
        "validation": {"passed": True, "detail": "input data passed validation"},
    }
