"""The generic entry of a persuade model: what ``mlflow.pyfunc.load_model(uri).predict`` runs.

:func:`serving.flavor._load_pyfunc` wraps the loaded :class:`~serving.bundle.ScoringModel`
in a :class:`PersuadePyfunc`. Models logged before the flavor existed ran this file as an
MLflow "model from code" and load through :meth:`PersuadePyfunc.load_context` (their bundle
is the pyfunc artifact ``bundle``); their own copy of the code imports the class as
``serving.flavor.PersuadePyfunc``, which the flavor re-exports.
"""

from __future__ import annotations

import mlflow
import pandas as pd

from serving.bundle import ScoringModel
from serving.eligibility import predict_eligibility


class PersuadePyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: ``predict`` returns the score columns for each input row, consent applied.

    An arm that needs consent is never returned unless a consent table is given in
    ``params`` (``consent_table``, ``as_of``, ``prerecorded_cap``, ``consent_time_zone``,
    ``consent_max_age_hours``, ``calling_hours``; see ``serving.eligibility.PREDICT_PARAMS``); the
    number each decision is for is the optional input column ``phone``, the voter's address
    state (a source of the local time zone) the optional column ``state``.

    Parameters
    ----------
    model : ScoringModel, optional
        The loaded model (None until :meth:`load_context` for a model logged from code).
    """

    def __init__(self, model: ScoringModel | None = None):
        self.model = model

    def load_context(self, context) -> None:
        """Load the bundle of a model logged before the flavor (the pyfunc artifact ``bundle``)."""
        self.model = ScoringModel.load(context.artifacts["bundle"])

    def get_raw_model(self) -> ScoringModel:
        """The :class:`~serving.bundle.ScoringModel` behind the pyfunc."""
        return self.model

    def predict(self, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return predict_scores(self.model, model_input, params)


def predict_scores(model: ScoringModel, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
    """The pyfunc's answer: ``model.score`` with the consent decision of ``params`` applied."""
    return predict_eligibility(params).apply(model.score(model_input), model_input, model.arms, model.id_column)
