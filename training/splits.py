"""Grouped splits: a hold-out of whole groups (clusters, precincts) and grouped folds.

Voters of one group share a place and often a household; splitting inside a group
leaks. Every split here keeps groups whole and is reproducible from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.config import RunConfig
from features.pipeline import FeaturePipeline


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


@dataclass
class Prepared:
    """The grouped train/hold-out split, transformed."""

    pipeline: FeaturePipeline
    train: pd.DataFrame
    test: pd.DataFrame
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    folds: np.ndarray

    def assigned(self, part: str, config: RunConfig) -> np.ndarray:
        return getattr(self, part)[config.arm_column].astype(str).to_numpy()


def prepare(frame: pd.DataFrame, config: RunConfig) -> Prepared:
    """Split ``frame`` by group into train and hold-out and fit the feature transform."""
    held = holdout_mask(frame[config.group_column], config.split.holdout_fraction, config.split.seed)
    train = frame.loc[~held].reset_index(drop=True)
    test = frame.loc[held].reset_index(drop=True)
    pipeline = FeaturePipeline(config.features, config.derived_features).fit(train)
    return Prepared(
        pipeline=pipeline,
        train=train,
        test=test,
        X_train=pipeline.transform(train),
        X_test=pipeline.transform(test),
        folds=group_folds(train[config.group_column], config.split.folds, config.split.seed),
    )
