"""The persuade MLflow flavor: a scoring model logged as a pyfunc, and loaded back.

Like MLflow's own flavors, a logged model is a directory with a signature, an input
example and its environment (pinned requirements plus the ``features`` and ``serving``
code it needs). The scoring model itself is stored under ``artifacts/bundle`` in the
format of :mod:`serving.bundle`; :func:`load_scoring_model` reads it without unpickling
anything, and ``mlflow.pyfunc.load_model`` (or ``spark_udf``) gives the same scores.
"""

from __future__ import annotations

import os
import warnings
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.types.schema import ColSpec, Schema

from serving.bundle import ScoringModel
from serving.bundle_checksums import write_checksums
from serving.model_check import record_probe_scores

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ["lightgbm", "pandas", "numpy", "pyarrow", "scikit-learn", "mlflow", "pyyaml", "pydantic", "scipy",
                "phonenumbers"]


class PersuadePyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: ``predict`` returns the score columns for each input row, consent applied.

    An arm that needs consent is never returned unless a consent table is given in
    ``params`` (``consent_table``, ``as_of``, ``prerecorded_cap``, ``consent_time_zone``,
    ``consent_max_age_hours``, ``calling_hours``; see ``serving.eligibility.PREDICT_PARAMS``); the
    number each decision is for is the optional input column ``phone``, the voter's address
    state (a source of the local time zone) the optional column ``state``.
    """

    def load_context(self, context) -> None:
        self.model = ScoringModel.load(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return predict_scores(self.model, model_input, params)


def predict_scores(model: ScoringModel, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
    """The pyfunc's answer: ``model.score`` with the consent decision of ``params`` applied."""
    from serving.eligibility import predict_eligibility  # serving.eligibility imports this module

    return predict_eligibility(params).apply(model.score(model_input), model_input, model.arms, model.id_column)


def pip_requirements() -> list[str]:
    """Pinned requirements of the installed versions."""
    return [f"{name}=={version(name)}" for name in REQUIREMENTS]


def log_model(model: ScoringModel, bundle_dir: Path, input_example: pd.DataFrame, name: str = "model"):
    """Log ``model`` (already saved at ``bundle_dir``) to the active run as a pyfunc.

    Before it is logged, the bundle gets the probe segment's scores of ``model`` as it is in
    memory (``probe_scores.json``) and the checksums of all its files (``checksums.json``):
    a loader proves the files against both (:mod:`serving.model_check`).
    """
    from serving.eligibility import PHONE_FIELD, PREDICT_PARAMS, STATE_FIELD

    output = predict_scores(model, input_example)
    with warnings.catch_warnings():
        # MLflow hints that integer columns cannot hold missing values: voter files carry
        # integer counts, and int64 inputs would not pass a float64 signature either.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        signature = infer_signature(input_example, output, params=PREDICT_PARAMS)
    # the number a consent decision is for and the address state (its local time): optional, never in the example
    optional = [ColSpec("string", name, required=False) for name in (PHONE_FIELD, STATE_FIELD)
                if name not in signature.inputs.input_names()]
    signature = ModelSignature(Schema([*signature.inputs.inputs, *optional]), signature.outputs, signature.params)
    record_probe_scores(model, bundle_dir)
    write_checksums(bundle_dir)  # last: it covers every other file
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(Path(__file__).with_name("pyfunc_model.py")),
        artifacts={"bundle": str(bundle_dir)},
        signature=signature,
        input_example=input_example,
        pip_requirements=pip_requirements(),
        code_paths=[str(PACKAGE_ROOT / "features"), str(PACKAGE_ROOT / "serving")],
    )
