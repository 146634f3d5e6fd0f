"""``persuade measure`` and what ``persuade plan`` prints about its design.

``persuade measure --plan plan.parquet --outcomes results.parquet --output measure.json
[--report measure.html]`` estimates what a planned program delivered
(:mod:`training.measure`) and writes ``measure.json`` (``total`` and one entry per arm,
each ``{estimate, ci_low, ci_high}`` in outcome units) and, if asked, the program report
(:mod:`training.program_report`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from training.cli_output import USER_ERRORS, console, fail


def design_lines(summary: Mapping[str, Any]) -> list[str]:
    """What a plan's design holds out and explores, and what the holdout costs (no voter ids)."""
    design, spent = summary.get("design") or {}, summary.get("randomization") or {}
    if not design or not (design.get("holdout") or design.get("explore")):
        return []
    held, explored = spent["held_out"], spent["explored"]
    units = "votes" if summary.get("outcome", "turnout") == "turnout" else "support points"
    interval = held.get("interval")
    spread = f" [95% interval {interval['low']:,.1f}, {interval['high']:,.1f}]" if interval else ""
    return [
        f"design: seed {design['seed']}, holdout {design['holdout']:.0%} of the targeted voters "
        f"({len(design['strata'])} strata by arm and score band), exploration {design['explore']:.0%} of the "
        f"{design['exploration']['eligible']:,} eligible voters",
        f"held out {held['voters']:,} targeted voters: {held['expected_gain_forgone']:,.1f} expected incremental "
        f"{units} forgone{spread}, {held['cost_not_spent']:,.2f} not spent",
        f"explored {explored['voters']:,} voters: {explored['contacts']:,} contacts at random costing "
        f"{explored['cost']:,.2f}, expected gain {explored['expected_gain']:,.1f}",
        f"design fingerprint {design['fingerprint']}",
    ]


@click.command("measure")
@click.option("--plan", "plan_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The plan file (persuade plan with --holdout and/or --explore).")
@click.option("--outcomes", "outcomes_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="Outcomes (parquet or CSV): the model's id column and outcome column, one row per planned voter.")
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="measure.json: total and per arm, each {estimate, ci_low, ci_high} in outcome units.")
@click.option("--report", "report_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the program report (one self-contained HTML file).")
def measure_command(plan_path: Path, outcomes_path: Path, output_path: Path, report_path: Path | None) -> None:
    """What a planned program delivered: incremental outcomes per arm and in total, against its holdout."""
    from training.measure import measure_program
    from training.program_report import write_program_report

    try:
        measurement = measure_program(plan_path, outcomes_path)
    except USER_ERRORS as exc:
        fail(exc)
    result = measurement.as_dict()
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text(json.dumps(result, indent=2, allow_nan=False))
    _print(result)
    console.print(f"-> {output_path}")
    if report_path is not None:
        console.print(f"program report: {write_program_report(measurement, report_path).resolve()}")


def _print(result: Mapping[str, Any]) -> None:
    units = result["units"]
    table = Table(title=f"incremental {units} delivered (95% intervals, clusters: "
                        f"{result['cluster_column'] or 'voters'})")
    for col in ("", "contacts", "predicted", "IPW", "doubly robust", "per contact (DR)"):
        table.add_column(col, justify="left" if not col else "right")
    rows = [("total", result["estimators"]["ipw"]["total"], result["total"])]
    rows += [(arm, result["estimators"]["ipw"]["arms"][arm], dr) for arm, dr in result["arms"].items()]
    for name, ipw, dr in rows:
        per = dr["per_contact"]
        table.add_row(name, f"{dr['contacts']:,}", _number(dr["predicted"]), _interval(ipw), _interval(dr),
                      _interval(per, digits=4))
    console.print(table)
    if result["unmeasured_contacts"]:
        console.print(f"{result['unmeasured_contacts']:,} contacts had no chance of being held out and are not "
                      "measured")


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def _interval(entry: Mapping[str, Any], digits: int = 1) -> str:
    if entry.get("estimate") is None:
        return "-"
    return (f"{_number(entry['estimate'], digits)} [{_number(entry['ci_low'], digits)}, "
            f"{_number(entry['ci_high'], digits)}]")
