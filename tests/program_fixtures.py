"""Shared pieces of the tests of learning from past programs (tests/test_programs.py, test_propensities.py).

``small_config`` is a run config of the synthetic campaign with a grid small enough to fit
4,000 voters in seconds; ``fit_summary`` is what the no-programs pin compares
(tests/data/no_programs_fit.json was written by the code before per-row propensities,
from this config and ``make_campaign(4000, seed=3)``).
"""

from __future__ import annotations

from pathlib import Path

from features.synthetic import synthetic_config

GOLDEN = Path(__file__).resolve().parent / "data" / "no_programs_fit.json"
GOLDEN_ROWS = 40  # hold-out rows of each ranking kept in the golden file
# candidates added after the golden file was written: their CV rows are new, not changed
LATER_CANDIDATES = {"turnout_shape_boosted", "turnout_05_boosted", "turnout_05_reach"}


def small_config(folder: str | Path) -> dict:
    """The synthetic run config (as a dict) with a small grid: two outcome-model shapes, two sizes, 2 CV repeats."""
    cfg = synthetic_config(folder)
    cfg["uplift"].update({
        "nuisance": {"n_estimators": 30, "learning_rate": 0.1, "num_leaves": 7, "min_child_samples": 30},
        "nuisance_rounds": [10, 30], "nuisance_treated_leaves": [7, 2],
        "final": {"learning_rate": 0.1, "min_child_samples": 50},
        "final_sizes": [{"n_estimators": 15, "num_leaves": 4}, {"n_estimators": 30, "num_leaves": 4}],
        "arm_rounds": 5, "arm_params": {"learning_rate": 0.1, "num_leaves": 2, "min_child_samples": 50},
        "reference_size": {"n_estimators": 20, "num_leaves": 3},
        # the metric the golden file was written with (the default was policy_value then)
        "selection_metric": "policy_value",
    })
    cfg["turnout"] = {"column": "voted", "params": {"n_estimators": 30, "num_leaves": 7, "min_child_samples": 30}}
    cfg["split"] = {"holdout_fraction": 0.2, "folds": 3, "seed": 7, "cv_repeats": 2}
    cfg["gates"] = {"qini_bootstrap": 20}
    return cfg


def fit_summary(result, learners) -> dict:
    """JSON-ready predictions and CV values of a fit: what must not change without programs."""
    def head(frame):
        return {arm: frame[arm].to_numpy()[:GOLDEN_ROWS].tolist() for arm in frame.columns}

    return {
        "served": head(result.test_scores["served"]),
        "learners": {name: head(result.test_scores[name]) for name in learners},
        "t_default": head(result.test_scores["t_default"]),
        "selection": result.selection["mean"].tolist(),
        "arm_selection": result.arm_selection.loc[~result.arm_selection.candidate.isin(LATER_CANDIDATES),
                                                  ["value", "se"]].to_numpy().ravel().tolist(),
        "arm_effects": {arm: [e["ate"], e["se"]] for arm, e in result.arm_effects.items()},
        "choices": {"learner": result.learner, "served": result.served},
    }
