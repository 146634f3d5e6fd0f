"""The allocation: at most one arm per voter within one budget and per-channel capacities.

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.plan_costs import PlanError


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
        import scipy.sparse as sp  # here, not at the top: BentoML's arbiter imports the service, and never plans
        from scipy.optimize import linprog

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
