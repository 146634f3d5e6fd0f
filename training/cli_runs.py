"""``persuade runs`` and ``persuade evaluate``: what training runs made.

``runs``: one row per recent run: its config and outcome (column and kind), learner, best
arm's hold-out Qini, turnout AUC, the registered model version the run made with its
aliases (``@champion``), and the gates' verdict; a failed gate is flagged in red.
``evaluate``: one run's hold-out Qini per arm against the references, its ATEs and gates.
Both take ``--format json|csv`` for scripts.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from training.cli_output import console, fail

FORMATS = ("text", "json", "csv")
format_option = click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
    help="text for people (readable at 80 columns); json or csv for scripts (plain, no colour).")


@click.command("runs")
@click.option("--limit", default=10, show_default=True)
@click.option("--experiment", default=None, help="Experiment (config) name; default: all.")
@format_option
def runs_command(limit: int, experiment: str | None, fmt: str) -> None:
    """Recent runs: outcome, key metrics, the registered version and its aliases, the gates.

    One block per run (its id, config and start on the first line), so nothing is cut at
    80 columns; ``--format json`` (a list of records) or ``csv`` (one row per run) for scripts.
    """
    from training.tracking import configure

    client = configure()
    exps = [client.get_experiment_by_name(experiment)] if experiment else client.search_experiments()
    exp_ids = [e.experiment_id for e in exps if e is not None]
    found = client.search_runs(exp_ids, order_by=["attributes.start_time DESC"], max_results=limit) if exp_ids else []
    records = [run_record(client, run) for run in found]
    if fmt != "text":
        write_records(records, fmt)
        return
    if not records:
        console.print("no runs yet")
    for record in records:
        console.print(record_block(record))


def write_records(records: list[dict], fmt: str) -> None:
    """``records`` on stdout as JSON (a list) or CSV (lists joined by ``; ``), without markup."""
    if fmt == "json":
        click.echo(json.dumps(records, indent=2))
        return
    import csv

    writer = csv.DictWriter(sys.stdout, fieldnames=list(records[0]) if records else ["run_id"], lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: "; ".join(map(str, v)) if isinstance(v, list) else v for k, v in record.items()})


def run_record(client, run) -> dict:
    """One run as plain values: id, config, start, outcome, learner, best arm's Qini, turnout AUC, versions, gates."""
    from training.promotion import gates_verdict

    metrics, tags = run.data.metrics, run.data.tags
    qinis = {k[:-5]: v for k, v in metrics.items() if k.endswith("_qini") and not k.startswith("ref_")}
    best = max(qinis.items(), key=lambda kv: kv[1]) if qinis else (None, None)
    return {
        "run_id": run.info.run_id, "config": tags.get("persuade.config"),
        "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(run.info.start_time / 1000)),
        "outcome": outcome_text(run), "learner": tags.get("persuade.learner"),
        "best_arm": best[0], "best_arm_qini": best[1], "turnout_auc": metrics.get("turnout_auc"),
        "registered": registered_versions(client, run.info.run_id),
        "gates": gates_verdict(run),  # "all passed" only for a finished run
    }


def record_block(record: dict) -> Text:
    """One run for people: id, config and start; outcome, learner and metrics; registered versions; gates."""
    verdict = record["gates"]
    style = "green" if verdict == "all passed" else "bold red" if verdict.startswith("failed") else "yellow"
    block = Text()
    block.append(f"{record['run_id']}  {record['config'] or '?'}  {record['started']}\n", style="bold")
    best = f"{record['best_arm']} {record['best_arm_qini'] * 1000:.3f}" if record["best_arm"] else "-"
    scores = [f"outcome {record['outcome']}", f"learner {record['learner'] or '?'}", f"best arm Qini x1000 {best}"]
    if record["turnout_auc"] is not None:  # a support model may have no turnout model
        scores.append(f"turnout AUC {record['turnout_auc']:.3f}")
    block.append("  " + ", ".join(scores) + "\n")
    block.append(f"  registered {'; '.join(record['registered']) or '-'}\n")
    block.append("  gates ")
    block.append(verdict.replace("failed", "FAILED", 1), style=style)
    block.append("\n")
    return block


def outcome_text(run) -> str:
    """``column (kind)`` of the run's outcome: from its tags, else from its logged config."""
    tags = run.data.tags
    column, kind = tags.get("persuade.outcome_column"), tags.get("persuade.outcome_kind", "?")
    if column is None:  # runs logged before the tag: their config
        import mlflow
        import yaml

        try:
            config = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/config.yaml"))
            column, kind = config["outcome"]["column"], config["outcome"].get("kind", kind)
        except Exception:  # noqa: BLE001 - a run without its config (failed early) has no outcome to show
            return kind
    return f"{column} ({kind})"


def registered_versions(client, run_id: str) -> list[str]:
    """``name vN @alias`` of each model version registered from the run."""
    found = sorted(client.search_model_versions(f"run_id = '{run_id}'"), key=lambda mv: (mv.name, int(mv.version)))
    versions = [client.get_model_version(mv.name, mv.version) for mv in found]  # a search leaves the aliases out
    return [f"{mv.name} v{mv.version}" + "".join(f" @{a}" for a in sorted(mv.aliases or ())) for mv in versions]


@click.command("evaluate")
@click.option("--run", "run_id", required=True, help="MLflow run id.")
@format_option
def evaluate_command(run_id: str, fmt: str) -> None:
    """Show a run's hold-out evaluation: Qini per arm against the references, gates.

    ``--format json``: ``{run_id, holdout_qini: {ranking: {arm: qini}}, ate: [...], gates: {...}}``;
    ``csv``: the hold-out Qini, one row per ranking and arm.
    """
    import pandas as pd
    from mlflow.artifacts import download_artifacts

    from training.tracking import configure

    client = configure()
    with tempfile.TemporaryDirectory(prefix="persuade-evaluate-") as tmp:  # MLflow's default is never removed
        try:
            run = client.get_run(run_id)
            folder = Path(download_artifacts(run_id=run_id, artifact_path="evaluation", dst_path=tmp))
        except Exception as exc:  # noqa: BLE001 - MLflow raises its own types for unknown runs
            fail(LookupError(f"run {run_id!r}: {exc}"))
        holdout = pd.read_csv(folder / "holdout_qini.csv")
        ate = pd.read_csv(folder / "ate.csv")
    gates = {k[len("gate."):]: v for k, v in sorted(run.data.tags.items()) if k.startswith("gate.")}
    if fmt == "csv":
        click.echo(holdout[["ranking", "arm", "qini"]].to_csv(index=False), nl=False)
        return
    if fmt == "json":
        qini = {str(r): {str(a): float(v) for a, v in row.items() if pd.notna(v)} for r, row in  # a candidate's arms
                holdout.pivot(index="ranking", columns="arm", values="qini").iterrows()}
        click.echo(json.dumps({"run_id": run_id, "holdout_qini": qini,
                               "ate": json.loads(ate.to_json(orient="records")), "gates": gates}, indent=2))
        return
    pivot = holdout.pivot(index="ranking", columns="arm", values="qini") * 1000
    table = Table(title=f"run {run_id} ({run.data.tags.get('persuade.config')}, "
                        f"learner {run.data.tags.get('persuade.learner')}): hold-out Qini x1000")
    table.add_column("ranking")
    for arm in pivot.columns:
        table.add_column(arm, justify="right")
    for name, row in pivot.iterrows():
        table.add_row(str(name), *[f"{v:.3f}" if pd.notna(v) else "-" for v in row])
    console.print(table)
    console.print(ate.to_string(index=False))
    for key, value in gates.items():
        console.print(f"gate.{key}: {value}")
