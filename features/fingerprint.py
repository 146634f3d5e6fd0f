"""A data fingerprint: which rows a model was trained on, without the rows.

The sha256 covers the id, arm, outcome and feature columns in a canonical order, so
the same data read from parquet or CSV gives the same fingerprint; PII columns are not
part of it and are never written anywhere by it.
"""

from __future__ import annotations

import hashlib

import pandas as pd
from pandas.util import hash_pandas_object

from features.config import RunConfig


def data_fingerprint(frame: pd.DataFrame, config: RunConfig) -> dict:
    """sha256 of the modelled columns, row count and rows per arm."""
    cols = [config.id_column, config.arm_column, config.group_column, config.outcome.column]
    if config.turnout.column and config.turnout.column not in cols:
        cols.append(config.turnout.column)
    cols += [c for c in config.features if c not in cols]
    canonical = frame[cols].sort_values(config.id_column, kind="stable").reset_index(drop=True)
    canonical = canonical.astype({c: "float64" for c in cols if pd.api.types.is_numeric_dtype(canonical[c])})
    digest = hashlib.sha256()
    digest.update(",".join(cols).encode())
    digest.update(hash_pandas_object(canonical, index=False).to_numpy().tobytes())
    counts = frame[config.arm_column].astype(str).value_counts().sort_index()
    return {
        "sha256": digest.hexdigest(),
        "rows": len(frame),
        "rows_per_arm": {str(k): int(v) for k, v in counts.items()},
        "columns": cols,
    }
