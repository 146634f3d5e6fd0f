"""Registered model versions broken on purpose, for tests/test_model_proof.py and bench/fault_bench.py.

Each fault is one found by probing the service (issue 20): a LightGBM booster with one
``leaf_value`` of ``nan`` (LightGBM aborts the process that loads it), two arm files swapped,
a file deleted. :func:`register_faulty_versions` registers a good version and one of each,
the last three broken in the artifact store itself (not in a copy).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
from mlflow.tracking import MlflowClient

from serving.bundle import ScoringModel
from serving.bundle_checksums import write_checksums
from serving.flavor import bundle_path, log_model
from training.tracking import configure, ensure_experiment


def nan_leaf(bundle: Path) -> None:
    """One ``leaf_value`` of the first arm's booster set to nan: LightGBM aborts the process loading it."""
    path = sorted((bundle / "uplift").glob("*.txt"))[0]
    path.write_text(re.sub(r"leaf_value=\S+", "leaf_value=nan", path.read_text(), count=1))


def swap_arms(bundle: Path) -> tuple[str, str]:
    """Swap the first two arms' booster files; returns their bundle paths."""
    first, second = sorted((bundle / "uplift").glob("*.txt"))[:2]
    held = first.read_bytes()
    first.write_bytes(second.read_bytes())
    second.write_bytes(held)
    return f"uplift/{first.name}", f"uplift/{second.name}"


def delete_calibration(bundle: Path) -> None:
    (bundle / "turnout_calibration.json").unlink()


def register(model: ScoringModel, example, name: str) -> str:
    """Log ``model`` as a new run and register it as a new version of ``name``."""
    client = configure()
    with mlflow.start_run(experiment_id=ensure_experiment(client, "model-faults")) as run:
        log_model(model, input_example=example)
    return str(mlflow.register_model(f"runs:/{run.info.run_id}/model", name).version)


def stored_bundle(name: str, version: str) -> Path:
    """The bundle folder of a registered version inside the artifact store (not a copy)."""
    source = MlflowClient().get_model_version(name, version).source  # models:/m-<logged model id>
    location = mlflow.get_logged_model(source.rsplit("/", 1)[-1]).artifact_location
    path = Path(unquote(urlparse(location).path)) if location.startswith("file:") else Path(location)
    return bundle_path(path)


def logged_with_a_nan_leaf(model: ScoringModel, example, name: str) -> str:
    """A registered version whose booster has a ``nan`` leaf and whose checksums match it.

    As if it had been logged so: MLflow's ``log_model`` loads the model to check its input
    example, and that load would abort the logging process, so the file is changed in the
    store after logging and the checksums are written again.
    """
    version = register(model, example, name)
    nan_leaf(stored_bundle(name, version))
    write_checksums(stored_bundle(name, version))
    return version


def register_faulty_versions(model: ScoringModel, example, name: str) -> dict:
    """Versions ``good``, ``nan_leaf``, ``swapped`` (files: ``swapped_files``) and ``deleted`` of ``name``."""
    found = {"good": register(model, example, name), "nan_leaf": logged_with_a_nan_leaf(model, example, name)}
    found["swapped"] = register(model, example, name)
    found["swapped_files"] = swap_arms(stored_bundle(name, found["swapped"]))
    found["deleted"] = register(model, example, name)
    delete_calibration(stored_bundle(name, found["deleted"]))
    return found
