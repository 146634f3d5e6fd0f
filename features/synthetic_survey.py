"""A seeded synthetic persuasion survey: a door-canvass experiment of a few hundred respondents.

The shape modelers bring that GGL does not have: about 500 respondents randomized by
household to a canvass (``treatment`` = 1) or not (0), a support index on a -3..3
scale from a follow-up survey that 15% did not answer, no turnout outcome, and one
post-treatment column (``conversation``: whether the canvasser spoke with the voter,
never 1 in control) that must never be a feature. The true effect of the canvass is
the same for every respondent (``effect`` points of latent support), so what a model
can honestly serve here is that average effect and its interval.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

FEATURES = ["age", "party", "ideology", "past_votes", "homeowner"]


def make_survey(
    n: int = 500, seed: int = 0, *, attrition: float = 0.15, effect: float = 0.4
) -> pd.DataFrame:
    """One row per respondent: id, household, 0/1 treatment, features, ``support`` (NaN when not surveyed).

    Parameters
    ----------
    n : int
        Respondents.
    seed : int
    attrition : float
        Share of respondents whose outcome is missing, at random in both arms.
    effect : float
        True effect of the canvass on latent support (points of the -3..3 scale).
    """
    rng = np.random.default_rng(seed)
    household = np.sort(rng.integers(0, int(n / 1.6), n))
    households = np.unique(household)
    treated_household = rng.random(len(households)) < 0.5
    treatment = treated_household[np.searchsorted(households, household)].astype(int)
    age = np.clip(rng.normal(50, 16, n), 18, 92).round().astype(int)
    party = rng.choice(["dem", "rep", "ind"], n, p=[0.38, 0.34, 0.28])
    ideology = np.clip(rng.normal(4 - 1.2 * (party == "dem") + 1.2 * (party == "rep"), 1.2), 1, 7).round()
    past_votes = rng.binomial(4, 0.55, n)
    homeowner = (rng.random(n) < 0.6).astype(int)
    latent = (0.5 * (party == "dem") - 0.5 * (party == "rep") - 0.25 * (ideology - 4)
              + rng.normal(0, 1.3, n) + effect * treatment)
    support = np.clip(np.round(latent), -3, 3)
    support[rng.random(n) < attrition] = np.nan
    conversation = treatment * (rng.random(n) < 0.7).astype(int)
    return pd.DataFrame({
        "respondent_id": [f"R{i:05d}" for i in range(n)], "household": household, "treatment": treatment,
        "age": age, "party": party, "ideology": ideology, "past_votes": past_votes, "homeowner": homeowner,
        "conversation": conversation, "support": support,
    })


def survey_config(table: str | Path) -> dict:
    """The minimal run config of a survey written to ``table``: no tuning blocks, raw 0/1 arm codes."""
    return {
        "name": "canvass-survey",
        "model_name": "persuade-canvass-survey",
        "data": {"table": str(Path(table).resolve())},
        "id_column": "respondent_id",
        "arm_column": "treatment",
        "control_label": "no canvass",
        "control_value": 0,
        "arms": {"canvass": {"value": 1, "channel": "canvass"}},
        "outcome": {"column": "support", "kind": "support", "missing": "drop"},
        "group_column": "household",
        "features": list(FEATURES),
    }


def write_survey(folder: str | Path, n: int = 500, seed: int = 0, **kwargs) -> Path:
    """Write a survey's table and its minimal config to ``folder``; return the config's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    make_survey(n, seed, **kwargs).to_parquet(folder / "survey.parquet", index=False)
    path = folder / "survey.yaml"
    path.write_text(yaml.safe_dump(survey_config(folder / "survey.parquet"), sort_keys=False))
    return path
