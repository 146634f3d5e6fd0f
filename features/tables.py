"""Read the raw input tables of a run into one experiment frame.

Two layouts end in the same frame (one row per voter: id, group, arm, outcome(s),
features, protected attributes):

- one flat experiment table (``data.table``), as the GGL file;
- a voter file + contact log + outcome table (``data.voter_file``, ``data.contact_log``,
  ``data.outcomes``), joined on the id column. The contact log has one assignment row per
  voter (control included) with the arm column and, optionally, ``attempted``/``reached``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features import table_files
from features.config import RunConfig
from features.schema import DataValidationError
from features.table_files import TableFileError


def read_table(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A training table (:func:`features.table_files.read_table`); a problem is a :class:`DataValidationError`."""
    try:
        return table_files.read_table(path, columns)
    except (FileNotFoundError, TableFileError) as exc:
        raise DataValidationError([str(exc)]) from None


def load_experiment(config: RunConfig) -> pd.DataFrame:
    """Load the raw tables named by ``config`` into one frame (not yet validated).

    Raw arm codes are mapped to their labels when the config gives them
    (``arms.<arm>.value`` and ``control_value``; see :func:`map_arm_codes`).
    """
    return map_arm_codes(_read_experiment(config), config)


def map_arm_codes(frame: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    """``frame`` with its arm column's raw codes replaced by the configured labels.

    A code matches a value of the column as text (``1`` matches ``1``, ``1.0`` and
    ``"1"``); values that match no code are kept as they are, for validation to name.
    Without configured codes the frame is returned unchanged (labels are matched as text).
    """
    codes = config.arm_codes()
    if codes is None or config.arm_column not in frame.columns:
        return frame
    labels = {_code_text(code): label for code, label in codes.items()}
    raw = frame[config.arm_column]
    mapping = {v: labels.get(_code_text(v), str(v)) for v in pd.unique(raw.dropna())}
    return frame.assign(**{config.arm_column: raw.map(mapping).astype("object")})


def _code_text(value) -> str:
    """A raw arm code as text; a whole float (1.0, from a column with missing values) as an integer."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _read_experiment(config: RunConfig) -> pd.DataFrame:
    spec = config.data
    if spec.table is not None:
        return read_table(config.resolve(spec.table))
    voters = read_table(config.resolve(spec.voter_file))
    contacts = read_table(config.resolve(spec.contact_log))
    outcomes = read_table(config.resolve(spec.outcomes))
    key = config.id_column
    problems = []
    for name, frame in (("voter_file", voters), ("contact_log", contacts), ("outcomes", outcomes)):
        if key not in frame.columns:
            problems.append(f"{name}: id column {key!r} is missing")
        elif frame[key].duplicated().any():
            dup = int(frame[key].duplicated().sum())
            problems.append(f"{name}: {dup} duplicate values in id column {key!r}")
    if problems:
        raise DataValidationError(problems)
    missing_assign = ~voters[key].isin(contacts[key])
    if missing_assign.any():
        raise DataValidationError(
            [f"contact_log: {int(missing_assign.sum())} voters of the voter file have no assignment row"]
        )
    missing_outcome = ~voters[key].isin(outcomes[key])
    if missing_outcome.any():
        raise DataValidationError(
            [f"outcomes: {int(missing_outcome.sum())} voters of the voter file have no outcome row"]
        )
    overlap = (set(contacts.columns) & set(voters.columns)) - {key}
    frame = voters.merge(contacts.drop(columns=list(overlap)), on=key, how="left", validate="1:1")
    overlap = (set(outcomes.columns) & set(frame.columns)) - {key}
    return frame.merge(outcomes.drop(columns=list(overlap)), on=key, how="left", validate="1:1")
