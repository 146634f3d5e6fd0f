"""The modelers' command line: ``persuade train|evaluate|promote|runs|score``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=False)
err = Console(stderr=True)

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, LookupError, FileNotFoundError)


def _fail(exc: BaseException) -> None:
    err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
    sys.exit(2)


@click.group()
@click.version_option(package_name="persuade")
def main() -> None:
    """persuade: turnout and persuasion (uplift) models for voter-contact programs."""


# -- train ---------------------------------------------------------------------------
@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="YAML run config (see configs/).")
def train(config_path: Path) -> None:
    """Train, evaluate on the grouped hold-out, log to MLflow and register the model."""
    from training.run import STEPS
    from training.run import train as run_train

    started = time.perf_counter()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=False) as bar:
        task = bar.add_task("starting", total=STEPS)
        first = [True]

        def step(name: str) -> None:
            if not first[0]:
                bar.advance(task)
            first[0] = False
            bar.update(task, description=name)

        try:
            outcome = run_train(config_path, progress=step)
        except USER_ERRORS as exc:
            bar.stop()
            _fail(exc)
        bar.update(task, completed=STEPS, description="done")
    elapsed = time.perf_counter() - started
    _print_result(outcome.result, outcome.validation)
    console.print(f"\nrun id     [bold]{outcome.run_id}[/]")
    console.print(f"registered [bold]{outcome.model_name}[/] version [bold]{outcome.version}[/] "
                  f"(learner: {outcome.result.learner}) in {elapsed:.0f} s")
    for gate, info in outcome.result.gates.items():
        mark = "[green]pass[/]" if info["passed"] else "[red]FAIL[/]"
        console.print(f"gate {gate:<16} {mark}  {info['detail']}")
    from training.tracking import tracking_uri

    console.print(f"\nlook at it: [bold]mlflow ui --backend-store-uri {tracking_uri()}[/]")


def _print_result(result, validation) -> None:
    arms = [a.label for a in result.model.arms]
    table = Table(title="Hold-out Qini by arm (x1000; higher is better)")
    table.add_column("ranking")
    for arm in arms:
        table.add_column(arm, justify="right")
    for name in result.holdout.index.get_level_values(0).unique():
        label = f"{name} (selected)" if name == result.learner else name
        table.add_row(label, *[f"{result.holdout.loc[(name, a), 'qini'] * 1000:.3f}" for a in arms])
    console.print(table)
    t = Table(title="Selected model: hold-out metrics per arm")
    cols = ("arm", "Qini x1000 [95% CI]", "AUUC", "uplift@10%", "@20%", "@30%", "pred. ATE", "observed ATE [95% CI]")
    for col in cols:
        t.add_column(col, justify="right" if col != "arm" else "left")
    for arm in arms:
        m = result.arm_metrics[arm]
        a = result.ate.set_index("arm").loc[arm]
        t.add_row(arm, f"{m['qini'] * 1000:.3f} [{m['qini_low'] * 1000:.3f}, {m['qini_high'] * 1000:.3f}]",
                  f"{m['auuc']:.5f}", f"{m['uplift_at_10']:.4f}", f"{m['uplift_at_20']:.4f}",
                  f"{m['uplift_at_30']:.4f}",
                  f"{a.predicted_ate:.4f}", f"{a.observed_ate:.4f} [{a.observed_low:.4f}, {a.observed_high:.4f}]")
    console.print(t)
    tm = result.turnout
    console.print(f"turnout model (hold-out control): AUC {tm['auc']:.3f}  log loss {tm['log_loss']:.4f}  "
                  f"Brier {tm['brier']:.4f}  max decile gap {tm['max_calibration_gap']:.3f}"
                  f"{'  (recalibrated)' if tm['recalibrated'] else ''}")


# -- evaluate ------------------------------------------------------------------------
@main.command()
@click.option("--run", "run_id", required=True, help="MLflow run id.")
def evaluate(run_id: str) -> None:
    """Show a run's hold-out evaluation: Qini per arm against the references, gates."""
    import pandas as pd
    from mlflow.artifacts import download_artifacts

    from training.tracking import configure

    client = configure()
    try:
        run = client.get_run(run_id)
        folder = Path(download_artifacts(run_id=run_id, artifact_path="evaluation"))
    except Exception as exc:  # noqa: BLE001 - MLflow raises its own types for unknown runs
        _fail(LookupError(f"run {run_id!r}: {exc}"))
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


# -- promote -------------------------------------------------------------------------
@main.command()
@click.option("--name", "model_name", default="persuade-ggl2008", show_default=True, help="Registered model name.")
@click.option("--version", default=None, help="Model version (default: the latest, or the run's).")
@click.option("--run", "run_id", default=None, help="Promote the version registered from this run.")
@click.option("--alias", default="champion", show_default=True)
def promote(model_name: str, version: str | None, run_id: str | None, alias: str) -> None:
    """Move the champion alias to a version if its gates pass; otherwise refuse."""
    from training.promotion import PromotionRefused
    from training.promotion import promote as do_promote
    from training.tracking import configure

    client = configure()
    try:
        p = do_promote(model_name, version=version, run_id=run_id, alias=alias, client=client)
    except PromotionRefused as exc:
        err.print(f"[bold red]refused:[/] {exc}", highlight=False)
        sys.exit(1)
    except USER_ERRORS as exc:
        _fail(exc)
    prev = f" (was version {p.previous})" if p.previous else ""
    console.print(f"[green]promoted[/] {p.name} version {p.version} to @{p.alias}{prev}")


# -- runs ----------------------------------------------------------------------------
@main.command()
@click.option("--limit", default=10, show_default=True)
@click.option("--experiment", default=None, help="Experiment (config) name; default: all.")
def runs(limit: int, experiment: str | None) -> None:
    """A table of recent runs and their key metrics."""
    from training.tracking import configure

    client = configure()
    exps = [client.get_experiment_by_name(experiment)] if experiment else client.search_experiments()
    exp_ids = [e.experiment_id for e in exps if e is not None]
    if not exp_ids:
        console.print("no runs yet")
        return
    found = client.search_runs(exp_ids, order_by=["attributes.start_time DESC"], max_results=limit)
    table = Table(title="recent runs")
    for col in ("run id", "config", "started", "learner", "best arm Qini x1000", "turnout AUC", "gates"):
        table.add_column(col)
    for r in found:
        qinis = {k: v for k, v in r.data.metrics.items() if k.endswith("_qini") and not k.startswith("ref_")}
        best = max(qinis.items(), key=lambda kv: kv[1]) if qinis else None
        gates = [k.split(".", 1)[1] for k, v in r.data.tags.items() if k.startswith("gate.") and v != "passed"]
        table.add_row(
            r.info.run_id, r.data.tags.get("persuade.config", "?"),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.info.start_time / 1000)),
            r.data.tags.get("persuade.learner", "?"),
            f"{best[0][:-5]} {best[1] * 1000:.3f}" if best else "-",
            f"{r.data.metrics.get('turnout_auc', float('nan')):.3f}",
            "all passed" if not gates else "failed: " + ",".join(gates),
        )
    console.print(table)


# -- score ---------------------------------------------------------------------------
@main.command()
@click.option("--model", "model_uri", default="models:/persuade-ggl2008@champion", show_default=True)
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--chunk-size", default=200_000, show_default=True, help="Rows per streamed chunk.")
def score(model_uri: str, input_path: Path, output_path: Path, chunk_size: int) -> None:
    """Score a voter file (parquet or CSV) into a parquet file, streaming in chunks."""
    from serving.batch import count_rows, score_file
    from serving.flavor import load_scoring_model
    from training.tracking import configure

    configure()
    try:
        model, ref = load_scoring_model(model_uri)
        total = count_rows(input_path)
    except USER_ERRORS as exc:
        _fail(exc)
    except Exception as exc:  # noqa: BLE001 - MLflow's own errors for unknown models
        _fail(LookupError(f"cannot load model {model_uri!r}: {exc}"))
    started = time.perf_counter()
    with Progress(TextColumn("[bold]scoring"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} rows"),
                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("score", total=total, rate="")

        def advance(n: int) -> None:
            bar.advance(task, n)
            done = bar.tasks[0].completed
            bar.update(task, rate=f"{done / max(time.perf_counter() - started, 1e-9):,.0f} rows/s")

        try:
            stats = score_file(model, input_path, output_path, chunk_size, on_chunk=advance)
        except USER_ERRORS as exc:
            bar.stop()
            _fail(exc)
    elapsed = time.perf_counter() - started
    console.print(f"scored {stats.rows:,} voters with {ref.name or ref.uri} v{ref.version or '-'} "
                  f"in {elapsed:.1f} s -> {stats.output}")


if __name__ == "__main__":
    main()
