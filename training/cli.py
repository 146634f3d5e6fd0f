"""The modelers' command line: ``persuade train|evaluate|promote|runs|score``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from features.settings import Settings
from training.cli_build import build_command
from training.cli_consent import ConsentOptions, consent_arms, consent_options, no_consent_facts
from training.cli_consent import report as consent_report
from training.cli_init import init_command
from training.cli_measure import measure_command
from training.cli_model import (
    config_option,
    load_model_and_rows,
    model_name_of,
    model_option,
    model_uri_of,
)
from training.cli_output import USER_ERRORS, console, err, labelled, refuse_input_as_output, warn
from training.cli_output import fail as _fail
from training.cli_plan import plan_command
from training.cli_runs import evaluate_command, runs_command
from training.ledger_cli import consent_group


@click.group()
@click.version_option(package_name="persuade")
def main() -> None:
    """persuade: turnout and persuasion (uplift) models for voter-contact programs."""


main.add_command(consent_group)  # persuade consent import|export (training/ledger_cli.py)
main.add_command(measure_command)  # persuade measure (training/cli_measure.py)
main.add_command(init_command)  # persuade init (training/cli_init.py)
main.add_command(plan_command)  # persuade plan (training/cli_plan.py)
main.add_command(runs_command)  # persuade runs (training/cli_runs.py)
main.add_command(evaluate_command)  # persuade evaluate (training/cli_runs.py)
main.add_command(build_command)  # persuade build (training/cli_build.py)


# -- train ---------------------------------------------------------------------------
@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="YAML run config (see configs/).")
def train(config_path: Path):
    """Train, evaluate on the grouped hold-out, log to MLflow and register the model."""
    return _train(config_path)  # the TrainOutcome, for a caller that invokes without standalone mode


def _train(config_path: Path):
    """The train command's work (progress bar, tables, gates); returns the TrainOutcome."""
    from training.run import STEPS
    from training.run import train as run_train

    started = time.perf_counter()
    with Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"),
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
    result = outcome.result
    _print_result(result, outcome.validation)
    from training.data_checks import data_checks_tables

    for part in data_checks_tables(outcome.validation):  # attrition per arm, balance and leakage
        console.print(part)
    console.print(Text.assemble("\nrun id     ", (outcome.run_id, "bold")))
    shapes = result.outcome_shapes
    compared = "" if shapes is None or len(shapes) < 2 else (
        f", outcome models of {result.nuisance_treated_leaves}-leaf trees "
        f"(of {', '.join(map(str, shapes.treated_leaves))})")
    console.print(Text.assemble(
        "registered ", (outcome.model_name, "bold"), " version ", (str(outcome.version), "bold"),
        f" (learner: {result.learner}, final models {result.final_size} "
        f"trees x leaves{' + turnout score' if result.turnout_score_feature else ''}{compared}) in {elapsed:.0f} s"))
    console.print("served per arm: " + ", ".join(f"{arm}: {name}" for arm, name in result.served.items()))
    for gate, info in result.gates.items():
        mark = ("pass", "green") if info["passed"] else ("FAIL", "red")
        console.print(Text.assemble(f"gate {gate:<16} ", mark, f"  {info['detail']}"))
    from training.tracking import tracking_uri

    console.print(Text.assemble("\nlook at it: ", (f"mlflow ui --backend-store-uri {tracking_uri()}", "bold")))
    return outcome


def _print_result(result, validation) -> None:
    from training.choice_summary import arm_choice_table, constant_statement

    arms = [a.label for a in result.model.arms]
    table = Table(title="Hold-out Qini by arm (x1000; higher is better)")
    table.add_column("ranking")
    for arm in arms:
        table.add_column(arm, justify="right")
    for name in result.holdout.index.get_level_values(0).unique():
        label = f"{name} (the model's learner)" if name == result.learner else name
        table.add_row(label, *[f"{result.holdout.loc[(name, a), 'qini'] * 1000:.3f}"
                               if (name, a) in result.holdout.index else "-" for a in arms])  # a candidate's arms
    console.print(table)
    t = Table(title="Served model: hold-out metrics per arm")
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
    console.print(arm_choice_table(result))
    for line in constant_statement(result):
        console.print(line)
    tm = result.turnout
    if not tm:
        console.print("no turnout model: a support outcome trained without turnout.column")
        return
    console.print(f"turnout model (hold-out control): AUC {tm['auc']:.3f}  log loss {tm['log_loss']:.4f}  "
                  f"Brier {tm['brier']:.4f}  max decile gap {tm['max_calibration_gap']:.3f}"
                  f"{'  (recalibrated)' if tm['recalibrated'] else ''}")


# -- promote -------------------------------------------------------------------------
@main.command()
@click.option("--name", "model_name", default=None,
              help="Registered model name (default: the model_name of --config, else PERSUADE_MODEL_URI's).")
@config_option
@click.option("--version", default=None, help="Model version (default: the latest, or the run's).")
@click.option("--run", "run_id", default=None, help="Promote the version registered from this run.")
@click.option("--alias", default="champion", show_default=True)
def promote(model_name: str | None, config_path: Path | None, version: str | None, run_id: str | None,
            alias: str) -> None:
    """Move the champion alias to a version if its gates pass; otherwise refuse."""
    from training.promotion import PromotionRefused
    from training.promotion import promote as do_promote
    from training.tracking import configure

    model_name = model_name_of(model_name, config_path)
    client = configure()
    try:
        p = do_promote(model_name, version=version, run_id=run_id, alias=alias, client=client)
    except PromotionRefused as exc:
        err.print(labelled("refused:", "bold red", exc))
        sys.exit(1)
    except USER_ERRORS as exc:
        _fail(exc)
    prev = f" (was version {p.previous})" if p.previous else ""
    console.print(labelled("promoted", "green", f"{p.name} version {p.version} to @{p.alias}{prev}"))


# -- score ---------------------------------------------------------------------------
@main.command()
@model_option("Model to score with")
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--output", "output_path", required=True, type=click.Path(path_type=Path),
              help="Parquet file (local engine) or parquet folder (spark engine).")
@click.option("--chunk-size", default=200_000, show_default=True, help="Rows per streamed chunk.")
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local", show_default=True,
              help="local: stream on this machine; spark: a pandas UDF on a Spark session (pip install '.[spark]').")
@click.option("--spark-master", default="local[2]", show_default=True,
              help="Spark master for --engine spark: local[N] or a cluster URL (spark://host:7077, yarn, k8s://...).")
@click.option("--explain", "explain", default=0, show_default=True, type=click.IntRange(min=0),
              help="Top K SHAP reasons per voter for its highest-uplift arm (reason_arm, reason_<i>, "
                   "reason_<i>_contribution).")
@consent_options
def score(model_uri: str, input_path: Path, output_path: Path, chunk_size: int, engine: str, spark_master: str,
          explain: int, consent: ConsentOptions) -> None:
    """Score a voter file (parquet or CSV) into parquet, streaming in chunks (or on Spark)."""
    from features.table_files import open_dataset
    from serving.batch import score_file
    from training.tracking import configure

    refuse_input_as_output(output_path, input_path, consent.consent_path)
    model_uri = model_uri_of(model_uri, consent.config_path)
    configure()
    model, ref, total = load_model_and_rows(model_uri, input_path, "nothing was scored")
    transform, eligibility = None, None
    try:
        eligibility = consent.eligibility()
        if eligibility is not None:  # --consent TABLE, or --no-consent (no table: quiet hours still kept)
            transform = eligibility.transform(model.arms, model.id_column, open_dataset(input_path).schema.names)
    except USER_ERRORS as exc:
        _fail(exc)
    started = time.perf_counter()
    with Progress(TextColumn("scoring", style="bold"), BarColumn(),
                  TextColumn("{task.completed:,}/{task.total:,} rows"), TextColumn("{task.fields[rate]}"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("score", total=total, rate="")

        def advance(n: int) -> None:
            bar.advance(task, n)
            done = bar.tasks[0].completed
            bar.update(task, rate=f"{done / max(time.perf_counter() - started, 1e-9):,.0f} rows/s")

        try:
            if engine == "spark":
                from serving.spark import score_dataset

                stats = score_dataset(model, input_path, output_path, master=spark_master, explain=explain,
                                      chunk_size=chunk_size, on_chunk=advance, transform=transform)
            else:
                stats = score_file(model, input_path, output_path, chunk_size, on_chunk=advance, explain=explain,
                                   transform=transform)
        except (*USER_ERRORS, ImportError) as exc:
            bar.stop()
            _fail(exc)
    elapsed = time.perf_counter() - started
    console.print(f"scored {stats.rows:,} voters with {ref.name or ref.uri} v{ref.version or '-'} "
                  f"in {elapsed:.1f} s -> {stats.output}")
    consent_info = None
    if eligibility is not None:
        consent_info = consent_report(console, err, eligibility, stats.consent if engine == "spark"
                                      else transform.tally)
    if consent.no_consent:
        consent_info = {**consent_info, **no_consent_facts(model)}
        warn(f"--no-consent: arms {consent_info['dropped_arms']} dropped; no do-not-contact list was applied")
    elif eligibility is None and consent_arms(model):
        warn(f"scored without --consent: arms {consent_arms(model)} need consent and must not be used from "
             "this list")
    from training.cli_drift import NOT_COMPUTED, drift_lines, drift_report

    drift = drift_report(stats.drift) if engine == "local" else None
    for line in drift_lines(drift) if drift is not None else [NOT_COMPUTED]:
        console.print(line)
    if engine == "local":
        from serving.provenance import score_provenance

        written = score_provenance(ref, model, input_path, stats.rows, consent_info, drift).write(stats.output)
        if drift["features"] or drift["scores"]:
            console.print(f"  the full table per feature and score: {written.name}")


# -- report --------------------------------------------------------------------------
@main.command()
@click.option("--run", "run_id", default=None, help="Model report of this training run (also logged to the run).")
@click.option("--scores", "scores_path", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="List report of this scored file (from persuade score) or contact plan (from persuade plan).")
@click.option("--output", "output_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="HTML file to write (default: reports/model_report_<run>.html, or <list>_report.html).")
@click.option("--model", "model_uri", default=None,
              help="List report: the model that scored or planned the list (default: from its provenance).")
@click.option("--input", "input_path", default=None, type=click.Path(exists=True, path_type=Path),
              help="List report: the scored or planned voter file, to explain targeting (default: from "
                   "provenance).")
@click.option("--shap-rows", default=2000, show_default=True, type=click.IntRange(min=10),
              help="Voters sampled for SHAP (per report, or per arm for a list).")
@click.option("--data-root", default=None, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Model report: folder the run config's relative data paths resolve against (default: project).")
def report(run_id: str | None, scores_path: Path | None, output_path: Path | None, model_uri: str | None,
           input_path: Path | None, shap_rows: int, data_root: Path | None) -> None:
    """Explanation report (one self-contained HTML file) of a training run, a scored list or a contact plan."""
    if (run_id is None) == (scores_path is None):
        _fail(ValueError("give exactly one of --run RUN_ID or --scores FILE"))
    from mlflow.exceptions import MlflowException

    from serving.model_report import MODEL_REPORT_ARTIFACT
    from training.list_report import ListReport
    from training.model_report import ModelReport
    from training.tracking import configure

    client = configure()
    try:
        if run_id is not None:
            path = ModelReport(shap_rows=shap_rows, data_root=data_root).write(run_id, output_path, client=client)
        else:
            path = ListReport(explain_rows=shap_rows).write(scores_path, output_path, model_uri, input_path)
    except USER_ERRORS as exc:
        _fail(exc)
    except MlflowException as exc:  # unknown run or model
        _fail(LookupError(f"cannot build the report: {exc}"))
    if run_id is not None:
        click.echo(f"logged to run {run_id} as {MODEL_REPORT_ARTIFACT}")
        click.echo(f"model report: {path.resolve()}")
    else:
        click.echo(f"list report: {path.resolve()}")



# -- serve ---------------------------------------------------------------------------
@main.command()
@model_option("Model to serve; an @alias is followed when it moves")
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback by default).")
@click.option("--port", default=3000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--consent", "consent_path", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Consent table applied to every /score and /plan (re-read when the file changes); "
                   "default PERSUADE_CONSENT_TABLE. Without one, deliveries that need consent are suppressed.")
def serve(model_uri: str | None, config_path: Path | None, host: str, port: int, consent_path: Path | None) -> None:
    """Serve scores, plans, SHAP reasons and the model report over HTTP (BentoML) until Ctrl-C.

    API keys: PERSUADE_API_KEYS (comma-separated) or PERSUADE_API_KEYS_FILE (sha256 digests);
    admin keys for POST /admin/reload: PERSUADE_ADMIN_KEYS[_FILE]. Phone-keyed consent rows
    need PERSUADE_HASH_KEY. Every PERSUADE_* variable is checked before the service starts.
    """
    from serving.launcher import serve_command, service_env

    model_uri = model_uri_of(model_uri, config_path)
    env = service_env(model_uri)
    if consent_path is not None:
        env[Settings.variable("consent_table")] = str(consent_path.resolve())
    try:
        settings = Settings.from_env(env)  # a bad value stops here, not in every worker
    except USER_ERRORS as exc:
        _fail(exc)
    if not (settings.api_keys or settings.api_keys_file):
        warn("no PERSUADE_API_KEYS or PERSUADE_API_KEYS_FILE: every scoring request will be refused (401)")
    console.print(f"serving {settings.model_uri} on http://{host}:{port}  (API docs: /docs.json; Ctrl-C stops)")
    command = serve_command(host, port)
    os.execvpe(command[0], command, env)


# -- demo ----------------------------------------------------------------------------
@main.command()
@click.option("--config", "config_path", default=Path("configs/ggl2008.yaml"), show_default=True,
              type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", default=Path("reports"), show_default=True, type=click.Path(path_type=Path),
              help="Folder for the sample segment, its scores and the reports.")
def demo(config_path: Path, out_dir: Path) -> None:
    """The main job end to end: train, promote, serve, score over HTTP, reports."""
    from training.demo import run_demo
    from training.promotion import PromotionRefused

    try:
        run_demo(config_path, console, _train, out_dir)
    except PromotionRefused as exc:
        err.print(labelled("refused:", "bold red", exc))
        sys.exit(1)
    except USER_ERRORS as exc:
        _fail(exc)


if __name__ == "__main__":
    main()
