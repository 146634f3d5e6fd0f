"""Plan a contact program: whom to contact, with which arm, within one budget.

Given a segment of voters, a scoring model, each arm's cost per attempt, a budget and
optional per-channel capacities (attempts available), choose for every voter at most
one arm so that the expected incremental outcome is as large as possible.

Expected gain
-------------
The uplift models are intent-to-treat: fitted on *assignment*, so a phone arm's uplift
already averages over the voters the calls reached and the ones they did not. Where
the model carries a contact-rate model for the arm's channel (``ScoringModel.contact_rate``,
P(reached | attempted) learned from the contact log), and assuming a voter who is not
reached is not moved::

    ITT(x)               = attempt_rate * P_exp(reached | attempted, x) * uplift_if_reached(x)
    uplift_if_reached(x) = ITT(x) / (attempt_rate * P_exp(reached | attempted, x))
    expected_gain(x)     = P_plan(reached | x) * uplift_if_reached(x)

``P_plan`` is the experiment's contact rate unless the program expects another one:
``channels.<channel>.contact_rate`` scales each voter's P(reached) by
``contact_rate / reached_rate of the experiment`` (capped at 1). With the experiment's
rates (the default) the gain of an attempted voter is ``ITT / attempt_rate``: the
uplift of a voter who is *attempted*, which is what a call list buys. Channels without
a contact-rate model (mail; text) count as always reached: gain = ITT.

The allocation
--------------
An integer program: variables x[i, a] in {0, 1}; at most one arm per voter; total cost
within the budget; attempts per channel within its capacity; maximize the sum of
expected gains. Only pairs with a positive expected gain and an allowed arm are
variables, so a voter with no positive expected gain is never contacted and an arm
that is not allowed (eligibility mask, NaN uplift) is never chosen.

It is solved through its linear relaxation with HiGHS (``scipy.optimize.linprog``):
the relaxation's optimum is an upper bound on any plan's value. Columns are generated
(start from the best gain-per-cost pairs, price every other pair with the LP's duals,
add those with a positive reduced cost, re-solve), which gives the same optimum as the
full LP, certified by the pricing. A basic optimal solution has at most one fractional
voter per binding coupling constraint (budget, capacities); the plan keeps the LP's
integral choices and spends what those few voters leave, best gain per cost first.
The result reports the LP bound and the gap between it and the plan: a certificate,
not an estimate (at most the gain of a few voters, whatever the segment size).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema
from scipy.optimize import linprog

from features.config import Channel, ConfigError, _describe
from serving.batch import DEFAULT_CHUNK, iter_chunks
from serving.bundle import ScoringModel

INTERVAL_Z = 1.959963984540054  # two-sided 95%
MIN_P = 1e-6


class PlanError(ValueError):
    """A plan request that cannot be planned.

    Parameters
    ----------
    field : str
        What is wrong, as a request path (``costs.arms``, ``budget``, ``voters``).
    message : str
        Why; ``str(error)`` is ``"<field>: <message>"``.
    """

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


# -- program costs ------------------------------------------------------------------------
# "> 0" as OpenAPI 3.0 (BentoML's spec) spells it: minimum plus a boolean exclusiveMinimum
PositiveNumber = Annotated[float, Field(gt=0, allow_inf_nan=False),
                           WithJsonSchema({"type": "number", "minimum": 0, "exclusiveMinimum": True})]
Share = Annotated[float, Field(gt=0, le=1),
                  WithJsonSchema({"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1})]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArmCost(_Strict):
    cost: PositiveNumber = Field(description="cost of one attempt with this arm, in budget units")


class ChannelLimits(_Strict):
    capacity: int | None = Field(default=None, ge=0, description="attempts available on this channel")
    contact_rate: Share | None = Field(
        default=None,
        description="expected share of attempts that reach the voter in this program (default: as in the "
                    "experiment); needs the model's contact-rate model for the channel",
    )


class ProgramCosts(_Strict):
    """Costs per attempt by arm and limits by channel (``configs/costs.yaml``).

    An arm not listed keeps the cost of the model's run config; a channel not listed
    has no capacity limit and the experiment's contact rate.
    """

    arms: dict[str, ArmCost] = Field(default_factory=dict)
    channels: dict[Channel, ChannelLimits] = Field(default_factory=dict)

    def arm_costs(self, model: ScoringModel) -> np.ndarray:
        """Cost per attempt of each arm of ``model``, in the model's arm order."""
        labels = [a.label for a in model.arms]
        unknown = sorted(set(self.arms) - set(labels))
        if unknown:
            raise PlanError("costs.arms", f"unknown arm(s) {unknown}; the model's arms are {labels}")
        return np.array([self.arms[a.label].cost if a.label in self.arms else a.cost for a in model.arms])

    def allocator(self, model: ScoringModel, budget: float) -> Allocator:
        """The solver of a program with these costs: ``budget`` and each channel's capacity."""
        return Allocator(float(budget), {ch: lim.capacity for ch, lim in self.limits(model).items()})

    def limits(self, model: ScoringModel) -> dict[str, ChannelLimits]:
        """Limits of the model's channels (a channel the model does not use is an error)."""
        used = {a.channel for a in model.arms}
        unknown = sorted(c.value for c in self.channels if c.value not in used)
        if unknown:
            raise PlanError("costs.channels", f"the model has no arm on channel(s) {unknown}; "
                                              f"its channels are {sorted(used)}")
        return {c.value: v for c, v in self.channels.items()}


def load_costs(path: str | Path) -> ProgramCosts:
    """Read and validate a costs YAML file; errors name the key."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"costs file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return ProgramCosts.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from exc


# -- expected gains -----------------------------------------------------------------------
@dataclass
class ExpectedGains:
    """Per voter and arm (columns in the model's arm order).

    Attributes
    ----------
    itt : ndarray (n, k)
        The model's intent-to-treat uplift.
    p_reached : ndarray (n, k)
        P(reached) of an attempt in the planned program (1 where the channel has no
        contact-rate model).
    gain : ndarray (n, k)
        Expected gain of an attempt; NaN where the arm is not allowed.
    """

    itt: np.ndarray
    p_reached: np.ndarray
    gain: np.ndarray

    def __len__(self) -> int:
        return self.gain.shape[0]

    def restrict(self, allowed: np.ndarray | None) -> ExpectedGains:
        """The same gains with NaN where ``allowed`` (bool, n x k) is False."""
        if allowed is None:
            return self
        allowed = np.asarray(allowed, dtype=bool)
        if allowed.shape != self.gain.shape:
            raise PlanError("eligibility", f"expected shape {self.gain.shape} (voters x arms), got {allowed.shape}")
        return ExpectedGains(self.itt, self.p_reached, np.where(allowed, self.gain, np.nan))

    @classmethod
    def concat(cls, parts: Sequence[ExpectedGains], n_arms: int) -> ExpectedGains:
        if not parts:
            empty = np.zeros((0, n_arms))
            return cls(empty, empty.copy(), empty.copy())
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("itt", "p_reached", "gain")))


def expected_gains(
    model: ScoringModel,
    X: pd.DataFrame,
    costs: ProgramCosts | None = None,
    allowed: np.ndarray | None = None,
) -> ExpectedGains:
    """Expected gain of an attempt per voter and arm (see the module docstring).

    Parameters
    ----------
    model : ScoringModel
    X : DataFrame
        Transformed features (``model.transform``).
    costs : ProgramCosts, optional
        Its ``channels.<channel>.contact_rate`` sets the program's contact rates.
    allowed : ndarray of bool (n, k), optional
        Eligibility: False (or a NaN uplift upstream) means the arm may not be used.
    """
    limits = (costs or ProgramCosts()).limits(model)
    itt = model.predict_uplift(X)
    p_reached = np.ones_like(itt)
    factor = np.ones_like(itt)
    rates = model.predict_contact_rate(X) if len(X) else {}
    for j, arm in enumerate(model.arms):
        target = limits[arm.channel].contact_rate if arm.channel in limits else None
        if arm.channel not in model.contact_rate:
            if target is not None:
                raise PlanError(f"costs.channels.{arm.channel}.contact_rate",
                                f"the model has no contact-rate model for {arm.channel} "
                                "(its contact log had no reached flag for it)")
            continue
        info = model.contact_rate_info.get(arm.channel, {})
        p_exp = np.clip(rates[arm.channel], MIN_P, 1.0) if len(X) else np.zeros(0)
        p_plan = p_exp if target is None else np.minimum(1.0, p_exp * target / info.get("reached_rate", 1.0))
        p_reached[:, j] = p_plan
        factor[:, j] = p_plan / (p_exp * info.get("attempt_rate", 1.0))
    return ExpectedGains(itt, p_reached, itt * factor).restrict(allowed)


# -- allocation ---------------------------------------------------------------------------
@dataclass
class Allocation:
    """The chosen arm per voter and the certificate of its quality.

    Attributes
    ----------
    arm : ndarray of int (n,)
        Column of the chosen arm, -1 for no contact.
    value : float
        Total expected gain of the plan.
    bound : float
        Optimum of the linear relaxation: no plan can gain more.
    fractional : int
        Voters the relaxation split between arms (left to the final fill).
    columns : int
        (voter, arm) pairs in the final restricted LP, out of ``candidates``.
    rounds : int
        LP solves of the column generation.
    """

    arm: np.ndarray
    value: float
    bound: float
    fractional: int = 0
    candidates: int = 0
    columns: int = 0
    rounds: int = 0

    @property
    def gap(self) -> float:
        return max(self.bound - self.value, 0.0)

    @property
    def rel_gap(self) -> float:
        return self.gap / self.bound if self.bound > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": "LP relaxation (HiGHS) with column generation, integral part + fill by gain per cost",
            "value": self.value, "lp_bound": self.bound, "gap": self.gap,
            "rel_gap": self.rel_gap, "fractional_voters": self.fractional, "candidates": self.candidates,
            "columns": self.columns, "lp_solves": self.rounds,
        }


class Allocator:
    """At most one arm per voter, one budget, per-channel capacities; maximize expected gain.

    Parameters
    ----------
    budget : float
        Total cost allowed (same units as the costs).
    capacities : mapping of str to int or None, optional
        Channel -> attempts available (None or absent: no limit).
    start_factor : float
        Initial columns: the best gain-per-cost pairs costing ``start_factor * budget``.
    max_rounds : int
        Column-generation rounds before solving the full LP instead.
    min_entering : int
        Pairs added per round at least (at most half the current columns otherwise).
    tol : float
        Reduced-cost tolerance of the pricing (gain units).
    """

    def __init__(self, budget: float, capacities: Mapping[str, int | None] | None = None,
                 start_factor: float = 1.5, max_rounds: int = 30, min_entering: int = 2000, tol: float = 1e-9):
        self.budget = budget
        self.capacities = dict(capacities or {})
        self.start_factor = start_factor
        self.max_rounds = max_rounds
        self.min_entering = min_entering
        self.tol = tol

    def solve(self, gain: np.ndarray, cost: np.ndarray, channels: Sequence[str]) -> Allocation:
        """Allocate.

        Parameters
        ----------
        gain : ndarray (n, k)
            Expected gain per voter and arm; NaN = not allowed.
        cost : ndarray (k,)
            Cost per attempt of each arm (> 0).
        channels : sequence of str (k,)
            Channel of each arm.
        """
        gain = np.asarray(gain, dtype=float)
        cost = np.asarray(cost, dtype=float)
        n, k = gain.shape
        if cost.shape != (k,) or len(channels) != k:
            raise PlanError("costs", f"expected {k} arm costs and channels, got {cost.shape[0]} and {len(channels)}")
        if not np.isfinite(self.budget) or self.budget < 0:
            raise PlanError("budget", f"must be a non-negative number, got {self.budget}")
        if (cost <= 0).any():
            raise PlanError("costs", "every arm's cost must be positive")
        arm = np.full(n, -1, dtype=np.int64)
        with np.errstate(invalid="ignore"):
            vi, ai = np.nonzero(np.nan_to_num(gain, nan=-1.0) > 0)
        if len(vi) == 0 or self.budget == 0:
            return Allocation(arm, 0.0, 0.0, candidates=len(vi))
        g, c = gain[vi, ai], cost[ai]
        limited = [ch for ch in dict.fromkeys(channels) if self.capacities.get(ch) is not None]
        arm_cap = np.array([limited.index(channels[a]) if channels[a] in limited else -1 for a in range(k)])
        ch_row = arm_cap[ai]
        caps = np.array([float(self.capacities[ch]) for ch in limited])

        order = np.argsort(-(g / c), kind="stable")
        n_start = int(np.searchsorted(np.cumsum(c[order]), self.start_factor * self.budget)) + 1
        active = np.zeros(len(g), dtype=bool)
        active[order[:n_start]] = True
        rounds = 0
        while True:
            rounds += 1
            cols = np.flatnonzero(active)
            x, bound, duals = self._lp(vi[cols], g[cols], c[cols], ch_row[cols], caps, n)
            if rounds >= self.max_rounds and not active.all():
                active[:] = True
                continue
            voter_dual, budget_dual, cap_dual = duals
            reduced = g - budget_dual * c - voter_dual[vi] - np.r_[cap_dual, 0.0][ch_row]  # -1: no capacity
            entering = np.flatnonzero(~active & (reduced > self.tol))
            if not len(entering):
                break
            # the most attractive pairs first: the duals of a small LP overprice many of them
            keep = max(self.min_entering, len(cols) // 2)
            if len(entering) > keep:
                entering = entering[np.argpartition(-reduced[entering], keep)[:keep]]
            active[entering] = True

        chosen = cols[x > 1 - 1e-6]
        arm[vi[chosen]] = ai[chosen]
        fractional = np.unique(vi[cols[(x > 1e-6) & (x <= 1 - 1e-6)]])
        self._repair(arm, gain, cost, arm_cap, caps)
        self._fill(arm, vi, ai, g, cost, arm_cap, caps)
        picked = arm >= 0
        value = float(gain[picked, arm[picked]].sum())
        return Allocation(arm, value, bound, fractional=len(fractional), candidates=len(g),
                          columns=len(cols), rounds=rounds)

    def _lp(self, vi, g, c, ch_row, caps, n):
        """Solve the LP on these columns; return x, the optimum and the duals (>= 0)."""
        m = len(g)
        voters, vrow = np.unique(vi, return_inverse=True)
        rows = [sp.csr_matrix((np.ones(m), (vrow, np.arange(m))), shape=(len(voters), m)),
                sp.csr_matrix(c[None, :])]
        has_cap = ch_row >= 0
        if len(caps):
            rows.append(sp.csr_matrix((np.ones(has_cap.sum()), (ch_row[has_cap], np.flatnonzero(has_cap))),
                                      shape=(len(caps), m)))
        A = sp.vstack(rows, format="csr")
        b = np.r_[np.ones(len(voters)), self.budget, caps]
        # HiGHS presolve is very slow on this structure (one row per voter); the IPM alone is fast
        res = linprog(-g, A_ub=A, b_ub=b, bounds=(0, 1), method="highs-ipm", options={"presolve": False})
        if res.status != 0:
            raise PlanError("allocation", f"the LP did not solve: {res.message}")
        y = -np.asarray(res.ineqlin.marginals)
        voter_dual = np.zeros(n)
        voter_dual[voters] = y[: len(voters)]
        return res.x, float(-res.fun), (voter_dual, float(y[len(voters)]), y[len(voters) + 1:])

    def _repair(self, arm, gain, cost, arm_cap, caps) -> None:
        """Drop the least efficient contacts if rounding at the LP's tolerance broke a limit."""
        picked = np.flatnonzero(arm >= 0)
        worst_first = picked[np.argsort(gain[picked, arm[picked]] / cost[arm[picked]], kind="stable")]
        for row, cap in enumerate(caps):
            members = worst_first[arm_cap[arm[worst_first]] == row]
            arm[members[: max(len(members) - int(cap), 0)]] = -1
        worst_first = worst_first[arm[worst_first] >= 0]
        over = cost[arm[worst_first]].sum() - self.budget
        if over > 0:
            arm[worst_first[: int(np.searchsorted(np.cumsum(cost[arm[worst_first]]), over)) + 1]] = -1

    def _fill(self, arm, vi, ai, g, cost, arm_cap, caps) -> None:
        """Spend what the integral part of the LP left, best gain per cost first.

        Only a few voters' worth of budget is left (the fractional voters'), so this
        adds a handful of contacts; the LP bound still certifies the result.
        """
        used = arm[arm >= 0]
        left = self.budget - cost[used].sum()
        caps_left = caps - np.bincount(arm_cap[used][arm_cap[used] >= 0], minlength=len(caps))
        order = np.argsort(-(g / cost[ai]), kind="stable")
        vo, ao = vi[order], ai[order]
        while True:
            cap_ok = np.r_[caps_left >= 1, True][arm_cap[ao]]  # index -1: no capacity limit
            ok = (arm[vo] < 0) & (cost[ao] <= left + 1e-12) & cap_ok
            if not ok.any():
                return
            first = int(np.argmax(ok))
            arm[vo[first]] = ao[first]
            left -= cost[ao[first]]
            if arm_cap[ao[first]] >= 0:
                caps_left[arm_cap[ao[first]]] -= 1
            vo, ao = vo[first + 1:], ao[first + 1:]


# -- the plan's interval ------------------------------------------------------------------
def effect_bins(deciles: Mapping[str, pd.DataFrame]) -> dict[str, dict[str, list[float]]]:
    """Per arm, the hold-out decile table reduced to what the plan interval needs.

    ``deciles`` is the run's per-arm table of predicted vs observed uplift by decile
    (``training.evaluation.decile_table``); stored as ``metadata["uplift_deciles"]``.
    """
    out = {}
    for arm, table in deciles.items():
        t = table.sort_values("predicted_uplift")
        out[arm] = {"predicted": t.predicted_uplift.astype(float).tolist(),
                    "se": t.observed_se.astype(float).tolist()}
    return out


def gain_interval(model: ScoringModel, gains: ExpectedGains, arm: np.ndarray,
                  z: float = INTERVAL_Z) -> tuple[float, float] | None:
    """95% interval of the plan's total expected gain (None when the model has no deciles).

    The model's total, plus or minus the precision with which the randomized hold-out
    measured the effect of voters like those chosen: each contact falls in the decile
    of its arm's predicted uplift (nearest decile mean), a decile's observed uplift has
    standard error ``se``, so ``n`` contacts in it carry ``n * se`` (scaled by the
    contact-rate factor). Deciles of one arm are disjoint samples (added in quadrature);
    arms share the control group, so their parts are added linearly (conservative).
    """
    bins = model.metadata.get("uplift_deciles")
    picked = arm >= 0
    total = float(gains.gain[picked, arm[picked]].sum()) if picked.any() else 0.0
    if not bins:
        return None
    half = 0.0
    for j, info in enumerate(model.arms):
        rows = np.flatnonzero(arm == j)
        if not len(rows):
            continue
        if info.label not in bins:
            return None
        predicted = np.asarray(bins[info.label]["predicted"], dtype=float)
        se = np.asarray(bins[info.label]["se"], dtype=float)
        se = np.where(np.isfinite(se), se, np.nanmax(se) if np.isfinite(se).any() else 0.0)
        itt = gains.itt[rows, j]
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = np.where(itt != 0, gains.gain[rows, j] / itt, 1.0)
        which = np.searchsorted((predicted[1:] + predicted[:-1]) / 2, itt)
        weight = np.bincount(which, weights=factor, minlength=len(predicted))
        half += z * float(np.sqrt(np.sum((weight * se) ** 2)))
    return total - half, total + half


# -- the plan -----------------------------------------------------------------------------
SUPPRESSION_KEYS = ("contacted", "not_eligible", "no_positive_gain", "over_budget")


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
        95% interval of the total (see :func:`gain_interval`).
    allocation : Allocation
        Solver certificate (LP bound and gap).
    suppression : dict of str to int
        Every voter once: ``contacted``, ``not_eligible`` (their only positive-gain arms
        are not allowed), ``no_positive_gain``, ``over_budget`` (a positive allowed gain,
        but the budget or a capacity went to better uses).
    not_allowed : dict of str to int
        (voter, arm) pairs not allowed, by reason code when reasons were given.
    sensitivity : DataFrame or None
        What the plan would lose if an arm's average effect sat at either end of its
        interval (:func:`serving.plan_sensitivity.level_sensitivity`), when asked for.
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
            "interval": None if self.interval is None else
            {"low": self.interval[0], "high": self.interval[1], "level": 0.95},
            "contacts_per_arm": self.contacts_per_arm(), "channels": per_channel,
            "suppression": self.suppression, "not_allowed": self.not_allowed, "solver": self.allocation.as_dict(),
            "sensitivity": None if self.sensitivity is None else self.sensitivity.to_dict("records"),
        }


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
    (``features.consent.Eligibility.for_voters``); rows are matched to ``ids``.
    """
    needed = ["voter_id", *(f"{p}_{a.slug}" for a in model.arms for p in ("eligible", "suppression"))]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise PlanError("eligibility", f"columns {missing} are missing")
    unique = table.drop_duplicates("voter_id")
    lookup = unique.set_index(unique.voter_id.astype(str))
    ids = pd.Index(np.asarray(ids).astype(str))
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
) -> ContactPlan:
    """Allocate the budget over voters whose expected gains are known.

    Parameters
    ----------
    model : ScoringModel
    ids : array of voter ids (n,)
    gains : ExpectedGains
        From :func:`expected_gains` (NaN gain = arm not allowed).
    budget : float
    costs : ProgramCosts, optional
    reasons : ndarray of object (n, k), optional
        Why an arm is not allowed (consent reason codes), counted in ``not_allowed``.
    """
    costs = costs or ProgramCosts()
    ids = np.asarray(ids).astype(str)
    if len(ids) != len(gains):
        raise PlanError("voters", f"{len(ids)} ids but {len(gains)} rows of gains")
    duplicated = pd.Index(ids).duplicated()
    if duplicated.any():
        raise PlanError("voters", f"{int(duplicated.sum())} duplicate voter ids (a voter is planned once)")
    cost = costs.arm_costs(model)
    channels = [a.channel for a in model.arms]
    allocation = costs.allocator(model, budget).solve(gains.gain, cost, channels)
    arm = allocation.arm
    picked = np.flatnonzero(arm >= 0)
    g = gains.gain[picked, arm[picked]]
    c = cost[arm[picked]]
    order = np.lexsort((-g, -(g / c)))  # priority: gain per cost, then gain, then input order
    rows = picked[order]
    labels = np.array([a.label for a in model.arms], dtype=object)
    table = pd.DataFrame({
        "voter_id": ids[rows],
        "arm": labels[arm[rows]],
        "channel": np.array(channels, dtype=object)[arm[rows]],
        "expected_gain": gains.gain[rows, arm[rows]],
        "p_reached": gains.p_reached[rows, arm[rows]],
        "cost": cost[arm[rows]],
    })
    with np.errstate(invalid="ignore"):
        positive_any = (np.nan_to_num(gains.itt, nan=-1.0) > 0).any(axis=1) if len(ids) else np.zeros(0, bool)
        positive_allowed = (np.nan_to_num(gains.gain, nan=-1.0) > 0).any(axis=1) if len(ids) else np.zeros(0, bool)
    contacted = arm >= 0
    suppression = {
        "contacted": int(contacted.sum()),
        "not_eligible": int((~contacted & ~positive_allowed & positive_any).sum()),
        "over_budget": int((~contacted & positive_allowed).sum()),
    }
    suppression["no_positive_gain"] = len(ids) - sum(suppression.values())
    not_allowed: dict[str, int] = {}
    blocked = np.isnan(gains.gain)
    if blocked.any():
        if reasons is not None:
            codes, counts = np.unique(np.asarray(reasons, dtype=object)[blocked].astype(str), return_counts=True)
            not_allowed = {str(k): int(v) for k, v in zip(codes, counts, strict=True)}
        else:
            not_allowed = {"not_allowed": int(blocked.sum())}
    return ContactPlan(
        table=table, voters=len(ids), budget=float(budget), spent=float(c.sum()),
        total_expected_gain=float(g.sum()), interval=gain_interval(model, gains, arm), allocation=allocation,
        suppression={k: suppression[k] for k in SUPPRESSION_KEYS}, not_allowed=not_allowed,
        outcome=model.outcome.get("kind", "turnout"),
    )


def plan_contacts(
    model: ScoringModel,
    voters: pd.DataFrame,
    budget: float,
    costs: ProgramCosts | None = None,
    allowed: np.ndarray | None = None,
    reasons: np.ndarray | None = None,
    allow_missing: bool = False,
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
    """
    if model.id_column not in voters.columns:
        raise PlanError("voters", f"the id column {model.id_column!r} is missing")
    X = model.transform(voters, allow_missing=allow_missing)
    gains = expected_gains(model, X, costs, allowed)
    return plan_from_gains(model, voters[model.id_column].to_numpy(), gains, budget, costs, reasons)


# -- files --------------------------------------------------------------------------------
PLAN_METADATA_KEY = b"persuade.plan"


def gains_from_file(
    model: ScoringModel,
    path: str | Path,
    costs: ProgramCosts | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, ExpectedGains]:
    """Voter ids and expected gains of a voter file, streamed in chunks.

    Only the id and the model's feature columns are read (never PII); memory holds
    the ids and ``n x arms`` gains, not the file.
    """
    ids, parts = [], []
    for chunk in iter_chunks(path, model, chunk_size):
        X = model.transform(chunk)
        parts.append(expected_gains(model, X, costs))
        ids.append(chunk[model.id_column].astype(str).to_numpy())
        if on_chunk is not None:
            on_chunk(len(chunk))
    return (np.concatenate(ids) if ids else np.array([], dtype=str)), ExpectedGains.concat(parts, len(model.arms))


def write_plan(plan: ContactPlan, path: str | Path, provenance: Mapping[str, Any] | None = None) -> Path:
    """Write the plan's table to parquet; its summary (no voter ids) rides in the file metadata.

    The metadata key ``persuade.plan`` holds :meth:`ContactPlan.summary` plus
    ``provenance`` (model name, version, run id, input file), for reports on the plan.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(plan.table, preserve_index=False)
    meta = {**(table.schema.metadata or {}),
            PLAN_METADATA_KEY: json.dumps({**plan.summary(), "provenance": dict(provenance or {})}).encode()}
    pq.write_table(table.replace_schema_metadata(meta), str(path))
    return path


def read_plan_summary(path: str | Path) -> dict[str, Any]:
    """The summary stored by :func:`write_plan` in a plan file."""
    meta = pq.read_schema(str(path)).metadata or {}
    if PLAN_METADATA_KEY not in meta:
        raise PlanError(str(path), f"not a plan written by persuade plan (no {PLAN_METADATA_KEY.decode()} metadata)")
    return json.loads(meta[PLAN_METADATA_KEY])
