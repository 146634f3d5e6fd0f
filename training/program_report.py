"""The program report: what a planned program delivered, for the field director and the reviewer.

One self-contained HTML file (the pieces of :mod:`training.report_html`), aggregates only:
the incremental outcomes per arm and in total by both estimators with their intervals,
predicted against realized by decile of expected gain (the model's calibration on its own
program), and the design the estimates rest on (seed, shares, strata, fingerprint, what
the holdout cost). :func:`design_section` is also the design section of the plan report.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from training import report_html as h
from training.measure import Measurement
from training.report_blocks import PRIVACY_FOOTER


def _range(entry: Mapping[str, Any], digits: int = 1) -> str:
    if entry.get("estimate") is None:
        return "not measured"
    return f"{entry['estimate']:,.{digits}f} [{entry['ci_low']:,.{digits}f}, {entry['ci_high']:,.{digits}f}]"


def design_section(summary: Mapping[str, Any]) -> h.Section:
    """The plan's randomization: shares, seed, strata, exploration, the holdout's cost, the fingerprint."""
    design = summary.get("design") or {}
    spent = summary.get("randomization") or {}
    units = "votes" if summary.get("outcome", "turnout") == "turnout" else "support points"
    if not design:
        body = h.paragraph("This plan records no design (it was made before plans recorded one): it cannot be "
                           "measured afterwards.", "warn")
        return h.Section("design", "Randomization and what it costs", body)
    if design.get("kind") == "experiment":
        shares = pd.DataFrame(sorted(design["shares"].items()), columns=["arm", "share"])
        body = [h.paragraph("A randomized experiment read as a plan: every voter had the design's shares."),
                h.table(shares, {"share": h.pct(2)}), h.key_values({"design fingerprint": design["fingerprint"]})]
        return h.Section("design", "Randomization", "".join(body))
    if not (design.get("holdout") or design.get("explore")):
        body = h.paragraph("This plan has no holdout and no exploration: nobody like the contacted voters is left "
                           "uncontacted at random, so what it delivers cannot be measured, and its outcomes cannot "
                           "train the next model (plan with --holdout, and --explore).", "warn")
        return h.Section("design", "Randomization and what it costs", body)
    held, explored = spent.get("held_out") or {}, spent.get("explored") or {}
    interval = held.get("interval")
    facts = {
        "holdout": f"{design['holdout']:.1%} of the targeted voters, by arm and score band",
        "exploration": f"{design['explore']:.1%} of the {design['exploration']['eligible']:,} eligible voters",
        "seed": str(design["seed"]),
        "voters held out": f"{held.get('voters', 0):,}",
        f"expected incremental {units} forgone": f"{held.get('expected_gain_forgone', 0.0):,.2f}"
        + (f" (95% interval {interval['low']:,.2f} to {interval['high']:,.2f})" if interval else ""),
        "spend not made by the holdout": f"{held.get('cost_not_spent', 0.0):,.2f}",
        "voters explored": f"{explored.get('voters', 0):,} ({explored.get('contacts', 0):,} contacted at random, "
                           f"cost {explored.get('cost', 0.0):,.2f})",
        "design fingerprint": design["fingerprint"],
    }
    body = [
        h.paragraph("A share of the voters the plan targeted is held out at random in each stratum (planned arm x "
                    "band of expected gain): they are the program's control group, and their expected gain is what "
                    "the holdout costs. Exploration gives a random share of the eligible voters a random arm they "
                    "may get (or control), so the next model learns where this one does not look. Every voter's "
                    "probability of each arm and of control is recorded in the plan; an arm a voter may not get "
                    "(consent) has probability 0 and is never drawn."),
        h.key_values(facts),
    ]
    strata = pd.DataFrame(design.get("strata") or [])
    if len(strata):
        strata["share_held_out"] = strata.held_out / strata.voters
        body += [h.heading("Holdout strata"), h.table(strata[["arm", "band", "voters", "held_out", "share_held_out",
                                                              "gain_high", "gain_low"]],
                                                      {"share_held_out": h.pct(1), "gain_high": h.number(4),
                                                       "gain_low": h.number(4)})]
    return h.Section("design", "Randomization and what it costs", "".join(body))


def _arms_table(result: Mapping[str, Any]) -> pd.DataFrame:
    ipw = result["estimators"]["ipw"]
    rows = []
    for name, dr, ip in [("total", result["total"], ipw["total"]),
                         *((arm, entry, ipw["arms"][arm]) for arm, entry in result["arms"].items())]:
        rows.append({"arm": name, "contacts": dr["contacts"], "predicted": dr["predicted"],
                     "ipw": _range(ip), "doubly_robust": _range(dr), "per_contact_dr": _range(dr["per_contact"], 4)})
    return pd.DataFrame(rows)


def _arms_chart(result: Mapping[str, Any], units: str) -> bytes:
    arms = [a for a, e in result["arms"].items() if e["estimate"] is not None]
    fig, ax = plt.subplots(figsize=(6.4, 0.5 + 0.55 * max(len(arms), 1)))
    y = np.arange(len(arms))
    est = np.array([result["arms"][a]["estimate"] for a in arms], dtype=float)
    low = np.array([result["arms"][a]["ci_low"] for a in arms], dtype=float)
    high = np.array([result["arms"][a]["ci_high"] for a in arms], dtype=float)
    ax.errorbar(est, y, xerr=[est - low, high - est], fmt="o", color="#1d4fa3", capsize=4, label="realized (DR, 95%)")
    predicted = [result["arms"][a]["predicted"] for a in arms]
    if all(p is not None for p in predicted):
        ax.scatter(predicted, y, marker="D", color="#d98b00", zorder=3, label="predicted by the plan")
    ax.axvline(0, color="#777", lw=1)
    ax.set_yticks(y, arms)
    ax.set_xlabel(f"incremental {units}")
    ax.legend(loc="best", fontsize=8)
    return h.png_bytes(fig)


def _decile_chart(deciles: pd.DataFrame, units: str) -> bytes:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    x = deciles.decile.to_numpy()
    est = deciles.realized_per_contact.to_numpy(dtype=float)
    ax.errorbar(x, est, yerr=[est - deciles.ci_low.to_numpy(dtype=float), deciles.ci_high.to_numpy(dtype=float) - est],
                fmt="o", color="#1d4fa3", capsize=3, label="realized (DR, 95%)")
    ax.plot(x, deciles.predicted_per_contact, "D-", color="#d98b00", label="predicted")
    ax.axhline(0, color="#777", lw=1)
    ax.set_xticks(x)
    ax.set_xlabel("decile of expected gain (1 = highest)")
    ax.set_ylabel(f"incremental {units} per contact")
    ax.legend(fontsize=8)
    return h.png_bytes(fig)


def build_program_report(measurement: Measurement) -> str:
    """The program report's HTML (see the module docstring)."""
    result = measurement.as_dict()
    units = result["units"]
    total = result["total"]
    summary = measurement.program.summary
    facts = {
        f"incremental {units} (doubly robust)": _range(total),
        f"incremental {units} (IPW)": _range(result["estimators"]["ipw"]["total"]),
        f"predicted by the plan ({units})": "-" if total["predicted"] is None else f"{total['predicted']:,.1f}",
        "contacts measured": f"{total['contacts']:,}",
        "per contact (doubly robust)": _range(total["per_contact"], 4),
        "voters in the plan": f"{result['voters']:,}",
        "clusters (interval unit)": f"{result['clusters']:,} ({result['cluster_column'] or 'each voter'})",
        "plan file": result["plan"], "outcomes file": result["outcomes"],
    }
    notes = []
    if result["unmeasured_contacts"]:
        notes.append(h.paragraph(f"{result['unmeasured_contacts']:,} contacts had no chance of being held out (a "
                                 "control probability of 0) and are not measured.", "warn"))
    if not result["outcome_model"]:
        notes.append(h.paragraph("The plan records no outcome model (no baseline prediction): the doubly robust "
                                 "estimate equals the IPW one.", "note"))
    delivered = [
        h.paragraph(f"Incremental {units}: the outcomes of the contacted voters minus what the voters held out at "
                    f"random say those outcomes would have been without contact, with 95% intervals. The headline "
                    f"is the doubly robust estimate."),
        h.columns(h.key_values(facts), "".join(notes)),
        h.heading("Per arm"),
        h.table(_arms_table(result), {"predicted": h.number(1)}, row_class=lambda r: "ref" if r["arm"] == "total"
                else ""),
        h.figures([h.image(_arms_chart(result, units), "Realized against predicted incremental outcomes per arm")]),
    ]
    sections = [h.Section("delivered", "What the program delivered", "".join(delivered))]
    if measurement.deciles is not None:
        deciles = measurement.deciles
        sections.append(h.Section("calibration", "Predicted and realized by decile of expected gain", "".join([
            h.paragraph("The contacts split into ten equal groups by their expected gain; in each, the plan's "
                        "prediction per contact against the realized effect per contact (doubly robust): the "
                        "model's calibration on its own program."),
            h.table(deciles, {c: h.number(4) for c in ("predicted_per_contact", "realized_per_contact", "ci_low",
                                                        "ci_high")}),
            h.figures([h.image(_decile_chart(deciles, units), "Predicted and realized effect per contact by decile")]),
        ])))
    sections.append(design_section(summary))
    sections.append(h.Section("method", "How it was measured", "".join([
        h.paragraph("Each voter's outcome is joined to the plan, whose rows were checked against the design's "
                    "fingerprint. Per arm, the contacted voters' outcomes are compared with the control voters' "
                    "(held out, or drawn to control by the exploration), each weighted by the odds the design gave "
                    "them of that arm against control: the inverse-propensity (Hajek) estimate. The doubly robust "
                    "estimate does the same on what the model's prediction without contact leaves unexplained. "
                    "Intervals are cluster-robust (clusters: households or precincts when the plan records them) "
                    "and count the control voters the arms share."),
    ])))
    model = (summary.get("provenance") or {}).get("model") or {}
    title = f"Program report: {result['plan']}"
    subtitle = (f"{model.get('name', 'model')} version {model.get('version', '-')}; outcome "
                f"{result['outcome'].get('column')}")
    return h.page(title, subtitle, sections, PRIVACY_FOOTER)


def write_program_report(measurement: Measurement, path: str | Path) -> Path:
    """Write :func:`build_program_report` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_program_report(measurement), encoding="utf-8")
    return path
