"""Fit a run's models on the training groups and judge them on the grouped hold-out.

The steps, in order: split by group, fit the feature transform, fit the turnout model
on control (when the run has one), cross-fit the outcome (nuisance) models at each
candidate shape of the treated groups' models, choose the model (learner, size of its
final models, whether they see the turnout score, outcome-model shape) by grouped CV
(:mod:`training.selection`), then per arm the model against the references a campaign
already has by repeated grouped CV and the one-standard-error rule
(:mod:`training.arm_choice`), refit what is served, and evaluate the served model, every
learner and the references on the hold-out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from features.config import RunConfig
from serving.bundle import ArmInfo, ScoringModel
from training.arm_choice import (
    MODEL,
    arm_candidates,
    arm_cv_records,
    chosen_candidates,
    fit_candidates,
    is_constant,
    one_standard_error_choice,
    simplicity_order,
)
from training.contact_rate import ContactRateReport, fit_contact_rate
from training.evaluation import (
    KS,
    auuc,
    calibration_table,
    cluster_bootstrap_weights,
    decile_table,
    difference_in_means,
    holdout_policy_gain,
    qini_coefficient,
    turnout_metrics,
    uplift_at_k,
    uplift_metrics,
)
from training.learners import CrossFitNuisance, Design, UpliftLearner
from training.learners.nuisance import best_rounds
from training.programs import ProgramRows, overlap_floor, rows_per_label, with_programs
from training.references import DefaultTLearner, random_score, turnout_05_score
from training.selection import (
    arm_contrasts,
    make_learner,
    select_outcome_shape,
    training_arm_effects,
    with_turnout_score,
)
from training.splits import Prepared, group_folds, prepare
from training.turnout import TurnoutModel, fit_fold_boosters, fit_turnout

SERVED = "served"  # the hold-out ranking of the served model: each arm's chosen candidate

Progress = Callable[[str], None]


def _noop(_: str) -> None:
    return None


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
    test_scores: dict[str, pd.DataFrame]  # ranking -> hold-out scores, a column per arm it ranks
    prepared: Prepared
    selection_metric_name: str  # uplift.selection_metric
    budgets: list[float]  # audit.budgets
    gates: dict[str, dict] = field(default_factory=dict)
    contact_rate: ContactRateReport | None = None
    selection_tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    nuisance_losses: pd.DataFrame | None = None  # out-of-fold loss per treated group x round count
    arm_effects: dict[str, dict[str, float]] = field(default_factory=dict)  # see training_arm_effects
    outcome_shapes: pd.DataFrame | None = None  # see select_outcome_shape
    arm_selection: pd.DataFrame | None = None  # see training.arm_choice.one_standard_error_choice
    served: dict[str, str] = field(default_factory=dict)  # arm -> the candidate it serves
    cv_repeats: int = 1
    holdout_policy: pd.DataFrame | None = None  # ranking, arm, budget: hold-out gain over random, 95% CI
    constant_arms: list[str] = field(default_factory=list)  # arms whose served uplift is one value for all
    programs: list[dict] = field(default_factory=list)  # past programs that trained it: name, design, rows used

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


def holdout_table(
    test_scores: dict[str, pd.DataFrame], y: np.ndarray, assigned: np.ndarray, arms, control
) -> pd.DataFrame:
    """Qini, AUUC and uplift@k of every ranking and arm (index: ranking, arm)."""
    rows = []
    for name, scores in test_scores.items():
        for arm in [a for a in arms if a in scores.columns]:  # a ranking of some arms only has only those
            r = (assigned == arm) | (assigned == control)
            s, yy, t = scores[arm].to_numpy()[r], y[r], (assigned[r] == arm).astype(float)
            row = {"ranking": name, "arm": arm, "qini": qini_coefficient(s, yy, t), "auuc": auuc(s, yy, t)}
            for k in KS:
                row[f"uplift_at_{int(k * 100)}"] = uplift_at_k(s, yy, t, k)
            rows.append(row)
    return pd.DataFrame(rows).set_index(["ranking", "arm"])


def fit_turnout_model(prep: Prepared, config: RunConfig, ctrl: np.ndarray | None = None) -> TurnoutModel:
    """The turnout model, fitted on the training control rows ``ctrl`` (default: all; grouped folds for its check)."""
    ctrl = prep.assigned("train", config) == config.control_label if ctrl is None else ctrl
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
    prep: Prepared, config: RunConfig, design: Design, treated_leaves: int | None = None,
    folds: np.ndarray | None = None,
) -> OutcomeModels:
    """Cross-fitted outcome models' predictions on the training rows: plain and nested (for CV).

    ``treated_leaves`` is one of ``uplift.treated_leaves_options()`` (default: the first);
    ``folds`` the grouped folds (default: the run's, ``prep.folds``).
    """
    folds = prep.folds if folds is None else folds
    spec = config.uplift
    leaves = spec.treated_leaves_options()[0] if treated_leaves is None else treated_leaves
    nuisance = CrossFitNuisance(
        design, spec.nuisance, config.outcome.kind == "turnout", config.split.seed,
        from_control=spec.nuisance_from_control, rounds=spec.nuisance_rounds,
        treated_leaves=leaves if spec.nuisance_from_control else None,
    )
    assigned = prep.assigned("train", config)
    y = prep.train[config.outcome.column].to_numpy(dtype=float)
    mu = nuisance.fit_predict(prep.X_train, assigned, y, folds)
    return OutcomeModels(
        mu=mu, nested=nuisance.fit_predict_nested(prep.X_train, assigned, y, folds),
        losses=getattr(nuisance, "losses_", None), treated_leaves=leaves,
    )


def repeat_inputs(
    prep: Prepared, config: RunConfig, design: Design, treated_leaves: int, turnout: TurnoutModel | None, repeat: int,
    ctrl: np.ndarray,
) -> tuple[np.ndarray, OutcomeModels, TurnoutModel | None]:
    """Grouped folds of CV repeat ``repeat`` (> 0), with outcome and turnout models (on ``ctrl``) refitted on them."""
    folds = group_folds(prep.train[config.group_column], config.split.folds, config.split.seed + repeat)
    models = fit_outcome_models(prep, config, design, treated_leaves, folds=folds)
    if turnout is not None:
        y = prep.train.loc[ctrl, config.turnout_column].to_numpy(dtype=float)
        turnout = replace(turnout, fold_boosters=fit_fold_boosters(
            prep.X_train[ctrl], y, folds[ctrl], config.turnout.params, config.split.seed))
    return folds, models, turnout


def fit_and_evaluate(
    frame: pd.DataFrame, config: RunConfig, progress: Progress = _noop, *, programs: Sequence[ProgramRows] = (),
) -> FitResult:
    """Fit all models of a run on ``frame`` (validated) and evaluate them on the hold-out.

    ``programs``: past programs' rows (:func:`training.programs.load_programs`), added to
    the training rows with their recorded propensities (:mod:`training.programs`).
    """
    arms = config.arm_labels
    control = config.control_label
    seed = config.split.seed
    binary = config.outcome.kind == "turnout"
    config = config.scaled_to(rows_per_label(frame[config.arm_column].astype(str).value_counts(), programs, config))

    progress("split and feature transform")
    experiment = prepare(frame, config)
    contact = fit_contact_rate(experiment, config)  # P(reached | attempted) when the log has the flags
    rows = with_programs(experiment, list(programs), config)
    design = Design(arms, control, config.design_shares(),
                    min_propensity=overlap_floor(rows, arms, control, config.uplift.min_propensity))
    prep, propensities = rows.prepared, rows.propensities
    a_tr, a_te = prep.assigned("train", config), prep.assigned("test", config)
    y_tr = prep.train[config.outcome.column].to_numpy(dtype=float)
    y_te = prep.test[config.outcome.column].to_numpy(dtype=float)
    groups_tr = prep.train[config.group_column].to_numpy()

    progress("turnout model" if config.has_turnout else "no turnout model (support outcome without one)")
    ctrl = (a_tr == control) & rows.experiment  # the turnout model is the experiment's
    turnout = fit_turnout_model(prep, config, ctrl) if config.has_turnout else None
    p_test = turnout.predict(prep.X_test) if turnout is not None else None

    progress("cross-fitted outcome models")
    shapes = [fit_outcome_models(prep, config, design, leaves) for leaves in config.uplift.treated_leaves_options()]

    progress("learner, size, turnout-score and outcome-shape selection (grouped CV)")
    choice = select_outcome_shape(shapes, prep.X_train, a_tr, y_tr, prep.folds, config, design, turnout, propensities)
    del shapes  # the other shapes' outcome models (plain and nested) are not needed past the choice
    outcome_models, selection_tables = choice.models, choice.selection_tables
    mu = outcome_models.mu
    contrasts = arm_contrasts(a_tr, y_tr, mu, design, propensities)
    arm_effects = training_arm_effects(contrasts, groups_tr)
    selection = selection_tables[config.uplift.selection_metric]
    best = {name: selection.loc[name, "mean"].idxmax() for name in config.uplift.learners}  # (size, score)
    chosen = str(selection["mean"].idxmax()[0])
    reach = contact.model.arm_boosters(config.arm_channels) if contact is not None else {}
    flags = contact.train_flags.padded(len(prep.train)) if contact is not None else None  # programs: not attempted
    candidates = arm_candidates(config, learner=chosen, size=best[chosen][0], turnout_score=bool(best[chosen][1]),
                                has_turnout=turnout is not None, reach_arms=list(reach))

    repeats = config.split.repeats_for(len(prep.train))
    progress(f"each arm against the references (grouped CV, {repeats} repeat{'s' if repeats > 1 else ''})")
    records = []
    for r in range(repeats):
        if r == 0:
            folds_r, models_r, turnout_r, contrasts_r = prep.folds, outcome_models, turnout, contrasts
        else:
            folds_r, models_r, turnout_r = repeat_inputs(prep, config, design, outcome_models.treated_leaves,
                                                         turnout, r, ctrl)
            contrasts_r = arm_contrasts(a_tr, y_tr, models_r.mu, design, propensities)
        records += arm_cv_records(candidates, prep.X_train, a_tr, y_tr, contrasts_r, models_r.nested, folds_r,
                                  turnout_r, config, design, r, propensities, flags)
    arm_selection = one_standard_error_choice(pd.DataFrame(records), simplicity_order([c.name for c in candidates]),
                                              config.uplift.selection_metric, config.split.folds)
    served = chosen_candidates(arm_selection)

    # The turnout score of the training rows: cross-fitted for control rows (the turnout
    # model saw them); treated rows were never in the turnout model's training set.
    score_tr = None
    if turnout is not None:
        score_tr = turnout.predict(prep.X_train)
        score_tr[ctrl] = turnout.oof

    progress("refit the served model, the learners and the references")
    test_scores: dict[str, pd.DataFrame] = {}
    learners: dict[str, UpliftLearner] = {}
    for name in config.uplift.learners:
        size, with_score = best[name]
        X_fit = with_turnout_score(prep.X_train, score_tr) if with_score else prep.X_train
        X_eval = with_turnout_score(prep.X_test, p_test) if with_score else prep.X_test
        learners[name] = make_learner(name, config, design, config.uplift.final_candidates()[size])
        test_scores[name] = learners[name].fit(X_fit, a_tr, y_tr, mu, propensities).predict(X_eval)
    scored = any(c.turnout_score for c in candidates if c.name in served.values())
    # The chosen learner is the model candidate, fitted above on the same input unless the
    # served layout adds a held-constant score column the learner did not see.
    same_input = best[chosen][1] or not scored
    fitted = fit_candidates(candidates, prep.X_train, score_tr, a_tr, y_tr, mu, config, design, score_column=scored,
                            propensities=propensities, fitted={MODEL: learners[chosen]} if same_input else None,
                            reach=reach)
    by_name = {c.name: c for c in candidates}
    for name, learner in fitted.items():
        if name != MODEL:  # the model's hold-out scores are its learner's, above; a candidate's arms only
            scores = learner.predict(by_name[name].frame(prep.X_test, p_test, score_column=scored))
            test_scores[name] = scores[[arm for arm in arms if by_name[name].is_for(arm)]]
    uplift = {arm: fitted[served[arm]].boosters_[arm] for arm in arms}
    test_scores[SERVED] = pd.DataFrame(
        {arm: uplift[arm].predict(by_name[served[arm]].frame(prep.X_test, p_test, score_column=scored))
         for arm in arms}, index=prep.X_test.index)
    ref_t = DefaultTLearner(arms, control, binary, seed).fit(prep.X_train, a_tr, y_tr, propensities)
    test_scores["t_default"] = ref_t.predict(prep.X_test)
    if p_test is not None:
        test_scores["turnout_05"] = pd.DataFrame({a: turnout_05_score(p_test) for a in arms})
    test_scores["random"] = pd.DataFrame({a: random_score(len(prep.X_test), seed + i) for i, a in enumerate(arms)})

    progress("hold-out evaluation")
    groups_te = prep.test[config.group_column].to_numpy()
    holdout = holdout_table(test_scores, y_te, a_te, arms, control)
    arm_metrics, deciles, ate_rows, policy = {}, {}, [], []
    for arm in arms:
        r = (a_te == arm) | (a_te == control)
        t = (a_te[r] == arm).astype(float)
        weights = cluster_bootstrap_weights(groups_te[r], config.gates.qini_bootstrap, seed)  # one draw per arm
        for ranking, scores in test_scores.items():
            if arm not in scores.columns:
                continue
            table = holdout_policy_gain(scores[arm].to_numpy()[r], y_te[r], t, groups_te[r], config.audit.budgets,
                                        weights=weights)
            policy.append(table.assign(ranking=ranking, arm=arm))
        served_scores = test_scores[SERVED][arm].to_numpy()[r]
        arm_metrics[arm] = uplift_metrics(served_scores, y_te[r], t, groups_te[r], config.gates.qini_bootstrap, seed)
        deciles[arm] = decile_table(served_scores, y_te[r], t)
        dim = difference_in_means(y_te[r], t, groups_te[r], config.gates.qini_bootstrap, seed)
        ate_rows.append({
            "arm": arm, "predicted_ate": float(test_scores[SERVED][arm].mean()), "observed_ate": dim.estimate,
            "observed_low": dim.low, "observed_high": dim.high,
        })
    ate = pd.DataFrame(ate_rows)
    ate["consistent"] = (ate.predicted_ate >= ate.observed_low) & (ate.predicted_ate <= ate.observed_high)

    turnout_eval, calibration = {}, pd.DataFrame(columns=["decile", "n", "predicted", "observed"])
    if turnout is not None:
        ctrl_te = a_te == control
        y_turn_te = prep.test[config.turnout_column].to_numpy(dtype=float)
        turnout_eval = turnout_metrics(p_test[ctrl_te], y_turn_te[ctrl_te])
        turnout_eval["oof_calibration_gap"] = turnout.oof_gap
        turnout_eval["recalibrated"] = float(turnout.calibration is not None)
        calibration = calibration_table(p_test[ctrl_te], y_turn_te[ctrl_te])

    arm_infos = [ArmInfo(a, s.channel.value, s.resolved_delivery.value, s.cost) for a, s in config.arms.items()]
    model = ScoringModel(
        pipeline=prep.pipeline,
        turnout=turnout.booster if turnout is not None else None,
        uplift=uplift,
        arms=arm_infos,
        control_label=control,
        id_column=config.id_column,
        outcome={"column": config.outcome.column, "kind": config.outcome.kind},
        calibration=turnout.calibration if turnout is not None else None,
        turnout_score_feature=scored,
    ).fit_drift_reference(prep.X_train)  # the training population, for drift (features/drift.py)
    if contact is not None:
        model.contact_rate, model.contact_rate_info = contact.model.boosters_, contact.model.info_
    result = FitResult(
        model=model, learner=chosen, final_size=str(best[chosen][0]),
        turnout_score_feature=bool(best[chosen][1]), selection=selection,
        selection_tables=selection_tables, holdout=holdout,
        arm_metrics=arm_metrics, ate=ate, deciles=deciles, turnout=turnout_eval, calibration=calibration,
        test_scores=test_scores, prepared=prep, contact_rate=contact,
        nuisance_losses=outcome_models.losses, arm_effects=arm_effects, outcome_shapes=choice.shapes,
        arm_selection=arm_selection, served=served, cv_repeats=repeats,
        holdout_policy=pd.concat(policy, ignore_index=True)[["ranking", "arm", "budget", "gain", "low", "high", "se"]],
        constant_arms=[arm for arm in arms if is_constant(uplift[arm])],
        selection_metric_name=config.uplift.selection_metric, budgets=list(config.audit.budgets),
        programs=[{"name": p.name, "design": p.design, "rows": len(p.frame), "held_out": rows.dropped[p.name]}
                  for p in programs],
    )
    result.gates = evaluate_gates(result)
    return result


def evaluate_gates(result: FitResult) -> dict[str, dict]:
    """The promotion gates, computed at training time and logged with the run.

    - ``qini_best_arm``: the served ranking of the best arm beats random on the hold-out
      (Qini and its bootstrap interval above 0);
    - ``beats_constant``: grouped CV found, for at least one arm, a ranking better than
      that arm's average effect for everyone (the constant reference) by more than one
      standard error; otherwise the model serves each arm's average effect and the gate
      says so;
    - ``ate_consistency``: every arm's predicted average effect lies in the hold-out's
      interval of the difference in means;
    - ``validation``: the input passed validation.
    """
    best_arm = max(result.arm_metrics, key=lambda a: result.arm_metrics[a]["qini"])
    best = result.arm_metrics[best_arm]
    inconsistent = result.ate.loc[~result.ate.consistent, "arm"].tolist()
    varying = [arm for arm in result.arm_metrics if arm not in result.constant_arms]
    return {
        "qini_best_arm": {
            "passed": bool(best["qini"] > 0 and best["qini_low"] > 0),
            "detail": f"best arm {best_arm!r}: Qini {best['qini']:.6f}, 95% CI "
                      f"[{best['qini_low']:.6f}, {best['qini_high']:.6f}]",
        },
        "beats_constant": {
            "passed": bool(varying),
            "detail": (f"grouped CV ranks voters better than the arm's average effect for {varying}"
                       + (f"; {result.constant_arms} serve their average effect" if result.constant_arms else ""))
            if varying else "does not beat the constant-effect reference on grouped CV: effect heterogeneity is "
                            "not detectable at this size, and every arm serves its average effect",
        },
        "ate_consistency": {
            "passed": not inconsistent,
            "detail": "predicted ATE of every arm within the bootstrap CI of the difference in means"
            if not inconsistent else f"predicted ATE outside the observed CI for {inconsistent}",
        },
        "validation": {"passed": True, "detail": "input data passed validation"},
    }
