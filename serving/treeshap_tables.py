"""Exact TreeSHAP of shallow LightGBM trees, from one lookup table per tree.

A tree's path-dependent SHAP values (LightGBM's ``pred_contrib``, shap's
``TreeExplainer``) depend on a row only through the side it takes at each of the tree's
splits, including the splits off its own path (there the algorithm asks what the tree
would give had that feature been known). A tree with ``K`` splits therefore has at most
``2**K`` contribution vectors. :class:`TreeShapTables` computes them once per tree: the
Shapley values, over the subsets of the tree's features, of its cover-weighted conditional
expectation (Lundberg et al. 2020, the quantity TreeSHAP computes). It explains a batch by
evaluating every split of every tree as one vectorised comparison, turning each row's
sides into a table index and summing the looked-up contributions per feature.

The uplift models here have 2 to 8 leaves per tree, so a table has 2 to 128 rows, and a
batch costs a few array operations per tree instead of LightGBM's per-row recursion:
about 7x faster than ``pred_contrib`` on two threads, on one (docs/BENCHMARKS.md).
Trees with more than :data:`MAX_SPLITS` splits, or linear leaves, are refused
(:class:`UnsupportedTrees`); callers then use ``pred_contrib``.

The splits are decided as LightGBM decides them (``Tree::NumericalDecision`` and
``Tree::CategoricalDecision``): ``x <= threshold`` goes left; a missing value follows the
split's default side for ``missing_type`` NaN, counts as 0 for ``None``, and counts as
zero (default side) for ``Zero``, as does any ``|x| <= 1e-35``; a categorical split sends
a row left when the integer part of ``x`` is a non-negative category in its set, NaN
right. The input is the float matrix LightGBM itself predicts on (categories as codes).
The contributions agree with ``pred_contrib`` to rounding (tested to 1e-12).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import factorial
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: BentoML's arbiter imports this without a booster to load
    import lightgbm as lgb

MAX_SPLITS = 8  # up to 9 leaves per tree: a table of at most 256 rows
CHUNK_ROWS = 2048  # rows per vectorised block (bounds the temporary arrays to a few MB)
K_ZERO = float(np.float32(1e-35))  # LightGBM's kZeroThreshold, as its double comparisons see it


class UnsupportedTrees(ValueError):
    """The booster has a tree this explainer does not tabulate (too many splits, linear leaves)."""


@dataclass
class _Split:
    feature: int
    threshold: float
    default_left: bool
    missing: str  # "None", "Zero" or "NaN"
    categories: np.ndarray | None  # a categorical split's left-going categories


@dataclass
class _Table:
    splits: list[_Split]
    features: np.ndarray  # the tree's distinct features (m,)
    phi: np.ndarray  # (2**K, m): contributions per pattern of split sides
    expected: float


def _walk(node: dict[str, Any], splits: list[_Split], feature_slot: dict[int, int]) -> dict[str, Any]:
    """The tree in a compact recursive form; numbers its splits and its distinct features."""
    if "leaf_value" in node:
        if "leaf_coeff" in node:
            raise UnsupportedTrees("linear leaves (linear_tree) are not tabulated")
        return {"value": float(node["leaf_value"]), "count": float(node.get("leaf_count", 0))}
    feature = int(node["split_feature"])
    categories = None
    if node["decision_type"] == "==":
        categories = np.array([int(c) for c in str(node["threshold"]).split("||")], dtype=np.int64)
        threshold = np.nan
    elif node["decision_type"] == "<=":
        threshold = float(node["threshold"])
    else:
        raise UnsupportedTrees(f"unknown decision type {node['decision_type']!r}")
    k = len(splits)
    splits.append(_Split(feature, threshold, bool(node["default_left"]), str(node["missing_type"]), categories))
    slot = feature_slot.setdefault(feature, len(feature_slot))
    return {"split": k, "slot": slot, "count": float(node["internal_count"]),
            "left": _walk(node["left_child"], splits, feature_slot),
            "right": _walk(node["right_child"], splits, feature_slot)}


def _expectations(node: dict[str, Any], sides: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(patterns, subsets) cover-weighted expectation of the tree, features in a subset known.

    ``sides[p, k]``: pattern ``p`` goes left at split ``k``; ``known[s, i]``: subset ``s``
    holds the tree's feature ``i``.
    """
    if "value" in node:
        return np.full((sides.shape[0], known.shape[0]), node["value"])
    left = _expectations(node["left"], sides, known)
    right = _expectations(node["right"], sides, known)
    taken = np.where(sides[:, node["split"], None], left, right)
    unknown = (node["left"]["count"] * left + node["right"]["count"] * right) / node["count"]
    return np.where(known[None, :, node["slot"]], taken, unknown)


def _table(tree: dict[str, Any]) -> _Table:
    splits: list[_Split] = []
    slots: dict[int, int] = {}
    root = _walk(tree, splits, slots)
    n_splits, m = len(splits), len(slots)
    if n_splits > MAX_SPLITS:
        raise UnsupportedTrees(f"a tree has {n_splits} splits (at most {MAX_SPLITS} are tabulated)")
    patterns = np.arange(2 ** n_splits)
    sides = ((patterns[:, None] >> np.arange(n_splits)) & 1).astype(bool)
    subsets = np.arange(2 ** m)
    known = ((subsets[:, None] >> np.arange(m)) & 1).astype(bool)
    v = _expectations(root, sides, known)  # (patterns, subsets)
    size = known.sum(axis=1)
    phi = np.zeros((len(patterns), m))
    for i in range(m):
        without = subsets[~known[:, i]]
        weight = np.array([factorial(s) * factorial(m - s - 1) / factorial(m) for s in size[without]])
        phi[:, i] = (v[:, without | (1 << i)] - v[:, without]) @ weight
    features = np.array(sorted(slots, key=slots.get), dtype=np.int64)
    return _Table(splits, features, phi, float(v[0, 0]))


class TreeShapTables:
    """SHAP contributions of a LightGBM regressor's trees by table lookup.

    Parameters
    ----------
    booster : lightgbm.Booster
        A single-output model (a regressor, or a binary classifier on the raw scale).
    start_iteration : int, default=0
        First tree explained (as ``predict(start_iteration=...)``).
    num_iteration : int, optional
        Number of trees explained from ``start_iteration``. As in ``predict``: by default
        the booster's ``best_iteration`` when it has one and ``start_iteration`` is 0,
        else all the rest.

    Raises
    ------
    UnsupportedTrees
        A tree has more than :data:`MAX_SPLITS` splits or linear leaves.
    """

    def __init__(self, booster: lgb.Booster, start_iteration: int = 0, num_iteration: int | None = None):
        dump = booster.dump_model()
        if dump.get("num_tree_per_iteration", 1) != 1:
            raise UnsupportedTrees("multi-output models are not tabulated")
        if num_iteration is None and start_iteration <= 0 and booster.best_iteration > 0:
            num_iteration = booster.best_iteration
        trees = dump["tree_info"][max(start_iteration, 0):]
        if num_iteration is not None and num_iteration > 0:
            trees = trees[:num_iteration]
        self.n_features = booster.num_feature()
        tables = [_table(t["tree_structure"]) for t in trees]
        self.expected = float(sum(t.expected for t in tables))
        self._compile([t for t in tables if t.splits])

    def _compile(self, tables: list[_Table]) -> None:
        """Flat arrays: the split slots (split k of every tree, then split k + 1, ...) and
        the (tree, feature) slots of the tables, in feature order."""
        self._width = max((len(t.splits) for t in tables), default=0)
        n = len(tables)
        # Split slot k * n + t is tree t's split k; a tree with fewer splits has empty
        # slots (threshold NaN: never left, so its bit stays 0).
        empty = _Split(0, np.nan, False, "NaN", None)
        splits = [t.splits[k] if k < len(t.splits) else empty for k in range(self._width) for t in tables]
        self._feature = np.array([s.feature for s in splits], dtype=np.int64)
        self._threshold = np.array([s.threshold for s in splits])[:, None]
        self._default_left = np.array([s.default_left for s in splits], dtype=bool)[:, None]
        # Where a missing value goes: the default side, or (missing_type None) as a 0 would.
        as_zero = np.array([s.missing == "None" for s in splits], dtype=bool)[:, None]
        self._nan_left = np.where(as_zero, 0.0 <= self._threshold, self._default_left)
        self._zero = np.flatnonzero([s.missing == "Zero" and s.categories is None for s in splits])
        self._categorical = [(j, s.categories) for j, s in enumerate(splits) if s.categories is not None]
        slot_tree, slot_feature, columns = [], [], []
        for t, table in enumerate(tables):
            for i, f in enumerate(table.features):
                slot_tree.append(t)
                slot_feature.append(f)
                columns.append(table.phi[:, i])
        order = np.argsort(np.array(slot_feature, dtype=np.int64), kind="stable")
        self._slot_tree = np.array(slot_tree, dtype=np.int64)[order]
        features = np.array(slot_feature, dtype=np.int64)[order]
        columns = [columns[o] for o in order]
        lengths = np.array([len(c) for c in columns], dtype=np.int64)
        self._slot_base = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)[:, None]
        self._flat = np.concatenate(columns) if columns else np.zeros(0)
        # Each used feature's slots are consecutive, from self._feature_start; summed with
        # reduceat, not a matrix product: small products on BLAS threads stall on 2 busy cores.
        self._used, starts = np.unique(features, return_index=True)
        self._feature_start = starts.astype(np.int64)
        self._n_tables = n

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """(n, n_features + 1) SHAP contributions, the expected value last (as ``pred_contrib``).

        Parameters
        ----------
        X : ndarray of shape (n, n_features)
            The float matrix LightGBM predicts on (categorical columns as their codes).
        """
        X = np.asarray(X, dtype=float)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must have shape (n, {self.n_features}), got {X.shape}")
        out = np.zeros((len(X), self.n_features + 1))
        out[:, -1] = self.expected
        if not self._n_tables:
            return out
        for start in range(0, len(X), CHUNK_ROWS):
            block = np.ascontiguousarray(X[start:start + CHUNK_ROWS].T)  # features x rows
            pattern = self._patterns(block)
            values = self._flat[self._slot_base + pattern[self._slot_tree]]
            out[start:start + block.shape[1], self._used] = np.add.reduceat(values, self._feature_start, axis=0).T
        return out

    def _patterns(self, block: np.ndarray) -> np.ndarray:
        """(trees, rows) index of each row's sides at a tree's splits (bit k: left at split k)."""
        x = block[self._feature]
        left = x <= self._threshold  # NaN compares false
        missing = np.isnan(x)
        if missing.any():
            left = np.where(missing, self._nan_left, left)
        if self._zero.size:
            z = self._zero
            zero = missing[z] | (np.abs(x[z]) <= K_ZERO)
            left[z] = np.where(zero, self._default_left[z], left[z])
        for j, categories in self._categorical:
            code = np.trunc(np.where(missing[j], -1.0, x[j]))
            left[j] = (code >= 0) & np.isin(code, categories)
        bits = left.view(np.uint8)
        n = self._n_tables
        pattern = bits[:n].copy()  # uint8: at most MAX_SPLITS = 8 bits
        for k in range(1, self._width):
            pattern |= bits[k * n:(k + 1) * n] << k
        return pattern
