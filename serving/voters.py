"""Read the voters of a scoring request into the model's raw feature columns.

Only ``voter_id`` and the served model's input features are read from each voter;
every other field (names, phone numbers, e-mails, addresses, anything unknown) is
dropped here, before anything else sees the request, so it can never reach a log,
an artifact or a response. A value of the wrong type is a :class:`VoterError` that
names the voter's index and the field, and never echoes the value itself (it might
be personal data).

The columns are checked one feature at a time with numpy (one vectorized conversion
per column); only a column that fails is walked value by value to find the culprits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.pii import name_looks_like_pii
from serving.bundle import ScoringModel

ID_FIELD = "voter_id"
MAX_DETAILS = 20
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class FieldProblem:
    """One bad value: which voter (index in the request), which field, what is wrong."""

    voter: int
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"voter": self.voter, "field": self.field, "message": self.message}


class VoterError(ValueError):
    """Voters that cannot be scored; ``problems`` names each voter index and field."""

    def __init__(self, problems: Sequence[FieldProblem], total: int | None = None):
        self.problems = list(problems)[:MAX_DETAILS]
        self.total = total if total is not None else len(problems)
        first = self.problems[0]
        more = f" (and {self.total - 1} more)" if self.total > 1 else ""
        super().__init__(f"voter {first.voter}, field {first.field!r}: {first.message}{more}")


@dataclass
class VoterBatch:
    """The voters of one request, as columns: ids and the model's raw input features.

    Parameters
    ----------
    ids : ndarray of str
    columns : dict of str to ndarray
        Raw feature name -> values (float for numeric features, object for categorical).
    passthrough : dict of str to ndarray
        Extra fields read for a later step (e.g. eligibility); never features, never logged.
    """

    ids: np.ndarray
    columns: dict[str, np.ndarray]
    passthrough: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def frame(self) -> pd.DataFrame:
        """The raw feature frame (input of ``ScoringModel.transform``)."""
        return pd.DataFrame(self.columns, copy=False)

    @classmethod
    def concat(cls, batches: Sequence[VoterBatch]) -> VoterBatch:
        """One batch of all voters of ``batches``, in order (they must share columns)."""
        if len(batches) == 1:
            return batches[0]
        first = batches[0]
        return cls(
            ids=np.concatenate([b.ids for b in batches]),
            columns={c: np.concatenate([b.columns[c] for b in batches]) for c in first.columns},
            passthrough={c: np.concatenate([b.passthrough[c] for b in batches]) for c in first.passthrough},
        )


class VoterReader:
    """Turn request voters (JSON objects) into a :class:`VoterBatch` for one model.

    Parameters
    ----------
    model : ScoringModel
        The served model: its pipeline says which features are numeric or categorical.
    passthrough : sequence of str
        Extra fields to keep for a later step such as eligibility (default: none).
    """

    def __init__(self, model: ScoringModel, passthrough: Sequence[str] = ()):
        pipeline = model.pipeline
        self.features = list(model.input_features)
        self.categorical = set(pipeline.categories_)
        self.passthrough = list(passthrough)
        leaked = [f for f in self.features if name_looks_like_pii(f)]
        if leaked:
            raise ValueError(f"model input features look like personal data: {leaked}")

    def read(self, voters: Sequence[Mapping[str, Any]]) -> VoterBatch:
        """Validate ``voters`` and return their columns.

        Raises
        ------
        VoterError
            A voter is not an object, has no usable ``voter_id``, or a feature value has
            the wrong type (a list, an object, a non-numeric string for a numeric feature).
        """
        problems: list[FieldProblem] = []
        not_objects = [i for i, v in enumerate(voters) if not isinstance(v, Mapping)]
        if not_objects:
            raise VoterError([FieldProblem(i, "voter", "must be a JSON object") for i in not_objects],
                             len(not_objects))
        ids = self._ids([v.get(ID_FIELD) for v in voters], problems)
        columns = {}
        for name in self.features:
            values = [v.get(name) for v in voters]
            if name in self.categorical:
                columns[name] = self._categorical(values, name, problems)
            else:
                columns[name] = self._numeric(values, name, problems)
        if problems:
            raise VoterError(sorted(problems, key=lambda p: (p.voter, p.field)), len(problems))
        passthrough = {name: _objects([v.get(name) for v in voters]) for name in self.passthrough}
        return VoterBatch(ids, columns, passthrough)

    @staticmethod
    def _ids(values: list[Any], problems: list[FieldProblem]) -> np.ndarray:
        kinds = set(map(type, values))
        if kinds <= {str, int}:
            return np.array(values, dtype=str) if kinds else np.zeros(0, dtype=str)
        for i, v in enumerate(values):
            if v is None:
                problems.append(FieldProblem(i, ID_FIELD, "is required"))
            elif isinstance(v, bool) or not isinstance(v, (str, int)):
                problems.append(FieldProblem(i, ID_FIELD, f"must be a string or an integer, got {_kind(v)}"))
        return np.array([str(v) for v in values], dtype=object)

    @staticmethod
    def _numeric(values: list[Any], name: str, problems: list[FieldProblem]) -> np.ndarray:
        try:
            # None -> NaN, bools -> 0/1, numeric strings parsed: the pipeline's rules.
            out = np.array(values, dtype=float)
            if out.ndim == 1 and not np.isinf(out).any():
                return out
        except (TypeError, ValueError, OverflowError):
            pass
        for i, v in enumerate(values):
            message = _numeric_problem(v)
            if message:
                problems.append(FieldProblem(i, name, message))
        return np.full(len(values), np.nan)

    @staticmethod
    def _categorical(values: list[Any], name: str, problems: list[FieldProblem]) -> np.ndarray:
        if not set(map(type, values)) <= set(_SCALARS):
            for i, v in enumerate(values):
                if not isinstance(v, _SCALARS):
                    problems.append(FieldProblem(i, name, f"must be a string, got {_kind(v)}"))
        return np.array(values, dtype=object)


def _objects(values: list[Any]) -> np.ndarray:
    """A 1-d object array of ``values`` as they are (lists stay single values, never a 2-d array)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _numeric_problem(value: Any) -> str | None:
    """Why ``value`` is not a usable number (None if it is one, or missing)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float, str)):
        try:
            number = float(value)
        except OverflowError:
            return "must be a finite number"
        except ValueError:
            return "must be a number, got a non-numeric string"
        return None if not np.isinf(number) else "must be a finite number"
    return f"must be a number, got {_kind(value)}"


def _kind(value: Any) -> str:
    """JSON type name of a value, never the value itself."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__
