"""How much a contact plan depends on each arm's average effect.

A plan chooses between arms by their expected gains per cost, and those rest on each
arm's *level* (its average effect), which the experiment measured with sampling error
(GGL's postcards, about 24,000 training voters each: 5-21% of the effect). When two arms
are close per unit of cost, that error alone can decide between postcards and calls.
This module re-plans with one arm's level at either end of its 95% interval and reports
what would change:

- ``voters_moved``: voters whose arm (or contact at all) differs from the plan;
- ``plan_value`` / ``replan_value``: the expected gain of the plan and of the re-plan
  under that scenario (the arm's gains scaled, everything else unchanged);
- ``regret``: what keeping the plan costs if the scenario is true
  (``replan_value - plan_value``), and its share of the re-plan's value. The re-plan is
  the solver's plan for the scenario, or the plan itself where that is worth more (the
  solver is optimal up to its certificate, a few voters' gain), so the regret is >= 0.

A regret share near 0 for every arm and side says the arm mix does not hinge on
levels the data cannot pin down; a large one names the arm whose average decides the
plan (test it in the field before committing the budget to it).

The levels' standard errors come from training (``metadata["arm_effects"]``, written by
``training.run``): each arm's AIPW average effect on the training voters with a
cluster-robust standard error. A scenario scales the arm's gains by
``1 +/- z * se / |ate|`` (floored at 0: at the low end of an interval that includes no
effect, the arm does nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from serving.allocation import Allocator
from serving.bundle import ScoringModel
from serving.plan_costs import PlanError, ProgramCosts
from serving.plan_gains import ExpectedGains
from serving.plan_interval import INTERVAL_Z
from serving.planning import ContactPlan

NEGLIGIBLE_REGRET = 0.01  # a regret share below this: the plan does not hinge on the arm's level
SENSITIVITY_COLUMNS = [
    "arm", "side", "scale", "voters_moved", "plan_value", "replan_value", "regret", "regret_share",
    "replan_contacts_per_arm",
]


def arm_level_errors(model: ScoringModel) -> dict[str, float]:
    """Relative standard error (``se / |ate|``) of each arm's average effect, from training.

    Raises
    ------
    PlanError
        The model was trained before arm effects were recorded.
    """
    effects: Mapping[str, Mapping[str, float]] | None = model.metadata.get("arm_effects")
    labels = [a.label for a in model.arms]
    if not effects or any(label not in effects for label in labels):
        raise PlanError("sensitivity", "the model carries no training estimate of its arms' average effects "
                                       "(metadata.arm_effects); retrain it to plan with a sensitivity table")
    return {label: float(effects[label]["se"]) / max(abs(float(effects[label]["ate"])), 1e-12) for label in labels}


def level_sensitivity(
    model: ScoringModel,
    gains: ExpectedGains,
    plan: ContactPlan,
    costs: ProgramCosts | None = None,
    z: float = INTERVAL_Z,
) -> pd.DataFrame:
    """Re-plan with each arm's level at the ends of its interval; what the plan would lose.

    Parameters
    ----------
    model : ScoringModel
        With ``metadata["arm_effects"]`` (see :func:`arm_level_errors`).
    gains : ExpectedGains
        The gains ``plan`` was solved on (same rows, same eligibility).
    plan : ContactPlan
        From :func:`serving.planning.plan_from_gains` on ``gains``.
    costs : ProgramCosts, optional
        The costs and limits ``plan`` was solved with.
    z : float
        Half-width of the interval in standard errors (default: 95%).

    Returns
    -------
    DataFrame
        One row per arm and side (``low``, ``high``), columns :data:`SENSITIVITY_COLUMNS`.
    """
    costs = costs or ProgramCosts()
    errors = arm_level_errors(model)
    cost = costs.arm_costs(model)
    channels = [a.channel for a in model.arms]
    budget, capacities = plan.targeting_limits or (plan.budget, costs.capacities(model))
    allocator = Allocator(float(budget), capacities)  # the solver's limits (the exploration's reserve set aside)
    current = plan.allocation.arm
    if len(current) != len(gains):
        raise PlanError("sensitivity", f"the plan has {len(current)} voters but the gains {len(gains)}")
    labels = [a.label for a in model.arms]
    rows = []
    for j, label in enumerate(labels):
        for side, sign in (("low", -1.0), ("high", 1.0)):
            scale = max(0.0, 1.0 + sign * z * errors[label])
            scenario = gains.gain.copy()
            scenario[:, j] *= scale
            replan = allocator.solve(scenario, cost, channels).arm
            plan_value, replan_value = _value(scenario, current), _value(scenario, replan)
            if replan_value <= plan_value + 1e-9 * max(1.0, abs(plan_value)):
                # no gain (a tie, or the solver's rounding within its certificate): nobody need move
                replan, replan_value = current, plan_value
            regret = replan_value - plan_value
            picked = replan[replan >= 0]
            rows.append({
                "arm": label, "side": side, "scale": scale,
                "voters_moved": int((replan != current).sum()),
                "plan_value": plan_value, "replan_value": replan_value, "regret": regret,
                "regret_share": regret / replan_value if replan_value > 0 else 0.0,
                "replan_contacts_per_arm": {labels[k]: int(v) for k, v in
                                            enumerate(np.bincount(picked, minlength=len(labels))) if v},
            })
    return pd.DataFrame(rows, columns=SENSITIVITY_COLUMNS)


def with_sensitivity(
    model: ScoringModel, gains: ExpectedGains, plan: ContactPlan, costs: ProgramCosts | None = None
) -> ContactPlan:
    """``plan`` with its :func:`level_sensitivity` table attached (in its summary and file)."""
    return replace(plan, sensitivity=level_sensitivity(model, gains, plan, costs))


def sensitivity_verdict(rows: Sequence[Mapping[str, Any]]) -> str:
    """One sentence on a sensitivity table (its records, as in a plan's summary).

    Names the arm and end of its interval where keeping the plan would lose most, or says
    the plan hinges on no arm's level when every regret share is below
    :data:`NEGLIGIBLE_REGRET`.
    """
    worst = max(rows, key=lambda row: row["regret_share"])
    if worst["regret_share"] < NEGLIGIBLE_REGRET:
        return (f"The arm mix does not hinge on the arms' levels: at worst the plan would lose "
                f"{worst['regret_share']:.1%} of what a re-plan would gain.")
    return (f"The plan hinges most on {worst['arm']}'s average effect: at the {worst['side']} end of its interval "
            f"the plan would lose {worst['regret_share']:.1%} of what a re-plan would gain "
            f"({worst['voters_moved']:,} voters would change).")


def _value(gain: np.ndarray, arm: np.ndarray) -> float:
    picked = np.flatnonzero(arm >= 0)
    return float(np.nansum(gain[picked, arm[picked]]))
