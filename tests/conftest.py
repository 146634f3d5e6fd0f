"""Shared fixtures: a real MLflow store in a temp dir and a trained synthetic model.

Every test that touches MLflow uses a sqlite tracking store under a temp folder (never
the project's ``mlruns/``). The synthetic campaign is trained once per session and its
registered version promoted to ``champion``, for the scoring, serving and report tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

PROJECT = Path(__file__).resolve().parent.parent
SYNTHETIC_N = 50_000


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> Path:
    """A real sqlite MLflow store in a temp dir, active for the whole session."""
    home = tmp_path_factory.mktemp("persuade_home")
    (home / "mlruns").mkdir()
    uri = f"sqlite:///{home}/mlruns/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERSUADE_HOME", str(home))
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("BENTOML_HOME", str(home / "bentoml"))
        import mlflow

        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        yield home


@pytest.fixture(scope="session")
def campaign():
    """The seeded synthetic campaign (50k voters) with its truth."""
    from features.synthetic import make_campaign

    return make_campaign(SYNTHETIC_N, seed=1)


@pytest.fixture(scope="session")
def campaign_dir(campaign, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("synthetic")
    campaign.write(folder, outcome="voted")
    campaign.write(folder, outcome="support")
    return folder


@pytest.fixture(scope="session")
def trained(mlflow_store, campaign_dir):
    """The synthetic turnout campaign trained, registered and promoted to champion."""
    from training.promotion import promote
    from training.run import train

    outcome = train(campaign_dir / "synthetic_voted.yaml")
    promote(outcome.model_name, version=outcome.version)
    return outcome


@pytest.fixture(scope="session")
def champion_uri(trained) -> str:
    return f"models:/{trained.model_name}@champion"
