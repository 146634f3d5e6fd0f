"""Contact-rate model: P(reached | attempted) per channel, from the contact log's flags.

A phone call or a door knock only works on the voters it reaches. Where the contact
log says, for each voter assigned to an arm, whether the contact was ``attempted`` and
whether it ``reached`` the voter, a LightGBM classifier per channel learns
P(reached | attempted, x) on the attempted rows of the training groups, and is judged
(AUC, log loss, Brier, calibration by decile) on the grouped hold-out.

The uplift models are intent-to-treat (fitted on assignment), so for a voter ``x`` and
an arm on channel ``c``, under the exclusion restriction (a voter who was not reached
is not moved)::

    ITT(x) = attempt_rate_c * P(reached | attempted, x) * uplift_if_reached(x)

The planner (:mod:`serving.plan_gains`) inverts that to get the uplift of a reached
voter and multiplies it by the contact rate expected in the new program. The model
and the experiment's ``attempt_rate`` / ``reached_rate`` travel with the scoring model
(``ScoringModel.contact_rate``, ``contact_rate_info``).

A channel whose attempts all reached the voter (mail, text in the synthetic program)
gets no model: it counts as always reached.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd

from features.config import GBMParams, RunConfig
from features.schema import DataValidationError
from training.evaluation import calibration_table, turnout_metrics
from training.learners.base import fit_booster
from training.tracking import log_json, log_metrics_flat, temp_dir

if TYPE_CHECKING:
    from training.splits import Prepared

NO_CHANNEL = ""  # the channel of control rows


@dataclass
class ContactFlags:
    """Per-row flags of the contact log and the channel of each row's assigned arm."""

    channel: np.ndarray
    attempted: np.ndarray
    reached: np.ndarray

    def subset(self, rows: np.ndarray) -> ContactFlags:
        """The flags of ``rows`` (a boolean mask or indices)."""
        return ContactFlags(self.channel[rows], self.attempted[rows], self.reached[rows])

    def padded(self, n: int) -> ContactFlags:
        """These flags followed by rows up to ``n`` that were never attempted (rows without a contact log)."""
        extra = n - len(self.channel)
        return ContactFlags(np.concatenate([self.channel, np.full(extra, NO_CHANNEL, dtype=object)]),
                            np.concatenate([self.attempted, np.zeros(extra, dtype=bool)]),
                            np.concatenate([self.reached, np.zeros(extra, dtype=bool)]))


def _flag(frame: pd.DataFrame, column: str, problems: list[str]) -> np.ndarray | None:
    values = frame[column]
    if values.isna().any():
        problems.append(f"contact log column {column!r} has {int(values.isna().sum())} missing values")
        return None
    if pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=bool)
    if not pd.api.types.is_numeric_dtype(values):
        problems.append(f"contact log column {column!r} must be 0/1, found dtype {values.dtype}")
        return None
    bad = sorted(set(pd.unique(values)) - {0, 1})
    if bad:
        problems.append(f"contact log column {column!r} must be 0/1, found values {bad[:5]}")
        return None
    return values.to_numpy() == 1


def read_contact_flags(frame: pd.DataFrame, config: RunConfig) -> ContactFlags | None:
    """The validated contact flags of ``frame``, or None when it has no reached column.

    Without an attempted column, every voter assigned to an arm counts as attempted.

    Raises
    ------
    DataValidationError
        A flag is missing or not 0/1, a voter was reached but not attempted, or a
        control voter was attempted; the message names the column.
    """
    spec = config.contact_rate
    if spec.reached_column not in frame.columns:
        return None
    assigned = frame[config.arm_column].astype(str).to_numpy()
    channel_of = config.arm_channels
    channel = np.array([channel_of.get(a, NO_CHANNEL) for a in assigned], dtype=object)
    problems: list[str] = []
    reached = _flag(frame, spec.reached_column, problems)
    if spec.attempted_column in frame.columns:
        attempted = _flag(frame, spec.attempted_column, problems)
    else:
        attempted = channel != NO_CHANNEL
    if reached is not None and attempted is not None:
        if (reached & ~attempted).any():
            problems.append(f"contact log column {spec.reached_column!r}: {int((reached & ~attempted).sum())} "
                            f"voters are reached but not {spec.attempted_column!r}")
        control = channel == NO_CHANNEL
        if (attempted & control).any():
            problems.append(f"contact log column {spec.attempted_column!r}: {int((attempted & control).sum())} "
                            f"control voters ({config.control_label!r}) are flagged attempted")
    if problems:
        raise DataValidationError(problems)
    return ContactFlags(channel, attempted, reached)


class ContactRateModel:
    """P(reached | attempted) per channel: one LightGBM classifier per channel.

    Parameters
    ----------
    params : GBMParams
        Parameters of each channel's classifier.
    seed : int
    """

    def __init__(self, params: GBMParams | None = None, seed: int = 0):
        self.params = params
        self.seed = seed

    def fit(self, X: pd.DataFrame, flags: ContactFlags) -> ContactRateModel:
        """Fit a classifier for each channel with attempts of which some were not reached.

        Parameters
        ----------
        X : DataFrame
            Model features (the fitted pipeline's output), one row per voter.
        flags : ContactFlags
            Channel, attempted and reached flags of the same rows.
        """
        if len(X) != len(flags.reached):
            raise ValueError(f"X has {len(X)} rows but the flags have {len(flags.reached)}")
        params = self.params or GBMParams(n_estimators=100, num_leaves=15, min_child_samples=200)
        self.boosters_: dict[str, lgb.Booster] = {}
        self.info_: dict[str, dict[str, float]] = {}
        for channel in sorted(set(flags.channel) - {NO_CHANNEL}):
            assigned = flags.channel == channel
            rows = assigned & flags.attempted
            if not rows.any():
                continue
            reached = flags.reached[rows]
            if reached.all():
                continue  # always reached: no model needed
            if not reached.any():
                raise DataValidationError([f"contact log: no attempted {channel} contact reached its voter"])
            self.boosters_[channel] = fit_booster(X[rows], reached.astype(float), params, "binary", self.seed)
            self.info_[channel] = {
                "attempt_rate": float(rows.sum() / assigned.sum()),
                "reached_rate": float(reached.mean()),
                "attempted_rows": int(rows.sum()),
            }
        return self

    def arm_boosters(self, arm_channels: Mapping[str, str]) -> dict[str, lgb.Booster]:
        """Arm -> its channel's classifier, for the arms whose channel has one (``RunConfig.arm_channels``)."""
        return {arm: self.boosters_[channel] for arm, channel in arm_channels.items() if channel in self.boosters_}

    def predict(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """P(reached | attempted) for every row, per modelled channel."""
        if not hasattr(self, "boosters_"):
            raise RuntimeError("ContactRateModel is not fitted")
        return {channel: booster.predict(X) for channel, booster in self.boosters_.items()}

    def evaluate(self, X: pd.DataFrame, flags: ContactFlags) -> tuple[dict[str, dict[str, float]],
                                                                      dict[str, pd.DataFrame]]:
        """Metrics and decile calibration table per channel on the attempted rows of ``X``."""
        metrics, tables = {}, {}
        predicted = self.predict(X)
        for channel, p in predicted.items():
            rows = (flags.channel == channel) & flags.attempted
            y = flags.reached[rows].astype(float)
            if rows.sum() < 10:
                continue
            out = {"rows": float(rows.sum()), "observed_rate": float(y.mean()),
                   "predicted_rate": float(p[rows].mean())}
            if 0 < y.sum() < len(y):
                out.update(turnout_metrics(p[rows], y))
            metrics[channel] = out
            tables[channel] = calibration_table(p[rows], y)
        return metrics, tables


@dataclass
class ContactRateReport:
    """A fitted contact-rate model and its hold-out evaluation."""

    model: ContactRateModel
    train_flags: ContactFlags  # the flags it was fitted on (the experiment's training rows)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    calibration: dict[str, pd.DataFrame] = field(default_factory=dict)

    def flat_metrics(self) -> dict[str, float]:
        return {f"contact_rate_{c}_{k}": v for c, m in self.metrics.items() for k, v in m.items()}


def fit_contact_rate(prep: Prepared, config: RunConfig) -> ContactRateReport | None:
    """Fit on the training groups and evaluate on the hold-out; None without flags.

    The flags of both parts are validated first (an error names the column).
    """
    train_flags = read_contact_flags(prep.train, config)
    if train_flags is None:
        return None
    test_flags = read_contact_flags(prep.test, config)
    model = ContactRateModel(config.contact_rate.params, config.split.seed).fit(prep.X_train, train_flags)
    if not model.boosters_:
        return None
    metrics, tables = model.evaluate(prep.X_test, test_flags)
    return ContactRateReport(model, train_flags, metrics, tables)


def log_contact_rate(report: ContactRateReport) -> None:
    """Log the contact-rate evaluation to the active MLflow run."""
    log_metrics_flat(report.flat_metrics())
    log_json({"channels": report.model.info_, "holdout": report.metrics}, "evaluation/contact_rate.json")
    with temp_dir() as tmp:
        for channel, table in report.calibration.items():
            path = f"{tmp}/contact_rate_calibration_{channel}.csv"
            table.to_csv(path, index=False)
            mlflow.log_artifact(path, "evaluation")
