"""Read the voters of a scoring request into the model's raw feature columns.

Only ``voter_id`` and the served model's input features are read from each voter;
every other field (names, phone numbers, e-mails, addresses, anything unknown) is
dropped here, before anything else sees the request, so it can never reach a log,
an artifact or a response. A value of the wrong type is a :class:`VoterError` that
names the voter's index and the field, and never echoes the value itself (it might
be personal data).

The columns are checked one feature at a time with numpy (one vectorized conversion
per column); only a column that fails is walked value by value to find the culprits.
Ids are at most :data:`~serving.limits.MAX_ID_CHARS` characters without control
characters, every string read at most :data:`~serving.limits.MAX_STRING_CHARS`; ids stay
Python strings (an object array), so a request's memory never grows with its longest id.

Values the model can score but that deserve a word are *warnings*, per voter, as short
codes naming the field: ``duplicate:voter_id`` (the id appears more than once in the
request: every occurrence), ``missing:<feature>`` (absent or null: scored as unknown),
``out_of_range:<feature>`` (a number outside the range seen in training, recorded in the
model's feature pipeline; models trained before ranges were recorded have none) and
``unknown_category:<feature>`` (a category training never saw: scored as unknown).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.pii import name_looks_like_pii
from serving.bundle import ScoringModel
from serving.limits import MAX_ID_CHARS, MAX_STRING_CHARS

ID_FIELD = "voter_id"
MAX_DETAILS = 20
_SCALARS = (str, int, float, bool, type(None))
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DUPLICATE, MISSING, OUT_OF_RANGE, UNKNOWN_CATEGORY = "duplicate", "missing", "out_of_range", "unknown_category"


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
    ids : ndarray of object (str)
    columns : dict of str to ndarray
        Raw feature name -> values (float for numeric features, object for categorical).
    passthrough : dict of str to ndarray
        Extra fields read for a later step (e.g. eligibility); never features, never logged.
    warnings : list of list of str, optional
        Each voter's warning codes (see the module docstring); None: not checked.
    """

    ids: np.ndarray
    columns: dict[str, np.ndarray]
    passthrough: dict[str, np.ndarray] = field(default_factory=dict)
    warnings: list[list[str]] | None = None

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
        checked = all(b.warnings is not None for b in batches)
        return cls(
            ids=np.concatenate([b.ids for b in batches]),
            columns={c: np.concatenate([b.columns[c] for b in batches]) for c in first.columns},
            passthrough={c: np.concatenate([b.passthrough[c] for b in batches]) for c in first.passthrough},
            warnings=[w for b in batches for w in b.warnings] if checked else None,
        )

    def rows(self, start: int, stop: int) -> VoterBatch:
        """Voters ``start:stop`` (views of the columns)."""
        return VoterBatch(self.ids[start:stop], {c: v[start:stop] for c, v in self.columns.items()},
                          {c: v[start:stop] for c, v in self.passthrough.items()},
                          None if self.warnings is None else self.warnings[start:stop])

    def warning_counts(self) -> dict[str, int]:
        """Warnings by kind (``duplicate``, ``missing``, ...) over all voters, for the audit line."""
        if not self.warnings:
            return {}
        return dict(Counter(code.split(":", 1)[0] for codes in self.warnings for code in codes))


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
        self.categories = {name: set(cats) for name, cats in pipeline.categories_.items()}  # known per feature
        self.categorical = set(self.categories)
        self.ranges = dict(getattr(pipeline, "ranges_", {}))  # none in models trained before ranges were kept
        self.passthrough = list(passthrough)
        leaked = [f for f in self.features if name_looks_like_pii(f)]
        if leaked:
            raise ValueError(f"model input features look like personal data: {leaked}")

    def read(self, voters: Sequence[Mapping[str, Any]]) -> VoterBatch:
        """Validate ``voters`` and return their columns.

        Raises
        ------
        VoterError
            A voter is not an object, has no usable ``voter_id`` (missing, not a string or an
            integer, longer than ``MAX_ID_CHARS`` or holding a control character), or a value
            has the wrong type (a list, an object, a non-numeric string for a numeric feature)
            or is a string longer than ``MAX_STRING_CHARS``.
        """
        problems: list[FieldProblem] = []
        not_objects = [i for i, v in enumerate(voters) if not isinstance(v, Mapping)]
        if not_objects:
            raise VoterError([FieldProblem(i, "voter", "must be a JSON object") for i in not_objects],
                             len(not_objects))
        ids = self._ids([v.get(ID_FIELD) for v in voters], problems)
        columns, passthrough = {}, {}
        for name in self.features:
            values = [v.get(name) for v in voters]
            _check_lengths(values, name, problems)
            if name in self.categorical:
                columns[name] = self._categorical(values, name, problems)
            else:
                columns[name] = self._numeric(values, name, problems)
        for name in self.passthrough:
            values = [v.get(name) for v in voters]
            _check_lengths(values, name, problems)
            passthrough[name] = _objects(values)
        if problems:
            raise VoterError(sorted(problems, key=lambda p: (p.voter, p.field)), len(problems))
        return VoterBatch(ids, columns, passthrough, self._warnings(ids, columns))

    def _warnings(self, ids: np.ndarray, columns: Mapping[str, np.ndarray]) -> list[list[str]]:
        """Each voter's warning codes (see the module docstring), in model feature order."""
        out: list[list[str]] = [[] for _ in range(len(ids))]
        if len(ids) > 1:
            for i in np.flatnonzero(pd.Series(ids, dtype=object).duplicated(keep=False).to_numpy()):
                out[i].append(f"{DUPLICATE}:{ID_FIELD}")
        for name in self.features:
            values = columns[name]
            if name in self.categorical:
                known = self.categories[name]
                missing = np.array([v is None for v in values], dtype=bool)
                odd = np.array([v is not None and str(v) not in known for v in values], dtype=bool)
                kinds = ((MISSING, missing), (UNKNOWN_CATEGORY, odd))
            else:
                low, high = self.ranges.get(name, (-np.inf, np.inf))
                kinds = ((MISSING, np.isnan(values)), (OUT_OF_RANGE, (values < low) | (values > high)))
            for kind, flagged in kinds:
                code = f"{kind}:{name}"
                for i in np.flatnonzero(flagged):
                    out[i].append(code)
        return out

    @staticmethod
    def _ids(values: list[Any], problems: list[FieldProblem]) -> np.ndarray:
        """The ids as Python strings in an object array (a fixed-width array would be as wide as the longest)."""
        kinds = set(map(type, values))
        texts = id_strings(values)
        if kinds <= {str, int} and (not len(texts) or (max(map(len, texts)) <= MAX_ID_CHARS and min(map(len, texts))
                                                       and not _CONTROL.search("".join(texts)))):
            return texts
        for i, (v, text) in enumerate(zip(values, texts, strict=True)):
            if v is None:
                problems.append(FieldProblem(i, ID_FIELD, "is required"))
            elif isinstance(v, bool) or not isinstance(v, (str, int)):
                problems.append(FieldProblem(i, ID_FIELD, f"must be a string or an integer, got {_kind(v)}"))
            elif not text:
                problems.append(FieldProblem(i, ID_FIELD, "must not be empty"))
            elif len(text) > MAX_ID_CHARS:
                problems.append(FieldProblem(i, ID_FIELD, f"must be at most {MAX_ID_CHARS} characters"))
            elif _CONTROL.search(text):
                problems.append(FieldProblem(i, ID_FIELD, "must not contain control characters"))
        return texts

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


def _check_lengths(values: list[Any], name: str, problems: list[FieldProblem]) -> None:
    """A problem for each string of ``values`` longer than ``MAX_STRING_CHARS``."""
    strings = [v for v in values if type(v) is str]
    if strings and max(map(len, strings)) > MAX_STRING_CHARS:
        for i, v in enumerate(values):
            if isinstance(v, str) and len(v) > MAX_STRING_CHARS:
                problems.append(FieldProblem(i, name, f"must be at most {MAX_STRING_CHARS} characters"))


def id_strings(ids: Sequence[Any] | np.ndarray | pd.Series) -> np.ndarray:
    """Voter ids as Python strings in an object array (an integer id becomes its digits).

    Never ``np.asarray(ids).astype(str)``: a fixed-width array is as wide as the longest id
    (one long id multiplies every id's memory), and it drops trailing NUL characters.
    """
    values = ids.tolist() if isinstance(ids, (np.ndarray, pd.Series, pd.Index)) else list(ids)
    return _objects([v if type(v) is str else str(v) for v in values])


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
