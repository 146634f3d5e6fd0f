"""The ``persuade`` MLflow flavor: save, log and load a scoring model the way MLflow's own flavors do.

A saved model is a directory in MLflow's model format::

    MLmodel              flavors: persuade (bundle, format_version, persuade_version) and
                         python_function (loader_module serving.flavor), signature, example
    bundle/              the scoring model (:mod:`serving.bundle`), its probe scores and checksums
    code/features, code/serving   the code the pyfunc needs
    input_example.json, serving_input_example.json, requirements.txt, conda.yaml, python_env.yaml

:func:`save_model` writes it (``Model.add_flavor`` for ``persuade``, ``pyfunc.add_to_model``
for the generic entry), :func:`log_model` logs it to the active run through ``Model.log``,
and :func:`load_model` reads the bundle back without unpickling anything. ``mlflow.pyfunc
.load_model(uri)`` (and ``mlflow.pyfunc.spark_udf``) call :func:`_load_pyfunc` and give the
same scores, with consent applied through ``params`` (:mod:`serving.pyfunc_model`).

Versions logged before the flavor existed have no ``persuade`` entry in ``MLmodel``: their
bundle is the pyfunc artifact ``artifacts/bundle``, and :func:`bundle_path` falls back to it.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import pandas as pd
import yaml
from mlflow import pyfunc
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.models.model import MLMODEL_FILE_NAME
from mlflow.models.utils import _save_example
from mlflow.tracking.artifact_utils import _download_artifact_from_uri
from mlflow.types.schema import ColSpec, Schema
from mlflow.utils.environment import (
    _CONDA_ENV_FILE_NAME,
    _PYTHON_ENV_FILE_NAME,
    _REQUIREMENTS_FILE_NAME,
    _process_pip_requirements,
    _PythonEnv,
)
from mlflow.utils.file_utils import get_total_file_size, write_to
from mlflow.utils.model_utils import (
    _get_flavor_configuration,
    _validate_and_copy_code_paths,
    _validate_and_prepare_target_save_path,
)

from serving.bundle import ScoringModel
from serving.bundle_checksums import write_checksums
from serving.eligibility import PHONE_FIELD, PREDICT_PARAMS, STATE_FIELD
from serving.probe_scores import record_probe_scores
from serving.pyfunc_model import PersuadePyfunc, predict_scores

# PersuadePyfunc: the code copies of models logged before the flavor import it from here
__all__ = ["FLAVOR_NAME", "FORMAT_VERSION", "PersuadePyfunc", "bundle_path", "download_model",
           "get_default_pip_requirements", "load_model", "log_model", "save_model"]

FLAVOR_NAME = "persuade"
FORMAT_VERSION = 1  # the layout of a saved model (this module's); a newer one is refused, not misread
BUNDLE = "bundle"  # the bundle's folder inside a saved model
LEGACY_BUNDLE = Path("artifacts") / "bundle"  # where models logged before the flavor keep it
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
CODE_PACKAGES = ("features", "serving")  # what the pyfunc imports (serving imports nothing from training)
REQUIREMENTS = ["lightgbm", "pandas", "numpy", "pyarrow", "scikit-learn", "mlflow", "pyyaml", "pydantic", "scipy",
                "phonenumbers", "pydantic-settings", "sqlalchemy"]  # tests/test_flavor.py checks the code's imports


def get_default_pip_requirements() -> list[str]:
    """What the pyfunc imports, pinned to the installed versions."""
    return [f"{name}=={version(name)}" for name in REQUIREMENTS]


def persuade_version() -> str:
    """The installed persuade package's version ("unknown" from a plain checkout)."""
    try:
        return version("persuade")
    except PackageNotFoundError:
        return "unknown"


def infer_model_signature(model: ScoringModel, input_example: pd.DataFrame) -> ModelSignature:
    """Inputs and outputs of the example, the pyfunc's params, and the optional ``phone``/``state`` inputs."""
    output = predict_scores(model, input_example)
    with warnings.catch_warnings():
        # MLflow hints that integer columns cannot hold missing values: voter files carry
        # integer counts, and int64 inputs would not pass a float64 signature either.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        signature = infer_signature(input_example, output, params=PREDICT_PARAMS)
    # the number a consent decision is for and the address state (its local time): optional, never in the example
    optional = [ColSpec("string", name, required=False) for name in (PHONE_FIELD, STATE_FIELD)
                if name not in signature.inputs.input_names()]
    return ModelSignature(Schema([*signature.inputs.inputs, *optional]), signature.outputs, signature.params)


def save_model(model: ScoringModel, path: str | Path, *, input_example: pd.DataFrame | None = None,
               signature: ModelSignature | None = None, mlflow_model: Model | None = None,
               pip_requirements: list[str] | None = None, code_paths: list[str] | None = None,
               metadata: dict | None = None) -> None:
    """Save ``model`` as an MLflow model with the ``persuade`` flavor in the empty folder ``path``.

    The bundle gets the probe segment's scores of ``model`` as it is in memory
    (``probe_scores.json``) and then the checksums of all its files (``checksums.json``):
    a loader proves the files against both (:mod:`serving.model_check`).

    Parameters
    ----------
    model : ScoringModel
        The trained model.
    path : str or Path
        Folder to create (or an empty one).
    input_example : DataFrame, optional
        A few rows of input (the id column and the input features); with it the signature
        is inferred unless ``signature`` is given.
    signature : ModelSignature, optional
    mlflow_model : Model, optional
        The model configuration this flavor is added to (``Model.log`` passes its own).
    pip_requirements : list of str, optional
        Default: the installed versions of what the pyfunc imports, pinned.
    code_paths : list of str, optional
        Default: the ``features`` and ``serving`` packages.
    metadata : dict, optional
        Free-form metadata for ``MLmodel``.
    """
    path = Path(path).resolve()
    _validate_and_prepare_target_save_path(str(path))
    mlflow_model = mlflow_model if mlflow_model is not None else Model()
    bundle = model.save(path / BUNDLE)
    record_probe_scores(model, bundle)
    write_checksums(bundle)  # last: it covers every other file of the bundle
    code = _validate_and_copy_code_paths(
        code_paths if code_paths is not None else [str(PACKAGE_ROOT / p) for p in CODE_PACKAGES], str(path))
    _save_example(mlflow_model, input_example, str(path))
    if signature is None and input_example is not None:
        signature = infer_model_signature(model, input_example)
    if signature is not None:
        mlflow_model.signature = signature
    if metadata is not None:
        mlflow_model.metadata = metadata
    pyfunc.add_to_model(mlflow_model, loader_module=__name__, data=BUNDLE, code=code,
                        conda_env=_CONDA_ENV_FILE_NAME, python_env=_PYTHON_ENV_FILE_NAME)
    manifest = json.loads((bundle / "manifest.json").read_text())
    mlflow_model.add_flavor(FLAVOR_NAME, bundle=BUNDLE, format_version=FORMAT_VERSION,
                            bundle_format=manifest["format"], persuade_version=persuade_version(), code=code)
    if size := get_total_file_size(str(path)):
        mlflow_model.model_size_bytes = size
    mlflow_model.save(str(path / MLMODEL_FILE_NAME))
    conda_env, requirements, _ = _process_pip_requirements(
        pip_requirements if pip_requirements is not None else get_default_pip_requirements())
    with open(path / _CONDA_ENV_FILE_NAME, "w") as handle:
        yaml.safe_dump(conda_env, stream=handle, default_flow_style=False)
    write_to(str(path / _REQUIREMENTS_FILE_NAME), "\n".join(requirements))
    _PythonEnv.current().to_yaml(str(path / _PYTHON_ENV_FILE_NAME))


def log_model(model: ScoringModel, *, name: str = "model", input_example: pd.DataFrame | None = None,
              signature: ModelSignature | None = None, registered_model_name: str | None = None,
              pip_requirements: list[str] | None = None, metadata: dict | None = None):
    """Log ``model`` to the active run (one is started if none is) with the ``persuade`` flavor.

    The arguments are those of :func:`save_model`; ``registered_model_name`` also registers
    a new version. Returns MLflow's ``ModelInfo``.
    """
    return Model.log(artifact_path=None, name=name, flavor=sys.modules[__name__], flavor_name=FLAVOR_NAME,
                     registered_model_name=registered_model_name, model=model, input_example=input_example,
                     signature=signature, pip_requirements=pip_requirements, metadata=metadata)


@functools.cache
def _downloads() -> tempfile.TemporaryDirectory:
    """This process's folder for model downloads without a ``dst_path``, removed when it exits."""
    return tempfile.TemporaryDirectory(prefix="persuade-models-")


def download_model(model_uri: str, dst_path: str | Path | None = None) -> Path:
    """The local folder of ``model_uri``: a local folder as it is, anything else downloaded into ``dst_path``.

    Without ``dst_path`` the model goes to a folder of this process's own, removed when the
    process exits (MLflow's default, a ``mkdtemp`` folder, is never removed).
    """
    if Path(model_uri).exists():
        return Path(model_uri)
    if dst_path is None:
        dst_path = tempfile.mkdtemp(dir=_downloads().name)
    Path(dst_path).mkdir(parents=True, exist_ok=True)
    return Path(_download_artifact_from_uri(artifact_uri=model_uri, output_path=str(dst_path)))


def bundle_path(model_dir: str | Path) -> Path:
    """The bundle folder of a local model folder, as its ``MLmodel`` says.

    A model with the ``persuade`` flavor names its bundle in its flavor configuration; one
    logged before the flavor keeps it at ``artifacts/bundle``; a bundle folder is its own.

    Raises
    ------
    ValueError
        The folder is neither, or its flavor is of a newer format than this code reads.
    """
    folder = Path(model_dir)
    if (folder / MLMODEL_FILE_NAME).exists():
        try:
            conf = _get_flavor_configuration(str(folder), FLAVOR_NAME)
        except MlflowException:
            if (folder / LEGACY_BUNDLE).is_dir():  # logged before the flavor existed
                return folder / LEGACY_BUNDLE
            flavors = ", ".join(sorted(Model.load(str(folder)).flavors)) or "none"
            raise ValueError(f"{folder}: an MLflow model without the {FLAVOR_NAME!r} flavor "
                             f"(its flavors: {flavors}); it is not a persuade scoring model") from None
        if int(conf.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(f"{folder}: saved in persuade flavor format {conf['format_version']} by persuade "
                             f"{conf.get('persuade_version', '?')}; this code reads format {FORMAT_VERSION} "
                             "and older: upgrade persuade")
        return folder / conf["bundle"]
    if (folder / "manifest.json").exists():
        return folder
    if (folder / LEGACY_BUNDLE).is_dir():
        return folder / LEGACY_BUNDLE
    raise ValueError(f"{folder}: neither an MLflow model with the {FLAVOR_NAME!r} flavor nor a persuade bundle "
                     "(no MLmodel, no manifest.json)")


def load_model(model_uri: str, dst_path: str | Path | None = None) -> ScoringModel:
    """Load a persuade model: ``models:/name@alias``, ``models:/name/N``, ``runs:/id/model`` or a folder.

    The bundle's files are checked against its checksums first
    (:class:`~serving.bundle_checksums.BundleChecksumError` names a changed file). Unlike
    MLflow's own flavors this does not put the model's copy of the code on ``sys.path``: the
    code that loads the model is the code that scores with it.

    Parameters
    ----------
    model_uri : str
        Any MLflow model URI, a local model folder or a bundle folder.
    dst_path : str or Path, optional
        Where to download a remote model (default: a temp folder removed when the process exits).
    """
    return ScoringModel.load(bundle_path(download_model(model_uri, dst_path)))


def _load_pyfunc(path: str) -> PersuadePyfunc:
    """Called by ``mlflow.pyfunc.load_model`` with the bundle folder (the pyfunc ``data``)."""
    return PersuadePyfunc(load_model(path))

