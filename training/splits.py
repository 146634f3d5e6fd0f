"""Grouped splits: a hold-out of whole groups (clusters, precincts) and grouped folds.

Voters of one group share a place and often a household; splitting inside a group
leaks. Every split here keeps groups whole and is reproducible from the seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def holdout_mask(groups: pd.Series | np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the rows whose group falls in the hold-out.

    The same groups, seed and fraction always give the same hold-out.
    """
    groups = np.asarray(groups)
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed)
    n_hold = max(1, round(fraction * len(uniq)))
    held = rng.choice(uniq, size=n_hold, replace=False)
    return np.isin(groups, held)


def group_folds(groups: pd.Series | np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold number (0..n_folds-1) of each row; every group lies in one fold."""
    groups = np.asarray(groups)
    uniq, inverse = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed + 1)
    fold_of_group = rng.permutation(len(uniq)) % n_folds
    return fold_of_group[inverse]
