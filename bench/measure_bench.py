"""Does ``persuade measure``'s 95% interval cover what a program delivered? Coverage on known truth.

1. Synthetic program with known per-voter effects (``features/synthetic.py``: ``p0`` and
   ``tau_voted_<arm>``). One model is trained once (a small config, on a campaign of its
   own) and one targeting is solved for a fresh universe of voters (another seed of the
   same program; Text dropped as without consent; a budget for about a fifth of them).
   Then each replication redraws the plan's design around that targeting (holdout 0.1,
   exploration 0.05, a new seed) and every voter's outcome from the truth
   (``voted ~ Bernoulli(p0 + tau of the assigned arm)``), writes the plan and outcome
   files, measures them (``training.measure.measure_program``, what ``persuade measure``
   runs) and checks whether each 95% interval covers the true program effect: the sum of
   the true effects of the voters contacted in that replication, in total and per arm.
2. GGL, the experiment read as a plan: the design shares as the recorded probabilities,
   every voter assigned their real postcard. Per arm, ``measure``'s IPW effect per contact
   against the difference in means, and its cluster-robust interval against the
   evaluation's cluster bootstrap (``training.evaluation.difference_in_means``, 200 draws).

Usage::

    PERSUADE_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/measure_bench.py [--replications 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402

from features.config import load_config  # noqa: E402
from features.consent import eligibility_for  # noqa: E402
from features.schema import validate_experiment  # noqa: E402
from features.synthetic import make_campaign  # noqa: E402
from features.tables import load_experiment  # noqa: E402
from serving.bundle import CONTROL_ARM  # noqa: E402
from serving.plan_costs import ProgramCosts  # noqa: E402
from serving.plan_design import DesignSpec, fixed_design  # noqa: E402
from serving.plan_file import write_design_plan, write_plan  # noqa: E402
from serving.plan_gains import expected_gains  # noqa: E402
from serving.planning import contact_plan, eligibility_arrays, plan_contacts, plan_from_gains  # noqa: E402
from training.evaluation import difference_in_means  # noqa: E402
from training.fit import fit_and_evaluate  # noqa: E402
from training.measure import ESTIMATORS, measure_program  # noqa: E402
from training.run import planning_metadata  # noqa: E402

log = Console(stderr=True)
SMALL = {"learners": ["dr"], "nuisance_rounds": [50], "nuisance_treated_leaves": [15],
         "final_sizes": [{"n_estimators": 150, "num_leaves": 8}], "turnout_score_feature": False}
# Plans are made without a consent table (nobody has consent: Text is never planned), decided at
# this time, inside every US zone's calling window, so the plan does not depend on the clock.
AS_OF = "2026-10-01T00:00:00Z"


def train_small(n: int, seed: int):
    """The synthetic program's model, trained once with a small config (as training.run stores it)."""
    started = time.perf_counter()
    campaign = make_campaign(n, seed=seed)
    with tempfile.TemporaryDirectory(prefix="measure-bench-") as folder:
        result = fit_small(load_config(campaign.write(folder)), "training", started)
    return result.model, time.perf_counter() - started


def fit_small(config, label: str, started: float):
    """Fit ``config`` with the small grid; the model carries what planning reads (as training.run stores it)."""
    config = config.with_uplift(**SMALL)
    frame = load_experiment(config)
    validate_experiment(frame, config)
    result = fit_and_evaluate(frame, config, lambda step: log.print(
        f"  {label}: {step} ({time.perf_counter() - started:.0f} s)"))
    result.model.metadata.update(planning_metadata(result, config))
    return result


def coverage(model, voters: int, seed: int, replications: int, holdout: float, explore: float) -> pd.DataFrame:
    """Per replication and estimator: the total's and each arm's estimate, interval and truth."""
    campaign = make_campaign(voters, seed=seed)
    frame, truth = campaign.voter_file, campaign.truth.set_index("voter_id")
    ids = frame.voter_id.astype(str).to_numpy()
    labels = [a.label for a in model.arms]
    tau = np.column_stack([truth.loc[ids, f"tau_voted_{a.slug}"].to_numpy() for a in model.arms])
    p0 = truth.loc[ids, "p0"].to_numpy()
    costs = ProgramCosts()
    no_table = eligibility_for(frame[["voter_id", "phone"]], model.arms, as_of=AS_OF)  # as --no-consent decides
    allowed, reasons = eligibility_arrays(no_table, ids, model)
    gains = expected_gains(model, model.transform(frame), costs, allowed)
    budget = 0.2 * voters * float(np.mean([a.cost for a in model.arms if a.label != "Text"]))
    clusters = frame.precinct.rename("precinct").reset_index(drop=True)
    first = plan_from_gains(model, ids, gains, budget, costs, reasons, design=DesignSpec(holdout, explore, 0),
                            clusters=clusters)
    log.print(f"  targeting: {int((first.allocation.arm >= 0).sum()):,} of {voters:,} voters, budget {budget:,.0f}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="measure-bench-") as folder:
        plan_path, outcome_path = Path(folder) / "plan.parquet", Path(folder) / "outcomes.parquet"
        for rep in range(replications):
            plan = contact_plan(model, ids, gains, first.allocation, budget=budget, costs=costs, reasons=reasons,
                                design=DesignSpec(holdout, explore, 1000 + rep), clusters=clusters,
                                targeting_limits=first.targeting_limits)
            write_plan(plan, plan_path)
            order = pd.Index(ids).get_indexer(plan.assignment.voter_id)
            arm = pd.Index(labels).get_indexer(plan.assignment.assigned)  # -1: control
            effect = np.where(arm >= 0, tau[order, np.maximum(arm, 0)], 0.0)
            rng = np.random.default_rng(50_000 + rep)
            voted = (rng.random(len(order)) < p0[order] + effect).astype(int)
            pd.DataFrame({"voter_id": ids[order], "voted": voted}).to_parquet(outcome_path)
            measured = measure_program(plan_path, outcome_path).as_dict()
            for name in ESTIMATORS:
                found = measured["estimators"][name]
                entries = {"total": (found["total"], effect.sum())}
                entries |= {label: (found["arms"][label], effect[arm == j].sum())
                            for j, label in enumerate(labels) if found["arms"][label]["contacts"]}
                for part, (entry, true) in entries.items():
                    rows.append({"replication": rep, "estimator": name, "part": part, "truth": true,
                                 "estimate": entry["estimate"], "se": entry["se"], "contacts": entry["contacts"],
                                 "covered": entry["ci_low"] <= true <= entry["ci_high"]})
            if rep % 10 == 9:
                log.print(f"  {rep + 1} replications")
    return pd.DataFrame(rows)


def coverage_table(rows: pd.DataFrame) -> pd.DataFrame:
    grouped = rows.groupby(["part", "estimator"], sort=False)
    return pd.DataFrame({
        "replications": grouped.size(), "covered": grouped.covered.sum(),
        "mean truth": grouped.truth.mean(), "mean estimate": grouped.estimate.mean(),
        "bias / se": (grouped.estimate.mean() - grouped.truth.mean()) / grouped.se.mean(),
        "mean se": grouped.se.mean(), "sd of error": grouped.apply(lambda g: (g.estimate - g.truth).std(ddof=1)),
        "mean contacts": grouped.contacts.mean(),
    }).reset_index()


def ggl_as_plan() -> pd.DataFrame:
    """GGL's experiment read as a plan: measure's IPW per contact against the difference in means."""
    config = load_config(ROOT / "configs" / "ggl2008.yaml")
    frame = load_experiment(config)
    shares = {**{label: arm.share for label, arm in config.arms.items()}, CONTROL_ARM: config.control_share}
    assigned = np.where(frame.treatment == config.control_label, CONTROL_ARM, frame.treatment.astype(str))
    rows = []
    with tempfile.TemporaryDirectory(prefix="measure-bench-") as folder:
        plan = write_design_plan(Path(folder) / "ggl.parquet", frame.voter_id.to_numpy(),
                                 fixed_design(assigned, shares), id_column="voter_id",
                                 outcome={"column": "primary_06", "kind": "turnout"}, clusters=frame.cluster)
        frame[["voter_id", "primary_06"]].to_parquet(Path(folder) / "outcomes.parquet")
        measured = measure_program(plan, Path(folder) / "outcomes.parquet").as_dict()
    for label in config.arms:
        sub = frame[frame.treatment.isin([label, config.control_label])]
        dim = difference_in_means(sub.primary_06, (sub.treatment == label).astype(float), sub.cluster, n_boot=200)
        per = measured["estimators"]["ipw"]["arms"][label]["per_contact"]
        rows.append({"arm": label, "difference in means": dim.estimate, "measure (IPW)": per["estimate"],
                     "|difference|": abs(per["estimate"] - dim.estimate),
                     "bootstrap 95% CI": f"[{dim.low:.4f}, {dim.high:.4f}]",
                     "measure 95% CI": f"[{per['ci_low']:.4f}, {per['ci_high']:.4f}]",
                     "width ratio": (per["ci_high"] - per["ci_low"]) / (dim.high - dim.low)})
    return pd.DataFrame(rows)


def ggl_holdout(holdout: float, share: float = 0.2) -> pd.DataFrame:
    """GGL: a postcard plan with a holdout (model trained with the small config); what the holdout costs."""
    started = time.perf_counter()
    result = fit_small(load_config(ROOT / "configs" / "ggl2008.yaml"), "GGL training", started)
    model = result.model
    voters = result.prepared.test  # the hold-out voters: postcards for a fifth of them
    plan = plan_contacts(model, voters, share * len(voters), design=DesignSpec(holdout=holdout, seed=1))
    held = plan.randomization["held_out"]
    interval = held["interval"] or {"low": np.nan, "high": np.nan}
    return pd.DataFrame([{"voters": len(voters), "budget (postcards)": share * len(voters),
                          "targeted": int((plan.allocation.arm >= 0).sum()), "held out": held["voters"],
                          "contacted": len(plan.table), "expected votes of the plan": plan.total_expected_gain,
                          "votes forgone by the holdout": held["expected_gain_forgone"],
                          "forgone 95% interval": f"[{interval['low']:.1f}, {interval['high']:.1f}]",
                          "postcards not sent": held["cost_not_spent"],
                          "training s": time.perf_counter() - started}])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=100)
    parser.add_argument("--train-voters", type=int, default=20_000)
    parser.add_argument("--voters", type=int, default=30_000)
    parser.add_argument("--holdout", type=float, default=0.1)
    parser.add_argument("--explore", type=float, default=0.05)
    parser.add_argument("--ggl-plan", action="store_true",
                        help="Also train GGL (small config) and plan its hold-out voters with the holdout.")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.replications:  # 0: the GGL parts only
        log.print(f"training the synthetic model once ({args.train_voters:,} voters, small config)")
        model, trained_s = train_small(args.train_voters, seed=11)
        log.print(f"planning {args.voters:,} voters, {args.replications} replications")
        rows = coverage(model, args.voters, seed=12, replications=args.replications, holdout=args.holdout,
                        explore=args.explore)
        print(f"\n### Coverage of 95% intervals, {args.replications} replications (holdout {args.holdout}, "
              f"explore {args.explore}; model trained in {trained_s:.0f} s)\n")
        print(coverage_table(rows).to_markdown(index=False, floatfmt=".3f"))
    print("\n### GGL: the experiment read as a plan (IPW effect per contact)\n")
    print(ggl_as_plan().to_markdown(index=False, floatfmt=".6g"))
    if args.ggl_plan:
        print(f"\n### GGL: a plan for a fifth of the hold-out voters with a {args.holdout:.0%} holdout\n")
        print(ggl_holdout(args.holdout).to_markdown(index=False, floatfmt=".1f"))
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
