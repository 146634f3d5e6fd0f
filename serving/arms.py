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

Contributions come from TreeSHAP lookup tables (:mod:`serving.treeshap_tables`), each
checked against LightGBM's ``pred_contrib`` on the probe, else from ``pred_contrib``.
The feature frame becomes one float matrix once per call (``ScoringModel.feature_matrix``:
categorical columns as their codes, as LightGBM itself does when the category lists
match), instead of once per booster call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.settings import Settings
from serving.bundle import ScoringModel, checked_tables, shap_tables
from serving.treeshap_tables import TreeShapTables

if TYPE_CHECKING:  # annotations only: BentoML's arbiter imports this without a booster to load
    import lightgbm as lgb

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
        ``PERSUADE_THREADS``, see :class:`features.settings.Settings`); smaller batches use one.
    probe : DataFrame, optional
        Transformed features on which the fast path is checked against ``ScoringModel``'s
        own ``predict_turnout``, ``predict_uplift`` and ``explain`` before it is used.
    """

    def __init__(self, model: ScoringModel, threads: int | None = None, probe: pd.DataFrame | None = None):
        self.model = model
        self.labels = [a.label for a in model.arms]
        self.boosters = [model.uplift[label] for label in self.labels]
        self.threads = threads if threads is not None else Settings.from_env().threads
        self._as_matrix = model.codes_categories()
        self.shared = shared_trees(self.boosters)
        self._tables = self._checked_tables(probe)
        if probe is not None and not self._agrees(probe):
            # ScoringModel's own path, one arm at a time
            self._as_matrix, self.shared, self._tables = False, None, None

    @property
    def fast(self) -> bool:
        """Arms share their common trees (one explanation pass for all of them)."""
        return self.shared is not None

    # -- inputs ----------------------------------------------------------------------
    @property
    def takes_columns(self) -> bool:
        """:meth:`inputs` also takes ``FeaturePipeline.transform_columns``'s arrays (no frame needed)."""
        return bool(self._as_matrix)

    def _matrix(self, X: pd.DataFrame | Mapping[str, Any]) -> np.ndarray | pd.DataFrame:
        """``X`` as one float matrix (categories as codes, unknown as NaN), or ``X`` itself."""
        return self.model.feature_matrix(X) if self._as_matrix else X

    def _checked_tables(self, probe: pd.DataFrame | None) -> list[tuple[TreeShapTables | None, ...]] | None:
        """Per arm, the tables of (its shared trees, its own trees), each checked on ``probe``.

        Without arms that share trees, the first entry covers all of an arm's trees and
        the second is None. None overall without a probe or a float matrix.
        """
        if probe is None or not self._as_matrix or not len(probe):
            return None
        Xu, _ = self.inputs(probe)
        if self.shared is None:  # each arm's whole booster: the tables ScoringModel.explain uses too
            return [(shap_tables(b, Xu), None) for b in self.boosters]
        n = self.shared.n_trees
        common = checked_tables(self.boosters[0], Xu, 0, n)
        return [(common, checked_tables(b, Xu, n) if b.num_trees() > n else None) for b in self.boosters]

    def _kw(self, n: int) -> dict[str, int]:
        return {"num_threads": 1 if n < SMALL_BATCH else self.threads}

    # -- predictions -----------------------------------------------------------------
    def inputs(self, X: pd.DataFrame | Mapping[str, Any]) -> tuple[np.ndarray | pd.DataFrame, np.ndarray]:
        """The uplift models' input and the calibrated turnout, from transformed features ``X``.

        ``X`` is the feature frame, or (where :attr:`takes_columns`) the feature arrays of
        ``FeaturePipeline.transform_columns``. The turnout is NaN for every row of a model
        without a turnout model (a support model trained without a turnout column), as
        ``ScoringModel.predict_turnout`` gives.
        """
        Xm = self._matrix(X)
        n = len(Xm)
        if not self.model.has_turnout:
            return Xm, np.full(n, np.nan)  # nor is it then an input of the uplift models
        p = self.model.turnout.predict(Xm, **self._kw(n)) if n else np.zeros(0)
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
        if self.shared is None:
            return [self._contrib(k, 0, Xu) for k in range(len(self.boosters))]
        n = self.shared.n_trees
        common = self._contrib(0, 0, Xu, n)
        out = []
        for k, booster in enumerate(self.boosters):
            c = common * self.shared.scales[k]
            if booster.num_trees() > n:
                c += self._contrib(k, 1, Xu, start=n)
            out.append(c)
        return out

    def _contrib(self, k: int, part: int, Xu: np.ndarray | pd.DataFrame, num: int | None = None,
                 start: int = 0) -> np.ndarray:
        """Arm ``k``'s contributions of its shared trees (``part`` 0) or own trees (1)."""
        tables = self._tables[k][part] if self._tables is not None else None
        if tables is not None and isinstance(Xu, np.ndarray):
            return tables.contributions(Xu)
        return np.asarray(self.boosters[k].predict(Xu, start_iteration=start, num_iteration=num,
                                                   pred_contrib=True, **self._kw(len(Xu))))

    def _agrees(self, X: pd.DataFrame) -> bool:
        """The fast path gives ScoringModel's own turnout, uplift and contributions on ``X``."""
        model = self.model
        turnout = model.predict_turnout(X)
        uplift = model.predict_uplift(X, turnout)
        own = [model.explain(X, label, turnout) for label in self.labels]
        Xu, p = self.inputs(X)
        return (np.allclose(p, turnout, rtol=0, atol=CHECK_TOLERANCE, equal_nan=True)  # NaN: no turnout model
                and np.allclose(self.uplift(Xu), uplift, rtol=0, atol=CHECK_TOLERANCE)
                and all(np.allclose(c, o, rtol=0, atol=CHECK_TOLERANCE)
                        for c, o in zip(self.contributions(Xu), own, strict=True)))
