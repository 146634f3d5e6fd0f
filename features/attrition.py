"""Survey attrition: rows whose outcome is missing, per arm, and whether they may be dropped.

A survey outcome (a support scale, say) is often missing for respondents who did not
answer. With ``outcome.missing: drop`` those rows are dropped before fitting, but only
after a check that attrition does not differ by arm: dropping rows whose missingness
depends on the arm would break the randomization the uplift models rest on. The check
is a chi-square test of independence of missingness and arm (scipy); a p-value below
``outcome.attrition_p_value`` refuses the data, with the rates per arm.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from scipy import stats

from features.config import RunConfig


@dataclass
class Attrition:
    """Rows assigned and with an observed outcome, per arm (control first).

    Attributes
    ----------
    table : DataFrame
        Columns ``arm``, ``assigned``, ``observed``, ``missing``, ``missing_rate``.
    p_value : float or None
        Chi-square p-value of missingness by arm; None when no outcome is missing.
    """

    table: pd.DataFrame
    p_value: float | None

    @property
    def missing(self) -> int:
        return int(self.table["missing"].sum())

    def rates(self) -> str:
        """The missing rates per arm, as text (for messages)."""
        return ", ".join(f"{r.arm} {r.missing_rate:.1%} ({r.missing:,} of {r.assigned:,})"
                         for r in self.table.itertuples())

    def to_records(self) -> list[dict]:
        return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
                for row in self.table.to_dict(orient="records")]


def measure_attrition(frame: pd.DataFrame, config: RunConfig) -> Attrition:
    """Count each arm's rows with and without an outcome and test missingness by arm.

    Parameters
    ----------
    frame : DataFrame
        The experiment frame, arm labels already mapped (rows of unknown arms are ignored).
    config : RunConfig
        The run config (its arm labels and outcome column).

    Returns
    -------
    Attrition
    """
    labels = [config.control_label, *config.arm_labels]
    arms = frame[config.arm_column].astype("object")
    missing = frame[config.outcome.column].isna()
    assigned = arms.value_counts().reindex(labels, fill_value=0)
    lost = missing.groupby(arms).sum().reindex(labels, fill_value=0)
    table = pd.DataFrame({"arm": labels, "assigned": assigned.to_numpy(dtype=int),
                          "observed": (assigned - lost).to_numpy(dtype=int), "missing": lost.to_numpy(dtype=int)})
    table["missing_rate"] = table["missing"] / table["assigned"].clip(lower=1)
    p_value = None
    if table["missing"].sum() > 0:
        kept = table[table["assigned"] > 0]
        if len(kept) > 1:
            p_value = float(stats.chi2_contingency(kept[["observed", "missing"]].to_numpy()).pvalue)
    return Attrition(table, p_value)


def check_attrition(attrition: Attrition, config: RunConfig) -> list[str]:
    """The refusal when attrition differs by arm beyond chance (an empty list otherwise)."""
    limit = config.outcome.attrition_p_value
    if attrition.p_value is None or attrition.p_value >= limit:
        return []
    return [
        f"differential attrition: outcome {config.outcome.column!r} is missing at different rates by arm "
        f"(chi-square p={attrition.p_value:.2e} < outcome.attrition_p_value={limit}): {attrition.rates()}. "
        f"Dropping these rows would compare arms on different kinds of respondents; fix the data collection or "
        f"model the missingness before training"
    ]


def observed_rows(frame: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    """The rows a run fits on: with ``outcome.missing: drop``, those whose outcome is observed.

    With the default ``missing: refuse`` the frame is returned as it is (validation has
    refused any missing outcome).
    """
    if config.outcome.missing != "drop":
        return frame
    return frame[frame[config.outcome.column].notna()].reset_index(drop=True)
