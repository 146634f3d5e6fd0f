"""Does the served ranking beat what a campaign already has? On GGL's hold-out and on synthetic truths.

For each program the real pipeline (``training.fit.fit_and_evaluate``) trains on the
training groups, chooses each arm's served candidate by repeated grouped CV with the
one-standard-error rule (``training.arm_choice``), and is judged on the grouped
hold-out it never saw, at budgets of 10%, 20% and 30% of the voters:

- **hold-out value**: incremental outcomes per 1,000 voters captured above random by
  contacting the top of the hold-out by each ranking (the Qini curve at the budget,
  ``training.evaluation.holdout_policy_gain``), with its cluster-bootstrap standard
  error; rankings: the served one, the constant effect (= random: 0), the turnout
  shape reference, the rule among the voters an attempt reaches (``turnout_05_reach``,
  the rule's own order on arms always reached), the boosted shapes, turnout closest to
  0.5 (the ``turnout_05`` candidate's order) and the model itself;
- **true value** (synthetic only): the same with every voter's true effect, so without
  sampling noise.

Synthetic truths (``features.synthetic.make_campaign``): ``varied`` (effects vary with
reach, age and household beyond the turnout score: the model should win), ``turnout``
(effects a function of baseline turnout alone: the turnout shape or the constant
should be served) and ``constant`` (no heterogeneity: the constant should be served).

Command (project root; 3-5 minutes per 50k program and 9 for GGL on one thread, 2026-12-04)::

    PERSUADE_THREADS=2 .venv/bin/python bench/reference_bench.py --shapes varied turnout constant --seeds 1 --ggl

Markdown tables on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from features.config import load_config  # noqa: E402
from features.synthetic import make_campaign  # noqa: E402
from features.tables import load_experiment  # noqa: E402
from training.evaluation import policy_gain  # noqa: E402
from training.fit import SERVED, fit_and_evaluate  # noqa: E402

RANKINGS = [SERVED, "constant", "turnout_shape", "turnout_05_reach", "turnout_05_boosted", "turnout_shape_boosted",
            "turnout_05"]
CV_TABLES: list[str] = []  # each program's grouped-CV choice, printed before the hold-out table


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fit(config, label: str):
    started = time.perf_counter()
    result = fit_and_evaluate(load_experiment(config), config,
                              progress=lambda s: log(f"  {label} {time.perf_counter() - started:6.0f}s {s}"))
    return result, time.perf_counter() - started


def report(result, label: str, truth: pd.DataFrame | None, outcome: str, seconds: float) -> list[dict]:
    """One row per arm and budget: served candidate, hold-out and true values of the rankings."""
    rows = []
    policy = result.holdout_policy.set_index(["ranking", "arm", "budget"])
    rankings = [r for r in [*RANKINGS, result.learner] if r in policy.index.get_level_values(0)]
    test = result.prepared.test
    for arm, candidate in result.served.items():
        for budget in result.budgets:
            row = {"program": label, "arm": arm, "served": candidate, "budget": f"{budget:.0%}"}
            for ranking in [r for r in rankings if (r, arm, budget) in policy.index]:  # a candidate's arms
                value = policy.loc[(ranking, arm, budget)]
                name = "model" if ranking == result.learner else ranking
                row[f"{name} (hold-out)"] = f"{value.gain * 1000:+.2f} ± {value.se * 1000:.2f}"
            if truth is not None:
                tau = test[["voter_id"]].merge(truth, on="voter_id", how="left")[f"tau_{outcome}_{arm.lower()}"]
                for ranking in [r for r in rankings if arm in result.test_scores[r].columns]:
                    name = "model" if ranking == result.learner else ranking
                    gain = policy_gain(result.test_scores[ranking][arm].to_numpy(), tau.to_numpy(), [budget])[0]
                    row[f"{name} (true)"] = f"{gain * 1000:+.2f}"
            rows.append(row)
    log(f"  {label}: {seconds:.0f} s, served {result.served}")
    cv = result.arm_selection[["arm", "candidate", "value", "se", "gap", "gap_se", "chosen", "stability"]]
    CV_TABLES.append(f"{label}: each arm's grouped-CV choice ({result.cv_repeats} repeats), x1000\n\n"
                     + cv.assign(**{c: cv[c] * 1000 for c in ("value", "se", "gap", "gap_se")}).to_markdown(
                         index=False, floatfmt=".3f") + "\n")
    return rows


def synthetic(shape: str, n: int, seed: int, folder: Path) -> list[dict]:
    campaign = make_campaign(n, seed=seed, effect_shape=shape)
    config = load_config(campaign.write(folder / f"{shape}-{seed}", outcome="voted"))
    result, seconds = fit(config, f"{shape} seed {seed}")
    return report(result, f"synthetic {shape}, {n:,} voters, seed {seed}", campaign.truth, "voted", seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="*", default=["varied", "turnout", "constant"])
    parser.add_argument("--seeds", nargs="*", type=int, default=[1])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--ggl", action="store_true", help="also GGL's grouped hold-out")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="reference-bench-") as tmp:
        for shape in args.shapes:
            for seed in args.seeds:
                rows += synthetic(shape, args.n, seed, Path(tmp))
    if args.ggl:
        config = load_config(ROOT / "configs" / "ggl2008.yaml")
        result, seconds = fit(config, "GGL")
        rows += report(result, "GGL 2008 hold-out", None, "voted", seconds)
    print("\n".join(CV_TABLES))
    print("Incremental outcomes per 1,000 voters above random targeting (± cluster-bootstrap SE)\n")
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
