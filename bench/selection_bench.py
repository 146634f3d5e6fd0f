"""Does grouped CV choose the candidate the truth would choose? (synthetic program)

The learner, the size of the final models and whether they see the turnout score are
chosen by nested grouped CV on the training precincts (``training.fit.cv_fold_scores``,
the code ``persuade train`` runs). On the synthetic program every voter's true effect
is known, so each candidate's held-out fold predictions can also be judged by the
truth: the *oracle* score is the Qini estimand computed from the true effects of the
fold's voters instead of their outcomes (``dr_qini_coefficient`` with the true effect
as the pseudo-outcome), *true_policy* the policy value the same way (``policy_gain`` at
the ``audit.budgets``, averaged, with the true effects for the AIPW scores), plus the
Spearman correlation with the true effects.

For each seed it reports, for the three selection metrics (``qini``: the fold's
outcomes; ``dr_qini`` and ``policy_value``, the default: AIPW scores), the candidate
the metric picks, that candidate's true policy value and oracle score against the grid's
best, and the rank correlation of the metric with the truth across candidates; and how
far each learner's CV policy value is from its fold models' true one (``policy_value -
true_policy``: the estimate's error on these voters, which selection rides on). Nothing
here chooses anything: it checks the chooser.

Command (project root; about 5 minutes per seed on a quiet 2-core machine)::

    PERSUADE_THREADS=2 .venv/bin/python bench/selection_bench.py --seeds 1 2

Markdown on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np
import pandas as pd
from rich.console import Console
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from features.config import arm_slug, load_config  # noqa: E402
from features.synthetic import make_campaign  # noqa: E402
from features.tables import load_experiment  # noqa: E402
from training.fit import fit_outcome_models, fit_turnout_model  # noqa: E402
from training.learners import Design  # noqa: E402
from training.selection import (  # noqa: E402
    CANDIDATE_KEYS,
    SELECTION_METRICS,
    arm_contrasts,
    cv_fold_scores,
    fold_metrics,
)
from training.splits import prepare  # noqa: E402

log = Console(stderr=True)
TRUE_NAMES = {"dr_qini": "oracle", "policy_value": "true_policy"}  # a CV metric -> its value on the true effects
SIZES = [{"n_estimators": 150, "num_leaves": 4}, {"n_estimators": 300, "num_leaves": 4},
         {"n_estimators": 300, "num_leaves": 8}]


def study(n: int, seed: int) -> pd.DataFrame:
    """Per candidate: mean over folds and arms of the CV metrics, their values on the truth and Spearman."""
    campaign = make_campaign(n, seed=seed)
    with tempfile.TemporaryDirectory(prefix="selection-bench-") as folder:
        config = load_config(campaign.write(folder))
        frame = load_experiment(config)
    config = config.with_uplift(final_sizes=SIZES, turnout_score_feature="select")
    budgets = config.audit.budgets
    started = time.perf_counter()
    design = Design(config.arm_labels, config.control_label, config.design_shares())
    prep = prepare(frame, config)
    assigned = prep.assigned("train", config)
    y = prep.train[config.outcome.column].to_numpy(dtype=float)
    turnout = fit_turnout_model(prep, config)
    outcome_models = fit_outcome_models(prep, config, design)
    mu, nested_mu = outcome_models.mu, outcome_models.nested
    truth = campaign.truth.set_index("voter_id").loc[prep.train.voter_id]
    contrasts = arm_contrasts(assigned, y, mu, design)
    tau = {arm: truth[f"tau_voted_{arm_slug(arm)}"].to_numpy() for arm in config.arm_labels}
    # the CV metrics with every voter's true effect for the AIPW scores: what the ranking is truly worth
    oracle = {arm: replace(c, pseudo=np.where(c.rows, tau[arm], np.nan)) for arm, c in contrasts.items()}
    rows = []
    for cv in cv_fold_scores(prep.X_train, assigned, y, nested_mu, prep.folds, config, design, turnout):
        values = {(arm, metric): v for arm, metric, v in fold_metrics(cv.scores, cv.rows, y, contrasts, budgets)}
        values |= {(arm, TRUE_NAMES[metric]): v
                   for arm, metric, v in fold_metrics(cv.scores, cv.rows, y, oracle, budgets) if metric in TRUE_NAMES}
        for arm in contrasts:
            rows.append({**cv.candidate, **{m: values[(arm, m)] for m in (*SELECTION_METRICS, *TRUE_NAMES.values())},
                         "spearman": spearmanr(cv.scores[arm].to_numpy(), tau[arm][cv.rows]).statistic})
    log.print(f"  seed {seed}: {time.perf_counter() - started:.0f} s")
    return pd.DataFrame(rows).groupby(CANDIDATE_KEYS, sort=False).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="synthetic voters per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"Command: `PERSUADE_THREADS={os.environ.get('PERSUADE_THREADS', '2')} .venv/bin/python "
          f"bench/selection_bench.py --n {args.n} --seeds {' '.join(map(str, args.seeds))}`\n")
    summary, errors = [], []
    for seed in args.seeds:
        table = study(args.n, seed)
        for metric in ("qini", "dr_qini", "policy_value", "true_policy"):
            pick = table[metric].idxmax()
            summary.append({
                "seed": seed, "chosen by": metric, "candidate": " ".join(map(str, pick)),
                "its true policy value x1000": f"{1000 * table.true_policy[pick]:.2f}",
                "share of the grid's best": f"{table.true_policy[pick] / table.true_policy.max():.1%}",
                "share of the best oracle": f"{table.oracle[pick] / table.oracle.max():.1%}",
                "its Spearman with the truth": f"{table.spearman[pick]:.3f}",
                "rank corr. with the truth over the grid":
                    f"{spearmanr(table[metric], table.true_policy).statistic:.2f}",
            })
        error = (table.policy_value - table.true_policy).groupby(level="learner", sort=False).mean() * 1000
        errors.append({"seed": seed, **error.round(2).to_dict()})
        print(f"### Seed {seed}: every candidate, mean over the 5 folds and 4 arms (x1000; Spearman as is)\n")
        shown = table.copy()
        shown[["qini", "dr_qini", "oracle", "policy_value", "true_policy"]] *= 1000
        print(shown.sort_values("true_policy", ascending=False).round(3).reset_index().to_markdown(index=False))
        print()
    print("### What each metric chooses, judged by the truth\n")
    print(pd.DataFrame(summary).to_markdown(index=False))
    print("\n### CV policy value minus the fold models' true one, mean per learner (x1000)\n")
    print(pd.DataFrame(errors).to_markdown(index=False))


if __name__ == "__main__":
    main()
