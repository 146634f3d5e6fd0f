"""The Bento (bentofile.yaml, ``persuade build``): built offline into a temp BENTOML_HOME, served for real.

``bentofile.yaml`` names the service, ships ``features`` and ``serving`` only, and carries
pyproject's dependencies as they are. ``persuade build --pin`` proves a registered version,
copies it into BentoML's model store (its registry name and version as metadata), builds a
Bento whose ``models`` name it under the alias ``persuade-model`` and whose environment (the
image's Dockerfile) serves it. That Bento is served with ``bentoml serve <tag>`` on
127.0.0.1 from a folder outside the checkout, with an empty MLflow store: it answers
``/readyz`` and ``POST /score`` with the scores of ``persuade score`` and its code is the
Bento's own. ``persuade build`` without ``--pin`` makes a Bento that follows
``PERSUADE_MODEL_URI`` in the registry (served here too). ``bentoml containerize`` needs
docker, which this machine lacks: not tested.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tomllib
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from serving.batch import score_file
from serving.flavor import log_model
from serving.launcher import ServiceProcess, free_port
from training.tracking import configure, ensure_experiment

PROJECT = Path(__file__).resolve().parent.parent
NAME = "persuade-bento-test"
KEY = "sk-bento-" + secrets.token_hex(8)


def test_the_bentofile_names_the_service_the_code_and_pyprojects_dependencies():
    bentofile = yaml.safe_load((PROJECT / "bentofile.yaml").read_text())
    pyproject = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    assert bentofile["service"] == "serving.service:Persuade"
    assert bentofile["include"] == ["features/**/*.py", "serving/**/*.py"]  # serving imports nothing from training
    assert bentofile["python"]["packages"] == pyproject["project"]["dependencies"]
    assert bentofile["python"]["lock_packages"] is False  # locking resolves the pins again, over the network


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bentoml_home")


@pytest.fixture(scope="module")
def registered(small_model):
    """A version of the small model registered under NAME and promoted (``models:/NAME@champion``)."""
    model, example = small_model
    with mlflow.start_run(experiment_id=ensure_experiment(configure(), "bento-test")):
        info = log_model(model, input_example=example, registered_model_name=NAME)
    MlflowClient().set_registered_model_alias(NAME, "champion", info.registered_model_version)
    return str(info.registered_model_version)


def persuade(home: Path, *args: str) -> str:
    """``persuade ARGS`` in a fresh process with BENTOML_HOME=``home``; its output (it must succeed)."""
    env = {**os.environ, "BENTOML_HOME": str(home), "COLUMNS": "300", "PERSUADE_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True, text=True, env=env,
                          cwd=PROJECT, timeout=1200, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def bento_folder(home: Path, output: str) -> tuple[str, Path]:
    tag = next(word for line in output.splitlines() if line.startswith("built Bento") for word in [line.split()[2]])
    name, version = tag.split(":")
    return tag, home / "bentos" / name / version


def serve(home: Path, tag: str, env: dict[str, str], voters: pd.DataFrame, cwd: Path) -> dict:
    """Serve the Bento ``tag`` (bentoml serve, 127.0.0.1, one worker) from ``cwd``; the /score and /model answers."""
    port = free_port()
    service = ServiceProcess(api_keys=[KEY], port=port, cwd=cwd, timeout=600,
                             env={"BENTOML_HOME": str(home), "PYTHONPATH": "", "PERSUADE_WORKERS": "1",
                                  "PYTHONDONTWRITEBYTECODE": "", **env},  # imported modules leave their .pyc
                             command=[sys.executable, "-m", "bentoml", "serve", tag, "--host", "127.0.0.1",
                                      "--port", str(port)])
    try:
        with service, service.client(KEY) as http:
            assert http.get("/readyz").status_code == 200
            scored = http.post("/score", json={"voters": voters.to_dict(orient="records")})
            assert scored.status_code == 200, scored.text
            card = http.get("/model")
            assert card.status_code == 200, card.text
            return {"score": scored.json(), "model": card.json()}
    finally:
        service.cleanup()


def assert_scores_of_persuade_score(body: dict, model, cli: pd.DataFrame) -> None:
    """The service's scores: ``persuade score``'s turnout, and its uplift for every arm the service allows."""
    scores = body["scores"]
    assert [s["voter_id"] for s in scores] == cli.voter_id.tolist()
    np.testing.assert_allclose([s["turnout"] for s in scores], cli.turnout, rtol=0, atol=1e-9)
    allowed_somewhere = 0
    for arm in model.arms:
        allowed = np.array([s["eligible"][arm.label] for s in scores])
        got = np.array([np.nan if s["uplift"][arm.label] is None else s["uplift"][arm.label] for s in scores])
        np.testing.assert_allclose(got, np.where(allowed, cli[f"uplift_{arm.slug}"], np.nan), rtol=0, atol=1e-9)
        allowed_somewhere += int(allowed.any())
    assert allowed_somewhere >= 2  # the comparison compares scores, not only suppressions


@pytest.fixture(scope="module")
def voters_and_cli(small_model, small_campaign, tmp_path_factory):
    """Fifty voters and what ``persuade score`` writes for them with the small model."""
    model, _ = small_model
    folder = tmp_path_factory.mktemp("bento_voters")
    voters = small_campaign.voter_file.head(50)[["voter_id", *model.input_features]]
    voters.to_parquet(folder / "voters.parquet", index=False)
    score_file(model, folder / "voters.parquet", folder / "scores.parquet")
    return voters, pd.read_parquet(folder / "scores.parquet")


def test_a_pinned_bento_serves_its_own_model_without_a_registry(home, registered, small_model, voters_and_cli,
                                                               tmp_path):
    model, _ = small_model
    voters, cli = voters_and_cli
    output = persuade(home, "build", "--model", f"models:/{NAME}@champion", "--pin")
    tag, folder = bento_folder(home, output)
    assert f"pinned {NAME} version {registered} as BentoML model" in output
    assert "bentoml containerize" in output and f"bentoml serve {tag}" in output
    bento = yaml.safe_load((folder / "bento.yaml").read_text())
    (pinned,) = bento["models"]
    assert pinned["alias"] == "persuade-model" and pinned["tag"].startswith(f"{NAME}:")
    assert {"name": "PERSUADE_MODEL_URI", "value": "bentoml:persuade-model", "stage": "all"} in bento["envs"]
    assert "ENV PERSUADE_MODEL_URI=$PERSUADE_MODEL_URI" in (folder / "env" / "docker" / "Dockerfile").read_text()
    stored = home / "models" / pinned["tag"].replace(":", "/")
    meta = yaml.safe_load((stored / "model.yaml").read_text())["metadata"]
    assert (meta["name"], meta["version"]) == (NAME, registered)
    assert (stored / "MLmodel").exists() and (stored / "bundle" / "checksums.json").exists()
    assert sorted(p.name for p in (folder / "src").iterdir() if p.is_dir()) == ["features", "serving"]
    assert not list((folder / "src").rglob("__pycache__"))

    empty_store = f"sqlite:///{tmp_path}/empty/mlflow.db"  # the registry is out of reach: the Bento needs none
    (tmp_path / "empty").mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    answers = serve(home, tag, {"PERSUADE_MODEL_URI": "bentoml:persuade-model", "MLFLOW_TRACKING_URI": empty_store,
                                "PERSUADE_HOME": str(tmp_path)}, voters, outside)
    assert_scores_of_persuade_score(answers["score"], model, cli)
    assert (answers["model"]["name"], answers["model"]["version"]) == (NAME, registered)
    assert answers["model"]["uri"] == f"bentoml:{pinned['tag']}"
    assert list((folder / "src" / "serving").glob("__pycache__/service.*.pyc"))  # served from the Bento's code


def test_a_followed_bento_serves_the_registry_alias(home, registered, small_model, voters_and_cli,
                                                    tmp_path):
    model, _ = small_model
    voters, cli = voters_and_cli
    output = persuade(home, "build")
    tag, folder = bento_folder(home, output)
    bento = yaml.safe_load((folder / "bento.yaml").read_text())
    assert bento["models"] == [] and not any(e["name"] == "PERSUADE_MODEL_URI" for e in bento["envs"])
    assert "PERSUADE_MODEL_URI=models:/<model_name>@champion" in output and "MLFLOW_TRACKING_URI=" in output
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    answers = serve(home, tag, {"PERSUADE_MODEL_URI": f"models:/{NAME}@champion"}, voters, outside)
    assert_scores_of_persuade_score(answers["score"], model, cli)
    assert (answers["model"]["name"], answers["model"]["version"]) == (NAME, registered)


def test_pinning_needs_a_model_and_says_how_to_name_one(home, registered):
    env = {k: v for k, v in os.environ.items() if k != "PERSUADE_MODEL_URI"}
    done = subprocess.run([sys.executable, "-m", "training.cli", "build", "--pin"], capture_output=True, text=True,
                          env={**env, "BENTOML_HOME": str(home), "COLUMNS": "300"}, cwd=PROJECT, timeout=600)
    assert done.returncode == 2
    assert "no model named: give --model URI" in " ".join(done.stderr.split())
