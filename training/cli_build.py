"""``persuade build``: a Bento of the HTTP service (``bentoml build`` with the project's bentofile.yaml).

Two kinds of Bento:

- **followed** (default): the Bento serves ``PERSUADE_MODEL_URI`` from the MLflow registry at
  run time (``models:/<model_name>@champion`` follows the alias as it moves), as ``persuade
  serve`` does; the image needs ``MLFLOW_TRACKING_URI`` and the registry's artifacts.
- **pinned** (``--pin``): one registered version is proven (checksums, load and smoke check
  in a child process, as the service proves a version), copied into BentoML's model store
  (``bentoml.models.create``, its registry name, version and run as metadata) and named in
  the Bento's ``models`` under the alias ``persuade-model``; the Bento's environment sets
  ``PERSUADE_MODEL_URI=bentoml:persuade-model``. The image (``bentoml containerize``) then
  carries the model and serves it without a registry: for an air-gapped deployment.

The build runs offline: the bentofile's pins are the lock (``lock_packages: false``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import yaml

from features.settings import Settings
from serving.launcher import service_env
from serving.model_ref import ModelRef
from serving.store import PROJECT_ROOT
from training.cli_model import (
    config_option,
    model_errors,
    model_option,
    model_uri_of,
    model_warnings,
    named_in_environment,
)
from training.cli_output import console, err, fail, labelled

BENTOFILE = PROJECT_ROOT / "bentofile.yaml"
BUILD_TIMEOUT = 900.0  # seconds `bentoml build` may take


@click.command("build")
@model_option("Model to pin into the Bento (with --pin), or the one the served Bento follows")
@config_option
@click.option("--pin", is_flag=True, help="Copy the model's registered version into the Bento (BentoML's model "
              "store): the image serves it without a registry. Default: the Bento follows PERSUADE_MODEL_URI.")
@click.option("--version", "bento_version", default=None, help="Bento version (default: one BentoML generates).")
def build_command(model_uri: str | None, config_path: Path | None, pin: bool, bento_version: str | None) -> None:
    """Build a Bento of the HTTP service with `bentoml build`; print its tag and how to serve or containerize it."""
    from serving.registry import BENTO_MODEL_ALIAS, BENTO_SCHEME

    env = service_env()  # BENTOML_HOME: the project's bentoml_home unless set, as for `persuade serve`
    named = model_uri or config_path or named_in_environment()
    uri = model_uri_of(model_uri, config_path) if pin or named else None  # --pin needs a model: says how to name one
    extra = {}
    if pin:
        os.environ["BENTOML_HOME"] = env["BENTOML_HOME"]  # the in-process model store is the build's
        model_tag, ref = pin_model(uri)
        console.print(f"pinned {ref.name or ref.uri} version {ref.version or '-'} as BentoML model {model_tag}")
        uri = f"{BENTO_SCHEME}{BENTO_MODEL_ALIAS}"
        extra = {"models": [{"tag": model_tag, "alias": BENTO_MODEL_ALIAS}],
                 "envs": [{"name": Settings.variable("model_uri"), "value": uri}]}
    tag = build_bento(env, extra, bento_version)
    console.print(f"built Bento {tag} in {env['BENTOML_HOME']}")
    for line in next_steps(tag, uri, pin, env):
        console.print(line)


def pin_model(uri: str) -> tuple[str, ModelRef]:
    """Prove the model at ``uri`` and copy its MLflow model folder into BentoML's model store; (tag, ModelRef).

    Warns, as ``persuade score`` does, when the model's gates failed or it was never promoted.
    """
    import shutil

    import bentoml

    from serving.flavor import bundle_path, download_model, load_model
    from serving.model_check import prove_in_child
    from serving.registry import resolve
    from training.tracking import configure

    configure()
    with model_errors(uri, "nothing was pinned"):
        ref = resolve(uri)
        with tempfile.TemporaryDirectory(prefix="persuade-pin-") as tmp:
            folder = download_model(ref.uri, Path(tmp) / "model")
            prove_in_child(bundle_path(folder))  # the service's own proof, before anything is pinned
            for warning in model_warnings(load_model(str(folder)), ref):
                err.print(labelled("WARNING:", "bold red", warning))
            labels = {"registered_model": bento_name(ref.name or "model"), "version": str(ref.version or "-")}
            metadata = {"name": ref.name, "version": ref.version, "run_id": ref.run_id, "source": ref.uri,
                        "flavor": "persuade"}
            with bentoml.models.create(bento_name(ref.name or "persuade-model"), labels=labels,
                                       metadata=metadata) as stored:
                shutil.copytree(folder, stored.path, dirs_exist_ok=True)
    return str(stored.tag), ref


def bento_name(name: str) -> str:
    """A BentoML model name from a registered model name (lower case, letters, digits, ``-``, ``_``, ``.``)."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")
    return cleaned[:63] or "persuade-model"


def build_bento(env: dict[str, str], extra: dict, version: str | None = None) -> str:
    """Run ``bentoml build`` on the project with bentofile.yaml (plus ``extra``'s models and envs); the tag."""
    config = yaml.safe_load(BENTOFILE.read_text())
    config["models"] = [*config.get("models", []), *extra.get("models", [])]
    config["envs"] = [*config.get("envs", []), *extra.get("envs", [])]
    with tempfile.TemporaryDirectory(prefix="persuade-build-") as tmp:
        bentofile = Path(tmp) / "bentofile.yaml"
        bentofile.write_text(yaml.safe_dump(config, sort_keys=False))
        command = [sys.executable, "-m", "bentoml", "build", str(PROJECT_ROOT), "--bentofile", str(bentofile),
                   "--output", "tag", *(["--version", version] if version else [])]
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=BUILD_TIMEOUT,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            fail(RuntimeError(f"bentoml build did not finish within {BUILD_TIMEOUT:.0f} s"))
    found = re.search(r"__tag__:(\S+)", done.stdout)
    if done.returncode != 0 or found is None:
        detail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        fail(RuntimeError("bentoml build failed: " + " | ".join(detail)))
    return found[1]


def next_steps(tag: str, uri: str | None, pinned: bool, env: dict[str, str]) -> list[str]:
    """How to serve the Bento here, and to containerize and run it (docker)."""
    variable = Settings.variable("model_uri")
    model = f"{variable}={uri or 'models:/<model_name>@champion'}"
    registry = "" if pinned else f" MLFLOW_TRACKING_URI={env.get('MLFLOW_TRACKING_URI', '<tracking uri>')}"
    keys = Settings.variable("api_keys")
    return [
        "serve it here (the Bento's own code and environment; set the keys clients send):",
        f"  BENTOML_HOME={env['BENTOML_HOME']} {model}{registry} {keys}=<key> "
        f"bentoml serve {tag} --host 127.0.0.1 --port 3000",
        "or build an image (needs docker) and run it:",
        f"  BENTOML_HOME={env['BENTOML_HOME']} bentoml containerize {tag}",
        f"  docker run --rm -p 3000:3000 -e {keys}=<key>"
        + ("" if pinned else f" -e {model} -e MLFLOW_TRACKING_URI=<a tracking server the container reaches>")
        + f" {tag}" + ("   (the image carries the model and sets " + model + ")" if pinned else ""),
    ]
