"""A data fingerprint: which rows a model was trained on, without the rows.

The sha256 covers the id, arm, outcome and feature columns in a canonical order, so
the same data read from parquet or CSV gives the same fingerprint; PII columns are not
part of it and are never written anywhere by it. A past program that trained the model
(``programs:``) has a fingerprint of its own, of the same columns and its recorded
propensities, beside the plan's design fingerprint; the experiment's ``sha256`` is the
experiment's alone, so a report on the experiment can check it.
"""

from __future__ import annotations

import hashlib

import pandas as pd
from pandas.util import hash_pandas_object

from features.config import RunConfig


def modelled_columns(config: RunConfig) -> list[str]:
    """The columns a fingerprint covers: id, arm, group, outcome(s) and features."""
    cols = [config.id_column, config.arm_column, config.group_column, config.outcome.column]
    if config.turnout.column and config.turnout.column not in cols:
        cols.append(config.turnout.column)
    return cols + [c for c in config.features if c not in cols]


def rows_sha256(frame: pd.DataFrame, cols: list[str], id_column: str) -> str:
    """sha256 of ``frame[cols]`` sorted by ``id_column`` (numbers as float64, so files of either format agree)."""
    canonical = frame[cols].sort_values(id_column, kind="stable").reset_index(drop=True)
    canonical = canonical.astype({c: "float64" for c in cols if pd.api.types.is_numeric_dtype(canonical[c])})
    digest = hashlib.sha256()
    digest.update(",".join(cols).encode())
    digest.update(hash_pandas_object(canonical, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def rows_per_arm(frame: pd.DataFrame, config: RunConfig) -> dict[str, int]:
    counts = frame[config.arm_column].astype(str).value_counts().sort_index()
    return {str(k): int(v) for k, v in counts.items()}


def data_fingerprint(frame: pd.DataFrame, config: RunConfig, programs: list[dict] | None = None) -> dict:
    """sha256 of the experiment's modelled columns, row count and rows per arm.

    ``programs``: the :func:`program_fingerprint` of each past program that trains the
    model with it, listed under ``programs``.
    """
    cols = modelled_columns(config)
    out = {
        "sha256": rows_sha256(frame, cols, config.id_column),
        "rows": len(frame),
        "rows_per_arm": rows_per_arm(frame, config),
        "columns": cols,
    }
    if programs:
        out["programs"] = list(programs)
    return out


def program_fingerprint(name: str, design: str, frame: pd.DataFrame, propensities: pd.DataFrame,
                        config: RunConfig) -> dict:
    """A past program's fingerprint: its name, its plan's design fingerprint and the sha256 of its rows.

    ``frame`` holds the program's rows as they train (the modelled columns it has, the arm
    column holding each voter's assignment); ``propensities`` their recorded probability of
    each label (columns: the control label and the arms), which the sha256 covers too.
    """
    cols = [c for c in modelled_columns(config) if c in frame.columns]
    recorded = {f"propensity {label}": propensities[label].to_numpy(dtype=float)
                for label in sorted(propensities.columns)}  # the config's order of the arms does not matter
    table = frame[cols].reset_index(drop=True).assign(**recorded)
    return {"name": name, "design": design, "sha256": rows_sha256(table, [*cols, *recorded], config.id_column),
            "rows": len(frame), "rows_per_arm": rows_per_arm(frame, config)}
