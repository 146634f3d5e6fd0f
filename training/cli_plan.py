"""``persuade plan``: whom to contact, with which arm, within a budget (:mod:`serving.planning`)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from training.cli_consent import ConsentOptions, consent_arms, consent_options, no_consent_facts
from training.cli_consent import report as consent_report
from training.cli_measure import design_lines
from training.cli_model import load_model_and_rows, model_option, model_uri_of
from training.cli_output import USER_ERRORS, console, err, refuse_input_as_output, warn
from training.cli_output import fail as _fail


# -- plan ----------------------------------------------------------------------------
@click.command("plan")
@model_option("Model to plan with")
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="Voters to plan for (parquet or CSV): the id column and the model's features.")
@click.option("--budget", required=True, type=click.FloatRange(min=0, min_open=True),
              help="Total cost allowed, in the units of the costs (GGL: postcards).")
@click.option("--costs", "costs_path", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Costs per arm, capacity and contact rate per channel (configs/costs.yaml); "
                   "default: the run config's costs, no capacities.")
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Parquet file: one row per voter considered, the contacts first in priority order, with the "
                   "design's assignment and probabilities (serving/plan_file.py).")
@click.option("--chunk-size", default=200_000, show_default=True, help="Rows per streamed chunk.")
@click.option("--sensitivity", is_flag=True,
              help="Also re-plan with each arm's average effect at either end of its 95% interval and report "
                   "what the plan would lose (two more solves per arm).")
@click.option("--holdout", default=0.0, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Share of the targeted voters held out at random (by arm and score band): the program's "
                   "control group, for persuade measure.")
@click.option("--explore", default=0.0, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Share of the eligible voters given a random arm they may get (or control), for the next model.")
@click.option("--seed", default=None, type=click.IntRange(min=0),
              help="Seed of the holdout and exploration draws (default: a fresh one, recorded in the plan).")
@consent_options
def plan_command(model_uri: str, input_path: Path, budget: float, costs_path: Path | None, output_path: Path,
         chunk_size: int, sensitivity: bool, holdout: float, explore: float, seed: int | None,
         consent: ConsentOptions) -> None:
    """Choose whom to contact, with which arm, within the budget (maximum expected gain).

    A model with arms that need consent needs --consent TABLE (arms a voter may not get
    are never planned), or --no-consent (those arms are dropped for everybody).
    """
    from serving.plan_costs import ProgramCosts, load_costs
    from serving.plan_design import DesignSpec
    from serving.plan_file import with_dialing_keys, write_plan
    from serving.plan_gains import clusters_from_file, gains_from_file
    from serving.planning import eligibility_arrays, plan_from_gains
    from training.tracking import configure

    refuse_input_as_output(output_path, input_path, costs_path, consent.consent_path)
    model_uri = model_uri_of(model_uri, consent.config_path)
    configure()
    try:
        costs = load_costs(costs_path) if costs_path is not None else ProgramCosts()
    except USER_ERRORS as exc:
        _fail(exc)
    model, ref, total = load_model_and_rows(model_uri, input_path, "nothing was planned")
    if consent_arms(model) and consent.consent_path is None and not consent.no_consent:
        _fail(ValueError(f"arms {consent_arms(model)} need consent: give --consent TABLE to apply the consent "
                         "rules, or --no-consent to plan without those arms"))
    try:
        eligibility = consent.eligibility()
    except USER_ERRORS as exc:
        _fail(exc)
    with Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
                  TextColumn("{task.completed:,}/{task.total:,}"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("expected gains", total=total)
        try:
            ids, gains = gains_from_file(model, input_path, costs, chunk_size, on_chunk=lambda n: bar.advance(task, n))
            reasons = decided = tally = None
            if eligibility is not None:  # --consent TABLE, or --no-consent (no table: quiet hours still kept)
                decided, tally = eligibility.for_voter_file(input_path, model.arms, model.id_column, chunk_size)
            if decided is not None:
                allowed, reasons = eligibility_arrays(decided, ids, model)
                gains = gains.restrict(allowed)
            solve = bar.add_task("allocating", total=1)
            result = plan_from_gains(model, ids, gains, budget, costs, reasons,
                                     design=DesignSpec(holdout=holdout, explore=explore, seed=seed),
                                     clusters=clusters_from_file(model, input_path, ids))
            bar.update(solve, completed=1)
            if sensitivity:
                from serving.plan_sensitivity import with_sensitivity

                resolve = bar.add_task("re-planning at each arm's interval ends", total=1)
                result = with_sensitivity(model, gains, result, costs)
                bar.update(resolve, completed=1)
        except USER_ERRORS as exc:
            bar.stop()
            _fail(exc)
    consent_info = None
    if eligibility is not None:
        consent_info = consent_report(console, err, eligibility, tally)
        result.table = with_dialing_keys(result.table, decided, model)  # phone_hash; time_zone of calls and texts
    if consent.no_consent:
        consent_info = {**consent_info, **no_consent_facts(model)}
        warn(f"--no-consent: arms {consent_info['dropped_arms']} are not planned; no do-not-contact list was "
             "applied")
    from serving.provenance import plan_provenance

    write_plan(result, output_path, plan_provenance(ref, model, input_path, costs_path, consent.consent_path,
                                                    consent_info))
    _print_plan(result, output_path)
    for line in design_lines(result.summary()):
        console.print(line)


def _print_plan(result, output_path: Path) -> None:
    summary = result.summary()
    table = Table(title=f"plan: {len(result.table):,} contacts, "
                        f"{summary['spent']:,.2f} of {summary['budget']:,.2f} spent")
    for col in ("channel", "attempts", "cost", "expected gain", "expected reached"):
        table.add_column(col, justify="left" if col == "channel" else "right")
    for channel, c in summary["channels"].items():
        table.add_row(channel, f"{c['attempts']:,}", f"{c['cost']:,.2f}", f"{c['expected_gain']:,.2f}",
                      f"{c['expected_reached']:,.1f}")
    console.print(table)
    interval = summary["interval"]
    ci = f" [95% interval {interval['low']:,.1f}, {interval['high']:,.1f}]" if interval else ""
    console.print(f"expected incremental {summary['outcome']}: {summary['total_expected_gain']:,.1f}{ci}")
    solver = summary["solver"]
    console.print(f"optimality: LP bound {solver['lp_bound']:,.2f}, gap {solver['gap']:.4f} "
                  f"({solver['rel_gap']:.2e} relative)")
    console.print("voters: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in summary["suppression"].items()))
    if summary["not_allowed"]:
        console.print("arms not allowed: " + ", ".join(f"{k} {v:,}" for k, v in summary["not_allowed"].items()))
    if result.sensitivity is not None:
        _print_sensitivity(result.sensitivity)
    console.print(f"-> {output_path}")


def _print_sensitivity(frame) -> None:
    table = Table(title="if an arm's average effect were at an end of its 95% interval")
    for col in ("arm", "side", "gains x", "voters moved", "re-plan contacts", "plan loses"):
        table.add_column(col, justify="left" if col in ("arm", "side", "re-plan contacts") else "right")
    for row in frame.itertuples():
        mix = ", ".join(f"{arm} {n:,}" for arm, n in row.replan_contacts_per_arm.items()) or "none"
        table.add_row(row.arm, row.side, f"{row.scale:.2f}", f"{row.voters_moved:,}", mix,
                      f"{row.regret:,.1f} ({row.regret_share:.1%})")
    console.print(table)

