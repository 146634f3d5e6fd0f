"""Which model a command works with, and what its user must know about it first.

``persuade score``, ``plan`` and ``serve`` take ``--model URI``; without it the model is the
run config's champion (``--config``: ``models:/<model_name>@champion``), else
``PERSUADE_MODEL_URI``. ``persuade promote`` finds its ``--name`` the same way. A command
that needs a model and has none says how to name one and exits with status 2: no default
belongs to one project. :func:`load_model_and_rows` loads the model of score and plan, proven
first (:func:`load_proven_model`), and warns when its gates failed or it was never promoted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from features.settings import Settings
from training.cli_output import USER_ERRORS, err, fail, labelled

MODEL_ENV = Settings.variable("model_uri")
CHAMPION = "champion"
NAMED = 10  # registered model names listed in the "no model" message at most


def model_option(help_text: str = "Model to use") -> Callable[[Any], Any]:
    """``--model URI`` without a project default (see :func:`model_uri_of`)."""
    return click.option("--model", "model_uri", default=None, metavar="URI",
                        help=f"{help_text}: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model or a folder. "
                             f"Default: models:/<model_name>@{CHAMPION} of --config, else {MODEL_ENV}.")


config_option = click.option("--config", "config_path", default=None,
                             type=click.Path(exists=True, dir_okay=False, path_type=Path),
                             help="Run config (YAML) whose model_name names the model.")


def model_uri_of(given: str | None, config_path: Path | None) -> str:
    """The model URI of a command: ``--model``, else the config's champion, else ``PERSUADE_MODEL_URI``.

    Exits with status 2 and says how to name a model when there is none.
    """
    if given:
        return given
    if config_path is not None:
        return f"models:/{config_model_name(config_path)}@{CHAMPION}"
    named = named_in_environment()
    if named is not None:
        return named
    no_model("--model URI")


def model_name_of(given: str | None, config_path: Path | None) -> str:
    """The registered model name of ``persuade promote``: ``--name``, the config's, or ``PERSUADE_MODEL_URI``'s."""
    if given:
        return given
    if config_path is not None:
        return config_model_name(config_path)
    match = re.match(r"^models:/(?P<name>[^/@]+)", named_in_environment() or "")
    if match:
        return match["name"]
    no_model("--name NAME")


def named_in_environment() -> str | None:
    """The model URI set in the environment (``PERSUADE_MODEL_URI``), None when it is not set."""
    try:
        settings = Settings.from_env()
    except USER_ERRORS as exc:  # another PERSUADE_* variable with a bad value
        fail(exc)
    return settings.model_uri if "model_uri" in settings.model_fields_set else None


def config_model_name(config_path: Path) -> str:
    """The ``model_name`` of a run config (an unreadable config exits 2, naming the problem)."""
    from features.config import load_config

    try:
        return load_config(config_path).model_name
    except USER_ERRORS as exc:
        fail(ValueError(f"--config {exc}"))


def no_model(option: str) -> None:
    """Exit 2: no model was named; say the three ways to name one and what the store holds."""
    names = registered_names()
    known = (f"registered models: {', '.join(names[:NAMED])}{' ...' if len(names) > NAMED else ''}" if names
             else "no model is registered yet: persuade train --config CONFIG.yaml registers one")
    fail(LookupError(f"no model named: give {option} (models:/<model_name>@{CHAMPION}, model_name being the run "
                     f"config's), or --config CONFIG.yaml, or set {MODEL_ENV}; {known}"))


def registered_names() -> list[str]:
    """Names of the registered models in the store (empty when the store cannot be read)."""
    from training.tracking import configure

    try:
        return sorted(m.name for m in configure().search_registered_models(max_results=NAMED + 1))
    except Exception:  # noqa: BLE001 - a hint in an error message must not raise another error
        return []


def model_warnings(model, ref) -> list[str]:
    """What a user of a model must hear: its gates failed, or the registry version was never promoted."""
    from training.promotion import failed_gates

    label = f"{ref.name or ref.uri} version {ref.version or '-'}"
    out = []
    failed = failed_gates(model.metadata)
    if failed:
        out.append(f"{label} FAILED its gates ({', '.join(failed)}): it cannot be promoted, its uplift is not "
                   "evidence that contact persuades anyone, and its expected gains must not be promised")
    if ref.name and ref.version:
        from training.tracking import configure

        try:
            aliases = configure().get_model_version(ref.name, ref.version).aliases
        except Exception:  # noqa: BLE001 - the registry may be out of reach for a local model; nothing to say then
            aliases = None
        if aliases is not None and not aliases:
            out.append(f"{label} was never promoted (no alias): `persuade promote --name {ref.name} "
                       f"--version {ref.version}` checks its gates")
    return out


def load_proven_model(model_uri: str, nothing_done: str):
    """The model at ``model_uri`` and its version, downloaded once, proven and loaded from the proven files.

    An alias is resolved once (it may move meanwhile); the version's bundle is downloaded into
    a temp folder, proven in a child process (:func:`serving.model_check.prove_in_child`: a
    corrupt LightGBM file aborts the child, not this command) and loaded from that same folder,
    its files checked against their checksums again: the files scored are the files proven.
    The folder is removed before this returns (the model is in memory). A model that fails its
    proof, or cannot be found, exits 2 saying so (``nothing_done``: e.g. "nothing was scored").
    """
    import tempfile

    from serving.flavor import load_model
    from serving.model_check import prove_in_child
    from serving.registry import download_bundle

    with model_errors(model_uri, nothing_done), tempfile.TemporaryDirectory(prefix="persuade-model-") as tmp:
        bundle, ref = download_bundle(model_uri, dst=tmp)
        prove_in_child(bundle)
        return load_model(str(bundle)), ref


def load_model_and_rows(model_uri: str, input_path: Path, nothing_done: str):
    """The model to score or plan with (:func:`load_proven_model`), its version, and the input's row count
    (for the progress bar); errors exit 2."""
    from features.table_files import count_rows

    model, ref = load_proven_model(model_uri, nothing_done)
    try:
        rows = count_rows(input_path)
    except USER_ERRORS as exc:
        fail(exc)
    for warning in model_warnings(model, ref):
        err.print(labelled("WARNING:", "bold red", warning))
    return model, ref, rows


@contextmanager
def model_errors(uri: str, nothing_done: str) -> Iterator[None]:
    """Exit 2 with one clear line when the model at ``uri`` fails its proof, the input is bad,
    or MLflow cannot find it (``nothing_done``: what the command did not do, e.g. "nothing was scored")."""
    from serving.model_check import ModelCheckError

    try:
        yield
    except ModelCheckError as exc:
        fail(ValueError(f"model {uri!r} failed its check; {nothing_done}: {exc}"))
    except USER_ERRORS as exc:
        fail(exc)
    except Exception as exc:  # noqa: BLE001 - MLflow's own errors for unknown models
        fail(LookupError(f"cannot load model {uri!r} ({nothing_done}): {exc}"))

