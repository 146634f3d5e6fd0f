"""MLflow tracking and registry: where runs go and how a run is written.

The default store is embedded: ``sqlite:///<project>/mlruns/mlflow.db`` with artifacts
under ``<project>/mlruns/artifacts``. ``MLFLOW_TRACKING_URI`` overrides it, so a remote
tracking server works unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Mapping
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow
from mlflow.tracking import MlflowClient

from serving.store import PROJECT_ROOT, default_store, tracking_uri


def configure() -> MlflowClient:
    """Point MLflow at the tracking store and return a client.

    MLflow's own INFO lines (input-example validation, "Created version ...") are kept
    out of the command's output: persuade says what was registered itself.
    """
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """Experiment id for ``name``; artifacts of a new embedded one go under mlruns/."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if tracking_uri().startswith("sqlite:"):
        location = (default_store() / "artifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def code_version() -> str:
    """Git commit of the working tree (``+dirty`` when it has changes), or the package version."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return "persuade " + version("persuade")
        except PackageNotFoundError:
            return "unknown"


def log_json(obj: Any, artifact_file: str) -> None:
    """Log a JSON artifact of the active run."""
    mlflow.log_dict(json.loads(json.dumps(obj, default=str)), artifact_file)


def log_metrics_flat(metrics: Mapping[str, float]) -> None:
    """Log numeric metrics (NaN and non-numbers are skipped)."""
    clean = {}
    for k, v in metrics.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if f == f:  # not NaN
            clean[k] = f
    mlflow.log_metrics(clean)


def temp_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="persuade-")
