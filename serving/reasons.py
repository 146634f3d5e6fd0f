"""Top-k SHAP reasons per voter, from the exact contributions of ``ScoringModel.explain``.

Each arm's uplift model is one LightGBM ensemble; its TreeSHAP contributions
(``pred_contrib``) plus the base value add up to the predicted uplift exactly. The
reasons keep that property: ``base_value`` is returned with the ``top_k`` largest
contributions (by absolute size), so with ``top_k`` at least the number of features the
listed contributions add up to the uplift (to floating-point rounding).

Everything is vectorized over voters: one partial sort per arm for the whole segment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class TopReasons:
    """The ``k`` largest contributions of one arm for ``n`` voters.

    Attributes
    ----------
    base_value : ndarray of shape (n,)
    feature : ndarray of int, shape (n, k)
        Column index (into the model's feature names) of each reason, largest first.
    contribution : ndarray of shape (n, k)
    """

    base_value: np.ndarray
    feature: np.ndarray
    contribution: np.ndarray

    def __len__(self) -> int:
        return len(self.base_value)

    def rows(self, start: int, stop: int, k: int | None = None) -> TopReasons:
        """Voters ``start:stop``, keeping the first ``k`` reasons (all if None)."""
        cols = slice(None) if k is None else slice(0, k)
        return TopReasons(self.base_value[start:stop], self.feature[start:stop, cols],
                          self.contribution[start:stop, cols])


def top_reasons(contributions: np.ndarray, k: int) -> TopReasons:
    """Select each row's ``k`` largest contributions by absolute size.

    Parameters
    ----------
    contributions : ndarray of shape (n, n_features + 1)
        SHAP contributions with the base value in the last column (LightGBM's layout).
    k : int
        Reasons per voter (at most ``n_features``).

    Returns
    -------
    TopReasons
        Sorted by decreasing absolute contribution; ties keep feature order.
    """
    contributions = np.asarray(contributions, dtype=float)
    if contributions.ndim != 2 or contributions.shape[1] < 2:
        raise ValueError(f"contributions must be (n, n_features + 1), got shape {contributions.shape}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    phi = contributions[:, :-1]
    n_features = phi.shape[1]
    k = min(k, n_features)
    size = -np.abs(phi)
    # A full stable sort, not a partition: among tied contributions (an arm whose model is
    # the constant effect has only zeros) a partition picks any of them, so the top k would
    # not be the first k of the full list. With a dozen features the sort costs no more.
    feature = np.argsort(size, axis=1, kind="stable")[:, :k]
    return TopReasons(contributions[:, -1].copy(), feature, np.take_along_axis(phi, feature, axis=1))


def display_columns(Xu: np.ndarray | pd.DataFrame, feature_names: Sequence[str],
                    categories: Mapping[str, Sequence[str]]) -> list[list[Any]]:
    """Per model feature, the voters' values as JSON-ready Python lists.

    ``Xu`` is the uplift models' input: a float matrix (categories as codes) or a frame.
    Numbers stay floats, categories are their labels, missing values are ``None``.
    """
    out = []
    for j, name in enumerate(feature_names):
        if isinstance(Xu, pd.DataFrame):
            col = Xu[name]
            if isinstance(col.dtype, pd.CategoricalDtype):
                out.append([None if v != v else v for v in col.astype(object).tolist()])
                continue
            values = col.to_numpy(dtype=float, na_value=np.nan)
        else:
            values = Xu[:, j]
            if name in categories:
                labels = np.array([*categories[name], None], dtype=object)  # code -1 -> None
                out.append(labels[np.where(np.isnan(values), -1, values).astype(np.int64)].tolist())
                continue
        out.append(np.where(np.isnan(values), None, values).tolist())
    return out


def reasons_records(reasons: TopReasons, feature_names: Sequence[str],
                    values: Sequence[Sequence[Any]], offset: int = 0) -> list[dict[str, Any]]:
    """One ``{"base_value", "top": [{"feature", "value", "contribution"}]}`` per voter.

    ``values`` are :func:`display_columns` of the whole batch; ``offset`` is the row of
    the first voter of ``reasons`` in it.
    """
    base = reasons.base_value.tolist()
    features = reasons.feature.tolist()
    contributions = reasons.contribution.tolist()
    out = []
    for i, (b, idx, contrib) in enumerate(zip(base, features, contributions, strict=True)):
        row = offset + i
        out.append({
            "base_value": b,
            "top": [{"feature": feature_names[j], "value": values[j][row], "contribution": c}
                    for j, c in zip(idx, contrib, strict=True)],
        })
    return out
