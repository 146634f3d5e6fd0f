"""Fit a run's models on the training groups and judge them on the grouped hold-out.

The steps, in order: split by group, fit the feature transform, fit the turnout model
on control, cross-fit the outcome (nuisance) models, select the uplift learner and the
size of its final models (trees x leaves) by grouped-CV Qini on the training groups,
refit every learner at its selected size, and evaluate the learners and the references
(plain T-learner, turnout closest to 0.5, random) on the hold-out.
"""

from __future__ import annotations

from collections.abc import Callable
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
    decile_table,
    difference_in_means,
    qini_coefficient,
    turnout_metrics,
    uplift_at_k,
    uplift_metrics,
)
from training.learners import LEARNERS, CrossFitNuisance, Design, UpliftLearner
from training.references import DefaultTLearner, random_score, turnout_05_score
from training.splits import group_folds, holdout_mask
from training.turnout import fit_turnout

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
    selection: pd.DataFrame
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


def select_learner(
    X: pd.DataFrame,
    assigned: np.ndarray,
    y: np.ndarray,
    nested_mu: dict[int, dict[str, np.ndarray]],
    folds: np.ndarray,
    config: RunConfig,
    design: Design,
) -> pd.DataFrame:
    """Grouped-CV Qini of every learner at every candidate size of its final models.

    Each (learner, size) is fitted on all folds but one and ranked on the held-out fold
    ``k``, from the nuisance ``nested_mu[k]`` that never saw fold ``k``
    (:meth:`CrossFitNuisance.fit_predict_nested`); sizes that differ only in their tree
    count come from one boosting run (:meth:`UpliftLearner.fit_staged`). The hold-out
    split is never touched. Returns the mean Qini per arm and over arms, indexed by
    (learner, size).
    """
    arms, control = config.arm_labels, config.control_label
    by_leaves: dict[int, dict[str, GBMParams]] = {}  # sizes that differ only in tree count share one run
    for size, final in config.uplift.final_candidates().items():
        by_leaves.setdefault(final.num_leaves, {})[size] = final
    rows = []
    for name in config.uplift.learners:
        for sizes in by_leaves.values():
            largest = max(sizes.values(), key=lambda params: params.n_estimators)
            for k in np.unique(folds):
                fit_rows, eval_rows = folds != k, folds == k
                staged = _make_learner(name, config, design, largest).fit_staged(
                    X[fit_rows], assigned[fit_rows], y[fit_rows], nested_mu[int(k)],
                    [params.n_estimators for params in sizes.values()],
                )
                for size, params in sizes.items():
                    scores = staged[params.n_estimators].predict(X[eval_rows])
                    q = _arm_qini(scores, y[eval_rows], assigned[eval_rows], arms, control)
                    rows += [{"learner": name, "size": size, "fold": int(k), "arm": a, "qini": v} for a, v in q.items()]
    table = pd.DataFrame(rows).groupby(["learner", "size", "arm"], sort=False).qini.mean().unstack("arm")[arms]
    table["mean"] = table.mean(axis=1)
    return table


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


def _arm_qini(scores: pd.DataFrame, y: np.ndarray, assigned: np.ndarray, arms, control) -> dict[str, float]:
    out = {}
    for arm in arms:
        rows = (assigned == arm) | (assigned == control)
        out[arm] = qini_coefficient(scores[arm].to_numpy()[rows], y[rows], (assigned[rows] == arm).astype(float))
    return out


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
    turnout = fit_turnout(
        prep.X_train[ctrl], prep.train.loc[ctrl, turnout_col].to_numpy(dtype=float), prep.folds[ctrl],
        config.turnout.params, config.turnout.calibration_tolerance, seed,
    )
    p_test = turnout.predict(prep.X_test)
    X_tr, X_te = prep.X_train, prep.X_test
    if config.uplift.turnout_score_feature:
        # Cross-fitted for control rows (the turnout model saw them); treated rows were never
        # in the turnout model's training set.
        score_tr = turnout.predict(X_tr)
        score_tr[ctrl] = turnout.oof
        X_tr = X_tr.assign(**{TURNOUT_SCORE: score_tr})
        X_te = X_te.assign(**{TURNOUT_SCORE: p_test})

    progress("cross-fitted outcome models")
    nuisance = CrossFitNuisance(design, config.uplift.nuisance, binary, seed)
    mu = nuisance.fit_predict(X_tr, a_tr, y_tr, prep.folds)
    nested_mu = nuisance.fit_predict_nested(X_tr, a_tr, y_tr, prep.folds)

    progress("learner and tree-size selection (grouped CV)")
    selection = select_learner(X_tr, a_tr, y_tr, nested_mu, prep.folds, config, design)
    best_size = {name: str(selection.loc[name, "mean"].idxmax()) for name in config.uplift.learners}
    chosen = str(selection["mean"].idxmax()[0])
    candidates = config.uplift.final_candidates()

    progress("refit learners and references")
    test_scores: dict[str, pd.DataFrame] = {}
    fitted: dict[str, UpliftLearner] = {}
    for name in config.uplift.learners:
        fitted[name] = _make_learner(name, config, design, candidates[best_size[name]]).fit(X_tr, a_tr, y_tr, mu)
        test_scores[name] = fitted[name].predict(X_te)
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
        turnout_score_feature=config.uplift.turnout_score_feature,
    )
    if contact is not None:
        model.contact_rate, model.contact_rate_info = contact.model.boosters_, contact.model.info_
    result = FitResult(
        model=model, learner=chosen, final_size=best_size[chosen], selection=selection, holdout=holdout,
        arm_metrics=arm_metrics, ate=ate, deciles=deciles, turnout=turnout_eval,
        calibration=calibration_table(p_test[ctrl_te], y_turn_te[ctrl_te]),
        test_scores=test_scores, prepared=prep, contact_rate=contact,
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
