"""The data contract of a training run: checks that stop a run before anything is
logged or registered, each with a message that names the problem.

:func:`validate_experiment` collects *every* problem it finds and raises one
:class:`DataValidationError` listing them, so a modeler fixes a file in one go.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from features.attrition import Attrition, check_attrition, measure_attrition, observed_rows
from features.balance import BalanceCheck, check_balance
from features.config import RunConfig
from features.pii import find_pii_columns


class DataValidationError(ValueError):
    """The input data breaks the run's data contract."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("input data failed validation:\n- " + "\n- ".join(self.problems))


@dataclass
class ValidationReport:
    """What validation saw in a clean frame (logged with the run)."""

    n_rows: int
    rows_per_arm: dict[str, int]
    outcome_mean_per_arm: dict[str, float]
    srm_p_value: float | None
    warnings: list[str] = field(default_factory=list)
    attrition: Attrition | None = None  # rows assigned and observed per arm (features/attrition.py)
    balance: BalanceCheck | None = None  # balance and leakage of the features (features/balance.py)


def _is_binary(values: pd.Series) -> bool:
    uniq = pd.unique(values.dropna())
    return len(uniq) > 0 and set(np.asarray(uniq, dtype=float).tolist()) <= {0.0, 1.0}


def _check_outcome(frame: pd.DataFrame, column: str, kind: str, label: str, hint: str = "") -> list[str]:
    if column not in frame.columns:
        return [f"{label} column {column!r} is missing"]
    values = frame[column]
    if values.isna().any():
        return [f"{label} column {column!r} has {int(values.isna().sum())} missing values{hint}"]
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        if pd.api.types.is_bool_dtype(values):
            return []
        return [f"{label} column {column!r} must be numeric, found dtype {values.dtype}"]
    if kind == "turnout" and not _is_binary(values):
        bad = sorted(set(pd.unique(values)) - {0, 1})[:5]
        return [f"{label} column {column!r} is declared 'turnout' but has values other than 0/1: {bad}"]
    if kind == "support" and values.nunique() < 2:
        return [f"{label} column {column!r} is constant"]
    return []


def check_feature_list(config: RunConfig, frame: pd.DataFrame | None = None) -> list[str]:
    """Problems with the configured feature list itself (roles, protected, PII)."""
    problems = []
    feats = list(config.features)
    roles = {
        config.outcome.column: "the outcome column",
        config.arm_column: "the arm column",
        config.id_column: "the id column",
        config.group_column: "the group column",
    }
    if config.turnout.column:
        roles.setdefault(config.turnout.column, "the turnout column")
    for col in feats:
        if col in roles:
            problems.append(f"feature {col!r} is {roles[col]} and cannot be a feature")
        if col in config.protected:
            problems.append(f"feature {col!r} is a protected attribute (config 'protected') and cannot be a feature")
        if col in config.pii:
            problems.append(f"feature {col!r} is a PII column (config 'pii') and cannot be a feature")
    candidates = [c for c in feats if c not in config.pii]
    scan = frame if frame is not None else pd.DataFrame(columns=candidates)
    for col, why in find_pii_columns(scan, candidates).items():
        problems.append(f"feature {col!r} looks like PII ({why}) and cannot be a feature")
    return problems


def srm_test(counts: dict[str, int], shares: dict[str, float]) -> float:
    """Chi-square p-value of the observed arm counts against the designed shares."""
    labels = list(shares)
    observed = np.array([counts.get(k, 0) for k in labels], dtype=float)
    expected = np.array([shares[k] for k in labels]) * observed.sum()
    return float(stats.chisquare(observed, expected).pvalue)


def validate_experiment(frame: pd.DataFrame, config: RunConfig) -> ValidationReport:
    """Check ``frame`` against the run's data contract; raise on any problem.

    Parameters
    ----------
    frame : DataFrame
        The joined experiment frame from :func:`features.tables.load_experiment`.
    config : RunConfig
        The validated run config.

    Returns
    -------
    ValidationReport
        Row counts and outcome means per arm of the rows fitted (with ``outcome.missing:
        drop``, those with an outcome), the sample-ratio test, the attrition per arm and
        the balance and leakage check of the features.

    Raises
    ------
    DataValidationError
        Listing every problem found.
    """
    problems: list[str] = []
    required = [config.id_column, config.arm_column, config.group_column]
    missing_cols = [c for c in required if c not in frame.columns]
    missing_feats = [c for c in config.features if c not in frame.columns]
    if missing_cols:
        problems.append(f"required columns missing: {missing_cols}")
    if missing_feats:
        problems.append(f"feature columns missing from the input: {missing_feats}")
    problems += check_feature_list(config, frame if not missing_feats else None)
    # with outcome.missing: drop, the rows fitted are those with an outcome (after the attrition check below)
    fit = observed_rows(frame, config) if config.outcome.column in frame.columns else frame
    problems += _check_outcome(fit, config.outcome.column, config.outcome.kind, "outcome",
                               " (outcome.missing: drop drops such rows after a differential-attrition check)")
    turnout_col = config.turnout_column if config.has_turnout else None  # a support run may have none
    if turnout_col and turnout_col != config.outcome.column:
        problems += _check_outcome(fit, turnout_col, "turnout", "turnout")
    if missing_cols:
        raise DataValidationError(problems)

    ids = frame[config.id_column]
    if ids.isna().any():
        problems.append(f"id column {config.id_column!r} has {int(ids.isna().sum())} missing ids")
    dup = ids.duplicated(keep=False)
    if dup.any():
        examples = ids[dup].astype(str).unique()[:3].tolist()
        problems.append(
            f"id column {config.id_column!r} has {int(ids.duplicated().sum())} duplicate ids (e.g. {examples})"
        )
    if frame[config.group_column].isna().any():
        problems.append(f"group column {config.group_column!r} has missing values")

    arms = frame[config.arm_column]
    known = {config.control_label, *config.arms}
    unknown = sorted(set(arms.dropna().astype(str).unique()) - known)
    if arms.isna().any():
        problems.append(f"arm column {config.arm_column!r} has {int(arms.isna().sum())} missing labels")
    if unknown:
        problems.append(
            f"arm column {config.arm_column!r} has unknown arm labels {unknown}; "
            f"configured: {sorted(known)}{_code_hint(unknown, config)}"
        )
    counts = {str(k): int(v) for k, v in arms.value_counts().items()}
    fitted = {str(k): int(v) for k, v in fit[config.arm_column].value_counts().items()}
    for label in sorted(known):
        n = fitted.get(label, 0)
        if n < config.gates.min_rows_per_arm:
            problems.append(
                f"arm {label!r} has {n} rows, fewer than gates.min_rows_per_arm="
                f"{config.gates.min_rows_per_arm}"
            )
    srm_p = None
    shares = config.design_shares()
    if shares and not unknown:
        srm_p = srm_test(counts, shares)
        if srm_p < config.gates.srm_p_value:
            observed = {k: round(counts.get(k, 0) / max(len(frame), 1), 4) for k in shares}
            problems.append(
                f"sample-ratio mismatch: arm counts do not fit the configured assignment shares "
                f"(chi-square p={srm_p:.2e} < {config.gates.srm_p_value}); observed shares {observed}, "
                f"configured {shares}"
            )
    attrition = balance = None
    if not unknown and not arms.isna().any() and config.outcome.column in frame.columns:
        attrition = measure_attrition(frame, config)
        if config.outcome.missing == "drop":
            problems += check_attrition(attrition, config)
        structural = missing_feats or check_feature_list(config) or frame[config.group_column].isna().any()
        if config.balance.enabled and not structural:
            balance = check_balance(fit, config)
            problems += balance.problems()
    if problems:
        raise DataValidationError(problems)
    means = fit.groupby(config.arm_column)[config.outcome.column].mean()
    return ValidationReport(
        n_rows=len(fit),
        rows_per_arm=fitted,
        outcome_mean_per_arm={str(k): float(v) for k, v in means.items()},
        srm_p_value=srm_p,
        attrition=attrition,
        balance=balance,
    )


def _code_hint(unknown: list[str], config: RunConfig) -> str:
    """How to map raw numeric arm codes, when the unknown labels look like codes."""
    codes = config.arm_codes()
    if codes is not None:
        return (f"; the configured codes are {sorted(map(str, codes))} (control_value, arms.<arm>.value), "
                f"mapped by features.tables.load_experiment")
    if not all(_is_number(v) for v in unknown):
        return ""
    arm = next(iter(config.arms))
    return (f". These look like raw numeric codes: map them to labels in the config with each arm's code as "
            f"value: (arms: {{{arm}: {{value: {unknown[-1]}, ...}}}}) and the control's as control_value: "
            f"(e.g. control_value: {unknown[0]})")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
