"""Plan a contact program: whom to contact, with which arm, within one budget.

Given a segment of voters, a scoring model, each arm's cost per attempt, a budget and
optional per-channel capacities (attempts available), choose for every voter at most
one arm so that the expected incremental outcome is as large as possible.

The pieces: what the program costs (:mod:`serving.plan_costs`), each voter's expected
gain per arm (:mod:`serving.plan_gains`), the solver (:mod:`serving.allocation`), the
interval of the plan's total (:mod:`serving.plan_interval`) and the plan file
(:mod:`serving.plan_file`). This module puts them together into a :class:`ContactPlan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from serving.allocation import Allocation, Allocator
from serving.bundle import ScoringModel
from serving.plan_costs import PlanError, ProgramCosts
from serving.plan_design import DesignSpec, design_fingerprint, randomize
from serving.plan_gains import ExpectedGains, expected_gains
from serving.plan_interval import gain_interval
from serving.voters import id_strings

SUPPRESSION_KEYS = ("contacted", "randomized_out", "not_eligible", "no_positive_gain", "over_budget")


@dataclass
class ContactPlan:
    """A planned program: the contacts in priority order and what it is expected to gain.

    Attributes
    ----------
    table : DataFrame
        One row per contacted voter, highest expected gain per unit cost first:
        ``voter_id``, ``arm``, ``channel``, ``expected_gain``, ``p_reached``, ``cost``.
    voters : int
        Voters considered.
    budget, spent : float
    total_expected_gain : float
    interval : (float, float) or None
        95% interval of the total (see :func:`serving.plan_interval.gain_interval`).
    allocation : Allocation
        Solver certificate (LP bound and gap) of the targeting.
    suppression : dict of str to int
        Every voter once: ``contacted``, ``randomized_out`` (targeted, but the design held
        them out or its exploration drew control), ``not_eligible`` (their only
        positive-gain arms are not allowed), ``no_positive_gain``, ``over_budget`` (a
        positive allowed gain, but the budget or a capacity went to better uses).
    not_allowed : dict of str to int
        (voter, arm) pairs not allowed, by reason code when reasons were given.
    sensitivity : DataFrame or None
        What the plan would lose if an arm's average effect sat at either end of its
        interval (:func:`serving.plan_sensitivity.level_sensitivity`), when asked for.
    assignment : DataFrame or None
        One row per voter considered, in the plan file's order (the contacts first, in
        priority order): ``voter_id``, ``assigned`` (arm label or ``control``),
        ``holdout``, ``p_<slug>`` per arm and ``p_control`` (the design's probabilities),
        ``gain_<slug>`` per arm (expected gain, NaN where not allowed), ``baseline``
        (predicted outcome without contact) and ``cluster`` when known.
    design : dict or None
        The randomization (:mod:`serving.plan_design`) with its fingerprint.
    randomization : dict or None
        What the design costs: the held-out voters' expected gain forgone (with its
        interval) and spend not made, the exploration's contacts, cost and gain.
    targeting_limits : (float, dict) or None
        The budget and channel capacities the solver had (less the exploration's reserve).
    """

    table: pd.DataFrame
    voters: int
    budget: float
    spent: float
    total_expected_gain: float
    interval: tuple[float, float] | None
    allocation: Allocation
    suppression: dict[str, int]
    not_allowed: dict[str, int] = field(default_factory=dict)
    outcome: str = "turnout"
    sensitivity: pd.DataFrame | None = None
    assignment: pd.DataFrame | None = None
    design: dict[str, Any] | None = None
    randomization: dict[str, Any] | None = None
    targeting_limits: tuple[float, dict[str, int | None]] | None = None

    def by_channel(self) -> dict[str, pd.DataFrame]:
        """The ordered list of each channel (call, text, mail, canvass lists)."""
        return {str(ch): part.reset_index(drop=True) for ch, part in self.table.groupby("channel", sort=True)}

    def contacts_per_arm(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.table.arm.value_counts().sort_index().items()}

    def summary(self) -> dict[str, Any]:
        """JSON-ready totals (no voter ids)."""
        per_channel = {
            ch: {"attempts": len(part), "cost": float(part.cost.sum()),
                 "expected_gain": float(part.expected_gain.sum()),
                 "expected_reached": float(part.p_reached.sum())}
            for ch, part in self.by_channel().items()
        }
        return {
            "voters": self.voters, "outcome": self.outcome, "budget": self.budget, "spent": self.spent,
            "total_expected_gain": self.total_expected_gain,
            "interval": _interval(self.interval),
            "contacts_per_arm": self.contacts_per_arm(), "channels": per_channel,
            "suppression": self.suppression, "not_allowed": self.not_allowed, "solver": self.allocation.as_dict(),
            "sensitivity": None if self.sensitivity is None else self.sensitivity.to_dict("records"),
            "design": self.design, "randomization": self.randomization,
        }


def _interval(interval: tuple[float, float] | None) -> dict[str, float] | None:
    return None if interval is None else {"low": interval[0], "high": interval[1], "level": 0.95}


def allowed_from_scores(scores: pd.DataFrame, model: ScoringModel) -> np.ndarray:
    """Eligibility mask from scores with eligibility applied: NaN ``uplift_<slug>`` = not allowed."""
    missing = [f"uplift_{a.slug}" for a in model.arms if f"uplift_{a.slug}" not in scores.columns]
    if missing:
        raise PlanError("eligibility", f"columns {missing} are missing")
    return np.column_stack([scores[f"uplift_{a.slug}"].notna().to_numpy() for a in model.arms])


def eligibility_arrays(table: pd.DataFrame, ids: np.ndarray | pd.Series,
                       model: ScoringModel) -> tuple[np.ndarray, np.ndarray]:
    """Allowed mask and reason codes (n, k) from the consent layer's eligibility table.

    ``table`` has ``voter_id``, ``eligible_<slug>`` and ``suppression_<slug>`` per arm
    (``features.consent.ConsentRules.for_voters``); rows are matched to ``ids``.
    """
    needed = ["voter_id", *(f"{p}_{a.slug}" for a in model.arms for p in ("eligible", "suppression"))]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise PlanError("eligibility", f"columns {missing} are missing")
    unique = table.drop_duplicates("voter_id")
    lookup = unique.set_index(unique.voter_id.astype(str))
    ids = pd.Index(id_strings(ids))
    unknown = ~ids.isin(lookup.index)
    if unknown.any():
        raise PlanError("eligibility", f"{int(unknown.sum())} voters have no eligibility row")
    rows = lookup.loc[ids]
    allowed = np.column_stack([rows[f"eligible_{a.slug}"].to_numpy(dtype=bool) for a in model.arms])
    reasons = np.column_stack([rows[f"suppression_{a.slug}"].to_numpy(dtype=object) for a in model.arms])
    return allowed, reasons


def plan_from_gains(
    model: ScoringModel,
    ids: np.ndarray | pd.Series,
    gains: ExpectedGains,
    budget: float,
    costs: ProgramCosts | None = None,
    reasons: np.ndarray | None = None,
    *,
    design: DesignSpec | None = None,
    clusters: pd.Series | None = None,
) -> ContactPlan:
    """Allocate the budget over voters whose expected gains are known.

    Parameters
    ----------
    model : ScoringModel
    ids : array of voter ids (n,)
    gains : ExpectedGains
        From :func:`serving.plan_gains.expected_gains` (NaN gain = arm not allowed).
    budget : float
    costs : ProgramCosts, optional
    reasons : ndarray of object (n, k), optional
        Why an arm is not allowed (consent reason codes), counted in ``not_allowed``.
    design : DesignSpec, optional
        Holdout and exploration shares and the seed (default: none, a deterministic plan).
        The exploration's expected use of the budget and of each capacity (plus a margin,
        :meth:`DesignSpec.targeting_limits`) is set aside before the targeting is solved.
    clusters : Series, optional
        Each voter's cluster (household, precinct; named after its column), carried
        into the plan file for the cluster-robust intervals of ``persuade measure``.
    """
    costs = costs or ProgramCosts()
    design = design or DesignSpec()
    ids = id_strings(ids)
    if len(ids) != len(gains):
        raise PlanError("voters", f"{len(ids)} ids but {len(gains)} rows of gains")
    duplicated = pd.Index(ids).duplicated()
    if duplicated.any():
        raise PlanError("voters", f"{int(duplicated.sum())} duplicate voter ids (a voter is planned once)")
    cost = costs.arm_costs(model)
    channels = [a.channel for a in model.arms]
    solved_budget, capacities = design.targeting_limits(np.isfinite(gains.gain), cost, channels, budget,
                                                        costs.capacities(model))
    allocation = Allocator(solved_budget, capacities).solve(gains.gain, cost, channels)
    return contact_plan(model, ids, gains, allocation, budget=budget, costs=costs, reasons=reasons, design=design,
                        clusters=clusters, targeting_limits=(solved_budget, capacities))


def contact_plan(
    model: ScoringModel,
    ids: np.ndarray,
    gains: ExpectedGains,
    allocation: Allocation,
    *,
    budget: float,
    costs: ProgramCosts,
    reasons: np.ndarray | None = None,
    design: DesignSpec | None = None,
    clusters: pd.Series | None = None,
    targeting_limits: tuple[float, dict[str, int | None]] | None = None,
) -> ContactPlan:
    """The plan of a solved targeting: the design drawn around it, the contacts and the totals.

    :func:`plan_from_gains` solves and calls this; call it directly to redraw a design
    (another seed) around the same targeting.
    """
    design = design or DesignSpec()
    ids = id_strings(ids)
    cost = costs.arm_costs(model)
    channels = np.array([a.channel for a in model.arms], dtype=object)
    labels = np.array([a.label for a in model.arms], dtype=object)
    drawn = randomize(allocation.arm, gains.gain, list(labels), design, design.resolved_seed())
    arm = drawn.assigned
    picked = np.flatnonzero(arm >= 0)
    g = gains.gain[picked, arm[picked]]
    c = cost[arm[picked]]
    order = np.lexsort((-g, -(g / c)))  # priority: gain per cost, then gain, then input order
    rows = picked[order]
    table = pd.DataFrame({
        "voter_id": ids[rows],
        "arm": labels[arm[rows]],
        "channel": channels[arm[rows]],
        "expected_gain": gains.gain[rows, arm[rows]],
        "p_reached": gains.p_reached[rows, arm[rows]],
        "cost": cost[arm[rows]],
    })
    file_order = np.r_[rows, np.setdiff1d(np.arange(len(ids)), rows)]
    assignment = drawn.frame(ids).iloc[file_order].reset_index(drop=True)
    for j, arm_info in enumerate(model.arms):
        assignment[f"gain_{arm_info.slug}"] = gains.gain[file_order, j]
    assignment["baseline"] = np.nan if gains.baseline is None else gains.baseline[file_order]
    described = {**drawn.description, "id_column": model.id_column, "outcome": dict(model.outcome),
                 "cluster_column": None if clusters is None else str(clusters.name)}
    if clusters is not None:
        assignment["cluster"] = np.asarray(clusters.astype(str))[file_order]
    described["fingerprint"] = design_fingerprint(
        described, assignment.voter_id.to_numpy(), assignment[described["probabilities"]].to_numpy())
    held_arm = np.where(drawn.holdout, allocation.arm, -1)
    held = np.flatnonzero(held_arm >= 0)
    explored = np.flatnonzero(drawn.explored & (arm >= 0))
    randomization = {
        "held_out": {"voters": len(held), "expected_gain_forgone": float(gains.gain[held, held_arm[held]].sum()),
                     "interval": _interval(gain_interval(model, gains, held_arm)) if len(held) else None,
                     "cost_not_spent": float(cost[held_arm[held]].sum())},
        "explored": {"voters": int(drawn.explored.sum()), "contacts": len(explored),
                     "cost": float(cost[arm[explored]].sum()),
                     "expected_gain": float(gains.gain[explored, arm[explored]].sum())},
        "expected_spend": float(np.nansum(drawn.propensity[:, :-1] * cost)),
    }
    return ContactPlan(
        table=table, voters=len(ids), budget=float(budget), spent=float(c.sum()),
        total_expected_gain=float(g.sum()), interval=gain_interval(model, gains, arm), allocation=allocation,
        suppression=_suppression(gains, allocation.arm >= 0, arm >= 0),
        not_allowed=_not_allowed(gains, reasons), outcome=model.outcome.get("kind", "turnout"),
        assignment=assignment, design=described, randomization=randomization,
        targeting_limits=targeting_limits,
    )


def _suppression(gains: ExpectedGains, targeted: np.ndarray, contacted: np.ndarray) -> dict[str, int]:
    """Every voter once (see :class:`ContactPlan`)."""
    n = len(gains)
    with np.errstate(invalid="ignore"):
        positive_any = (np.nan_to_num(gains.itt, nan=-1.0) > 0).any(axis=1) if n else np.zeros(0, bool)
        positive_allowed = (np.nan_to_num(gains.gain, nan=-1.0) > 0).any(axis=1) if n else np.zeros(0, bool)
    rest = ~contacted & ~targeted
    counts = {
        "contacted": int(contacted.sum()),
        "randomized_out": int((targeted & ~contacted).sum()),
        "not_eligible": int((rest & ~positive_allowed & positive_any).sum()),
        "over_budget": int((rest & positive_allowed).sum()),
    }
    counts["no_positive_gain"] = n - sum(counts.values())
    return {k: counts[k] for k in SUPPRESSION_KEYS}


def _not_allowed(gains: ExpectedGains, reasons: np.ndarray | None) -> dict[str, int]:
    blocked = np.isnan(gains.gain)
    if not blocked.any():
        return {}
    if reasons is None:
        return {"not_allowed": int(blocked.sum())}
    codes, counts = np.unique(np.asarray(reasons, dtype=object)[blocked].astype(str), return_counts=True)
    return {str(k): int(v) for k, v in zip(codes, counts, strict=True)}


def plan_contacts(
    model: ScoringModel,
    voters: pd.DataFrame,
    budget: float,
    costs: ProgramCosts | None = None,
    allowed: np.ndarray | None = None,
    reasons: np.ndarray | None = None,
    allow_missing: bool = False,
    *,
    design: DesignSpec | None = None,
) -> ContactPlan:
    """Plan a program for a segment of voters (id column and the model's features).

    Parameters
    ----------
    model : ScoringModel
    voters : DataFrame
        The model's id column and raw input features (other columns are ignored).
    budget : float
        Total cost allowed, in the units of the costs (GGL: postcards).
    costs : ProgramCosts, optional
        Costs per arm and limits per channel; default: the model's configured costs.
    allowed : ndarray of bool (n, k), optional
        Eligibility per voter and arm (False = may not be used), e.g. from the consent
        layer; :func:`allowed_from_scores` reads it off scores with NaN uplift.
    reasons : ndarray of object (n, k), optional
        Reason codes of the arms not allowed.
    allow_missing : bool
        Let missing feature values through (LightGBM handles them).
    design : DesignSpec, optional
        Holdout and exploration (see :func:`plan_from_gains`). The model's group column,
        when ``voters`` has it, is carried into the plan as each voter's cluster.
    """
    if model.id_column not in voters.columns:
        raise PlanError("voters", f"the id column {model.id_column!r} is missing")
    X = model.transform(voters, allow_missing=allow_missing)
    gains = expected_gains(model, X, costs, allowed)
    group = model.metadata.get("group_column")
    clusters = voters[group].reset_index(drop=True) if group and group in voters.columns else None
    return plan_from_gains(model, voters[model.id_column].to_numpy(), gains, budget, costs, reasons, design=design,
                           clusters=clusters)
