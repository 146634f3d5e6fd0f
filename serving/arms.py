"""Predict and explain the uplift of every arm at once, sharing the work arms have in common.

With pooled arms (the foundation's default), every arm's uplift ensemble starts with the
same trees: a shared uplift shape whose leaves are scaled to the arm's level, optionally
followed by arm-specific trees. TreeSHAP is additive over trees and linear in the leaf
values, so for arm ``k``::

    contributions_k = scale_k * contributions(shared trees) + contributions(arm k's own trees)

and the same holds for predictions. :class:`ArmEnsembles` finds the shared prefix and the
scales by comparing the tree structures at load, computes the shared part once, and checks
on a probe segment that the result equals each arm's own ``ScoringModel.explain`` and
``predict_uplift`` (to 1e-9); if anything differs, or arms share nothing, it explains each
arm on its own, exactly as ``ScoringModel.explain`` does.

It also converts the feature frame to one float matrix once per call (categorical columns
as their codes, as LightGBM itself does when the category lists match), instead of once
per booster call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from serving.bundle import ScoringModel

CHECK_TOLERANCE = 1e-9
SMALL_BATCH = 2_000  # rows; smaller batches predict on one thread (no OpenMP fork-join cost)


@dataclass(frozen=True)
class SharedTrees:
    """The first ``n_trees`` trees of every arm are the reference arm's, times ``scales[k]``."""

    n_trees: int
    scales: np.ndarray  # (n_arms,), relative to arm 0


def shared_trees(boosters: list[lgb.Booster], rtol: float = 1e-9) -> SharedTrees | None:
    """Longest common prefix of trees, equal up to one leaf-value scale per arm (None if empty)."""
    if len(boosters) < 2:
        return None
    dumps = [b.dump_model()["tree_info"] for b in boosters]
    scales: list[float | None] = [1.0] + [None] * (len(boosters) - 1)
    n_trees = 0
    for t in range(min(len(d) for d in dumps)):
        reference = dumps[0][t]["tree_structure"]
        tree_scales = []
        for k in range(1, len(boosters)):
            scale = _leaf_ratio(reference, dumps[k][t]["tree_structure"], scales[k], rtol)
            if scale is None:
                break
            tree_scales.append(scale)
        if len(tree_scales) < len(boosters) - 1:
            break
        for k, scale in enumerate(tree_scales, start=1):
            scales[k] = scale if scales[k] is None else scales[k]
        n_trees = t + 1
    if n_trees == 0 or any(s is None for s in scales):
        return None
    return SharedTrees(n_trees, np.array(scales, dtype=float))


_SPLIT_KEYS = ("split_feature", "threshold", "decision_type", "default_left", "missing_type", "internal_count")


def _leaf_ratio(a: dict[str, Any], b: dict[str, Any], scale: float | None, rtol: float) -> float | None:
    """The one ratio b/a of all leaf values if the trees have the same splits, else None."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if "leaf_value" in x or "leaf_value" in y:
            if "leaf_value" not in x or "leaf_value" not in y or x.get("leaf_count") != y.get("leaf_count"):
                return None
            vx, vy = x["leaf_value"], y["leaf_value"]
            if vx == 0.0:
                if vy != 0.0:
                    return None
                continue
            ratio = vy / vx
            if scale is None:
                scale = ratio
            elif not np.isclose(ratio, scale, rtol=rtol, atol=0.0):
                return None
            continue
        if any(x.get(key) != y.get(key) for key in _SPLIT_KEYS):
            return None
        stack.append((x["left_child"], y["left_child"]))
        stack.append((x["right_child"], y["right_child"]))
    return 1.0 if scale is None else scale


class ArmEnsembles:
    """Turnout, uplift and exact SHAP contributions of all arms of a :class:`ScoringModel`.

    Parameters
    ----------
    model : ScoringModel
    threads : int, optional
        LightGBM threads for batches of ``SMALL_BATCH`` rows or more (default:
        ``PERSUADE_THREADS``, else LightGBM's default); smaller batches use one.
    probe : DataFrame, optional
        Transformed features on which the fast path is checked against ``ScoringModel``'s
        own ``predict_turnout``, ``predict_uplift`` and ``explain`` before it is used.
    """

    def __init__(self, model: ScoringModel, threads: int | None = None, probe: pd.DataFrame | None = None):
        self.model = model
        self.labels = [a.label for a in model.arms]
        self.boosters = [model.uplift[label] for label in self.labels]
        env_threads = os.environ.get("PERSUADE_THREADS")
        self.threads = threads if threads is not None else int(env_threads) if env_threads else 0
        self._categories = self._category_codes(model)
        self.shared = shared_trees(self.boosters)
        if probe is not None and not self._agrees(probe):
            self._categories, self.shared = None, None  # ScoringModel's own path, one arm at a time

    @property
    def fast(self) -> bool:
        """Arms share their common trees (one explanation pass for all of them)."""
        return self.shared is not None

    # -- inputs ----------------------------------------------------------------------
    @staticmethod
    def _category_codes(model: ScoringModel) -> dict[str, list[str]] | None:
        """The category lists if every booster codes categories as the pipeline does, else None."""
        cats = model.pipeline.categories_
        expected = [cats[c] for c in model.feature_names if c in cats]
        stored = [b.pandas_categorical or [] for b in [model.turnout, *model.uplift.values()]]
        return cats if all(s == expected for s in stored) else None

    def _matrix(self, X: pd.DataFrame) -> np.ndarray | pd.DataFrame:
        """``X`` as one float matrix (categories as codes, unknown as NaN), or ``X`` itself."""
        if self._categories is None:
            return X
        out = np.empty((len(X), X.shape[1]), dtype=float)
        for j, name in enumerate(X.columns):
            col = X[name]
            if isinstance(col.dtype, pd.CategoricalDtype):
                codes = col.cat.codes.to_numpy()
                out[:, j] = np.where(codes < 0, np.nan, codes)
            else:
                out[:, j] = col.to_numpy(dtype=float, na_value=np.nan)
        return out

    def _kw(self, n: int) -> dict[str, int]:
        return {"num_threads": 1 if n < SMALL_BATCH else self.threads}

    # -- predictions -----------------------------------------------------------------
    def inputs(self, X: pd.DataFrame) -> tuple[np.ndarray | pd.DataFrame, np.ndarray]:
        """The uplift models' input and the calibrated turnout, from transformed features ``X``."""
        Xm = self._matrix(X)
        p = self.model.turnout.predict(Xm, **self._kw(len(X))) if len(X) else np.zeros(0)
        if self.model.calibration is not None:
            xs, ys = self.model.calibration
            p = np.interp(p, xs, ys)
        if not self.model.turnout_score_feature:
            return Xm, p
        if isinstance(Xm, np.ndarray):
            return np.column_stack([Xm, p]), p
        return self.model.uplift_inputs(X, p), p

    def uplift(self, Xu: np.ndarray | pd.DataFrame) -> np.ndarray:
        """(n, n_arms) uplift, arms in the model's order."""
        n, kw = len(Xu), self._kw(len(Xu))
        if n == 0:
            return np.zeros((0, len(self.labels)))
        if self.shared is None:
            return np.column_stack([b.predict(Xu, **kw) for b in self.boosters])
        out = np.outer(self.boosters[0].predict(Xu, num_iteration=self.shared.n_trees, **kw), self.shared.scales)
        for k, booster in enumerate(self.boosters):
            if booster.num_trees() > self.shared.n_trees:
                out[:, k] += booster.predict(Xu, start_iteration=self.shared.n_trees, **kw)
        return out

    def contributions(self, Xu: np.ndarray | pd.DataFrame) -> list[np.ndarray]:
        """Per arm, the (n, n_features + 1) SHAP contributions of its uplift, base value last."""
        kw = self._kw(len(Xu))
        if self.shared is None:
            return [np.asarray(b.predict(Xu, pred_contrib=True, **kw)) for b in self.boosters]
        common = np.asarray(self.boosters[0].predict(Xu, num_iteration=self.shared.n_trees, pred_contrib=True, **kw))
        out = []
        for k, booster in enumerate(self.boosters):
            c = common * self.shared.scales[k]
            if booster.num_trees() > self.shared.n_trees:
                c += np.asarray(booster.predict(Xu, start_iteration=self.shared.n_trees, pred_contrib=True, **kw))
            out.append(c)
        return out

    def _agrees(self, X: pd.DataFrame) -> bool:
        """The fast path gives ScoringModel's own turnout, uplift and contributions on ``X``."""
        model = self.model
        turnout = model.predict_turnout(X)
        uplift = model.predict_uplift(X, turnout)
        own = [model.explain(X, label, turnout) for label in self.labels]
        Xu, p = self.inputs(X)
        return (np.allclose(p, turnout, rtol=0, atol=CHECK_TOLERANCE)
                and np.allclose(self.uplift(Xu), uplift, rtol=0, atol=CHECK_TOLERANCE)
                and all(np.allclose(c, o, rtol=0, atol=CHECK_TOLERANCE)
                        for c, o in zip(self.contributions(Xu), own, strict=True)))
