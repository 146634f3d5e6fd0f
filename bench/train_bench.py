"""Training benchmark and model-quality tables for docs/BENCHMARKS.md.

Measures, in one process:

1. ``make demo``'s training step on the bundled GGL file (train + evaluate + log +
   register into a temp MLflow store): wall time and peak RSS;
2. the GGL grouped hold-out table: Qini, AUUC and uplift@10/20/30% per arm for each
   learner and for the references (plain T-learner, turnout closest to 0.5, random),
   plus the observed effects per arm against the paper and the predicted ATE;
3. synthetic recovery: Spearman of predicted vs true uplift per arm for each learner on
   50,000 synthetic voters (turnout and support outcomes).

Usage::

    .venv/bin/python bench/train_bench.py            # everything (about 5 minutes)
    .venv/bin/python bench/train_bench.py --quick    # synthetic recovery only
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAPER = {"Neighbors": 0.081, "Self": 0.049, "Hawthorne": 0.026, "Civic Duty": 0.018}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ggl(out: list[str]) -> None:
    from training.run import train

    with tempfile.TemporaryDirectory() as home:
        os.environ["PERSUADE_HOME"] = home
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        rss0 = _peak_rss_mb()
        started = time.perf_counter()
        outcome = train(ROOT / "configs" / "ggl2008.yaml")
        elapsed = time.perf_counter() - started
        rss = _peak_rss_mb()
    r = outcome.result
    out.append("## GGL 2008: training (the `make demo` training step)\n")
    out.append(f"- wall time: **{elapsed:.0f} s** (read, validate, cross-fit, select, refit, evaluate, "
               f"log, register)\n- peak RSS of the process: **{rss:.0f} MB** (before training: {rss0:.0f} MB)\n"
               f"- selected: learner **{r.learner}**, final models **{r.final_size}** trees x leaves"
               f"{', turnout score as a feature' if r.turnout_score_feature else ''} "
               "(nested grouped 5-fold CV Qini on the training clusters)\n")
    for metric, selection in r.selection_tables.items():
        used = " (the configured metric: it selects)" if selection is r.selection else ""
        out.append(f"\n### Selection: nested grouped-CV {metric} x1000 on the training clusters{used}\n")
        out.append((selection * 1000).round(3).reset_index().to_markdown(index=False) + "\n")
    out.append("\n### Grouped hold-out (20% of clusters): every ranking, every arm\n")
    table = r.holdout.copy()
    table["qini"] *= 1000
    table["auuc"] *= 1000
    for k in ("uplift_at_10", "uplift_at_20", "uplift_at_30"):
        table[k] *= 100
    table.columns = ["Qini x1000", "AUUC x1000", "uplift@10% (pp)", "uplift@20% (pp)", "uplift@30% (pp)"]
    out.append(table.round(3).to_markdown() + "\n")
    q = r.holdout["qini"].unstack("arm") * 1000
    out.append("\nQini x1000 at a glance (rows: rankings):\n\n" + q.round(3).to_markdown() + "\n")
    best_ref = q.loc[["t_default", "turnout_05"]].max()
    beat = {arm: bool(q.loc[r.learner, arm] > best_ref[arm]) for arm in ("Neighbors", "Self")}
    out.append(f"\nSelected model beats both references (plain T-learner, turnout closest to 0.5): {beat}\n")
    out.append("\n### Selected model per arm, with the cluster-bootstrap 95% CI\n")
    rows = []
    for arm, m in r.arm_metrics.items():
        a = r.ate.set_index("arm").loc[arm]
        qini = f"{m['qini'] * 1000:.3f} [{m['qini_low'] * 1000:.3f}, {m['qini_high'] * 1000:.3f}]"
        observed = f"{a.observed_ate * 100:.2f} [{a.observed_low * 100:.2f}, {a.observed_high * 100:.2f}]"
        rows.append({"arm": arm, "Qini x1000 [95% CI]": qini, "predicted ATE (pp)": round(a.predicted_ate * 100, 2),
                     "observed ATE on hold-out (pp) [95% CI]": observed, "paper (pp)": PAPER[arm] * 100,
                     "consistent": bool(a.consistent)})
    out.append(pd.DataFrame(rows).to_markdown(index=False) + "\n")
    out.append(f"\nTurnout model on hold-out control: {', '.join(f'{k} {v:.4f}' for k, v in r.turnout.items())}\n")
    gates = ", ".join(f"{g}: {'pass' if v['passed'] else 'FAIL'}" for g, v in r.gates.items())
    out.append(f"\nGates: {gates}\n")


def synthetic(out: list[str]) -> None:
    from features.config import load_config
    from features.synthetic import make_campaign
    from features.tables import load_experiment
    from training.fit import fit_and_evaluate

    campaign = make_campaign(50_000, seed=1)
    out.append("\n## Synthetic recovery (50,000 voters, seed 1, 4 arms on 4 channels)\n")
    with tempfile.TemporaryDirectory() as folder:
        for outcome in ("voted", "support"):
            cfg = load_config(campaign.write(folder, outcome))
            started = time.perf_counter()
            r = fit_and_evaluate(load_experiment(cfg), cfg)
            elapsed = time.perf_counter() - started
            test = r.prepared.test[["voter_id"]].merge(campaign.truth, on="voter_id")
            rows = {}
            for name, scores in r.test_scores.items():
                if name == "random":
                    continue
                rows[name] = {arm: spearmanr(scores[arm], test[f"tau_{outcome}_{arm.lower()}"]).statistic
                              for arm in scores.columns}
            table = pd.DataFrame(rows).T.round(3)
            out.append(f"\nOutcome `{outcome}` ({'0/1 turnout' if outcome == 'voted' else '0-10 support score'}): "
                       f"Spearman of predicted vs true uplift on the hold-out; selected learner **{r.learner}**; "
                       f"fit+evaluate {elapsed:.0f} s\n\n")
            out.append(table.to_markdown() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="synthetic recovery only")
    args = parser.parse_args()
    out: list[str] = [f"<!-- {' '.join(sys.argv)} | {time.strftime('%Y-%m-%d %H:%M')} | "
                      f"{os.cpu_count()} cores, PERSUADE_THREADS={os.environ.get('PERSUADE_THREADS', '2')} -->\n"]
    if not args.quick:
        ggl(out)
    synthetic(out)
    print("\n".join(out))


if __name__ == "__main__":
    main()
