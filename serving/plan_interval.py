"""The 95% interval of a plan's total expected gain, from the hold-out's decile errors."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from serving.bundle import ScoringModel
from serving.plan_gains import ExpectedGains

INTERVAL_Z = 1.959963984540054  # two-sided 95%


def effect_bins(deciles: Mapping[str, pd.DataFrame]) -> dict[str, dict[str, list[float]]]:
    """Per arm, the hold-out decile table reduced to what the plan interval needs.

    ``deciles`` is the run's per-arm table of predicted vs observed uplift by decile
    (``training.evaluation.decile_table``); stored as ``metadata["uplift_deciles"]``.
    """
    out = {}
    for arm, table in deciles.items():
        t = table.sort_values("predicted_uplift")
        out[arm] = {"predicted": t.predicted_uplift.astype(float).tolist(),
                    "se": t.observed_se.astype(float).tolist()}
    return out


def gain_interval(model: ScoringModel, gains: ExpectedGains, arm: np.ndarray,
                  z: float = INTERVAL_Z) -> tuple[float, float] | None:
    """95% interval of the plan's total expected gain (None when the model has no deciles).

    The model's total, plus or minus the precision with which the randomized hold-out
    measured the effect of voters like those chosen: each contact falls in the decile
    of its arm's predicted uplift (nearest decile mean), a decile's observed uplift has
    standard error ``se``, so ``n`` contacts in it carry ``n * se`` (scaled by the
    contact-rate factor). Deciles of one arm are disjoint samples (added in quadrature);
    arms share the control group, so their parts are added linearly (conservative).
    """
    bins = model.metadata.get("uplift_deciles")
    picked = arm >= 0
    total = float(gains.gain[picked, arm[picked]].sum()) if picked.any() else 0.0
    if not bins:
        return None
    half = 0.0
    for j, info in enumerate(model.arms):
        rows = np.flatnonzero(arm == j)
        if not len(rows):
            continue
        if info.label not in bins:
            return None
        predicted = np.asarray(bins[info.label]["predicted"], dtype=float)
        se = np.asarray(bins[info.label]["se"], dtype=float)
        se = np.where(np.isfinite(se), se, np.nanmax(se) if np.isfinite(se).any() else 0.0)
        itt = gains.itt[rows, j]
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = np.where(itt != 0, gains.gain[rows, j] / itt, 1.0)
        which = np.searchsorted((predicted[1:] + predicted[:-1]) / 2, itt)
        weight = np.bincount(which, weights=factor, minlength=len(predicted))
        half += z * float(np.sqrt(np.sum((weight * se) ** 2)))
    return total - half, total + half
