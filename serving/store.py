"""Where the MLflow store is: the one place the CLI, batch scoring and the service agree on.

The default store is embedded: ``sqlite:///<PERSUADE_HOME or project>/mlruns/mlflow.db``
with artifacts under ``mlruns/artifacts``. ``MLFLOW_TRACKING_URI`` overrides it, so a
remote tracking server works unchanged. It lives in ``serving`` because the service
reads the registry and ``serving`` never imports ``training``.
"""

from __future__ import annotations

import os
from pathlib import Path

from features.settings import PROJECT_ROOT, Settings  # noqa: F401 - PROJECT_ROOT: also importable here

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def default_store() -> Path:
    """Folder of the embedded store (``PERSUADE_HOME``/mlruns or the project's)."""
    return Settings.from_env().home / "mlruns"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded sqlite store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store = default_store()
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store.resolve()}/mlflow.db"


def use_store() -> str:
    """Point MLflow's tracking and registry at :func:`tracking_uri`; return the URI."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri
