"""Drift at a glance: how far a scored population lies from the population the model was trained on.

A :class:`DriftReference` is learned once, at training time, from the training rows' model
features (the frame :class:`~features.pipeline.FeaturePipeline` gives) and the served model's
scores of the same rows (turnout and each arm's uplift): for every column, how it is binned
and the training share of each bin (:mod:`features.drift_bins`: deciles, categories, an
``other`` bin for unseen categories, a bin for missing values). It is saved inside the scoring
model.

A :class:`DriftCounts` counts the voters a scorer sees per bin (a few numpy calls and one
``bincount`` per batch; thread-safe, mergeable) and reads the counts as the population
stability index (PSI) of every column::

    PSI = sum over bins of (o - e) * ln(o / e)

with ``e`` the training share and ``o`` the scored share of a bin, both floored at
:data:`EPSILON` so that an empty bin costs a finite amount. The reading (:func:`band`):
below 0.1 stable, 0.1 to 0.25 moderate, above 0.25 shifted. Below :data:`MIN_VOTERS` scored
voters chance alone can put the PSI of an undrifted column above 0.1, so no column is judged
(``too few voters``). Only aggregates are kept: no voter ids, no values of a voter.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.drift_bins import CATEGORICAL, DECILES, FEATURE, SCORE, Binner, ColumnBins, category_codes

EPSILON = 1e-4  # share floor of an empty bin in the PSI
STABLE, MODERATE, SHIFTED = "stable", "moderate", "shifted"
STABLE_BELOW, SHIFTED_ABOVE = 0.1, 0.25  # the reading of a PSI: below 0.1 stable, above 0.25 shifted
TOO_FEW, NO_REFERENCE = "too few voters", "no drift reference"
BAND_ORDER = {TOO_FEW: 0, STABLE: 0, MODERATE: 1, SHIFTED: 2}
MIN_VOTERS = 500  # scored voters before a column is judged
FORMAT = "persuade-drift-reference/1"


def psi(reference_shares: Sequence[float] | np.ndarray, observed_counts: Sequence[float] | np.ndarray, *,
        epsilon: float = EPSILON) -> float:
    """Population stability index of observed counts against reference shares.

    Parameters
    ----------
    reference_shares : array-like of float
        Share of the reference population in each bin (adding up to 1).
    observed_counts : array-like of float
        Count of the observed population in the same bins.
    epsilon : float
        Floor of a bin's share on either side, so that an empty bin costs a finite amount.

    Returns
    -------
    float
        ``sum((o - e) * ln(o / e))``; 0 for identical shares, NaN when nothing was observed.
    """
    expected = np.asarray(reference_shares, dtype=float)
    counts = np.asarray(observed_counts, dtype=float)
    if expected.shape != counts.shape:
        raise ValueError(f"reference_shares has {expected.size} bins but observed_counts {counts.size}")
    total = counts.sum()
    if total <= 0:
        return float("nan")
    e = np.maximum(expected, epsilon)
    o = np.maximum(counts / total, epsilon)
    return float(np.sum((o - e) * np.log(o / e)))


def band(value: float) -> str:
    """The reading of a PSI: ``stable`` (< 0.1), ``moderate`` (0.1 to 0.25) or ``shifted`` (> 0.25)."""
    if not np.isfinite(value):
        return TOO_FEW
    if value < STABLE_BELOW:
        return STABLE
    return MODERATE if value <= SHIFTED_ABOVE else SHIFTED


class DriftReference:
    """The training population's bins and shares, per model feature and per score column.

    Parameters
    ----------
    columns : sequence of ColumnBins
        The features (in the model's feature order), then the scores.
    rows : int
        Training rows the shares were measured on.
    """

    def __init__(self, *, columns: Sequence[ColumnBins], rows: int):
        self.columns = list(columns)
        self.rows = int(rows)
        self.features = [c for c in self.columns if c.role == FEATURE]
        self.scores = [c for c in self.columns if c.role == SCORE]
        if self.columns != [*self.features, *self.scores]:
            raise ValueError("a drift reference lists its features first, then its scores")
        self.offsets = np.cumsum([0, *(c.size for c in self.columns)])
        self.binner = Binner(self.columns)

    def bins(self, features: pd.DataFrame | np.ndarray, scores: Mapping[str, Any], *,
             raw: Mapping[str, Any] | None = None) -> np.ndarray:
        """(n, columns) bins of a batch of voters, numbered over all columns' bins (see :meth:`DriftCounts.add`)."""
        n = len(features)
        if isinstance(features, np.ndarray):
            parts = [features[:, : len(self.features)]]
        else:
            parts = [category_codes(features[c.name], c.categories) if c.kind == CATEGORICAL
                     else features[c.name].to_numpy(dtype=float, na_value=np.nan) for c in self.features]
        values = np.column_stack([*parts, *(np.asarray(scores[c.name], dtype=float) for c in self.scores)])
        values = values.reshape(n, len(self.columns))
        present = None
        cat = self.binner.categorical
        if raw is not None and cat.size and np.isnan(codes := values[:, cat]).any():
            present = np.zeros(codes.shape, dtype=bool)
            for i, j in enumerate(cat):
                name = self.columns[j].name
                if name in raw and np.isnan(codes[:, i]).any():
                    present[:, i] = ~pd.isna(np.asarray(raw[name], dtype=object))
        return self.binner.index(values, present) + self.offsets[:-1]

    @classmethod
    def fit(cls, *, features: pd.DataFrame, scores: pd.DataFrame | Mapping[str, Any],
            bins: int = DECILES) -> DriftReference:
        """Learn the bins and shares of the training rows.

        Parameters
        ----------
        features : DataFrame
            The training rows' model features (``FeaturePipeline.transform``: categorical
            columns with their fixed categories).
        scores : DataFrame or mapping of str to array
            The served model's scores of the same rows, one column per score.
        bins : int
            Quantile bins of a numeric column (fewer where cut points coincide).
        """
        scores = pd.DataFrame(scores)
        if len(scores) != len(features):
            raise ValueError(f"{len(features)} feature rows but {len(scores)} score rows")
        columns = [ColumnBins.fit(features[c], name=c, role=FEATURE, bins=bins) for c in features.columns]
        columns += [ColumnBins.fit(scores[c].astype(float), name=c, role=SCORE, bins=bins) for c in scores.columns]
        return cls(columns=columns, rows=len(features))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state (no voter data: bins and shares only)."""
        return {"format": FORMAT, "rows": self.rows, "columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> DriftReference:
        if state.get("format") != FORMAT:
            raise ValueError(f"not a persuade drift reference (format {state.get('format')!r})")
        return cls(columns=[ColumnBins.from_dict(c) for c in state["columns"]], rows=state["rows"])


class DriftCounts:
    """Voters seen per bin of a :class:`DriftReference`, and their PSI against it.

    Counting is cheap (:class:`Binner`, then one ``bincount`` per batch) and thread-safe: scorers
    sharing one ``DriftCounts`` add from several threads.

    Parameters
    ----------
    reference : DriftReference
    """

    def __init__(self, reference: DriftReference):
        self.reference = reference
        self._counts = np.zeros(int(reference.offsets[-1]), dtype=np.int64)
        self._voters = 0
        self._lock = threading.Lock()

    @property
    def voters(self) -> int:
        """Voters counted so far."""
        return self._voters

    def counts(self) -> np.ndarray:
        """A copy of the counts per bin, all columns' bins one after another."""
        with self._lock:
            return self._counts.copy()

    def add(self, features: pd.DataFrame | np.ndarray, scores: Mapping[str, Any], *,
            raw: Mapping[str, Any] | None = None) -> None:
        """Count one batch of voters.

        Parameters
        ----------
        features : DataFrame or ndarray
            Their model features: the feature frame (``FeaturePipeline.transform``), or the
            float matrix LightGBM predicts on (``ScoringModel.feature_matrix``: the reference's
            features first, in order, categories as codes, NaN for missing or unknown).
        scores : mapping of str to array
            Their scores, by the reference's score column names (a scores DataFrame works).
        raw : mapping of str to array, optional
            The raw input columns (a frame or the service's columns): a categorical value given
            there but missing from ``features`` is a category training never saw (``other``).
            Without it such values count as missing.
        """
        n = len(features)
        if n == 0:
            return
        counts = np.bincount(self.reference.bins(features, scores, raw=raw).ravel(), minlength=self._counts.size)
        with self._lock:
            self._counts += counts
            self._voters += n

    def merge(self, other: DriftCounts) -> DriftCounts:
        """Add ``other``'s counts (same reference) to these; returns self."""
        if other.reference is not self.reference and other.reference.to_dict() != self.reference.to_dict():
            raise ValueError("cannot merge drift counts of different references")
        counts, voters = other.counts(), other.voters
        with self._lock:
            self._counts += counts
            self._voters += voters
        return self

    def report(self, *, bins: bool = False) -> dict[str, Any]:
        """The PSI and reading of every column, most drifted first (JSON-ready).

        Parameters
        ----------
        bins : bool
            Also each column's bins with their training and scored shares.

        Returns
        -------
        dict
            ``status`` (the worst reading: ``stable``, ``moderate`` or ``shifted``; ``too few
            voters`` below :data:`MIN_VOTERS`), ``voters``, ``training_voters``, ``min_voters``,
            and ``features`` and ``scores``: lists of ``{"name", "psi", "band"}`` (``bins``:
            ``{"bin", "training", "scored"}`` per bin), highest PSI first.
        """
        with self._lock:
            counts, voters = self._counts.copy(), self._voters
        ref = self.reference
        rows: dict[str, list[dict[str, Any]]] = {FEATURE: [], SCORE: []}
        for column, start, stop in zip(ref.columns, ref.offsets[:-1], ref.offsets[1:], strict=True):
            observed = counts[start:stop]
            value = psi(column.shares, observed) if voters else float("nan")
            row: dict[str, Any] = {"name": column.name, "psi": round(value, 6) if np.isfinite(value) else None,
                                   "band": band(value) if voters >= MIN_VOTERS else TOO_FEW}
            if bins:
                scored = observed / max(voters, 1)
                row["bins"] = [{"bin": label, "training": round(float(e), 6), "scored": round(float(o), 6)}
                               for label, e, o in zip(column.labels(), column.shares, scored, strict=True)]
            rows[column.role].append(row)
        for part in rows.values():
            part.sort(key=lambda r: -1.0 if r["psi"] is None else r["psi"], reverse=True)
        worst = max((BAND_ORDER[r["band"]] for part in rows.values() for r in part), default=0)
        status = TOO_FEW if voters < MIN_VOTERS else [STABLE, MODERATE, SHIFTED][worst]
        return {"status": status, "voters": voters, "training_voters": ref.rows, "min_voters": MIN_VOTERS,
                "features": rows[FEATURE], "scores": rows[SCORE]}


def no_reference_report() -> dict[str, Any]:
    """The report of a model saved without a drift reference (nothing counted, nothing judged)."""
    return {"status": NO_REFERENCE, "voters": 0, "training_voters": None, "min_voters": MIN_VOTERS,
            "features": [], "scores": []}
