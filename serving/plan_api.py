"""``POST /plan``: its request and response models (pydantic) and the call that answers it.

The endpoint takes the same voters as ``POST /score`` plus a budget and, optionally, the
program's costs and channel limits (the shape of ``configs/costs.yaml``), and answers
with the ordered contact list of each channel (call, text, mail, canvass), the expected
gain of every contact, the plan's total expected incremental outcomes with a 95%
interval, the suppression counts, the solver's optimality certificate and the voters
whose input deserves a word (``warnings``: the codes of ``POST /score``, from the same
``VoterReader``). A voter is planned once: an id that appears twice is a 422 naming each
occurrence.

:func:`plan_payload` does the work on voters already read by the service's
``VoterReader`` (which validates fields and drops everything that is not a feature);
:func:`answer_plan` is the service's path: the voters read, their expected gains computed
in slices that take turns with large ``POST /score`` requests
(:meth:`serving.batching.ScoreBatcher.in_slices`, so single-voter requests keep their
latency), then the plan solved in one step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from features.calling_hours import TIME_ZONE_COLUMN
from serving.api import VOTER_SCHEMA, ModelRefOut, Voters, VoterScore, encode
from serving.batching import ScoreBatcher
from serving.bundle import CONTROL_ARM, ScoringModel
from serving.limits import MAX_VOTERS
from serving.model_ref import ModelRef
from serving.plan_costs import PositiveNumber, ProgramCosts
from serving.plan_design import DesignSpec
from serving.plan_file import with_dialing_keys
from serving.plan_gains import ExpectedGains, expected_gains
from serving.plan_sensitivity import with_sensitivity
from serving.planning import ContactPlan, plan_from_gains
from serving.scoring import Eligibility
from serving.voters import DUPLICATE, ID_FIELD, FieldProblem, VoterBatch, VoterError, id_strings

# Voters per slice of a plan's expected gains at least: a gains step costs a fixed ~13 ms (seven LightGBM calls on a
# frame: turnout, uplift and contact rate per arm or channel), as much as ~1,000 voters' own part, four times a
# /score step's; smaller slices would mostly repeat it (the adaptive size shrinks to its floor when the fixed part
# alone takes longer than its target, as under load: a 10,000-voter plan in 32-voter slices took 24 s, 1.3 s with
# this floor, beside 16 single-voter clients at a load average of 5 to 8; bench/plan_load_bench.py).
GAINS_MIN_SLICE = 1_024

# validated by serving.plan_design.DesignSpec (a 422 naming the field), documented here
ShareBelowOne = Annotated[float, WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1,
                                                 "exclusiveMaximum": True})]


class PlanRequest(BaseModel):
    """``POST /plan``: a segment of voters, a budget and the program's costs."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {
        "voters": [VOTER_SCHEMA["example"]], "budget": 5000,
        "costs": {"arms": {"Neighbors": {"cost": 1}}, "channels": {"mail": {"capacity": 4000}}}}})

    voters: Voters = Field(description=f"Voters to plan for (at most {MAX_VOTERS:,} per request), as in /score.")
    budget: PositiveNumber = Field(description="Total cost allowed, in the units of the costs.")
    costs: ProgramCosts | None = Field(
        default=None, description="Cost per attempt by arm, capacity and contact rate by channel "
                                  "(default: the costs of the model's run config, no capacity limits).")
    sensitivity: bool = Field(
        default=False, description="Also re-plan with each arm's average effect at either end of its 95% "
                                   "interval and report what the plan would lose (two more solves per arm).")
    holdout: ShareBelowOne = Field(
        default=0.0, description="Share of the targeted voters held out at random (not contacted), stratified by "
                                 "arm and score band: the program's control group. 0 <= holdout < 1 (else 422).")
    explore: ShareBelowOne = Field(
        default=0.0, description="Share of the eligible voters assigned an arm they may get, or control, at random "
                                 "(exploration for the next model). 0 <= explore < 1 (else 422).")
    seed: int | None = Field(default=None, description="Seed of the holdout and exploration draws (default: a fresh "
                                                       "one, returned in `design.description.seed`).")


class PlannedContact(BaseModel):
    voter_id: str
    arm: str
    expected_gain: float = Field(description="Expected incremental outcome of this attempt.")
    p_reached: float = Field(description="Probability that the attempt reaches the voter (1 for mail).")
    cost: float
    priority: int = Field(description="1 = first contact of the whole plan (highest gain per cost).")
    time_zone: str | None = Field(
        default=None, description="Phone and text contacts: the voter's local time zone (IANA; several separated "
        "by spaces: keep the calling window in each), so the contact is made within the calling window.")


class ChannelPlan(BaseModel):
    attempts: int
    cost: float
    expected_gain: float
    expected_reached: float
    contacts: list[PlannedContact] = Field(description="In priority order.")


class GainInterval(BaseModel):
    low: float
    high: float
    level: float = 0.95


class Suppression(BaseModel):
    """Every voter of the request once, and the (voter, arm) pairs not allowed by reason."""

    contacted: int
    randomized_out: int = Field(default=0, description="Targeted, but the design held them out or its exploration "
                                                       "drew control: not contacted.")
    not_eligible: int = Field(description="Only arms with a positive expected gain were not allowed (consent).")
    no_positive_gain: int = Field(description="No arm is expected to help: never contacted.")
    over_budget: int = Field(description="A positive allowed gain, but the budget or a capacity went further "
                                         "elsewhere.")
    not_allowed: dict[str, int] = Field(default_factory=dict, description="(voter, arm) pairs by reason code.")


class SolverReport(BaseModel):
    method: str
    value: float = Field(description="Total expected gain of the plan.")
    lp_bound: float = Field(description="No plan within the budget and capacities can gain more.")
    gap: float
    rel_gap: float
    fractional_voters: int
    candidates: int
    columns: int
    lp_solves: int


class LevelScenario(BaseModel):
    """The plan if one arm's average effect were at an end of its 95% interval."""

    arm: str
    side: str = Field(description="low or high end of the arm's interval.")
    scale: float = Field(description="The arm's expected gains multiplied by this (1 -/+ 1.96 relative SE, >= 0).")
    voters_moved: int = Field(description="Voters whose arm (or contact at all) the re-plan changes.")
    plan_value: float = Field(description="Expected gain of the plan under the scenario.")
    replan_value: float = Field(description="Expected gain of the best plan under the scenario.")
    regret: float = Field(description="What keeping the plan costs if the scenario is true.")
    regret_share: float = Field(description="regret / replan_value.")
    replan_contacts_per_arm: dict[str, int]


class VoterAssignment(BaseModel):
    voter_id: str
    assigned: str = Field(description="The arm the voter gets, or control.")
    holdout: bool = Field(description="Targeted, held out at random.")
    probabilities: dict[str, float] = Field(description="Arm (and control) -> its probability under the design.")


class PlanDesignOut(BaseModel):
    """The randomization of a plan with a holdout or exploration, per voter and in total."""

    description: dict[str, Any] = Field(description="Seed, shares, strata, exploration counts and the fingerprint "
                                                    "(SHA-256 of this description without it, the voter ids and "
                                                    "their probabilities in `voters` order).")
    held_out: int
    explored: int
    expected_gain_forgone: float = Field(description="Expected gain of the held-out voters: the holdout's cost.")
    forgone_interval: GainInterval | None
    voters: list[VoterAssignment] = Field(description="Every voter of the request: the contacts first, in "
                                                      "priority order.")


class VoterWarnings(BaseModel):
    voter_id: str
    warnings: list[str] = Field(description=VoterScore.model_fields["warnings"].description)


class PlanResponse(BaseModel):
    model: ModelRefOut
    outcome: str
    voters: int
    budget: float
    spent: float
    total_expected_gain: float
    interval: GainInterval | None = Field(description="95% interval of the total (null without hold-out deciles).")
    contacts_per_arm: dict[str, int]
    channels: dict[str, ChannelPlan] = Field(description="Channel -> its ordered contact list.")
    suppression: Suppression
    solver: SolverReport
    sensitivity: list[LevelScenario] | None = Field(
        default=None, description="Per arm and side, when asked for (null otherwise).")
    design: PlanDesignOut | None = Field(
        default=None, description="The holdout and exploration, when asked for (null otherwise).")
    warnings: list[VoterWarnings] = Field(
        default=[], description="The voters whose input deserves a word, in request order (voters without "
                                "warnings are left out); an id that appears twice is refused (422), never planned.")


class VoterColumns(Protocol):
    """Voters read by ``serving.voters.VoterReader`` (``VoterBatch``)."""

    ids: np.ndarray
    warnings: list[list[str]] | None

    def frame(self) -> pd.DataFrame: ...


class ArmEligibility(Protocol):
    """Which arms each voter may get (``serving.scoring.Eligibility``), and their local time zones."""

    allowed: np.ndarray
    reason: np.ndarray
    time_zone: np.ndarray | None


def voter_gains(model: ScoringModel, voters: VoterColumns, costs: ProgramCosts | None = None,
                eligibility: ArmEligibility | None = None) -> ExpectedGains:
    """Expected gain per voter and arm of ``voters`` (NaN where ``eligibility`` does not allow the arm):
    the scoring step of a plan (:func:`serving.plan_gains.expected_gains`)."""
    X = model.transform(voters.frame(), allow_missing=True)
    return expected_gains(model, X, costs, None if eligibility is None else eligibility.allowed)


def refuse_duplicates(voters: VoterColumns) -> None:
    """Raise :class:`~serving.voters.VoterError` naming every voter whose id appears more than once
    (the reader's ``duplicate:voter_id`` warning): a voter is planned once."""
    code = f"{DUPLICATE}:{ID_FIELD}"
    twice = [FieldProblem(i, ID_FIELD, "appears more than once in the request (a voter is planned once)")
             for i, codes in enumerate(voters.warnings or ()) if code in codes]
    if twice:
        raise VoterError(twice)


def plan_payload(
    model: ScoringModel,
    ref: ModelRef,
    voters: VoterColumns,
    budget: float,
    costs: ProgramCosts | None = None,
    eligibility: ArmEligibility | None = None,
    sensitivity: bool = False,
    design: DesignSpec | None = None,
    gains: ExpectedGains | None = None,
) -> dict[str, Any]:
    """The ``POST /plan`` response (plain JSON-ready dicts, shaped as :class:`PlanResponse`).

    ``gains`` are the voters' :func:`voter_gains` when already computed (default: computed here).

    Raises
    ------
    serving.voters.VoterError
        An id appears more than once (:func:`refuse_duplicates`).
    serving.plan_costs.PlanError
        Costs or limits that do not fit the model (the message names the field).
    """
    refuse_duplicates(voters)
    design = design or DesignSpec()
    gains = voter_gains(model, voters, costs, eligibility) if gains is None else gains
    reasons = None if eligibility is None else eligibility.reason
    plan = plan_from_gains(model, voters.ids, gains, budget, costs, reasons, design=design)
    if sensitivity:
        plan = with_sensitivity(model, gains, plan, costs)
    summary = plan.summary()
    contacts = plan.table
    if eligibility is not None and getattr(eligibility, "time_zone", None) is not None:
        zones = pd.DataFrame({"voter_id": id_strings(voters.ids), TIME_ZONE_COLUMN: eligibility.time_zone})
        contacts = with_dialing_keys(contacts, zones, model)
    channels: dict[str, Any] = {}
    for channel, part in contacts.groupby("channel", sort=True):  # the table is in priority order
        channels[str(channel)] = {**summary["channels"][str(channel)], "contacts": _records(part)}
    return {
        "model": {"name": ref.name, "version": ref.version, "run_id": ref.run_id},
        "outcome": summary["outcome"], "voters": summary["voters"], "budget": summary["budget"],
        "spent": summary["spent"], "total_expected_gain": summary["total_expected_gain"],
        "interval": summary["interval"], "contacts_per_arm": summary["contacts_per_arm"],
        "channels": channels,
        "suppression": {**summary["suppression"], "not_allowed": summary["not_allowed"]},
        "solver": {k: v for k, v in summary["solver"].items() if k in SolverReport.model_fields},
        "sensitivity": summary["sensitivity"],
        "design": _design(plan) if design.randomized else None,
        "warnings": _warnings(voters),
    }


async def answer_plan(batcher: ScoreBatcher, served: Any, voters: Sequence[Mapping[str, Any]], *, budget: float,
                      costs: ProgramCosts | None = None, sensitivity: bool = False,
                      design: DesignSpec | None = None) -> tuple[bytes, VoterBatch]:
    """The ``POST /plan`` response body, and the voters read (their warnings go in the audit line).

    Each step runs in a worker thread in its turn among large requests' steps
    (:meth:`ScoreBatcher.run`): the voters are read, their eligibility and expected gains are
    computed in slices (:meth:`ScoreBatcher.in_slices`, as ``POST /score`` scores a large
    request), then the plan is solved and encoded. ``served`` is the
    ``model_holder.ServedModel`` of the request (its model, ref and scorer).

    Raises
    ------
    serving.voters.VoterError, serving.plan_costs.PlanError
        As :func:`plan_payload`.
    """
    model, scorer = served.model, served.scorer

    def read(rows: Sequence[Mapping[str, Any]]) -> VoterBatch:
        batch = scorer.read(rows)
        refuse_duplicates(batch)  # before any gain is computed
        return batch

    def gains_of(part: VoterBatch) -> tuple[ExpectedGains, Eligibility | None]:
        allowed = scorer.eligibility(part, model.arms) if scorer.eligibility is not None else None
        return voter_gains(model, part, costs, allowed), allowed

    batch = await batcher.run(read, voters)
    parts = await batcher.in_slices(batch, gains_of, GAINS_MIN_SLICE)
    gains = ExpectedGains.concat([g for g, _ in parts], len(model.arms))
    eligibility = None if parts[0][1] is None else Eligibility.concat([e for _, e in parts])

    def solved() -> bytes:
        return encode(plan_payload(model, served.ref, batch, budget, costs, eligibility, sensitivity, design,
                                   gains=gains))

    return await batcher.run(solved), batch


def _warnings(voters: VoterColumns) -> list[dict[str, Any]]:
    """The voters with warnings, in request order (:class:`VoterWarnings`)."""
    if not voters.warnings:
        return []
    return [{"voter_id": v, "warnings": codes} for v, codes in zip(voters.ids.tolist(), voters.warnings, strict=True)
            if codes]


def _design(plan: ContactPlan) -> dict[str, Any]:
    """The design part of the response: totals and every voter's assignment and probabilities."""
    voters = plan.assignment
    names = [*plan.design["arms"], CONTROL_ARM]
    probabilities = voters[plan.design["probabilities"]].to_numpy().tolist()
    held = plan.randomization["held_out"]
    return {
        "description": plan.design, "held_out": held["voters"], "explored": plan.randomization["explored"]["voters"],
        "expected_gain_forgone": held["expected_gain_forgone"], "forgone_interval": held["interval"],
        "voters": [{"voter_id": v, "assigned": a, "holdout": bool(h), "probabilities": dict(zip(names, p, strict=True))}
                   for v, a, h, p in zip(voters.voter_id.tolist(), voters.assigned.tolist(), voters.holdout.tolist(),
                                         probabilities, strict=True)],
    }


def _records(part: pd.DataFrame) -> list[dict[str, Any]]:
    """The contacts of one channel; phone and text contacts carry the voter's ``time_zone``
    (:func:`serving.plan_file.with_dialing_keys`)."""
    zones = part[TIME_ZONE_COLUMN].tolist() if TIME_ZONE_COLUMN in part.columns else [None] * len(part)
    rows = part[["voter_id", "arm", "expected_gain", "p_reached", "cost"]].to_dict("records")
    for row, position, zone in zip(rows, part.index.tolist(), zones, strict=True):
        row["voter_id"] = str(row["voter_id"])
        row["priority"] = int(position) + 1
        if isinstance(zone, str):  # null (NaN in a text column) on mail and canvass contacts
            row["time_zone"] = zone
    return rows
