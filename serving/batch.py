"""Batch scoring of files: stream parquet/CSV in, score in chunks, write parquet out.

Memory stays bounded by the chunk size whatever the file size: only the id and the model's input
columns are read (other columns, including PII, are never loaded), and each scored chunk is
appended to the output file before the next is read.

:class:`BatchScorer` turns one chunk of voters into one chunk of output rows. It is the single
code path of every engine: :func:`score_file` here (the local engine) and the Spark engine
(:mod:`serving.spark`) call the same :meth:`BatchScorer.score`, so their scores are the same
numbers. It predicts through the service's :class:`~serving.arms.ArmEnsembles` (checked on the
probe segment): with pooled arms the trees every arm shares are evaluated once, not once per arm,
and the scores are the service's to the last digit. :func:`score_file` also counts the scored
voters against the model's drift reference (:mod:`features.drift`).

Output columns, one row per input voter, in input order:

``voter_id``, ``turnout`` (only for a model with a turnout model: a support model may have none),
``uplift_<arm_slug>`` per arm, ``best_arm`` (``control`` when no arm is positive), ``best_uplift``;
then any columns a ``transform`` adds; then, with ``explain=k``: ``reason_arm`` (the arm explained:
the one with the highest uplift, which is ``best_arm`` whenever that is not ``control``),
``reason_base`` (the base value), and ``reason_<i>`` / ``reason_<i>_contribution`` for i = 1..k,
the features with the largest SHAP contributions to that arm's uplift, by absolute size.
``reason_base`` plus every feature's contribution equals the explained arm's uplift exactly
(TreeSHAP, ``ScoringModel.explain``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from features.drift import DriftCounts
from features.pii import PIIError, values_look_like_pii
from features.pipeline import FeatureError
from features.table_files import TableFileError, open_dataset, stream_tables
from serving.bundle import ScoringModel
from serving.scoring import checked_ensembles

DEFAULT_CHUNK = 200_000
Transform = Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]


@dataclass
class BatchStats:
    """What :func:`score_file` did."""

    rows: int
    chunks: int
    output: Path
    drift: DriftCounts | None = None  # the scored voters per bin of the model's drift reference (None: it has none)


def reason_columns(top_k: int) -> list[str]:
    """Names of the explanation columns for ``top_k`` reasons."""
    cols = ["reason_arm", "reason_base"]
    for i in range(1, top_k + 1):
        cols += [f"reason_{i}", f"reason_{i}_contribution"]
    return cols


def distinct_rows(X: pd.DataFrame, max_share: float = 0.5) -> tuple[np.ndarray, np.ndarray] | None:
    """The distinct rows of ``X``, when there are few enough to be worth it.

    A voter file's features are mostly small integers (household size, past votes), so
    a chunk of 200,000 voters often has only a few thousand distinct feature vectors.
    Trees give every copy of a vector the same score and the same SHAP values, so
    computing them once per distinct vector is exact.

    Returns
    -------
    (first, codes) or None
        ``X.iloc[first]`` are the distinct rows (first occurrences) and ``first[codes]``
        maps every row to its representative. None when more than ``max_share`` of the
        rows are distinct (nothing to gain) or if two different rows share a hash.
    """
    n = len(X)
    if n < 2:
        return None
    codes, uniques = pd.factorize(pd.util.hash_pandas_object(X, index=False).to_numpy())
    if len(uniques) > max_share * n:
        return None
    first = np.unique(codes, return_index=True)[1]
    rep = first[codes]
    for col in X.columns:  # guard against hash collisions: every row equals its representative
        values = X[col]
        a = values.cat.codes.to_numpy() if isinstance(values.dtype, pd.CategoricalDtype) else values.to_numpy()
        b = a[rep]
        same = a == b
        if a.dtype.kind == "f":
            same |= np.isnan(a) & np.isnan(b)
        if not same.all():
            return None
    return first, codes


def top_reasons(
    model: ScoringModel, X: pd.DataFrame, uplift: np.ndarray, turnout: np.ndarray, top_k: int,
    dedupe: bool = True,
) -> pd.DataFrame:
    """The ``top_k`` SHAP reasons behind each voter's highest uplift.

    Parameters
    ----------
    model : ScoringModel
    X : DataFrame
        The model's feature frame (``model.transform`` of the voters).
    uplift : ndarray of shape (n, n_arms)
        Uplift per arm in ``model.arms`` order; NaN for an arm a voter may not get.
    turnout : ndarray of shape (n,)
        The turnout scores of the same voters (an input of the uplift models when
        ``model.turnout_score_feature``; NaN for a model without a turnout model).
    top_k : int
        Number of reasons per voter (capped at the number of features).
    dedupe : bool
        Explain each distinct feature vector once (:func:`distinct_rows`); same values.

    Returns
    -------
    DataFrame
        The columns of :func:`reason_columns` (``top_k``), indexed like ``X``. A voter
        with no allowed arm (all uplift NaN) has no reasons (nulls).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    n = len(X)
    names = model.feature_names
    k = min(top_k, len(names))
    masked = np.where(np.isnan(uplift), -np.inf, uplift) if n else np.zeros((0, len(model.arms)))
    top_arm = masked.argmax(axis=1) if n else np.zeros(0, dtype=int)
    explained = np.isfinite(masked.max(axis=1)) if n else np.zeros(0, dtype=bool)
    arm_code = np.where(explained, top_arm, -1)
    base = np.full(n, np.nan)
    feature = np.full((n, k), -1, dtype=np.int64)
    contribution = np.full((n, k), np.nan)
    for j, arm in enumerate(model.arms):
        rows = np.flatnonzero(arm_code == j)
        if rows.size == 0:
            continue
        whole = rows.size == n
        Xa, ta = (X, turnout) if whole else (X.iloc[rows], turnout[rows])
        distinct = distinct_rows(Xa) if dedupe else None
        if distinct is not None:
            first, codes = distinct
            Xa, ta = Xa.iloc[first], ta[first]
        phi = model.explain(Xa, arm.label, ta)
        # Largest absolute contribution first; ties keep the model's feature order.
        order = np.argsort(-np.abs(phi[:, :-1]), axis=1, kind="stable")[:, :k]
        values = np.take_along_axis(phi[:, :-1], order, axis=1)
        arm_base = phi[:, -1]
        if distinct is not None:
            order, values, arm_base = order[codes], values[codes], arm_base[codes]
        base[rows] = arm_base
        feature[rows] = order
        contribution[rows] = values
    labels = [a.label for a in model.arms]
    out = {"reason_arm": pd.Categorical.from_codes(arm_code, categories=labels), "reason_base": base}
    for i in range(top_k):
        if i < k:
            out[f"reason_{i + 1}"] = pd.Categorical.from_codes(feature[:, i], categories=names)
            out[f"reason_{i + 1}_contribution"] = contribution[:, i]
        else:  # more reasons asked than the model has features
            out[f"reason_{i + 1}"] = pd.Categorical.from_codes(np.full(n, -1), categories=names)
            out[f"reason_{i + 1}_contribution"] = np.full(n, np.nan)
    return pd.DataFrame(out, index=X.index)


class BatchScorer:
    """Score chunks of voters: scores, an optional transform, optional reasons.

    Parameters
    ----------
    model : ScoringModel
        The loaded scoring model.
    explain : int, default=0
        Reasons per voter (top SHAP contributions by absolute size); 0 for none.
    transform : callable, optional
        ``transform(chunk, scores) -> scores``, applied to each chunk's scores before
        the reasons are computed (eligibility: an arm a voter may not get has NaN uplift
        and is never ``best_arm``). ``chunk`` holds the id and feature columns; the
        result must keep the rows and their order.
    dedupe : bool, default=True
        Score and explain each distinct feature vector of a chunk once
        (:func:`distinct_rows`). The numbers are the same either way; it only saves time.
    drift : DriftCounts, optional
        Counts every scored chunk (its features and scores before ``transform``) for drift.
    """

    def __init__(self, model: ScoringModel, explain: int = 0, transform: Transform | None = None,
                 dedupe: bool = True, drift: DriftCounts | None = None):
        if not isinstance(explain, (int, np.integer)) or isinstance(explain, bool) or explain < 0:
            raise ValueError(f"explain must be a non-negative integer (number of reasons), got {explain!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        self.model, self.explain, self.transform, self.dedupe = model, int(explain), transform, bool(dedupe)
        self.drift = drift
        self.ensembles = checked_ensembles(model)

    @property
    def input_columns(self) -> list[str]:
        """The columns read from the input: the id, the model's raw features and those the transform
        reads (its ``columns`` attribute, e.g. the phone number a consent decision is for)."""
        own = [self.model.id_column, *self.model.input_features]
        return [*own, *(c for c in getattr(self.transform, "columns", ()) if c not in own)]

    def input_types(self) -> dict[str, pa.DataType]:
        """Arrow types to read text input (CSV) with: ids, categories and the transform's columns as
        text, numbers as float."""
        categorical = set(self.model.pipeline.categories_)
        types = {col: pa.string() for col in self.input_columns}
        for col in self.model.input_features:
            types[col] = pa.string() if col in categorical else pa.float64()
        return types

    def check_columns(self, names: list[str]) -> None:
        """Raise :class:`FeatureError` naming any missing id or feature column."""
        present = set(names)
        missing = [c for c in self.model.input_features if c not in present]
        if missing:
            raise FeatureError(f"input is missing feature columns {missing}")
        if self.model.id_column not in present:
            raise FeatureError(f"input is missing the id column {self.model.id_column!r}")

    def score(self, chunk: pd.DataFrame) -> pd.DataFrame:
        """Output rows (see the module docstring) for one chunk of voters."""
        model = self.model
        X = model.transform(chunk)
        scores = self._score_features(X, chunk[model.id_column])
        if self.drift is not None:
            self.drift.add(X, scores, raw=chunk)
        turnout = scores["turnout"].to_numpy() if model.has_turnout else np.full(len(scores), np.nan)
        if self.transform is not None:
            scores = self.transform(chunk, scores)
            if len(scores) != len(chunk):
                raise ValueError(f"transform returned {len(scores)} rows for a chunk of {len(chunk)}; "
                                 "it must keep every row, in order")
        if not self.explain:
            return scores
        uplift = scores[[f"uplift_{a.slug}" for a in model.arms]].to_numpy(dtype=float)
        reasons = top_reasons(model, X.reset_index(drop=True), uplift, turnout, self.explain, self.dedupe)
        return pd.concat([scores.reset_index(drop=True), reasons], axis=1)

    def _score_features(self, X: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
        distinct = distinct_rows(X) if self.dedupe else None
        if distinct is None:
            return self._scores(X, ids)
        first, codes = distinct
        scores = self._scores(X.iloc[first]).iloc[codes].reset_index(drop=True)
        scores["voter_id"] = ids.astype(str).to_numpy()  # as ScoringModel.scores_frame writes ids
        return scores

    def _scores(self, X: pd.DataFrame, ids: pd.Series | None = None) -> pd.DataFrame:
        Xu, turnout = self.ensembles.inputs(X)
        return self.model.scores_frame(turnout, self.ensembles.uplift(Xu), ids)

    def empty_chunk(self) -> pd.DataFrame:
        """A zero-row input chunk with the columns the scorer reads."""
        types = self.input_types()
        return pd.DataFrame({c: pd.Series(dtype="str" if types[c] == pa.string() else "float64")
                             for c in self.input_columns})

    def output_schema(self, scores: pd.DataFrame) -> pa.Schema:
        """Arrow schema of the output: fixed types for the scorer's columns, inferred for a transform's."""
        known: dict[str, pa.DataType] = {"voter_id": pa.string(), "best_arm": pa.string()}
        if self.explain:
            for col in reason_columns(self.explain):
                known[col] = pa.float64() if col == "reason_base" or col.endswith("_contribution") else pa.string()
        fields = []
        for col in scores.columns:
            if col in known:
                fields.append(pa.field(col, known[col]))
            elif pd.api.types.is_float_dtype(scores[col]) or col == "turnout" or col.startswith("uplift_"):
                fields.append(pa.field(col, pa.float64()))
            else:
                fields.append(pa.field(col, pa.Array.from_pandas(scores[col]).type))
        return pa.schema(fields)

    def check_output(self, scores: pd.DataFrame) -> None:
        """Refuse to write text columns whose values look like phone numbers or e-mails.

        The input's PII columns are never read, so only a ``transform`` could bring
        some in; the id column is exempt (ids may be long numbers). Names are checked
        by value, not by column name: ``uplift_phone`` is an arm's uplift, not a phone.
        """
        sample = scores.head(2_000)
        found = {}
        for col in sample.columns:
            if col == "voter_id" or pd.api.types.is_numeric_dtype(sample[col]):
                continue
            kind = values_look_like_pii(sample[col].astype("object"))
            if kind:
                found[col] = f"values look like {'phone numbers' if kind == 'phone' else 'e-mail addresses'}"
        if found:
            raise PIIError(f"refusing to write output columns that look like PII: {found}")


def input_columns(model: ScoringModel, dataset: ds.Dataset) -> list[str]:
    """The columns to read; a clear error if the id or a feature column is missing."""
    scorer = BatchScorer(model)
    scorer.check_columns(dataset.schema.names)
    return scorer.input_columns


def iter_chunks(
    path: str | Path, model: ScoringModel, chunk_size: int = DEFAULT_CHUNK, scorer: BatchScorer | None = None
) -> Iterator[pd.DataFrame]:
    """Input chunks (id + feature columns only, at most ``chunk_size`` rows) as pandas frames.

    Nothing is read ahead (:func:`features.table_files.stream_tables`): memory is bounded by
    the chunk size (and, for parquet, the size of one row group) whatever the file size.
    ``scorer`` (default: the model's, without transform) says which columns to read. A
    missing column or a value that does not convert is a :class:`FeatureError` naming it.
    """
    scorer = scorer or BatchScorer(model)
    try:
        scorer.check_columns(open_dataset(path, scorer.input_types()).schema.names)
        yield from stream_tables(path, scorer.input_columns, scorer.input_types(), chunk_size)
    except TableFileError as exc:
        raise FeatureError(str(exc)) from None


def score_file(
    model: ScoringModel,
    input_path: str | Path,
    output_path: str | Path,
    chunk_size: int = DEFAULT_CHUNK,
    transform: Transform | None = None,
    on_chunk: Callable[[int], None] | None = None,
    explain: int = 0,
    dedupe: bool = True,
) -> BatchStats:
    """Score ``input_path`` into ``output_path`` (parquet), one chunk at a time.

    Parameters
    ----------
    model : ScoringModel
    input_path : str or Path
        Parquet file or folder, or CSV file. Only the id and feature columns are read.
    output_path : str or Path
        Parquet file, written chunk by chunk (one row group per chunk) under a
        ``.partial`` name and renamed when complete; removed on error.
    chunk_size : int
        Rows per chunk; bounds memory.
    transform : callable, optional
        ``transform(chunk, scores) -> scores`` (see :class:`BatchScorer`).
    on_chunk : callable, optional
        Called with each chunk's row count (progress).
    explain : int
        Reasons per voter (0: none).
    dedupe : bool
        Score each distinct feature vector of a chunk once (same numbers, less time).

    Returns
    -------
    BatchStats
    """
    drift = DriftCounts(model.drift_reference) if model.drift_reference is not None else None
    scorer = BatchScorer(model, explain=explain, transform=transform, dedupe=dedupe, drift=drift)
    output_path = Path(output_path)
    if output_path.is_dir():
        raise ValueError(f"output {output_path} is a folder (the Spark engine's output?); give a file name")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(output_path.name + ".partial")
    writer: pq.ParquetWriter | None = None
    rows = chunks = 0
    try:
        for chunk in iter_chunks(input_path, model, chunk_size, scorer):
            scores = scorer.score(chunk)
            if writer is None:
                scorer.check_output(scores)
                writer = pq.ParquetWriter(str(tmp), scorer.output_schema(scores))
            writer.write_table(pa.Table.from_pandas(scores, schema=writer.schema, preserve_index=False))
            rows += len(chunk)
            chunks += 1
            if on_chunk is not None:
                on_chunk(len(chunk))
        if writer is None:  # empty input: still write a file with the right columns
            empty = scorer.score(scorer.empty_chunk())
            scorer.check_output(empty)
            pq.write_table(pa.Table.from_pandas(empty, schema=scorer.output_schema(empty), preserve_index=False),
                           str(tmp))
    except BaseException:
        if writer is not None:
            writer.close()
            writer = None
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(output_path)
    return BatchStats(rows=rows, chunks=chunks, output=output_path, drift=drift)
