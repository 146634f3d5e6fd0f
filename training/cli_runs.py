"""``persuade runs`` and ``persuade evaluate``: what training runs made.

``runs``: one row per recent run: its config and outcome (column and kind), learner, best
arm's hold-out Qini, turnout AUC, the registered model version the run made with its
aliases (``@champion``), and the gates' verdict; a failed gate is flagged in red.
``evaluate``: one run's hold-out Qini per arm against the references, its ATEs and gates.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from training.cli_output import console, fail


@click.command("runs")
@click.option("--limit", default=10, show_default=True)
@click.option("--experiment", default=None, help="Experiment (config) name; default: all.")
def runs_command(limit: int, experiment: str | None) -> None:
    """Recent runs: outcome, key metrics, the registered version and its aliases, the gates.

    One block per run (its id, config and start on the first line), so nothing is cut at
    80 columns.
    """
    from training.tracking import configure

    client = configure()
    exps = [client.get_experiment_by_name(experiment)] if experiment else client.search_experiments()
    exp_ids = [e.experiment_id for e in exps if e is not None]
    if not exp_ids:
        console.print("no runs yet")
        return
    found = client.search_runs(exp_ids, order_by=["attributes.start_time DESC"], max_results=limit)
    if not found:
        console.print("no runs yet")
    for run in found:
        console.print(run_block(client, run))


def run_block(client, run) -> Text:
    """One run: id, config and start; outcome, learner and metrics; registered versions; gates."""
    from training.promotion import gates_verdict

    metrics, tags = run.data.metrics, run.data.tags
    qinis = {k: v for k, v in metrics.items() if k.endswith("_qini") and not k.startswith("ref_")}
    best = max(qinis.items(), key=lambda kv: kv[1]) if qinis else None
    verdict = gates_verdict(run)  # "all passed" only for a finished run
    style = "green" if verdict == "all passed" else "bold red" if verdict.startswith("failed") else "yellow"
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.info.start_time / 1000))
    block = Text()
    block.append(f"{run.info.run_id}  {tags.get('persuade.config', '?')}  {started}\n", style="bold")
    scores = [f"outcome {outcome_text(run)}", f"learner {tags.get('persuade.learner', '?')}",
              f"best arm Qini x1000 {f'{best[0][:-5]} {best[1] * 1000:.3f}' if best else '-'}"]
    if "turnout_auc" in metrics:  # a support model may have no turnout model
        scores.append(f"turnout AUC {metrics['turnout_auc']:.3f}")
    block.append("  " + ", ".join(scores) + "\n")
    block.append(f"  registered {registered_text(client, run.info.run_id)}\n")
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


def registered_text(client, run_id: str) -> str:
    """``name vN @alias`` of the model versions registered from the run (``-``: none)."""
    found = sorted(client.search_model_versions(f"run_id = '{run_id}'"), key=lambda mv: (mv.name, int(mv.version)))
    versions = [client.get_model_version(mv.name, mv.version) for mv in found]  # a search leaves the aliases out
    return "; ".join(f"{mv.name} v{mv.version}" + "".join(f" @{a}" for a in sorted(mv.aliases or ()))
                     for mv in versions) or "-"


@click.command("evaluate")
@click.option("--run", "run_id", required=True, help="MLflow run id.")
def evaluate_command(run_id: str) -> None:
    """Show a run's hold-out evaluation: Qini per arm against the references, gates."""
    import pandas as pd
    from mlflow.artifacts import download_artifacts

    from training.tracking import configure

    client = configure()
    try:
        run = client.get_run(run_id)
        folder = Path(download_artifacts(run_id=run_id, artifact_path="evaluation"))
    except Exception as exc:  # noqa: BLE001 - MLflow raises its own types for unknown runs
        fail(LookupError(f"run {run_id!r}: {exc}"))
    holdout = pd.read_csv(folder / "holdout_qini.csv")
    pivot = holdout.pivot(index="ranking", columns="arm", values="qini") * 1000
    table = Table(title=f"run {run_id} ({run.data.tags.get('persuade.config')}, "
                        f"learner {run.data.tags.get('persuade.learner')}): hold-out Qini x1000")
    table.add_column("ranking")
    for arm in pivot.columns:
        table.add_column(arm, justify="right")
    for name, row in pivot.iterrows():
        table.add_row(str(name), *[f"{v:.3f}" for v in row])
    console.print(table)
    ate = pd.read_csv(folder / "ate.csv")
    console.print(ate.to_string(index=False))
    for key, value in sorted(run.data.tags.items()):
        if key.startswith("gate."):
            console.print(f"{key}: {value}")
