"""The bins drift is counted in (:mod:`features.drift`): one column's bins, and many columns binned at once.

:class:`ColumnBins` says how one column is binned and holds the training share of each bin.
Numeric columns: decile cut points (:func:`cut_points`: the distinct ones, halfway between
training values, so a 0/1 feature gets a bin per value, not ten), then a bin for missing
values. Categorical columns: one bin per training category, one ``other`` bin for categories
training never saw, one for missing values. :class:`Binner` bins a batch of voters for all
columns at once: one comparison per cut rank for every numeric column together, so a request
of one voter costs a few numpy calls whatever the number of features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

NUMERIC, CATEGORICAL = "numeric", "categorical"
FEATURE, SCORE = "feature", "score"
OTHER, MISSING = "other", "missing"
DECILES = 10
SMALL_BATCH = 16  # rows binned in one broadcast comparison (faster for a few voters; more: a pass per cut rank)


class ColumnBins:
    """How one column is binned, and the training share of each bin.

    Parameters
    ----------
    name : str
        Column name (a model feature, or a score column such as ``turnout`` or ``uplift_<arm>``).
    role : {"feature", "score"}
    kind : {"numeric", "categorical"}
    shares : sequence of float
        Training share per bin: numeric ``len(cuts) + 2`` bins (``<= cuts[0]``, ...,
        ``> cuts[-1]``, missing); categorical ``len(categories) + 2`` (each category,
        ``other``, missing).
    cuts : sequence of float
        Numeric: the ascending cut points; a value equal to a cut falls in the bin below it.
    categories : sequence of str
        Categorical: the training categories, in the order of the feature frame's codes.
    """

    def __init__(self, *, name: str, role: str, kind: str, shares: Sequence[float], cuts: Sequence[float] = (),
                 categories: Sequence[str] = ()):
        if role not in (FEATURE, SCORE) or kind not in (NUMERIC, CATEGORICAL):
            raise ValueError(f"column {name!r}: role must be feature or score, kind numeric or categorical")
        self.name, self.role, self.kind = str(name), role, kind
        self.cuts = np.asarray(cuts, dtype=float)
        self.categories = [str(c) for c in categories]
        self.shares = np.asarray(shares, dtype=float)
        if self.shares.size != self.size:
            raise ValueError(f"column {name!r}: {self.shares.size} shares for {self.size} bins")

    @property
    def size(self) -> int:
        """Number of bins (the missing bin included)."""
        return (self.cuts.size if self.kind == NUMERIC else len(self.categories)) + 2

    @classmethod
    def fit(cls, values: pd.Series | np.ndarray, *, name: str, role: str, bins: int = DECILES) -> ColumnBins:
        """The bins of one training column: deciles for numbers, categories for a categorical column."""
        series = values if isinstance(values, pd.Series) else pd.Series(values)
        if isinstance(series.dtype, pd.CategoricalDtype) or not (
                pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
            cats = series.cat.categories if isinstance(series.dtype, pd.CategoricalDtype) \
                else pd.Index(sorted(str(v) for v in pd.unique(series.dropna())))
            column = cls(name=name, role=role, kind=CATEGORICAL, categories=list(map(str, cats)),
                         shares=np.zeros(len(cats) + 2))
            codes = category_codes(series, column.categories)
        else:
            codes = series.to_numpy(dtype=float, na_value=np.nan)
            cuts = cut_points(codes[~np.isnan(codes)], bins)
            column = cls(name=name, role=role, kind=NUMERIC, cuts=cuts, shares=np.zeros(cuts.size + 2))
        counts = np.bincount(Binner([column]).index(codes[:, None])[:, 0], minlength=column.size)
        column.shares = counts / max(counts.sum(), 1)
        return column

    def labels(self) -> list[str]:
        """A label per bin: ``<= 30``, ``(30, 42]``, ``> 70`` or each category and ``other``; then ``missing``."""
        if self.kind == CATEGORICAL:
            return [*self.categories, OTHER, MISSING]
        cuts = [f"{c:.4g}" for c in self.cuts]
        if not cuts:
            return ["any number", MISSING]
        inner = [f"({a}, {b}]" for a, b in pairwise(cuts)]
        return [f"<= {cuts[0]}", *inner, f"> {cuts[-1]}", MISSING]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "role": self.role, "kind": self.kind, "shares": self.shares.tolist()}
        if self.kind == NUMERIC:
            out["cuts"] = self.cuts.tolist()
        else:
            out["categories"] = list(self.categories)
        return out

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> ColumnBins:
        return cls(name=state["name"], role=state["role"], kind=state["kind"], shares=state["shares"],
                   cuts=state.get("cuts", ()), categories=state.get("categories", ()))


class Binner:
    """The bin of every value of several columns at once: a few numpy calls per batch, whatever the
    number of columns (a single voter costs about as much as a hundred).

    Parameters
    ----------
    columns : sequence of ColumnBins
    """

    def __init__(self, columns: Sequence[ColumnBins]):
        self.numeric = np.array([j for j, c in enumerate(columns) if c.kind == NUMERIC], dtype=np.intp)
        self.categorical = np.array([j for j, c in enumerate(columns) if c.kind == CATEGORICAL], dtype=np.intp)
        self.cuts = np.full((self.numeric.size, max((columns[j].cuts.size for j in self.numeric), default=0)), np.inf)
        for i, j in enumerate(self.numeric):
            self.cuts[i, : columns[j].cuts.size] = columns[j].cuts
        self.ranks = np.ascontiguousarray(self.cuts.T)  # each column's first cut, second cut, ...
        self.missing = np.array([c.size - 1 for c in columns], dtype=np.intp)  # each column's last bin
        self.levels = np.array([len(columns[j].categories) for j in self.categorical], dtype=np.intp)

    def index(self, values: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
        """(n, columns) bins of ``values`` (n, columns): numbers, or a categorical column's codes (NaN: missing).

        A number equal to a cut point falls in the bin below it (as ``searchsorted``'s left side).
        ``present`` (n, categorical columns): rows whose raw value was given; a missing code
        there is a category training never saw (``other``), not a missing value.
        """
        out = np.empty(values.shape, dtype=np.intp)
        if self.numeric.size:
            number = values[:, self.numeric]
            if len(number) <= SMALL_BATCH:  # one comparison of every value with every cut (+inf: padding)
                below = (number[:, :, None] > self.cuts).sum(axis=2)
            else:  # one comparison per cut rank, for all columns at once
                below = np.zeros(number.shape, dtype=np.intp)
                for cuts in self.ranks:
                    below += number > cuts
            out[:, self.numeric] = np.where(np.isnan(number), self.missing[self.numeric], below)
        if self.categorical.size:
            codes = values[:, self.categorical]
            missing = np.isnan(codes)
            known = np.where(~missing & (codes >= 0) & (codes < self.levels), codes, self.levels)  # else other
            gone = missing if present is None else missing & ~present
            out[:, self.categorical] = np.where(gone, self.levels + 1, known)
        return out


def cut_points(values: np.ndarray, bins: int) -> np.ndarray:
    """Cut points of ``bins`` quantile bins: halfway between each quantile and the next value above it.

    Halfway, so that a value equal to a training value never sits on a cut: scores computed
    another way (the service's shared trees) differ from the training scores in the last
    digit, and must fall in the same bin. A quantile at the maximum cuts nothing and is dropped.
    """
    distinct = np.unique(values)
    if distinct.size < 2:
        return np.zeros(0)
    quantiles = np.quantile(values, np.arange(1, bins) / bins, method="inverted_cdf")
    above = np.searchsorted(distinct, quantiles, side="right")
    keep = above < distinct.size
    return np.unique((quantiles[keep] + distinct[above[keep]]) / 2)


def category_codes(values: pd.Series | np.ndarray, categories: Sequence[str]) -> np.ndarray:
    """Float codes of ``values`` among ``categories`` (NaN: missing or unknown), as the feature frame codes them."""
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype) \
            and list(map(str, values.cat.categories)) == list(categories):
        codes = values.cat.codes.to_numpy()
    else:
        raw = pd.Series(np.asarray(values, dtype=object))
        codes = pd.Categorical(raw.where(raw.isna(), raw.astype(str)), categories=list(categories)).codes
    return np.where(codes < 0, np.nan, codes.astype(float))
