"""Per arm, the served uplift model against the references a campaign already has.

The candidates of one arm, simplest first (:func:`arm_candidates`):

``constant``
    The arm's average effect for every voter: the doubly-robust mean of its AIPW scores.
    Every voter is tied, so it ranks as random targeting does; a plan on it is "send
    the best arm to everyone the budget reaches".
``turnout_05``
    The average effect times the fixed shape ``0.5 - |p - 0.5|`` of the turnout score
    ``p``: the rule "contact the voters whose turnout is near 50%" as a campaign applies
    it, nothing learned but each arm's level (:class:`training.learners.TurnoutMidRule`).
``turnout_shape``
    The average effect times a shape of the calibrated turnout score alone, learned
    on the training folds (the mobilization literature's "mid-propensity voters move
    most", with the shape learned rather than assumed).
``turnout_05_reach``
    The rule times each voter's chance of being reached on the arm's channel, for the
    arms whose contact log says who was reached (:mod:`training.contact_rate`): an
    attempt moves only the voters it reaches, so "voters near 50% whom we can reach"
    (:class:`training.learners.TurnoutMidReachRule`: the rule's trees continued to the
    rule times the contact rate). Nothing is learned from the outcomes but each arm's
    level; the contact-rate model is refitted without the held-out fold in CV.
``turnout_05_boosted``
    The rule continued by ``uplift.arm_rounds`` trees per arm on the voter features (and
    the score), each arm on its own targets, as the turnout shape is below: where an
    arm's effect is the rule's times something the features carry (whether a voter can
    be reached, the household's size), this keeps the rule's order and adds that.
``turnout_shape_boosted``
    The turnout shape continued by ``uplift.arm_rounds`` trees per arm on the voter
    features (and the score), each arm on its own targets: it serves the turnout shape
    where the features add nothing and departs from it only as far as an arm's data
    carry, which a model grown from scratch on every feature does not.
``model``
    The model grouped CV chose among the learners and sizes (:mod:`training.selection`).
``model_per_arm``
    The same model with arm-specific trees boosted on its pooled shape
    (``uplift.arm_rounds``), so an arm's ranking can depart from the pooled one.

Each is one LightGBM ensemble per arm, fitted by the same learner machinery on inputs
held constant but for the ones it may use (:func:`training.learners.base.held_constant`),
so any of them explains itself with exact additive SHAP values. Grouped CV, repeated
over several fold seeds, scores every candidate per arm and fold;
:func:`one_standard_error_choice` serves the simplest candidate within one standard
error of the best. The turnout reference's three forms, the fixed rule, the rule among
the voters an attempt reaches and the learned shape, are equally simple (each learns from
the outcomes one level per arm, or a shape of the turnout score alone): of them, the
better in CV is the one that counts (:func:`simplicity_order`); so for the two
continuations on the features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.config import GBMParams, RunConfig
from training.contact_rate import ContactFlags, ContactRateModel
from training.learners import Design, TurnoutMidReachRule, TurnoutMidRule, UpliftLearner
from training.learners.base import held_constant
from training.selection import ArmContrast, fold_metrics, make_learner, rows_of, with_turnout_score
from training.turnout import TurnoutModel

CONSTANT, TURNOUT_SHAPE, MODEL, MODEL_PER_ARM = "constant", "turnout_shape", "model", "model_per_arm"
TURNOUT_SHAPE_BOOSTED = "turnout_shape_boosted"
TURNOUT_05 = TurnoutMidRule.name
TURNOUT_05_BOOSTED = f"{TURNOUT_05}_boosted"
TURNOUT_05_REACH = TurnoutMidReachRule.name
# the turnout reference: fixed, fixed among the voters an attempt reaches, and learned (each
# learns nothing from the outcomes but one level per arm, or a shape of the turnout score
# alone); then the fixed and the learned one continued on the features
EQUALLY_SIMPLE = ((TURNOUT_05, TURNOUT_SHAPE, TURNOUT_05_REACH), (TURNOUT_05_BOOSTED, TURNOUT_SHAPE_BOOSTED))
REFERENCE_LEARNER = "dr"  # the references' level is the doubly-robust average effect


@dataclass(frozen=True)
class ArmCandidate:
    """One way to score an arm: a learner, its final models and the inputs they may use."""

    name: str
    learner: str
    final: GBMParams
    features: bool  # the voter features (else held constant)
    turnout_score: bool  # the turnout score (else absent, or held constant)
    arm_rounds: int = 0  # arm-specific trees on the pooled shape
    arm_features: bool = False  # the arm-specific trees see the voter features the pooled shape does not
    arms: frozenset[str] | None = None  # the arms it is a candidate for (None: every arm)

    def is_for(self, arm: str) -> bool:
        """Whether this is a candidate of ``arm``."""
        return self.arms is None or arm in self.arms

    @property
    def pooled_key(self) -> tuple:
        """Candidates with equal keys share one pooled fit (they differ in arm-specific trees only)."""
        return self.learner, self.final, self.features, self.turnout_score

    def frame(self, X: pd.DataFrame, score: np.ndarray | None, *, score_column: bool = False,
              pooled: bool = False) -> pd.DataFrame:
        """This candidate's input from the features ``X`` and the turnout ``score``.

        ``score_column`` asks for the served model's layout, which carries the turnout
        score as a column: a candidate that does not use it sees it held constant.
        ``pooled`` asks for the pooled shape's input (without the features that only
        the arm-specific trees see).
        """
        out = X if self.features or (self.arm_features and not pooled) else held_constant(X)
        if self.turnout_score:
            return with_turnout_score(out, score)
        return with_turnout_score(out, np.full(len(X), 0.5)) if score_column else out


def arm_candidates(
    config: RunConfig, *, learner: str, size: str, turnout_score: bool, has_turnout: bool,
    reach_arms: Sequence[str] = (),
) -> list[ArmCandidate]:
    """The candidates of every arm, simplest first, around the model grouped CV chose.

    ``reach_arms``: the arms with a contact-rate model (``ContactRateModel.arm_boosters``), which have
    the ``turnout_05_reach`` candidate when ``turnout_05`` is a reference.
    """
    spec = config.uplift
    reference = spec.final.model_copy(update=spec.reference_size.model_dump())
    out = []
    if CONSTANT in spec.references:
        out.append(ArmCandidate(CONSTANT, REFERENCE_LEARNER, reference, features=False, turnout_score=False))
    arm_specific = spec.pool_arms and spec.arm_rounds > 0
    shapes = [(name, fitter) for name, fitter in ((TURNOUT_05, TURNOUT_05), (TURNOUT_SHAPE, REFERENCE_LEARNER))
              if name in spec.references and has_turnout]
    for name, fitter in shapes:
        out.append(ArmCandidate(name, fitter, reference, features=False, turnout_score=True))
    if reach_arms and TURNOUT_05 in spec.references and has_turnout:
        out.append(ArmCandidate(TURNOUT_05_REACH, TURNOUT_05_REACH, reference, features=True, turnout_score=True,
                                arms=frozenset(reach_arms)))
    for name, fitter in shapes if arm_specific else ():
        out.append(ArmCandidate(f"{name}_boosted", fitter, reference, features=False, turnout_score=True,
                                arm_rounds=spec.arm_rounds, arm_features=True))
    final = spec.final_candidates()[size]
    out.append(ArmCandidate(MODEL, learner, final, features=True, turnout_score=turnout_score))
    if arm_specific:
        out.append(ArmCandidate(MODEL_PER_ARM, learner, final, features=True, turnout_score=turnout_score,
                                arm_rounds=spec.arm_rounds))
    return out


def fit_candidates(
    candidates: Sequence[ArmCandidate],
    X: pd.DataFrame,
    score: np.ndarray | None,
    assigned: np.ndarray,
    y: np.ndarray,
    mu: dict[str, np.ndarray],
    config: RunConfig,
    design: Design,
    *,
    score_column: bool = False,
    propensities: pd.DataFrame | None = None,
    fitted: dict[str, UpliftLearner] | None = None,
    reach: Mapping[str, lgb.Booster] | None = None,
) -> dict[str, UpliftLearner]:
    """Every candidate fitted on ``X`` (candidates that differ only in arm rounds share the pooled fit).

    ``propensities``: each row's probability of every label (:class:`Design`); default: the design's shares.
    ``fitted``: candidate name -> a learner already fitted on exactly that candidate's
    input (:meth:`ArmCandidate.frame`), used instead of fitting it again.
    ``reach``: arm -> its contact-rate booster (``ContactRateModel.arm_boosters``), for ``turnout_05_reach``.
    """
    pooled: dict[tuple, UpliftLearner] = {}
    out = {}
    for c in candidates:
        if c.name in (fitted or {}) and not c.arm_rounds:
            pooled.setdefault(c.pooled_key, fitted[c.name])
    for c in candidates:
        Xc = c.frame(X, score, score_column=score_column)
        key = c.pooled_key
        if key not in pooled:
            Xp = c.frame(X, score, score_column=score_column, pooled=True) if c.arm_features else Xc
            learner = (TurnoutMidReachRule(design, c.final, seed=config.split.seed, reach=reach or {})
                       if c.learner == TURNOUT_05_REACH else make_learner(c.learner, config, design, c.final))
            pooled[key] = learner.fit(Xp, assigned, y, mu, propensities)
        out[c.name] = (pooled[key].with_arm_rounds(Xc, assigned, y, mu, c.arm_rounds, propensities) if c.arm_rounds
                       else pooled[key])
    return out


def arm_cv_records(
    candidates: Sequence[ArmCandidate],
    X: pd.DataFrame,
    assigned: np.ndarray,
    y: np.ndarray,
    contrasts: dict[str, ArmContrast],
    nested_mu: dict[int, dict[str, np.ndarray]],
    folds: np.ndarray,
    turnout: TurnoutModel | None,
    config: RunConfig,
    design: Design,
    repeat: int,
    propensities: pd.DataFrame | None = None,
    flags: ContactFlags | None = None,
) -> list[dict]:
    """Every candidate's held-out metrics per arm and fold of one grouped-CV repeat.

    As in :func:`training.selection.cv_fold_scores`: fitted without fold ``k``, from
    outcome models, a turnout model and a contact-rate model (on the contact ``flags``
    of the rows, for ``turnout_05_reach``) that never saw it, judged on fold ``k``, each
    row with its propensities (``propensities``; default: the design's shares).
    """
    records = []
    needs_reach = flags is not None and any(c.learner == TURNOUT_05_REACH for c in candidates)
    for k in np.unique(folds):
        fit_rows, eval_rows = folds != k, folds == k
        score = turnout.predict_without_fold(int(k), X) if turnout is not None else None
        reach = None
        if needs_reach:
            model = ContactRateModel(config.contact_rate.params, config.split.seed)
            reach = model.fit(X[fit_rows], flags.subset(fit_rows)).arm_boosters(config.arm_channels)
        fitted = fit_candidates(
            candidates, X[fit_rows], None if score is None else score[fit_rows], assigned[fit_rows], y[fit_rows],
            nested_mu[int(k)], config, design, propensities=rows_of(propensities, fit_rows), reach=reach,
        )
        for c in candidates:
            scores = fitted[c.name].predict(c.frame(X[eval_rows], None if score is None else score[eval_rows]))
            for arm, metric, value in fold_metrics(scores, eval_rows, y, contrasts, config.audit.budgets):
                if c.is_for(arm):
                    records.append({"candidate": c.name, "repeat": repeat, "fold": int(k), "arm": arm,
                                    "metric": metric, "value": value})
    return records


def simplicity_order(names: Sequence[str]) -> list[tuple[str, ...]]:
    """Candidate ``names`` (simplest first) in tiers of equal simplicity (:data:`EQUALLY_SIMPLE`)."""
    tiers: list[tuple[str, ...]] = []
    for name in names:
        group = next((g for g in EQUALLY_SIMPLE if name in g), ())
        if tiers and tiers[-1][0] in group:
            tiers[-1] += (name,)
        else:
            tiers.append((name,))
    return tiers


def _simplest_within_one_se(
    wide: pd.DataFrame, n_folds: int, tiers: Sequence[tuple[str, ...]]
) -> tuple[str, str, pd.Series, pd.Series]:
    """The simplest column of ``wide`` (rows: folds) within one SE of the best mean; the best; gaps and SEs.

    ``tiers``: the columns simplest first, in tuples of equal simplicity; within the first
    tier that has a column within one SE, the one with the best mean is chosen.
    """
    best = wide.mean().idxmax()
    diffs = wide[best].to_numpy()[:, None] - wide.to_numpy()
    gap = pd.Series(diffs.mean(axis=0), index=wide.columns)
    se = pd.Series(diffs.std(axis=0, ddof=1) / np.sqrt(n_folds) if len(diffs) > 1 else np.zeros(len(gap)),
                   index=wide.columns)
    for tier in tiers:
        within = [c for c in tier if c in wide.columns and gap[c] <= se[c]]
        if within:
            return max(within, key=lambda c: wide[c].mean()), best, gap, se
    raise AssertionError("the best candidate is within one SE of itself")  # pragma: no cover


def one_standard_error_choice(
    records: pd.DataFrame, order: Sequence[str | tuple[str, ...]], metric: str, n_folds: int
) -> pd.DataFrame:
    """Per arm, the simplest candidate whose mean CV score is within one standard error of the best one's.

    The standard error is that of the paired per-fold difference from the best
    candidate, counted over the ``n_folds`` folds of one repeat: the folds of every
    repeat share one sample, so repeating the split steadies the mean but does not
    add independent data. ``stability`` is the share of repeats whose own one-SE
    choice is the arm's choice: the selection's noise, measured.

    Parameters
    ----------
    records : DataFrame
        Columns ``candidate``, ``repeat``, ``fold``, ``arm``, ``metric``, ``value``.
    order : sequence of str or tuple of str
        Candidates, simplest first; a tuple holds candidates of equal simplicity, of
        which the one with the better mean is chosen (:func:`simplicity_order`).
    metric : str
        The metric that chooses (the other metrics are reported beside it).
    n_folds : int

    Returns
    -------
    DataFrame
        One row per arm and candidate: ``value`` and ``se`` (its mean and standard error
        on ``metric``), ``gap`` and ``gap_se`` (below the best, paired), ``best``,
        ``chosen``, ``stability`` and every metric's mean.
    """
    tiers = [(o,) if isinstance(o, str) else tuple(o) for o in order]
    flat = [c for tier in tiers for c in tier]
    part = records[records.metric == metric]
    means = records.groupby(["arm", "candidate", "metric"], sort=False).value.mean().unstack("metric")
    rows = []
    for arm in part.arm.unique():
        wide = part[part.arm == arm].pivot_table(index=["repeat", "fold"], columns="candidate", values="value")
        wide = wide[[c for c in flat if c in wide.columns]]
        chosen, best, gap, gap_se = _simplest_within_one_se(wide, n_folds, tiers)
        repeats = wide.index.get_level_values("repeat")
        per_repeat = [_simplest_within_one_se(wide[repeats == r], n_folds, tiers)[0] for r in np.unique(repeats)]
        for c in wide.columns:
            rows.append({
                "arm": arm, "candidate": c, "value": float(wide[c].mean()),
                "se": float(wide[c].std(ddof=1) / np.sqrt(n_folds)) if len(wide) > 1 else 0.0,
                "gap": float(gap[c]), "gap_se": float(gap_se[c]), "best": c == best, "chosen": c == chosen,
                "stability": float(np.mean([p == chosen for p in per_repeat])) if c == chosen else np.nan,
                **{f"cv_{m}": float(means.loc[(arm, c), m]) for m in means.columns},
            })
    return pd.DataFrame(rows)


def chosen_candidates(table: pd.DataFrame) -> dict[str, str]:
    """Arm -> the candidate it serves, from :func:`one_standard_error_choice`'s table."""
    return dict(zip(table.loc[table.chosen, "arm"], table.loc[table.chosen, "candidate"], strict=True))


def is_constant(booster: lgb.Booster) -> bool:
    """Whether ``booster`` predicts one value for every voter (no tree splits)."""
    return all(tree["num_leaves"] <= 1 for tree in booster.dump_model()["tree_info"])
