"""Small survey-like experiment frames for the data-check tests (arm codes, attrition, balance).

A door-canvass survey: respondents randomized by household to a canvass (``treatment``
= 1) or not (0), a support index on a -3..3 scale, and the columns the checks are about:
the outcome missing at a chosen rate per arm, ``conversation`` (post-treatment: 1 for
70% of the canvassed, never in control) and ``spread`` (pre-treatment in name only: the
same mean in both arms, three times the spread when canvassed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

FEATURES = ["age", "party", "ideology", "past_votes", "homeowner"]


def survey_frame(n: int = 500, seed: int = 0, *, missing: tuple[float, float] = (0.0, 0.0)) -> pd.DataFrame:
    """One row per respondent; ``missing`` is the outcome's missing rate in (control, canvass)."""
    rng = np.random.default_rng(seed)
    household = rng.integers(0, int(n / 1.6), n)
    treatment = (rng.random(household.max() + 1) < 0.5)[household].astype(int)
    party = rng.choice(["dem", "rep", "ind"], n, p=[0.38, 0.34, 0.28])
    ideology = np.clip(rng.normal(4 - 1.2 * (party == "dem") + 1.2 * (party == "rep"), 1.2), 1, 7).round()
    support = np.clip(np.round(0.5 * (party == "dem") - 0.25 * (ideology - 4) + rng.normal(0, 1.3, n)
                               + 0.4 * treatment), -3, 3)
    support[rng.random(n) < np.where(treatment == 1, missing[1], missing[0])] = np.nan
    return pd.DataFrame({
        "respondent_id": [f"R{i:05d}" for i in range(n)], "household": household, "treatment": treatment,
        "age": np.clip(rng.normal(50, 16, n), 18, 92).round(), "party": party, "ideology": ideology,
        "past_votes": rng.binomial(4, 0.55, n), "homeowner": (rng.random(n) < 0.6).astype(int),
        "conversation": treatment * (rng.random(n) < 0.7), "spread": rng.normal(0, np.where(treatment == 1, 3, 1)),
        "support": support,
    })


def survey_config(table: Path, **overrides) -> dict:
    """A minimal run config of a frame written to ``table``: raw 0/1 codes mapped to labels."""
    return {
        "name": "survey", "model_name": "persuade-survey", "data": {"table": str(table)},
        "id_column": "respondent_id", "arm_column": "treatment", "group_column": "household",
        "control_label": "no canvass", "control_value": 0, "arms": {"canvass": {"value": 1, "channel": "canvass"}},
        "outcome": {"column": "support", "kind": "support", "missing": "drop"},
        "features": list(FEATURES), "gates": {"min_rows_per_arm": 50},
        **overrides,
    }
