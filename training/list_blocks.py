"""Blocks of the list report (:mod:`training.list_report`) that need none of its state.

Whether a plan's rows add up to its stored summary, what the plan would lose if an arm's
average effect were at an end of its interval, what a list made with a model whose
gates failed may not promise: its expected gains (:func:`hidden_gains`, :func:`gates_failed`),
and how far the scored voters lie from the training population (:func:`drift_sections`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.drift import NO_REFERENCE, SHIFTED, SHIFTED_ABOVE, STABLE, STABLE_BELOW, TOO_FEW
from serving.bundle import ScoringModel
from serving.plan_sensitivity import sensitivity_verdict
from serving.provenance import ScoreProvenance
from serving.registry import ModelRef
from training import report_html as h

# the columns of the report's tables that promise gains: left out for a model whose gates failed
GAIN_COLUMNS = ("expected_incremental", "cost_per_incremental", "mean_uplift_targeted", "mean_gain_per_contact")


def gates_failed(ref: ModelRef, failed: Sequence[str]) -> str:
    """The call-out of a list made with a model whose gates failed (``failed``: their names)."""
    return h.paragraph(
        f"{ref.name or ref.uri} version {ref.version or '-'} FAILED its gates ({', '.join(failed)}): it could not "
        "be promoted, and its predicted uplift is not evidence that contacting these voters changes anything. "
        "The expected gains of this list are not shown; do not plan a program on it.", "bad")


def hidden_gains(failed: Sequence[str]) -> tuple[str, ...]:
    """The columns a table of the report hides: :data:`GAIN_COLUMNS` when gates ``failed``, else none."""
    return GAIN_COLUMNS if failed else ()


def plan_checks(table: pd.DataFrame, plan: Mapping[str, Any], model: ScoringModel) -> str:
    """Whether the plan's rows add up to its stored summary (a file edited afterwards does not)."""
    problems = []
    contacted = plan["suppression"].get("contacted")
    if contacted is None or len(table) != int(contacted):
        problems.append(f"{len(table):,} rows but {contacted} contacts recorded")
    for name, value in (("spent", table.cost.sum()), ("total_expected_gain", table.expected_gain.sum())):
        if not np.isclose(float(value), float(plan[name]), rtol=1e-9, atol=1e-6):
            problems.append(f"rows add up to {name} {float(value):,.4f}, recorded {float(plan[name]):,.4f}")
    unknown = sorted(set(table.arm.astype(str)) - {a.label for a in model.arms})
    if unknown:
        problems.append(f"arms {unknown} are not arms of this model")
    if problems:
        return h.paragraph("The plan's rows do not match its stored summary: " + "; ".join(problems) + ".", "bad")
    return h.paragraph("The plan's rows add up to its stored summary (contacts, spend, expected gain).", "note")


def plan_sensitivity(plan: Mapping[str, Any], units: str) -> list[str]:
    """The plan's dependence on each arm's average effect (``persuade plan --sensitivity``)."""
    head = h.heading("If an arm's average effect were at an end of its 95% interval")
    rows = plan.get("sensitivity")
    if not rows:
        return [head, h.paragraph("Not computed for this plan: `persuade plan --sensitivity` re-plans with each "
                                  "arm's average effect at either end of its interval and records what the plan "
                                  "would lose.", "note")]
    frame = pd.DataFrame(rows)
    frame["replan_contacts_per_arm"] = [", ".join(f"{a} {n:,}" for a, n in mix.items()) or "nobody"
                                        for mix in frame.replan_contacts_per_arm]
    frame = frame.rename(columns={"scale": "gains_x", "replan_contacts_per_arm": "replan_contacts",
                                  "regret": f"plan_loses_{units}", "regret_share": "plan_loses_share"})
    return [head, h.paragraph(
        "Each arm's average effect was measured on the randomized training voters, with sampling error (its 95% "
        "interval). Each row re-plans with one arm's expected gains scaled to an end of that interval and "
        f"reports what keeping this plan would cost if that were the truth. {sensitivity_verdict(rows)}"),
        h.table(frame[["arm", "side", "gains_x", "voters_moved", "replan_contacts", f"plan_loses_{units}",
                       "plan_loses_share"]],
                {"gains_x": h.number(2), "voters_moved": h.number(0), f"plan_loses_{units}": h.number(2),
                 "plan_loses_share": h.pct(1)})]


def drift_sections(provenance: ScoreProvenance | None, shown_bins: int = 3) -> list[h.Section]:
    """The drift section of a scored list whose provenance records drift (none otherwise).

    A table of the population stability index of every model feature and score, highest
    first, with its reading; then the bins of the ``shown_bins`` columns that drifted most.
    """
    drift = provenance.drift if provenance is not None else None
    if not drift:
        return []
    title = "Drift: the scored voters against the training population"
    if drift["status"] == NO_REFERENCE:
        return [h.Section("drift", title, h.paragraph(
            "Not computed: the model has no drift reference (it was saved before models recorded one).", "note"))]
    rows = [{**r, "column": r["name"], "kind": kind} for kind in ("feature", "score") for r in drift[f"{kind}s"]]
    rows.sort(key=lambda r: -1.0 if r["psi"] is None else r["psi"], reverse=True)
    body = [h.paragraph(
        f"For each model feature and each score (turnout, each arm's uplift), the population stability index (PSI) "
        f"of the {drift['voters']:,} scored voters against the {drift['training_voters']:,} training rows, over "
        f"the training deciles (or categories, plus unseen categories and missing values). Below {STABLE_BELOW} "
        f"stable, {STABLE_BELOW} to {SHIFTED_ABOVE} moderate, above {SHIFTED_ABOVE} shifted: a shifted feature "
        "means these voters are unlike those the model learned from, and its predictions there are less certain.")]
    if drift["status"] == TOO_FEW:
        body.append(h.paragraph(f"Too few voters to judge: {drift['voters']:,} scored, at least "
                                f"{drift['min_voters']:,} needed (chance alone moves the PSI of fewer).", "warn"))
    elif drift["status"] == STABLE:
        body.append(h.paragraph("Every feature and score is stable.", "note"))
    body.append(h.table(pd.DataFrame(rows)[["column", "kind", "psi", "band"]], {"psi": h.number(3)},
                        row_class=lambda r: "flag" if r["band"] == SHIFTED else ""))
    for row in [r for r in rows if r["band"] not in (STABLE, TOO_FEW) and r.get("bins")][:shown_bins]:
        body += [h.heading(f"{row['column']}: PSI {row['psi']:.3f} ({row['band']})"),
                 h.table(pd.DataFrame(row["bins"]).rename(columns={"training": "training_share",
                                                                    "scored": "scored_share"}),
                         {"training_share": h.pct(1), "scored_share": h.pct(1)})]
    return [h.Section("drift", title, "".join(body))]
