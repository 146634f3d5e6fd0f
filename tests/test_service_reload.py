"""Readiness and hot reload against a real service that follows a registry alias.

The service follows ``models:/persuade-reload-test@champion`` (its own registered model, so
the session's champion is never touched) and polls the alias every second. The scenario:
no model yet (alive, not ready) -> a version appears (ready) -> the alias moves to a good
version (swapped) -> to a version that cannot be loaded, and to one that loads but fails
the smoke check (the old version keeps serving, and /model and the log say so).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow.tracking import MlflowClient
from model_faults import stored_bundle

from serving.bundle import ScoringModel
from serving.bundle_checksums import write_checksums
from serving.flavor import log_model
from serving.launcher import ServiceProcess
from serving.registry import load_scoring_model
from training.tracking import configure, ensure_experiment

NAME = "persuade-reload-test"
KEY = "sk-reload-" + secrets.token_hex(8)
ADMIN_KEY = "sk-reload-admin-" + secrets.token_hex(8)


def register(model: ScoringModel, example, breakage: Callable[[Path], None] | None = None) -> str:
    """Log ``model`` as a new run and register it; ``breakage`` alters its stored bundle, as if logged so."""
    client = configure()
    with mlflow.start_run(experiment_id=ensure_experiment(client, "service-reload-test")) as run:
        log_model(model, input_example=example)
    version = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", NAME).version)
    if breakage is not None:
        bundle = stored_bundle(NAME, version)
        breakage(bundle)
        write_checksums(bundle)  # the checksums hold: the load or the smoke check must refuse it
    return version


def corrupt_booster(bundle: Path) -> None:
    (bundle / "uplift" / "phone.txt").write_text("this is not a LightGBM model\n")


def nan_turnout(bundle: Path) -> None:
    """Loads fine, but the turnout calibration maps everything to NaN."""
    (bundle / "turnout_calibration.json").write_text('[[0.0, 1.0], [NaN, NaN]]')


def wait_for(check: Callable[[], bool], timeout: float = 90.0) -> None:
    """Poll ``check`` until it holds (bounded: this is a wait, not a speed assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"condition not met within {timeout:.0f} s")


@pytest.fixture(scope="module")
def model_and_example(champion_uri, campaign):
    model = load_scoring_model(champion_uri)[0]
    return model, campaign.voter_file.head(5)[["voter_id", *model.input_features]]


def test_ready_only_with_a_model_and_reload_without_downtime(trained, model_and_example, campaign):
    model, example = model_and_example
    voter = {"voter_id": "V-1", "age": 44, "hh_size": 2, "urbanicity": "rural"}
    svc = ServiceProcess(model_uri=f"models:/{NAME}@champion", api_keys=[KEY], admin_keys=[ADMIN_KEY],
                         env={"PERSUADE_RELOAD_SECONDS": "1", "PERSUADE_WORKERS": "1"},  # one worker's reload:
                         wait_ready=False)  # with two, /readyz and /model may answer from different workers
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    client = MlflowClient()
    with svc, svc.client(KEY, timeout=60) as http:

        def model_card() -> dict:
            return http.get("/model").json()

        def served_version() -> str | None:
            r = http.get("/model")
            return r.json()["version"] if r.status_code == 200 else None

        # 1. nothing registered yet: alive, not ready, no scores, and /model says why
        assert httpx.get(svc.base_url + "/livez").status_code == 200
        assert httpx.get(svc.base_url + "/readyz").status_code == 503
        wait_for(lambda: "cannot resolve" in http.get("/model").json()["message"])
        r = http.get("/model")
        assert r.status_code == 503 and r.json()["state"] == "loading" and NAME in r.json()["message"]
        assert http.post("/score", json={"voters": [voter]}).status_code == 503

        # 2. a first version appears under the alias: the poller loads it, the service is ready
        v1 = register(model, example)
        client.set_registered_model_alias(NAME, "champion", v1)
        wait_for(lambda: httpx.get(svc.base_url + "/readyz").status_code == 200)
        assert served_version() == v1
        before = http.post("/score", json={"voters": [voter]}).json()
        assert before["model"]["version"] == v1

        # 3. the alias moves to a good version: swapped in by the poller
        v2 = register(model, example)
        client.set_registered_model_alias(NAME, "champion", v2)
        wait_for(lambda: served_version() == v2)
        card = model_card()
        assert card["reload"]["state"] == "ok" and f"was {v1}" in card["reload"]["message"]
        after = http.post("/score", json={"voters": [voter]}).json()
        assert after["model"]["version"] == v2 and after["scores"] == before["scores"]

        # 4. the alias moves to a version that cannot be loaded: the old one keeps serving
        v3 = register(model, example, corrupt_booster)
        client.set_registered_model_alias(NAME, "champion", v3)
        r = http.post("/admin/reload", headers=admin)
        assert r.status_code == 200
        status = r.json()
        assert status["state"] == "failed" and status["failed_version"] == v3 and status["changed"] is False
        assert "failed to load" in status["message"] and f"still serving version {v2}" in status["message"]
        card = model_card()
        assert card["version"] == v2 and card["reload"]["state"] == "failed"
        assert http.post("/score", json={"voters": [voter]}).json()["model"]["version"] == v2
        wait_for(lambda: f"version {v3} failed to load" in svc.log)

        # 5. ... and to one that loads but gives NaN turnout: refused by the smoke check
        v4 = register(model, example, nan_turnout)
        client.set_registered_model_alias(NAME, "champion", v4)
        wait_for(lambda: model_card()["reload"]["failed_version"] == v4)
        card = model_card()
        assert card["version"] == v2 and "smoke check" in card["reload"]["message"]
        assert "turnout is not a probability" in card["reload"]["message"]
        assert http.post("/score", json={"voters": [voter]}).status_code == 200
        assert httpx.get(svc.base_url + "/readyz").status_code == 200

        # 6. back to a good version: the failure is cleared
        client.set_registered_model_alias(NAME, "champion", v1)
        wait_for(lambda: served_version() == v1)
        assert model_card()["reload"]["state"] == "ok"
    svc.cleanup()
