"""What a program delivered: its incremental outcomes, measured against its randomized design.

A plan with a holdout or exploration (:mod:`serving.plan_design`) records each voter's
assignment and the exact probability of every arm and of control. After the election,
each voter's outcome (turnout, support) is joined to the plan and the program's effect
is estimated against the voters the design left uncontacted at random.

Estimand
--------
Per arm ``a``: the incremental outcomes of the voters contacted with ``a``,
``sum over i with A_i = a of (Y_i(a) - Y_i(control))``, in outcome units (votes); in
total, the sum over arms: the program's incremental outcomes. The treated outcomes are
observed; what they would have been without contact comes from the control voters,
weighted by ``w_i = p_i(a) / p_i(control)`` (each control voter stands for the voters
with their chance of getting ``a``). Contacts whose control probability is 0 (a plan
without holdout or exploration) cannot be compared with anybody and are left out, and
counted (``unmeasured_contacts``).

Estimators
----------
- ``ipw`` (Hajek): ``sum_{A=a} Y_i - n_a * sum_{A=0} w_i Y_i / sum_{A=0} w_i``. With
  constant probabilities (an experiment) this is ``n_a`` times the difference in means.
- ``dr`` (doubly robust, AIPW with normalized weights): the same on the residuals
  ``Y_i - m_i`` of the outcome model recorded in the plan (``baseline``: the model's
  predicted outcome without contact). With the design's exact probabilities both are
  unbiased; the outcome model takes out the part of each outcome the voter's history
  predicts, so the interval is narrower. Without a recorded baseline ``dr`` equals ``ipw``.

Intervals: each estimate is a sum of per-voter contributions (the linearized Hajek
estimator), and its standard error the cluster-robust one of that sum (clusters: the
plan's ``cluster`` column, e.g. households or precincts, else each voter): normal 95%.
The contributions of the arms add up, so the total's interval accounts for the control
voters the arms share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.table_files import open_dataset, read_table
from serving.bundle import CONTROL_ARM
from serving.plan_costs import PlanError
from serving.plan_design import check_design
from serving.plan_file import read_plan_summary
from serving.plan_interval import INTERVAL_Z
from training.evaluation import clustered_mean

ESTIMATORS = ("ipw", "dr")
HEADLINE = "dr"
DECILES = 10


@dataclass
class Program:
    """A plan's voters joined to their outcomes (one row per voter considered).

    Attributes
    ----------
    labels : list of str
        The design's arms.
    assigned : ndarray of int (n,)
        Arm column per voter, -1 for control.
    propensity : ndarray (n, k + 1)
        The recorded probabilities (arms, then control).
    y : ndarray (n,)
        Outcomes.
    baseline : ndarray (n,) or None
        The plan's outcome model (predicted outcome without contact).
    gain : ndarray (n, k) or None
        The plan's expected gain per arm (NaN where not allowed).
    clusters : ndarray (n,)
        Cluster of each voter (the voter itself when the plan has no cluster column).
    summary : dict
        The plan's stored summary (design, provenance).
    """

    labels: list[str]
    assigned: np.ndarray
    propensity: np.ndarray
    y: np.ndarray
    baseline: np.ndarray | None
    gain: np.ndarray | None
    clusters: np.ndarray
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def design(self) -> dict[str, Any]:
        return self.summary["design"]

    @property
    def units(self) -> str:
        return "votes" if self.design["outcome"].get("kind", "turnout") == "turnout" else "support points"


def load_program(plan_path: str | Path, outcomes_path: str | Path) -> Program:
    """Read a plan file, check it against its design, and join the outcomes to its voters.

    The outcomes file (parquet or CSV) has the id column and the outcome column the plan
    recorded (the model's ``id_column`` and ``outcome.column``); other columns are not read.

    Raises
    ------
    PlanError
        A plan without a design or whose rows do not match its fingerprint; outcomes whose
        ids are not exactly the plan's voters, duplicated, or missing values. The message
        names the file and the problem (counts, never ids).
    """
    plan_path, outcomes_path = Path(plan_path), Path(outcomes_path)
    summary = read_plan_summary(plan_path)
    design = summary.get("design")
    if not design:
        raise PlanError(plan_path.name, "the plan records no design: plan with --holdout or --explore "
                                        "(a plan made before plans recorded their design cannot be measured)")
    rows = pd.read_parquet(plan_path)
    propensity = check_design(rows, design)
    labels = list(design["arms"])
    ids = rows["voter_id"].astype(str).to_numpy()
    y = _outcomes(outcomes_path, ids, design["id_column"], design["outcome"]["column"])
    names = pd.Index([*labels, CONTROL_ARM])
    column = names.get_indexer(rows["assigned"].astype(str))
    gain_columns = [f"gain_{p[2:]}" for p in design["probabilities"][:-1]]
    gain = rows[gain_columns].to_numpy(dtype=float) if all(c in rows for c in gain_columns) else None
    baseline = rows["baseline"].to_numpy(dtype=float) if "baseline" in rows else None
    if baseline is not None and not np.isfinite(baseline).all():
        baseline = None
    clusters = rows["cluster"].astype(str).to_numpy() if design.get("cluster_column") and "cluster" in rows else ids
    return Program(labels, np.where(column < len(labels), column, -1), propensity, y, baseline, gain, clusters,
                   summary)


def _outcomes(path: Path, ids: np.ndarray, id_column: str, outcome_column: str) -> np.ndarray:
    """The outcome of each of ``ids`` from the outcomes file; refuses any mismatch."""
    missing = [c for c in (id_column, outcome_column) if c not in open_dataset(path).schema.names]
    if missing:
        raise PlanError(path.name, f"missing the column(s) {missing} (the plan's id and outcome columns)")
    table = read_table(path, [id_column, outcome_column], as_text=True)
    found = table[id_column].astype(str)
    duplicated = int(found.duplicated().sum())
    if duplicated:
        raise PlanError(path.name, f"{duplicated} ids appear more than once (one outcome per voter)")
    outside = int((~found.isin(ids)).sum())
    absent = int((~pd.Index(ids).isin(found)).sum())
    if outside or absent:
        raise PlanError(path.name, f"the outcomes do not match the plan's voters: {outside} ids are not voters of the "
                                   f"plan and {absent} of its {len(ids)} voters have no outcome")
    values = pd.to_numeric(table[outcome_column], errors="coerce").to_numpy(dtype=float)
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise PlanError(f"{path.name}: {outcome_column}", f"{bad} voters have a missing or non-numeric outcome")
    return pd.Series(values, index=found.to_numpy()).reindex(ids).to_numpy()


@dataclass
class Estimate:
    """One estimate: a sum of per-voter contributions, with its cluster-robust interval."""

    estimate: float
    se: float
    contacts: int
    predicted: float | None = None

    def as_dict(self) -> dict[str, Any]:
        low, high = self.estimate - INTERVAL_Z * self.se, self.estimate + INTERVAL_Z * self.se
        per = {"estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan}
        if self.contacts:
            per = {"estimate": self.estimate / self.contacts, "ci_low": low / self.contacts,
                   "ci_high": high / self.contacts}
        return _json_ready({"estimate": self.estimate, "ci_low": low, "ci_high": high, "se": self.se,
                            "contacts": self.contacts, "predicted": self.predicted, "per_contact": per})


def _json_ready(values: Mapping[str, Any]) -> dict[str, Any]:
    def clean(v: Any) -> Any:
        if isinstance(v, Mapping):
            return _json_ready(v)
        if isinstance(v, float | np.floating):
            return float(v) if np.isfinite(v) else None
        return v
    return {k: clean(v) for k, v in values.items()}


def contributions(program: Program, estimator: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-voter contributions (n, k) to each arm's estimate, and each arm's measured contacts (k,).

    Each arm's estimate is the column sum (see the module docstring).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    k = len(program.labels)
    p0 = program.propensity[:, k]
    m = program.baseline if estimator == "dr" and program.baseline is not None else 0.0
    residual = program.y - m
    phi = np.zeros((len(residual), k))
    counts = np.zeros(k, dtype=np.int64)
    control = program.assigned < 0
    for j in range(k):
        pa_ = program.propensity[:, j]
        treated = (program.assigned == j) & (p0 > 0)
        weight = np.where(control & (pa_ > 0), pa_ / np.where(p0 > 0, p0, 1.0), 0.0)
        counts[j] = treated.sum()
        if not counts[j] or weight.sum() <= 0:
            counts[j] = 0
            continue
        level = float(np.sum(weight * residual) / weight.sum())
        scale = counts[j] / weight.sum()
        phi[:, j] = treated * (residual - level) - weight * scale * (residual - level)
    return phi, counts


def _estimate(phi: np.ndarray, clusters: np.ndarray, contacts: int, predicted: float | None) -> Estimate:
    if not contacts:
        return Estimate(np.nan, np.nan, 0, predicted)
    _, se = clustered_mean(phi, clusters)
    return Estimate(float(phi.sum()), float(se * len(phi)), int(contacts), predicted)


def estimate_program(program: Program, estimator: str) -> dict[str, Any]:
    """``total`` and one entry per arm (``arms``) by one estimator, as JSON-ready dicts.

    Each entry: ``estimate``, ``ci_low``, ``ci_high`` (95%), ``se``, ``contacts`` (measured),
    ``predicted`` (the plan's expected gain of those contacts, when recorded) and the same
    per contact (``per_contact``).
    """
    phi, counts = contributions(program, estimator)
    predicted = _predicted(program, counts)
    arms = {label: _estimate(phi[:, j], program.clusters, counts[j], None if predicted is None else predicted[j])
            .as_dict() for j, label in enumerate(program.labels)}
    total = _estimate(phi.sum(axis=1), program.clusters, int(counts.sum()),
                      None if predicted is None else float(predicted.sum()))
    return {"total": total.as_dict(), "arms": arms}


def _predicted(program: Program, counts: np.ndarray) -> np.ndarray | None:
    """The plan's expected gain of each arm's measured contacts (None without recorded gains)."""
    if program.gain is None:
        return None
    k = len(program.labels)
    rows = np.flatnonzero((program.assigned >= 0) & (program.propensity[:, k] > 0))
    arm = program.assigned[rows]
    return np.where(counts > 0, np.bincount(arm, weights=program.gain[rows, arm], minlength=k), 0.0)


def decile_table(program: Program, estimator: str = HEADLINE, n_bins: int = DECILES) -> pd.DataFrame | None:
    """Predicted vs realized effect per contact by decile of the contacts' expected gain (1 = highest).

    Decile edges are those of the measured contacts' expected gains; a control voter's
    contribution to arm ``a`` falls in the decile of their expected gain with ``a``.
    None when the plan records no expected gains (an experiment read as a plan).
    """
    if program.gain is None:
        return None
    phi, counts = contributions(program, estimator)
    k = len(program.labels)
    contacted = np.flatnonzero((program.assigned >= 0) & (program.propensity[:, k] > 0)
                               & np.isin(program.assigned, np.flatnonzero(counts)))
    if len(contacted) < n_bins:
        return None
    own = program.gain[contacted, program.assigned[contacted]]
    edges = np.quantile(own, np.linspace(0, 1, n_bins + 1)[1:-1])
    bins = n_bins - np.searchsorted(edges, np.nan_to_num(program.gain, nan=-np.inf), side="right")
    rows = []
    for d in range(1, n_bins + 1):
        inside = bins == d
        part = np.where(inside, phi, 0.0).sum(axis=1)
        members = contacted[bins[contacted, program.assigned[contacted]] == d]
        est = _estimate(part, program.clusters, len(members), float(program.gain[members, program.assigned[members]]
                                                                     .sum()))
        row = est.as_dict()
        rows.append({"decile": d, "contacts": len(members),
                     "predicted_per_contact": row["predicted"] / len(members) if len(members) else np.nan,
                     "realized_per_contact": row["per_contact"]["estimate"],
                     "ci_low": row["per_contact"]["ci_low"], "ci_high": row["per_contact"]["ci_high"]})
    return pd.DataFrame(rows)


@dataclass
class Measurement:
    """What ``persuade measure`` writes: ``as_dict()`` is ``measure.json``."""

    program: Program
    estimates: dict[str, dict[str, Any]]
    deciles: pd.DataFrame | None
    plan_path: Path
    outcomes_path: Path

    def as_dict(self) -> dict[str, Any]:
        program, design = self.program, self.program.design
        k = len(program.labels)
        unmeasured = int(((program.assigned >= 0) & (program.propensity[:, k] <= 0)).sum())
        head = self.estimates[HEADLINE]
        return {
            "plan": self.plan_path.name, "outcomes": self.outcomes_path.name,
            "outcome": design["outcome"], "units": program.units, "estimator": HEADLINE,
            "total": head["total"], "arms": head["arms"], "estimators": self.estimates,
            "deciles": None if self.deciles is None else
            [_json_ready(r) for r in self.deciles.to_dict("records")],
            "voters": len(program.y), "clusters": len(np.unique(program.clusters)),
            "cluster_column": design.get("cluster_column"), "outcome_model": program.baseline is not None,
            "unmeasured_contacts": unmeasured,
            "design": {key: design.get(key) for key in ("kind", "seed", "holdout", "explore", "fingerprint")},
        }


def measure_program(plan_path: str | Path, outcomes_path: str | Path) -> Measurement:
    """Measure a planned program on its outcomes by every estimator (see the module docstring).

    Raises
    ------
    PlanError
        See :func:`load_program`; also a plan none of whose contacts has a control
        probability above 0 (nothing to compare with).
    """
    program = load_program(plan_path, outcomes_path)
    estimates = {name: estimate_program(program, name) for name in ESTIMATORS}
    if not any(arm["contacts"] for arm in estimates[HEADLINE]["arms"].values()):
        raise PlanError(Path(plan_path).name, "no contact of the plan had a chance of being held out: nothing to "
                                              "compare with (plan with --holdout or --explore)")
    return Measurement(program, estimates, decile_table(program), Path(plan_path), Path(outcomes_path))
