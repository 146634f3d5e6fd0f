"""One campaign cycle as a user runs it, through the command line, on a synthetic campaign with known truth.

Per seed, in a temp folder with its own MLflow store (sqlite) and ``PERSUADE_HOME``, each
command a subprocess of ``python -m training.cli`` (the ``persuade`` entry point):

1. **Train on an experiment.** A randomized experiment (``features.synthetic.make_campaign``,
   ``--n`` voters; the run config of ``features.synthetic.synthetic_config`` with
   ``bench/measure_bench.py``'s small grid): ``persuade train --config exp.yaml``, then
   ``persuade promote``. A refused promotion (a gate failed) is reported, and the cycle
   goes on with the version it registered (``models:/<name>/<version>``).
2. **Plan a program** for another universe of ``--n-program`` voters (another seed of the
   generator, other ids and precincts: ``training.program_simulation.program_voters``):
   ``persuade plan --holdout --explore --seed --no-consent --as-of`` (Text needs consent and
   is not planned; the time is fixed inside every zone's calling window) with a budget of
   ``--budget-share`` of the universe at the mean cost of the arms planned.
3. **Run it.** Each voter's outcome is drawn from the truth for the arm (or control) the
   plan assigned (``training.program_simulation.draw_outcomes``) and written as the
   outcomes file.
4. **Measure it.** ``persuade measure --plan --outcomes --output measure.json --report
   measure.html``; its IPW and DR estimates (95% intervals) in total and per arm beside
   the TRUE program effect: the sum over the contacted voters of their true effect of
   the arm they got.
5. **Learn from it.** The first run config plus ``programs:`` naming the plan, the
   outcomes and the universe's voter file: ``persuade train``, ``persuade promote``.
6. **Plan again** on a fresh universe (``--n-fresh`` voters, a third seed) with both
   models: ``persuade score`` (the served uplift of every arm; its Spearman correlation
   with each voter's true effect, 0 for an arm that serves its average effect) and
   ``persuade plan`` (same budget share, design and seed): each plan's predicted total
   against its TRUE expected incremental outcome (the sum of its contacts' true
   effects), beside the oracle (the same budget allocated on the true effects, no
   holdout).

Each step is printed with its wall time; markdown summary tables at the end. The CLI's
own output goes to ``<folder>/logs`` (``--keep`` keeps the folder).

Command (project root; 3 to 10 minutes per seed on one thread, with the machine's load)::

    PERSUADE_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/cycle_bench.py --seeds 1 2 3
    PERSUADE_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/cycle_bench.py --seeds 1 2 3 \
        --holdout 0.2 --explore 0.2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

from bench.measure_bench import AS_OF, SMALL  # noqa: E402
from bench.program_learning_bench import rank_correlation  # noqa: E402
from features.config import arm_slug  # noqa: E402
from features.synthetic import ARMS, make_campaign  # noqa: E402
from serving.allocation import Allocator  # noqa: E402
from serving.bundle import CONTROL_ARM  # noqa: E402
from serving.plan_file import read_contacts, read_plan_summary  # noqa: E402
from training.program_simulation import LABELS, draw_outcomes, program_voters  # noqa: E402

CONSENTED_OUT = ("Text",)  # the arms --no-consent drops (text needs consent)
PROGRAM_NAME = "cycle-program"


@dataclass
class Cycle:
    """One seed's folder, environment and what its steps found."""

    seed: int
    folder: Path
    env: dict[str, str]
    steps: list[dict] = field(default_factory=list)
    measured: list[dict] = field(default_factory=list)
    fresh: list[dict] = field(default_factory=list)

    def step(self, name: str, started: float, detail: str = "") -> None:
        seconds = time.perf_counter() - started
        self.steps.append({"seed": self.seed, "step": name, "seconds": seconds, "detail": detail})
        print(f"[seed {self.seed}] {name}: {seconds:.1f} s{'  ' + detail if detail else ''}", flush=True)

    def persuade(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``persuade <args>`` (``python -m training.cli``); its output is kept in ``logs/<name>.txt``."""
        done = subprocess.run([sys.executable, "-m", "training.cli", *args], capture_output=True, text=True,
                              env=self.env, cwd=self.folder)
        logs = self.folder / "logs"
        logs.mkdir(exist_ok=True)
        (logs / f"{name}.txt").write_text(f"$ persuade {' '.join(args)}\n--- stdout\n{done.stdout}\n"
                                          f"--- stderr\n{done.stderr}\n--- exit {done.returncode}\n")
        if check and done.returncode != 0:
            raise RuntimeError(f"persuade {args[0]} ({name}) failed with exit {done.returncode}:\n"
                               f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done


def cli_env(folder: Path) -> dict[str, str]:
    """The commands' environment: a temp MLflow store and home, one LightGBM thread unless told otherwise."""
    (folder / "mlruns").mkdir(parents=True, exist_ok=True)
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlruns/mlflow.db",
            "PERSUADE_HOME": str(folder), "BENTOML_HOME": str(folder / "bentoml"),
            "PERSUADE_THREADS": os.environ.get("PERSUADE_THREADS", "1"),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), "COLUMNS": "160",
            "MLFLOW_DISABLE_TELEMETRY": "true", "BENTOML_DO_NOT_TRACK": "true", "PYTHONPATH": str(ROOT)}


def true_effects(truth: pd.DataFrame, ids: np.ndarray) -> np.ndarray:
    """Each voter's true effect (intent to treat) on turnout of every arm, (n, arms) in LABELS order."""
    rows = truth.set_index("voter_id").loc[np.asarray(ids).astype(str)]
    return np.column_stack([rows[f"tau_voted_{arm_slug(label)}"].to_numpy() for label in LABELS])


def effect_of_assignment(tau: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each voter's true effect of the arm they got (0 for control or no contact)."""
    column = pd.Index(LABELS).get_indexer(pd.Series(labels, dtype=object).fillna(CONTROL_ARM).astype(str))
    return np.where(column >= 0, tau[np.arange(len(tau)), np.maximum(column, 0)], 0.0)


def budget_for(voters: int, share: float) -> float:
    """A budget for ``share`` of ``voters`` at the mean cost of the arms planned without consent."""
    costs = [arm["cost"] for label, arm in ARMS.items() if label not in CONSENTED_OUT]
    return round(share * voters * float(np.mean(costs)), 2)


def train_and_promote(cycle: Cycle, label: str, config_path: Path, model_name: str) -> dict:
    """``persuade train`` then ``persuade promote`` of the version it registered; the version's URI."""
    started = time.perf_counter()
    out = cycle.persuade(f"train {label}", "train", "--config", str(config_path)).stdout
    found = re.search(r"registered (\S+) version (\d+)", out)
    served = re.search(r"served per arm: (.*)", out)
    learner = re.search(r"\(learner: (\w+)", out)
    version = found.group(2)
    served = served.group(1) if served else "?"
    cycle.step(f"persuade train ({label})", started,
               f"version {version}, learner {learner.group(1) if learner else '?'}; served {served}")
    started = time.perf_counter()
    done = cycle.persuade(f"promote {label}", "promote", "--name", model_name, "--version", version, check=False)
    refused = done.returncode != 0
    if refused and "refusing to promote" not in done.stderr:
        raise RuntimeError(f"persuade promote failed:\n{done.stdout}\n{done.stderr}")
    cycle.step(f"persuade promote ({label})", started,
               "REFUSED (gates): " + " ".join(done.stderr.split())[:300] if refused else done.stdout.strip())
    return {"uri": f"models:/{model_name}/{version}", "version": version, "promoted": not refused, "served": served}


def plan(cycle: Cycle, label: str, model_uri: str, voters: Path, budget: float, args, output: Path) -> dict:
    """``persuade plan`` with the design options; the plan's summary."""
    started = time.perf_counter()
    cycle.persuade(f"plan {label}", "plan", "--model", model_uri, "--input", str(voters), "--budget", str(budget),
                   "--holdout", str(args.holdout), "--explore", str(args.explore), "--seed", str(cycle.seed),
                   "--no-consent", "--as-of", AS_OF, "--output", str(output))
    summary = read_plan_summary(output)
    held = summary["randomization"]["held_out"]
    cycle.step(f"persuade plan ({label})", started,
               f"{summary['contacts_per_arm']} contacts, spent {summary['spent']:,.0f} of {budget:,.0f}, "
               f"predicted {summary['total_expected_gain']:,.1f} votes; held out {held['voters']:,} "
               f"({held['expected_gain_forgone']:,.1f} votes forgone)")
    return summary


def measured_rows(cycle: Cycle, result: dict, truth: pd.DataFrame, plan_path: Path) -> list[dict]:
    """measure.json's IPW and DR estimates per part beside the true program effect of the same contacts."""
    rows = pd.read_parquet(plan_path, columns=["voter_id", "assigned", "p_control"])
    got = rows["assigned"].astype(str).to_numpy()
    measured = (got != CONTROL_ARM) & (rows["p_control"].to_numpy() > 0)  # what measure can compare
    effect = np.where(measured, effect_of_assignment(true_effects(truth, rows["voter_id"].to_numpy()), got), 0.0)
    parts = {"total": effect.sum()} | {label: effect[got == label].sum() for label in result["arms"]}
    out = []
    for part, true in parts.items():
        entries = {name: (est["total"] if part == "total" else est["arms"][part])
                   for name, est in result["estimators"].items()}
        if not entries["dr"]["contacts"]:
            continue
        row = {"seed": cycle.seed, "part": part, "contacts": entries["dr"]["contacts"],
               "predicted": entries["dr"]["predicted"], "true": true}
        for name, e in entries.items():
            row[name] = e["estimate"]
            row[f"{name} 95% CI"] = f"[{e['ci_low']:.1f}, {e['ci_high']:.1f}]"
            row[f"{name} covers"] = bool(e["ci_low"] <= true <= e["ci_high"])
        out.append(row)
    return out


def oracle_total(tau: np.ndarray, budget: float) -> float:
    """The true incremental votes of the budget allocated on the true effects (arms planned without consent)."""
    gain = tau.copy()
    gain[:, [LABELS.index(a) for a in CONSENTED_OUT]] = np.nan
    cost = np.array([ARMS[label]["cost"] for label in LABELS])
    arm = Allocator(budget).solve(gain, cost, [ARMS[label]["channel"] for label in LABELS]).arm
    return float(np.where(arm >= 0, tau[np.arange(len(tau)), np.maximum(arm, 0)], 0.0).sum())


def one_cycle(seed: int, args, folder: Path) -> Cycle:
    cycle = Cycle(seed, folder, cli_env(folder))
    started = time.perf_counter()
    experiment = make_campaign(args.n, seed=seed)
    config = yaml.safe_load(experiment.write(folder / "experiment").read_text())
    config["uplift"].update(SMALL)
    model_name = config["model_name"]
    exp_yaml = folder / "exp.yaml"
    exp_yaml.write_text(yaml.safe_dump(config, sort_keys=False))
    universe, truth = program_voters(make_campaign(args.n_program, seed=seed + 100))
    universe_path = folder / "program" / "universe.parquet"
    universe_path.parent.mkdir()
    universe.to_parquet(universe_path, index=False)
    fresh = make_campaign(args.n_fresh, seed=seed + 200)
    fresh_path = folder / "fresh.parquet"
    fresh.voter_file.to_parquet(fresh_path, index=False)
    cycle.step("synthetic data", started, f"experiment {args.n:,}, program universe {args.n_program:,}, "
                                          f"fresh universe {args.n_fresh:,} voters")

    first = train_and_promote(cycle, "experiment", exp_yaml, model_name)   # 1
    budget = budget_for(args.n_program, args.budget_share)                 # 2
    plan_path = folder / "program" / "plan.parquet"
    plan(cycle, "program", first["uri"], universe_path, budget, args, plan_path)

    started = time.perf_counter()                                          # 3
    rows = pd.read_parquet(plan_path, columns=["voter_id", "assigned"])
    ids = rows["voter_id"].astype(str).to_numpy()
    got = rows["assigned"].astype(str).to_numpy()
    in_plan_order = truth.set_index("voter_id").loc[ids].reset_index()
    outcomes = draw_outcomes(in_plan_order, np.where(got == CONTROL_ARM, None, got),
                             np.random.default_rng([seed, 3]))
    outcomes_path = folder / "program" / "outcomes.parquet"
    outcomes[["voter_id", "voted"]].to_parquet(outcomes_path, index=False)
    counts = pd.Series(got).value_counts().to_dict()
    cycle.step("program run (outcomes drawn from the truth)", started,
               f"assigned {counts}; turnout {outcomes.voted.mean():.3f}")

    started = time.perf_counter()                                          # 4
    measure_json = folder / "program" / "measure.json"
    cycle.persuade("measure", "measure", "--plan", str(plan_path), "--outcomes", str(outcomes_path),
                   "--output", str(measure_json), "--report", str(folder / "program" / "measure.html"))
    result = json.loads(measure_json.read_text())
    cycle.measured = measured_rows(cycle, result, truth, plan_path)
    total = cycle.measured[0]
    cycle.step("persuade measure", started,
               f"total: true {total['true']:.1f}, IPW {total['ipw']:.1f} {total['ipw 95% CI']}, "
               f"DR {total['dr']:.1f} {total['dr 95% CI']}; unmeasured contacts {result['unmeasured_contacts']}")
    print(pd.DataFrame(cycle.measured).drop(columns="seed").to_markdown(index=False, floatfmt=".1f"), flush=True)

    program_yaml = folder / "exp_program.yaml"                             # 5
    program_yaml.write_text(yaml.safe_dump({**config, "programs": [{
        "name": PROGRAM_NAME, "plan": str(plan_path), "outcomes": str(outcomes_path), "voters": str(universe_path),
    }]}, sort_keys=False))
    second = train_and_promote(cycle, "experiment + program", program_yaml, model_name)

    tau = true_effects(fresh.truth, fresh.voter_file["voter_id"].to_numpy())   # 6
    oracle = oracle_total(tau, budget_for(args.n_fresh, args.budget_share))
    for label, model in (("experiment", first), ("experiment + program", second)):
        started = time.perf_counter()
        scores_path = folder / "fresh" / f"scores_v{model['version']}.parquet"
        cycle.persuade(f"score fresh v{model['version']}", "score", "--model", model["uri"], "--input",
                       str(fresh_path), "--output", str(scores_path))
        scores = pd.read_parquet(scores_path)
        order = pd.Index(scores["voter_id"].astype(str)).get_indexer(fresh.voter_file["voter_id"].astype(str))
        rho = {arm: rank_correlation(scores[f"uplift_{arm_slug(arm)}"].to_numpy()[order], tau[:, j])
               for j, arm in enumerate(LABELS)}
        cycle.step(f"persuade score fresh ({label})", started,
                   "Spearman " + ", ".join(f"{a} {r:.3f}" for a, r in rho.items()))
        fresh_plan = folder / "fresh" / f"plan_v{model['version']}.parquet"
        summary = plan(cycle, f"fresh, {label}", model["uri"], fresh_path,
                       budget_for(args.n_fresh, args.budget_share), args, fresh_plan)
        contacts = read_contacts(fresh_plan)
        true = effect_of_assignment(true_effects(fresh.truth, contacts["voter_id"].to_numpy()),
                                    contacts["arm"].to_numpy()).sum()
        cycle.fresh.append({"seed": seed, "model": f"v{model['version']} {label}",
                            "promoted": model["promoted"], "served": model["served"],
                            **{f"rho {a}": r for a, r in rho.items()},
                            "contacts": len(contacts), "predicted": summary["total_expected_gain"],
                            "true": true, "oracle (no holdout)": oracle})
    return cycle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="*", type=int, default=[1])
    parser.add_argument("--n", type=int, default=20_000, help="experiment voters")
    parser.add_argument("--n-program", type=int, default=20_000, help="voters of the program's universe")
    parser.add_argument("--n-fresh", type=int, default=20_000, help="voters of the fresh universe (step 6)")
    parser.add_argument("--budget-share", type=float, default=0.2,
                        help="budget: this share of a universe at the mean cost of the arms planned")
    parser.add_argument("--holdout", type=float, default=0.1)
    parser.add_argument("--explore", type=float, default=0.05)
    parser.add_argument("--keep", type=Path, default=None, help="keep each seed's folder under this folder")
    args = parser.parse_args()
    started = time.perf_counter()
    cycles = []
    for seed in args.seeds:
        folder = Path(tempfile.mkdtemp(prefix=f"cycle-bench-{seed}-"))
        try:
            cycles.append(one_cycle(seed, args, folder))
        finally:
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                shutil.move(str(folder), str(args.keep / f"seed{seed}"))
            else:
                shutil.rmtree(folder, ignore_errors=True)
    steps = pd.DataFrame([s for c in cycles for s in c.steps])
    print("\n## Summary\n")
    print(f"{len(cycles)} seed(s); experiment {args.n:,}, program {args.n_program:,}, fresh {args.n_fresh:,} voters; "
          f"holdout {args.holdout}, explore {args.explore}, budget share {args.budget_share}; "
          f"{time.perf_counter() - started:.0f} s in all\n")
    print("### Wall time per step (s)\n")
    print(steps.pivot_table(index="step", columns="seed", values="seconds", sort=False)
          .reset_index().to_markdown(index=False, floatfmt=".1f"))
    print("\n### persuade measure against the true program effect (votes; 95% intervals)\n")
    print(pd.DataFrame([r for c in cycles for r in c.measured]).to_markdown(index=False, floatfmt=".1f"))
    print("\n### Both models on fresh voters: Spearman with the true effects, plans' predicted and TRUE votes\n")
    print(pd.DataFrame([r for c in cycles for r in c.fresh]).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
