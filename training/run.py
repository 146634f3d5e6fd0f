"""A training run end to end: read, validate, fit, evaluate, log to MLflow, register.

Validation happens before MLflow is touched: a bad input file stops the run with an
error that names the problem, and nothing is logged or registered.
"""

from __future__ import annotations

import contextlib
import io
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd

from features.attrition import observed_rows
from features.config import RunConfig, load_config
from features.fingerprint import data_fingerprint
from features.pii import find_pii_columns
from features.schema import ValidationReport, validate_experiment
from features.tables import load_experiment
from serving.flavor import log_model
from serving.plan_interval import effect_bins
from training import plots
from training.contact_rate import log_contact_rate
from training.data_checks import data_checks_metadata, log_data_checks
from training.fit import FitResult, Progress, _noop, fit_and_evaluate
from training.learners import ANY
from training.programs import load_programs, rows_per_label
from training.tracking import code_version, configure, ensure_experiment, log_json, log_metrics_flat, temp_dir

STEPS = 9  # progress steps of one run: 8 in fit_and_evaluate + logging


@dataclass
class TrainOutcome:
    run_id: str
    model_name: str
    version: str
    result: FitResult
    validation: ValidationReport
    fingerprint: dict

    @property
    def model_uri(self) -> str:
        """The registered version's MLflow URI, ``models:/<name>/<version>``."""
        return f"models:/{self.model_name}/{self.version}"


def excluded_attributes(config: RunConfig, frame: pd.DataFrame) -> dict[str, str]:
    """Columns kept out of the features, and why (names only, never values)."""
    out = {c: "protected attribute (kept aside for the fairness audit)" for c in config.protected}
    out.update({c: "PII (configured)" for c in config.pii})
    others = [c for c in frame.columns if c not in out and c not in config.features]
    out.update({c: f"PII ({why})" for c, why in find_pii_columns(frame, others).items()})
    return out


def train(config: RunConfig | str | Path, progress: Progress = _noop) -> TrainOutcome:
    """Run one training run from a config (object or YAML path)."""
    if not isinstance(config, RunConfig):
        config_path = Path(config)
        config = load_config(config_path)
        config_text = config_path.read_text()
    else:
        import yaml

        config_text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    progress("read and validate input")
    frame = load_experiment(config)
    validation = validate_experiment(frame, config)
    programs = load_programs(config)  # past programs' plans, outcomes and voters (checked)
    fingerprint = data_fingerprint(frame, config, [p.fingerprint for p in programs])
    excluded = excluded_attributes(config, frame)
    # the sizes the run fits with are the ones it logs
    config = config.scaled_to(rows_per_label(validation.rows_per_arm, programs, config))

    result = fit_and_evaluate(observed_rows(frame, config), config, progress,  # outcome.missing: drop
                              programs=programs)

    progress("log to MLflow and register")
    client = configure()
    experiment_id = ensure_experiment(client, config.name)
    with terminate_as_interrupt():
        # any exception (SIGTERM and Ctrl-C included) leaving this block ends the run FAILED
        with mlflow.start_run(experiment_id=experiment_id) as run:
            run_id = run.info.run_id
            model_info = _log_run(config, config_text, result, validation, fingerprint, excluded, run_id)
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints "Successfully registered ..." itself
            mv = mlflow.register_model(model_info.model_uri, config.model_name)
        for gate, info in result.gates.items():
            client.set_model_version_tag(config.model_name, mv.version, f"gate.{gate}",
                                         "passed" if info["passed"] else "failed")
    return TrainOutcome(run_id, config.model_name, str(mv.version), result, validation, fingerprint)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` (in the main thread only).

    Python's default SIGTERM ends the process without unwinding, which would leave the MLflow
    run RUNNING forever; raised as an interrupt, the run's ``with`` block ends it FAILED.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def headline_metrics(result: FitResult) -> dict[str, float]:
    """The few numbers a reviewer or a field tool wants first."""
    out = {f"turnout_{k}": result.turnout[k] for k in ("auc", "brier") if k in result.turnout}
    for arm in result.model.arms:
        m = result.arm_metrics[arm.label]
        out[f"{arm.slug}_qini"] = m["qini"]
        out[f"{arm.slug}_uplift_at_20"] = m["uplift_at_20"]
    return out


def _log_run(config, config_text, result: FitResult, validation, fingerprint, excluded, run_id) -> None:
    model = result.model
    mlflow.set_tags({
        "persuade.config": config.name,
        "persuade.learner": result.learner,
        "persuade.final_size": result.final_size,
        "persuade.turnout_score_feature": str(result.turnout_score_feature).lower(),
        "persuade.code_version": code_version(),
        "persuade.validation": "clean",
        "persuade.data_sha256": fingerprint["sha256"],
        "persuade.outcome_kind": config.outcome.kind,
        "persuade.outcome_column": config.outcome.column,
        "persuade.served": ", ".join(f"{arm}: {name}" for arm, name in result.served.items()),
        **({"persuade.programs": program_names(result)} if result.programs else {}),
        **{f"gate.{g}": ("passed" if v["passed"] else "failed") for g, v in result.gates.items()},
    })
    mlflow.log_params({
        "learner": result.learner,
        "learners_compared": ",".join(config.uplift.learners),
        "final_sizes_compared": ",".join(config.uplift.final_candidates()),
        "final_size": result.final_size,
        "selection_metric": config.uplift.selection_metric,
        "selection_budgets": ",".join(f"{b:g}" for b in config.audit.budgets),
        "references_compared": ",".join(config.uplift.references),
        "cv_repeats": result.cv_repeats,
        "pool_arms": config.uplift.pool_arms,
        "arm_rounds": config.uplift.arm_rounds,
        "turnout_score_feature": result.turnout_score_feature,
        "turnout_score_compared": ",".join(map(str, config.uplift.turnout_score_options())),
        "holdout_fraction": config.split.holdout_fraction,
        "folds": config.split.folds,
        "seed": config.split.seed,
        **{f"final_{k}": v for k, v in config.uplift.final_candidates()[result.final_size].model_dump().items()},
        **{f"arm_{k}": v for k, v in config.uplift.arm_params.model_dump().items()},
        **{f"nuisance_{k}": v for k, v in config.uplift.nuisance.model_dump().items()},
        "nuisance_from_control": config.uplift.nuisance_from_control,
        "nuisance_treated_leaves": result.nuisance_treated_leaves,
        "nuisance_treated_leaves_compared": ",".join(map(str, config.uplift.treated_leaves_options())),
        **{f"nuisance_rounds_{_nuisance_slug(model, label)}": r for label, r in result.nuisance_rounds.items()},
        **({f"turnout_{k}": v for k, v in config.turnout.params.model_dump().items()} if config.has_turnout else {}),
        "n_features": len(model.feature_names),
        **({"programs": program_names(result)} if result.programs else {}),  # the model report lists params
    })
    log_metrics_flat({**result.flat_metrics(), **arm_choice_metrics(result)})
    if result.contact_rate is not None:
        log_contact_rate(result.contact_rate)
    mlflow.log_text(config_text, "config.yaml")
    log_json(fingerprint, "data/fingerprint.json")
    if result.programs:
        log_json(result.programs, "data/programs.json")  # rows of each program, and those left to the hold-out
    log_json({"rows": validation.n_rows, "rows_per_arm": validation.rows_per_arm,
              "outcome_mean_per_arm": validation.outcome_mean_per_arm,
              "srm_p_value": validation.srm_p_value}, "data/validation.json")
    log_json({"features": model.feature_names, "raw_features": model.input_features,
              "excluded": excluded}, "features.json")
    log_json(result.gates, "evaluation/gates.json")
    with temp_dir() as tmp:
        tmp = Path(tmp)
        tables = {
            **{f"selection_cv_{metric}.csv": table.reset_index() for metric, table in result.selection_tables.items()},
            "holdout_qini.csv": result.holdout.reset_index(),
            "selection_cv_arms.csv": result.arm_selection,
            "holdout_policy_value.csv": result.holdout_policy,
            "ate.csv": result.ate,
            "turnout_calibration.csv": result.calibration,
        }
        if result.outcome_shapes is not None:  # grouped CV's best candidate per treated-model shape
            tables["selection_cv_outcome_shapes.csv"] = result.outcome_shapes
        if result.nuisance_losses is not None:  # out-of-fold loss of each treated group's outcome model
            losses = result.nuisance_losses
            table = losses.rename(columns=lambda r: f"loss_{r}_rounds").reset_index(drop=True)
            table.insert(0, "group", [_nuisance_slug(model, label) for label in losses.index])
            table["chosen_rounds"] = [result.nuisance_rounds[label] for label in losses.index]
            tables["nuisance_rounds.csv"] = table
        for arm, table in result.deciles.items():
            tables[f"deciles_{_slug(model, arm)}.csv"] = table
        for name, table in tables.items():
            table.to_csv(tmp / name, index=False)
            mlflow.log_artifact(str(tmp / name), "evaluation")
        _log_plots(config, result, tmp / "plots")
        log_data_checks(validation, tmp / "data_checks")  # data/attrition.csv, data/balance.csv
        prep = result.prepared
        model.metadata = {
            "name": config.model_name,
            "run_id": run_id,
            "config": config.name,
            "learner": result.learner,
            "final_size": result.final_size,
            "turnout_score_feature": result.turnout_score_feature,
            "code_version": code_version(),
            "fingerprint": {k: fingerprint[k] for k in ("sha256", "rows", "rows_per_arm", "programs")
                            if k in fingerprint},
            "features": model.feature_names,
            "excluded": excluded,
            "protected": list(config.protected),
            "metrics": headline_metrics(result),
            "gates": {g: v["passed"] for g, v in result.gates.items()},
            "served": result.served,  # per arm, the candidate grouped CV chose (training.arm_choice)
            "constant_arms": result.constant_arms,
            **planning_metadata(result, config),
            **data_checks_metadata(validation),  # attrition per arm and the balance summary
        }
        example = prep.test[[config.id_column, *model.input_features]].head(5).reset_index(drop=True)
        return log_model(model, input_example=example)  # the persuade flavor (serving/flavor.py)


def planning_metadata(result: FitResult, config: RunConfig) -> dict:
    """What planning reads from a model's metadata: its group column, the uplift deciles (the plan's
    interval, :mod:`serving.plan_interval`) and each arm's average effect (:mod:`serving.plan_sensitivity`)."""
    return {"group_column": config.group_column, "uplift_deciles": effect_bins(result.deciles),
            "arm_effects": result.arm_effects}


def program_names(result: FitResult) -> str:
    """The past programs that trained the model: ``name (design <fingerprint prefix>)``, comma-separated."""
    return ", ".join(f"{p['name']} (design {p['design'][:12]})" for p in result.programs)


def arm_choice_metrics(result: FitResult) -> dict[str, float]:
    """Every arm's candidates' grouped-CV score and standard error, as run metrics (``cv_<arm>_<candidate>``)."""
    out = {}
    for row in result.arm_selection.itertuples():
        key = f"cv_{_slug(result.model, row.arm)}_{row.candidate}"
        out[key], out[f"{key}_se"] = row.value, row.se
    return out


def _slug(model, arm: str) -> str:
    return next(a.slug for a in model.arms if a.label == arm)


def _nuisance_slug(model, label: str) -> str:
    """A treated group of the outcome models: an arm's slug, or ``any_contact``."""
    return "any_contact" if label == ANY else _slug(model, label)


def _log_plots(config: RunConfig, result: FitResult, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    prep = result.prepared
    assigned = prep.test[config.arm_column].astype(str).to_numpy()
    y = prep.test[config.outcome.column].to_numpy(dtype=float)
    units = "pp" if config.outcome.kind == "turnout" else "points"
    for arm in config.arm_labels:
        rows = (assigned == arm) | (assigned == config.control_label)
        t = (assigned[rows] == arm).astype(float)
        scores = {name: s[arm].to_numpy()[rows] for name, s in result.test_scores.items() if arm in s.columns}
        slug = _slug(result.model, arm)
        plots.qini_curves(arm, scores, y[rows], t, folder / f"qini_{slug}.png")
        plots.decile_bars(arm, result.deciles[arm], folder / f"deciles_{slug}.png", units)
    if len(result.calibration):  # a support model without a turnout model has none
        plots.calibration_plot(result.calibration, folder / "turnout_calibration.png")
    mlflow.log_artifacts(str(folder), "plots")
