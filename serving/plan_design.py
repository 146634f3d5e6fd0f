"""Randomization in a plan: a holdout of the targeted voters and exploration of the rest.

A plan without randomization cannot be measured afterwards (nobody like the contacted
voters was left alone) and its outcomes cannot train the next model (contact followed
the model, not chance). A :class:`DesignSpec` adds two randomized parts to the solver's
targeting, drawn with one seeded generator (same seed and inputs, same assignment):

1. **Holdout.** The targeted voters are split into strata by planned arm and score band
   (equal-size bands of the planned arm's expected gain, at most :data:`BANDS` per arm,
   fewer where a band would hold out fewer than :data:`MIN_HELD_PER_STRATUM` voters).
   In each stratum of ``n`` voters exactly ``h = round(holdout * n)`` are held out
   (complete randomization; at least one and at most ``n - 1`` in a stratum of two or
   more), so every stratum's holdout share is the requested one up to rounding. A
   stratum of one voter (an arm planned for one voter) holds them out with probability
   ``holdout``, so every targeted voter keeps a chance of control.
2. **Exploration.** ``m = round(explore * E)`` voters of the eligible universe (the ``E``
   voters with at least one arm they may get by consent) are drawn at random among
   those not held out, and each gets an arm drawn uniformly among the arms they may get
   and control. Consent is never overridden: an arm a voter may not get has
   probability 0.

Every voter's probability of each arm and of control under this design is exact, not
estimated. With ``r`` the held-out share of a targeted voter's stratum, ``q = m / (E -
H)`` (``H`` voters held out in all) and ``k`` the number of arms the voter may get::

    targeted with arm d:  P(d) = (1 - r)(1 - q) + (1 - r) q / (k + 1)
                          P(a) = (1 - r) q / (k + 1)          (another allowed arm a)
                          P(control) = r + (1 - r) q / (k + 1)
    eligible, not targeted: P(a) = q / (k + 1),  P(control) = 1 - q + q / (k + 1)
    not eligible:         P(control) = 1

The design's fingerprint (:func:`design_fingerprint`) is the SHA-256 of the canonical
design and of the voter ids and probabilities in the plan file's order: a plan file
whose rows were changed after planning no longer matches it (:func:`check_design`).
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.config import arm_slug
from serving.bundle import CONTROL_ARM
from serving.plan_costs import PlanError
from serving.voters import id_strings

BANDS = 5  # score bands per planned arm (quintiles of its expected gain)
MIN_HELD_PER_STRATUM = 5  # fewer bands when a band would hold out fewer voters than this
RESERVE_SD = 3.0  # exploration's budget and capacity reserve: its expectation plus this many SDs
PROBABILITY_TOLERANCE = 1e-9
_ID_CHUNK = 1_000_000


def probability_columns(labels: Sequence[str]) -> list[str]:
    """The plan file's probability columns: ``p_<arm slug>`` per arm, then ``p_control``."""
    return [*(f"p_{arm_slug(label)}" for label in labels), f"p_{CONTROL_ARM}"]


def _half_up(x: float) -> int:
    return math.floor(x + 0.5)


def explored_count(explore: float, eligible: int) -> int:
    """Voters the exploration draws from an eligible universe of ``eligible`` voters."""
    return _half_up(explore * eligible)


def held_count(holdout: float, voters: int) -> int:
    """Voters held out of a stratum of two or more ``voters`` (see the module docstring)."""
    if holdout <= 0 or voters < 2:
        return 0
    return min(voters - 1, max(1, _half_up(holdout * voters)))


@dataclass(frozen=True)
class DesignSpec:
    """What to randomize in a plan.

    Parameters
    ----------
    holdout : float
        Share of the targeted voters held out at random (not contacted), ``0 <= holdout < 1``.
    explore : float
        Share of the eligible universe assigned an arm (or control) at random,
        ``0 <= explore < 1``.
    seed : int, optional
        Seed of the draws; default: a fresh random seed, recorded in the design.

    Raises
    ------
    PlanError
        A share outside ``[0, 1)`` or a negative seed; the error names the field.
    """

    holdout: float = 0.0
    explore: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("holdout", "explore"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise PlanError(name, f"must be a share at least 0 and below 1, got {value!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed < 2**63):  # it is echoed in the design (JSON: 64 bits)
            raise PlanError("seed", f"must be a non-negative integer below 2**63, got {self.seed!r}")

    @property
    def randomized(self) -> bool:
        return self.holdout > 0 or self.explore > 0

    def resolved_seed(self) -> int | None:
        """The seed to draw with: the given one, a fresh one when randomizing, else None."""
        if self.seed is not None or not self.randomized:
            return self.seed
        return secrets.randbits(48)

    def targeting_limits(self, allowed: np.ndarray, cost: np.ndarray, channels: Sequence[str], budget: float,
                         capacities: Mapping[str, int | None]) -> tuple[float, dict[str, int | None]]:
        """Budget and capacities left to the targeting once the exploration's share is set aside.

        The exploration's expected cost (and attempts per limited channel) plus
        :data:`RESERVE_SD` standard deviations, so the realized plan stays within the
        limits except with negligible probability.

        Raises
        ------
        PlanError
            (``explore``) The exploration alone would not fit in the budget or a capacity.
        """
        if self.explore <= 0:
            return float(budget), dict(capacities)
        left = {}
        for channel, cap in capacities.items():
            use = np.array([1.0 if ch == channel else 0.0 for ch in channels])
            need = math.ceil(self._reserve(allowed, use))
            if cap is not None and need > cap:
                raise PlanError("explore", f"exploring {self.explore:.1%} of the eligible voters needs up to {need:,} "
                                           f"{channel} attempts, more than its capacity {cap:,}: explore less or "
                                           "raise the capacity")
            left[channel] = None if cap is None else cap - need
        need = self._reserve(allowed, np.asarray(cost, dtype=float))
        if need > budget:
            raise PlanError("explore", f"exploring {self.explore:.1%} of the eligible voters is expected to cost up to "
                                       f"{need:,.2f}, more than the budget {float(budget):,.2f}: explore less or "
                                       "raise the budget")
        return float(budget) - need, left

    def _reserve(self, allowed: np.ndarray, use: np.ndarray) -> float:
        eligible = allowed[allowed.any(axis=1)]
        m = explored_count(self.explore, len(eligible))
        if m == 0:
            return 0.0
        options = eligible.sum(axis=1) + 1.0
        mean = float(np.mean((eligible @ use) / options))
        var = max(float(np.mean((eligible @ use**2) / options)) - mean**2, 0.0)
        return m * mean + RESERVE_SD * math.sqrt(m * var)


@dataclass
class PlanDesign:
    """A drawn design: each voter's assignment and probabilities.

    Attributes
    ----------
    labels : list of str
        The arms, in the model's order.
    assigned : ndarray of int (n,)
        Column of the assigned arm, -1 for control (not contacted).
    holdout : ndarray of bool (n,)
        Targeted voters held out at random.
    explored : ndarray of bool (n,)
        Voters whose assignment the exploration drew.
    propensity : ndarray (n, k + 1)
        Probability of each arm and of control (last column) under the design.
    description : dict
        JSON-ready: seed, shares, strata, exploration counts, probability columns.
    """

    labels: list[str]
    assigned: np.ndarray
    holdout: np.ndarray
    explored: np.ndarray
    propensity: np.ndarray
    description: dict[str, Any]

    def assigned_labels(self) -> np.ndarray:
        names = np.array([*self.labels, CONTROL_ARM], dtype=object)
        return names[np.where(self.assigned >= 0, self.assigned, len(self.labels))]

    def frame(self, ids: np.ndarray) -> pd.DataFrame:
        """``voter_id``, ``assigned``, ``holdout`` and the probability columns, one row per voter."""
        out = pd.DataFrame({"voter_id": id_strings(ids), "assigned": self.assigned_labels(),
                            "holdout": self.holdout})
        for j, column in enumerate(probability_columns(self.labels)):
            out[column] = self.propensity[:, j]
        return out


def randomize(targeted: np.ndarray, gain: np.ndarray, labels: Sequence[str], spec: DesignSpec,
              seed: int | None) -> PlanDesign:
    """Draw the holdout and the exploration around the solver's targeting.

    Parameters
    ----------
    targeted : ndarray of int (n,)
        The solver's arm column per voter, -1 for none.
    gain : ndarray (n, k)
        Expected gains; NaN where the voter may not get the arm.
    labels : sequence of str (k,)
    spec : DesignSpec
    seed : int or None
        From :meth:`DesignSpec.resolved_seed` (None only without randomization).

    Returns
    -------
    PlanDesign
    """
    targeted = np.asarray(targeted, dtype=np.int64)
    gain = np.asarray(gain, dtype=float)
    n, k = gain.shape
    allowed = np.isfinite(gain)
    rows = np.flatnonzero(targeted >= 0)
    if not allowed[rows, targeted[rows]].all():
        raise PlanError("allocation", "a voter was targeted with an arm they may not get")
    rng = np.random.default_rng(seed)
    held = np.zeros(n, dtype=bool)
    held_share = np.zeros(n)
    strata = []
    for j, label in enumerate(labels):
        members = np.flatnonzero(targeted == j)
        if not len(members):
            continue
        members = members[np.lexsort((members, -gain[members, j]))]  # best gain first, ties by input order
        bands = 1 if spec.holdout <= 0 else int(np.clip(len(members) * spec.holdout // MIN_HELD_PER_STRATUM,
                                                        1, BANDS))
        for band, part in enumerate(np.array_split(members, bands), start=1):
            if len(part) == 1 and spec.holdout > 0:  # a lone voter: a coin of the holdout share
                h, share = int(rng.random() < spec.holdout), spec.holdout
            else:
                h = held_count(spec.holdout, len(part))
                share = h / len(part)
            held[part[rng.permutation(len(part))[:h]]] = True
            held_share[part] = share
            strata.append({"arm": label, "band": band, "voters": len(part), "held_out": h,
                           "gain_high": float(gain[part[0], j]), "gain_low": float(gain[part[-1], j])})
    eligible = allowed.any(axis=1)
    pool = np.flatnonzero(eligible & ~held)
    m = min(explored_count(spec.explore, int(eligible.sum())), len(pool))
    picked = np.sort(rng.choice(pool, size=m, replace=False)) if m else np.zeros(0, dtype=np.int64)
    options = allowed.sum(axis=1)
    draw = rng.integers(0, options[picked] + 1) if m else np.zeros(0, dtype=np.int64)
    explored_arm = np.where(draw == options[picked], -1,
                            np.argmax(np.cumsum(allowed[picked], axis=1) > draw[:, None], axis=1))
    assigned = np.where((targeted >= 0) & ~held, targeted, -1)
    assigned[picked] = explored_arm
    explored = np.zeros(n, dtype=bool)
    explored[picked] = True

    q = m / len(pool) if len(pool) else 0.0
    is_targeted = targeted >= 0
    uniform = np.where(eligible, 1.0 / (options + 1.0), 0.0)
    p_explored = np.where(eligible, q * (1.0 - held_share), 0.0)
    propensity = np.zeros((n, k + 1))
    propensity[:, :k] = allowed * (p_explored * uniform)[:, None]
    propensity[rows, targeted[rows]] += (1.0 - held_share[rows]) * (1.0 - q)
    propensity[:, k] = np.where(eligible, p_explored * uniform + np.where(is_targeted, held_share, 1.0 - q), 1.0)
    description = {
        "kind": "plan", "seed": seed, "holdout": float(spec.holdout), "explore": float(spec.explore),
        "bands": BANDS, "min_held_per_stratum": MIN_HELD_PER_STRATUM, "arms": list(labels),
        "probabilities": probability_columns(labels), "strata": strata,
        "exploration": {"eligible": int(eligible.sum()), "pool": len(pool), "explored": int(m),
                        "share_of_pool": float(q)},
    }
    return PlanDesign(list(labels), assigned, held, explored, propensity, description)


def fixed_design(assigned: Sequence[str], shares: Mapping[str, float]) -> PlanDesign:
    """A randomized experiment read as a design: every voter had the same ``shares``.

    Parameters
    ----------
    assigned : sequence of str (n,)
        Each voter's arm label, or ``control``.
    shares : mapping of str to float
        Design share of each arm and of ``control`` (they sum to 1).
    """
    if CONTROL_ARM not in shares or not math.isclose(sum(shares.values()), 1.0, abs_tol=1e-6):
        raise PlanError("shares", f"the shares of the arms and of {CONTROL_ARM!r} must sum to 1, got {dict(shares)}")
    labels = [label for label in shares if label != CONTROL_ARM]
    names = np.asarray(assigned, dtype=object)
    unknown = sorted(set(names.astype(str)) - {*labels, CONTROL_ARM})
    if unknown:
        raise PlanError("assigned", f"labels {unknown} are not arms of the design")
    column = {label: j for j, label in enumerate(labels)}
    index = np.array([column.get(str(a), -1) for a in names], dtype=np.int64)
    row = np.array([*(shares[label] for label in labels), shares[CONTROL_ARM]], dtype=float)
    description = {"kind": "experiment", "seed": None, "shares": {k: float(v) for k, v in shares.items()},
                   "arms": labels, "probabilities": probability_columns(labels)}
    n = len(index)
    return PlanDesign(labels, index, np.zeros(n, dtype=bool), np.zeros(n, dtype=bool), np.tile(row, (n, 1)),
                      description)


def design_fingerprint(design: Mapping[str, Any], ids: Sequence[str] | np.ndarray, probabilities: np.ndarray) -> str:
    """SHA-256 of the canonical design (every key but ``fingerprint``) and the ordered ids and probabilities.

    The design is hashed as sorted-key compact JSON, the ids as UTF-8 text one per line,
    the probabilities (voters x columns, row-major) as little-endian float64.
    """
    canonical = {key: value for key, value in design.items() if key != "fingerprint"}
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":"), allow_nan=False).encode())
    ids = id_strings(ids)
    digest.update(f"\0{len(ids)}\0".encode())
    for start in range(0, len(ids), _ID_CHUNK):
        digest.update(("\n".join(ids[start:start + _ID_CHUNK]) + "\n").encode())
    digest.update(np.ascontiguousarray(probabilities, dtype="<f8").tobytes())
    return digest.hexdigest()


def check_design(rows: pd.DataFrame, design: Mapping[str, Any]) -> np.ndarray:
    """Check a plan file's rows against its recorded design; return the probabilities.

    Refuses (:class:`PlanError`) missing columns, a fingerprint that does not match the
    rows, probabilities that do not sum to 1, an ``assigned`` label that is not an arm
    of the design or that had probability 0, and a held-out voter who was assigned an arm.
    """
    columns = list(design.get("probabilities") or [])
    labels = list(design.get("arms") or [])
    missing = [c for c in ("voter_id", "assigned", "holdout", *columns) if c not in rows.columns]
    if not columns or missing or "fingerprint" not in design:
        raise PlanError("plan", f"not a plan with a recorded design (missing {missing or ['design.fingerprint']})")
    probabilities = rows[columns].to_numpy(dtype=float)
    if design_fingerprint(design, rows["voter_id"].to_numpy(), probabilities) != design["fingerprint"]:
        raise PlanError("design.fingerprint", "the plan's rows do not match its design fingerprint: the voters, "
                                              "their order or their probabilities were changed after planning")
    off = np.abs(probabilities.sum(axis=1) - 1.0) > PROBABILITY_TOLERANCE
    if off.any() or (probabilities < 0).any():
        raise PlanError("plan", f"{int(off.sum())} voters' probabilities do not sum to 1")
    names = [*labels, CONTROL_ARM]
    assigned = rows["assigned"].astype(str).to_numpy()
    unknown = sorted(set(assigned) - set(names))
    if unknown:
        raise PlanError("assigned", f"labels {unknown} are not arms of the plan's design ({names})")
    chosen = probabilities[np.arange(len(rows)), pd.Index(names).get_indexer(assigned)]
    if (chosen <= 0).any():
        raise PlanError("assigned", f"{int((chosen <= 0).sum())} voters were assigned an arm their design gave "
                                    "probability 0 (consent or targeting forbids it)")
    held = rows["holdout"].to_numpy(dtype=bool)
    if (held & (assigned != CONTROL_ARM)).any():
        raise PlanError("holdout", f"{int((held & (assigned != CONTROL_ARM)).sum())} held-out voters were "
                                   "assigned an arm")
    return probabilities
