"""Contact planning: what a plan captures, on GGL's hold-out and on synthetic truth.

1. **GGL 2008** (real randomized outcomes). Trains the run of ``configs/ggl2008.yaml``
   with the real pipeline (``training.fit.fit_and_evaluate``) and plans on its grouped
   hold-out, each postcard an arm of the mail channel costing 1 (``configs/costs.yaml``),
   at budgets of 10%, 20% and 30% of the hold-out's voters. Against the same budget:
   random targeting (its expectation over random draws: the budget's share of what
   sending everyone captures), turnout-score targeting (turnout closest to 0.5) and the single
   best arm sent to the voters the model ranks highest for it; plus everyone getting the
   single best arm (100% of the voters) for scale. *Incremental turnout captured* by a
   targeting is estimated from the randomized assignment: for each arm, the voters the
   targeting gives that arm, times the difference in turnout between those of them who
   were randomized to that arm and those randomized to no postcard; summed over arms.
   95% intervals by cluster bootstrap (``training.evaluation.cluster_bootstrap_weights``),
   resampling the randomization clusters; differences against random are paired (same
   resamples). Then the plan's sensitivity to each arm's level
   (``serving.plan_sensitivity``, ``persuade plan --sensitivity``) and its time.
2. **Synthetic program** with known effects (``features.synthetic``): four arms on four
   channels with different costs, phone and canvass reaching only some voters. The plan
   (model gains) against the oracle plan (true gains, same solver, budget and limits):
   the captured share of the oracle's true gain, for a budget alone, with channel
   capacities, and with a new program's contact rates. A diagnostic column plans with the
   model's gains rescaled so that each arm's average equals the truth's (four numbers):
   what is left of the gap is the ranking of voters within arms. Its converse plans with
   the true gains rescaled to the model's arm averages: what a perfect ranking within arms
   would keep at the levels the sample gave. Another column is the
   plan's own sensitivity table at a glance (the arm level whose interval end would cost
   the plan most), which never sees the truth. Plus the contact-rate model against the
   truth.
3. **Solver**: time, LP size and optimality gap of the allocation on random segments of
   55,000 and 1,000,000 voters at budgets of 2% and 20% of the voters, column generation
   against solving the full LP in the same run.

Command (project root; about 30 minutes on a quiet 2-core machine)::

    PERSUADE_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/plan_bench.py

Tables are printed as markdown on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np
import pandas as pd
from rich.console import Console
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from features.config import RunConfig, load_config  # noqa: E402
from features.schema import validate_experiment  # noqa: E402
from features.synthetic import make_campaign  # noqa: E402
from features.tables import load_experiment  # noqa: E402
from serving.allocation import Allocator  # noqa: E402
from serving.plan_costs import ChannelLimits, ProgramCosts, load_costs  # noqa: E402
from serving.plan_gains import expected_gains  # noqa: E402
from serving.plan_sensitivity import level_sensitivity  # noqa: E402
from serving.planning import plan_from_gains  # noqa: E402
from training.evaluation import cluster_bootstrap_weights  # noqa: E402
from training.fit import FitResult, fit_and_evaluate  # noqa: E402
from training.references import turnout_05_score  # noqa: E402
from training.run import planning_metadata  # noqa: E402

log = Console(stderr=True)
BUDGETS = (0.1, 0.2, 0.3)
BOOT_BLOCK = 100


def train(config: RunConfig, label: str) -> FitResult:
    started = time.perf_counter()
    frame = load_experiment(config)
    validate_experiment(frame, config)

    def progress(step: str) -> None:
        log.print(f"  {label}: {step} ({time.perf_counter() - started:.0f} s)")

    result = fit_and_evaluate(frame, config, progress)
    result.model.metadata.update(planning_metadata(result, config))  # as training.run stores it
    return result


# -- GGL: captured incremental turnout from the randomized outcomes ------------------------------
class Captured:
    """Incremental outcomes a targeting captures, estimated from randomized assignment.

    Parameters
    ----------
    y : ndarray (n,)
        Outcomes of the hold-out voters.
    assigned : ndarray of str (n,)
        Randomized arm of each voter.
    control : str
    labels : list of str
        Arm labels (column order of a targeting's arm index).
    groups : ndarray (n,)
        Randomization clusters (resampled whole).
    ties : ndarray of int (n,)
        Id of each voter's feature vector. Voters with the same features are the same to
        any targeting, so the one it picks among them at the budget's edge is arbitrary:
        a targeting counts as giving arm ``a`` to *each* of them with the share it gave
        to the group (its expectation over the arbitrary choice).
    n_boot : int
    seed : int
    """

    def __init__(self, y, assigned, control, labels, groups, ties, n_boot: int = 1000, seed: int = 0):
        self.y = np.asarray(y, dtype=float)
        self.treated = [np.asarray(assigned) == a for a in labels]
        self.control = np.asarray(assigned) == control
        self.groups = np.asarray(groups)
        self.ties = np.asarray(ties)
        self.tie_size = np.bincount(self.ties)
        self.n_boot = n_boot
        self.seed = seed

    def _columns(self, arm: np.ndarray) -> np.ndarray:
        """Per arm, with g the voter's share of the arm: [g, g*treated, y*g*treated, g*control, y*g*control]."""
        cols = []
        for j, treated in enumerate(self.treated):
            g = (np.bincount(self.ties, weights=(arm == j).astype(float), minlength=len(self.tie_size))
                 / self.tie_size)[self.ties]
            cols += [g, g * treated, self.y * g * treated, g * self.control, self.y * g * self.control]
        return np.column_stack(cols)

    @staticmethod
    def _total(sums: np.ndarray) -> np.ndarray:
        s = sums.reshape(*sums.shape[:-1], -1, 5)
        with np.errstate(divide="ignore", invalid="ignore"):
            effect = s[..., 2] / s[..., 1] - s[..., 4] / s[..., 3]
        return np.where(s[..., 0] > 0, s[..., 0] * np.nan_to_num(effect), 0.0).sum(axis=-1)

    def estimate(self, arms: dict[str, np.ndarray], scale: dict[str, float] | None = None) -> dict[str, dict]:
        """Estimate and 95% interval per targeting, and its paired difference to ``random``.

        ``scale[name]`` multiplies a targeting's total: random targeting of a fraction f
        of the voters is f times everyone, in expectation over the random draw.
        """
        names = list(arms)
        scale = {name: (scale or {}).get(name, 1.0) for name in names}
        blocks = [self._columns(arms[name]) for name in names]
        matrix = np.concatenate(blocks, axis=1)
        point = {name: scale[name] * float(self._total(b.sum(axis=0))) for name, b in zip(names, blocks, strict=True)}
        draws = {name: [] for name in names}
        width = blocks[0].shape[1]
        for start in range(0, self.n_boot, BOOT_BLOCK):
            w = cluster_bootstrap_weights(self.groups, min(BOOT_BLOCK, self.n_boot - start), self.seed + start)
            sums = w @ matrix
            for k, name in enumerate(names):
                draws[name].append(scale[name] * self._total(sums[:, k * width:(k + 1) * width]))
        draws = {k: np.concatenate(v) for k, v in draws.items()}
        out = {}
        for name in names:
            low, high = np.percentile(draws[name], [2.5, 97.5])
            diff = draws[name] - draws["random"]
            d_low, d_high = np.percentile(diff, [2.5, 97.5])
            out[name] = {"estimate": point[name], "low": low, "high": high,
                         "vs_random": point[name] - point["random"], "vs_low": d_low, "vs_high": d_high}
        return out


def ggl(config_path: Path, costs_path: Path, n_boot: int, seed: int) -> None:
    config = load_config(config_path)
    result = train(config, "GGL")
    model, prep = result.model, result.prepared
    test, X = prep.test, prep.X_test
    labels = [a.label for a in model.arms]
    assigned = test[config.arm_column].astype(str).to_numpy()
    y = test[config.outcome.column].to_numpy(dtype=float)
    n = len(test)
    costs = load_costs(costs_path)
    gains = expected_gains(model, X, costs)
    ids = test[config.id_column].to_numpy()
    # the single best arm: the largest difference in means on the training groups
    train_arm = prep.train[config.arm_column].astype(str)
    train_y = prep.train[config.outcome.column].astype(float)
    ate = {a: train_y[train_arm == a].mean() - train_y[train_arm == config.control_label].mean() for a in labels}
    best = labels.index(max(ate, key=ate.get))
    turnout = model.predict_turnout(X)
    ties = test.groupby(list(config.features), dropna=False, sort=False).ngroup().to_numpy()
    captured = Captured(y, assigned, config.control_label, labels, test[config.group_column].to_numpy(), ties,
                        n_boot, seed)

    def top(score: np.ndarray, k: int) -> np.ndarray:
        arm = np.full(n, -1)
        arm[np.argsort(-score, kind="stable")[:k]] = best
        return arm

    print(f"### GGL 2008 grouped hold-out: {n:,} voters in {test[config.group_column].nunique():,} clusters\n")
    print(f"Learner `{result.learner}`; single best arm on the training groups: **{labels[best]}** "
          f"(difference in means {ate[labels[best]] * 100:.1f} pp). Each postcard costs 1; "
          f"{n_boot} cluster-bootstrap resamples. The hold-out has {ties.max() + 1} distinct feature vectors: "
          f"voters sharing one count with their group's share of each arm (ties at the budget's edge).\n")
    everyone = np.full(n, best)
    rows, sensitivity_rows = [], []
    for fraction in BUDGETS:
        budget = round(fraction * n)
        started = time.perf_counter()
        plan = plan_from_gains(model, ids, gains, budget, costs)
        solve_s = time.perf_counter() - started
        started = time.perf_counter()
        sensitivity = level_sensitivity(model, gains, plan, costs)
        sensitivity_rows.append(sensitivity_row(f"{fraction:.0%} ({budget:,})", sensitivity,
                                                time.perf_counter() - started, solve_s))
        plan_arm = np.full(n, -1)
        position = pd.Series(np.arange(n), index=ids.astype(str))
        plan_arm[position.loc[plan.table.voter_id].to_numpy()] = [labels.index(a) for a in plan.table.arm]
        targetings = {
            "random": everyone,  # scaled to the budget below: its expectation over random draws
            "turnout score (closest to 0.5)": top(turnout_05_score(turnout), budget),
            f"single best arm ({labels[best]}), model-ranked": top(gains.gain[:, best], budget),
            "plan": plan_arm,
            f"everyone gets {labels[best]} (100%)": everyone,
        }
        estimates = captured.estimate(targetings, scale={"random": budget / n})
        mix = ", ".join(f"{a} {c:,}" for a, c in plan.contacts_per_arm().items())
        for name, arm in targetings.items():
            e = estimates[name]
            sent = budget if name == "random" else int((arm >= 0).sum())
            rows.append({
                "budget": f"{fraction:.0%} ({budget:,})", "targeting": name, "postcards": f"{sent:,}",
                "incremental votes [95% CI]": f"{e['estimate']:.0f} [{e['low']:.0f}, {e['high']:.0f}]",
                "per 100 postcards": f"{100 * e['estimate'] / max(sent, 1):.2f}",
                "vs random [95% CI]": "—" if name == "random" else
                f"{e['vs_random']:+.0f} [{e['vs_low']:+.0f}, {e['vs_high']:+.0f}]",
            })
        lo, hi = plan.interval
        rows.append({"budget": "", "targeting": f"plan, model's expectation ({mix}; solve {solve_s:.1f} s, "
                                                f"LP gap {plan.allocation.gap:.2g})",
                     "postcards": f"{len(plan.table):,}",
                     "incremental votes [95% CI]": f"{plan.total_expected_gain:.0f} [{lo:.0f}, {hi:.0f}]",
                     "per 100 postcards": f"{100 * plan.total_expected_gain / max(len(plan.table), 1):.2f}",
                     "vs random [95% CI]": ""})
        log.print(f"  GGL budget {fraction:.0%}: done")
    print(pd.DataFrame(rows).to_markdown(index=False))
    print("\n#### The plan's sensitivity to each arm's average effect (`persuade plan --sensitivity`)\n")
    print("Each arm's expected gains scaled to either end of its 95% interval (its AIPW average effect on the "
          "training voters, cluster-robust standard error), the plan re-solved: what keeping the plan would lose, "
          "as a share of the re-plan's expected gain, and the voters whose arm changes.\n")
    print(pd.DataFrame(sensitivity_rows).to_markdown(index=False))
    print()


def sensitivity_row(budget: str, table: pd.DataFrame, seconds: float, solve_s: float) -> dict:
    row = {"budget": budget}
    for r in table.itertuples():
        row[f"{r.arm} {r.side} (x{r.scale:.2f})"] = f"{r.regret_share:.1%} / {r.voters_moved:,}"
    row["time (s; the plan's own solve)"] = f"{seconds:.1f} ({solve_s:.1f})"
    return row


# -- synthetic: share of the oracle plan's true gain -----------------------------------------------
def synthetic(n: int, seeds: list[int], uplift: dict | None = None) -> None:
    rows, rate_rows, chosen = [], [], []
    for seed in seeds:
        campaign = make_campaign(n, seed=seed)
        with tempfile.TemporaryDirectory(prefix="plan-bench-") as folder:
            config = load_config(campaign.write(folder))
            if uplift:
                config = config.with_uplift(**uplift)
            result = train(config, f"synthetic seed {seed}")
        metric = config.uplift.selection_metric
        table = result.outcome_shapes
        shapes = ", ".join(f"{leaves}-leaf {1000 * cv:.2f}"
                           for leaves, cv in zip(table.treated_leaves, table[metric], strict=True))
        chosen.append(f"seed {seed}: {result.learner} {result.final_size}"
                      f"{' + turnout score' if result.turnout_score_feature else ''}"
                      f", {result.nuisance_treated_leaves}-leaf treated outcome models (CV {metric} x1000: {shapes})")
        model, prep = result.model, result.prepared
        test, X = prep.test, prep.X_test
        truth = campaign.truth.set_index("voter_id").loc[test.voter_id]
        labels = [a.label for a in model.arms]
        slugs = [a.slug for a in model.arms]
        channels = [a.channel for a in model.arms]
        cost = np.array([a.cost for a in model.arms])
        m = len(test)
        rate_rows += contact_rate_quality(model, X, test, truth, seed)
        capacities = {"text": int(0.10 * m), "phone": int(0.05 * m), "canvass": int(0.03 * m)}
        scenarios = {
            "budget only": ProgramCosts(),
            "capacities": ProgramCosts(channels={c: ChannelLimits(capacity=v) for c, v in capacities.items()}),
            "capacities + contact rates": ProgramCosts(channels={
                **{c: ChannelLimits(capacity=v) for c, v in capacities.items() if c == "text"},
                "phone": ChannelLimits(capacity=capacities["phone"], contact_rate=0.55),
                "canvass": ChannelLimits(capacity=capacities["canvass"], contact_rate=0.75)}),
        }
        rng = np.random.default_rng(seed)
        for scenario, costs in scenarios.items():
            gains = expected_gains(model, X, costs)
            true_gain = true_gains(model, truth, costs, slugs, channels)
            # diagnostic: the model's gains with each arm's average set to the truth's (4 numbers)
            leveled = gains.gain * (true_gain.mean(axis=0) / np.nanmean(gains.gain, axis=0))
            # and its converse: every voter's true effect, each arm's average set to the model's
            # (what a planner that knew the shape exactly would lose to the levels' sampling error)
            true_shape = np.where(np.isnan(gains.gain), np.nan,  # the plan's consent mask
                                  true_gain * (np.nanmean(gains.gain, axis=0) / true_gain.mean(axis=0)))
            limits = {c: v.capacity for c, v in costs.channels.items()}
            for fraction in BUDGETS:
                budget = fraction * m
                plan = plan_from_gains(model, test.voter_id.to_numpy(), gains, budget, costs)
                arm = np.full(m, -1)
                position = pd.Series(np.arange(m), index=test.voter_id.astype(str))
                arm[position.loc[plan.table.voter_id].to_numpy()] = [labels.index(a) for a in plan.table.arm]
                oracle = Allocator(budget, limits).solve(true_gain, cost, channels)
                value = realized(true_gain, arm)
                best_oracle = realized(true_gain, oracle.arm)
                single = max(range(len(labels)), key=lambda j: realized(
                    gains.gain, Allocator(budget, limits).solve(only(gains.gain, j), cost, channels).arm))
                single_arm = Allocator(budget, limits).solve(only(gains.gain, single), cost, channels).arm
                random_arm = random_targeting(rng, m, single, cost, channels, budget, limits)
                leveled_arm = Allocator(budget, limits).solve(leveled, cost, channels).arm
                shape_arm = Allocator(budget, limits).solve(true_shape, cost, channels).arm
                sensitivity = level_sensitivity(model, gains, plan, costs)
                worst = sensitivity.loc[sensitivity.regret_share.idxmax()]
                lo, hi = plan.interval
                rows.append({
                    "seed": seed, "scenario": scenario, "budget": f"{fraction:.0%} ({budget:,.0f})",
                    "oracle true gain": f"{best_oracle:.1f}",
                    "plan true gain": f"{value:.1f}",
                    "plan share of oracle": f"{value / best_oracle:.1%}",
                    "with true arm averages": f"{realized(true_gain, leveled_arm) / best_oracle:.1%}",
                    "true effects at the model's arm averages": f"{realized(true_gain, shape_arm) / best_oracle:.1%}",
                    "most sensitive level (plan loses)": f"{worst.arm} {worst.side} ({worst.regret_share:.1%})",
                    "single best arm share": f"{realized(true_gain, single_arm) / best_oracle:.1%} ({labels[single]})",
                    "random share": f"{realized(true_gain, random_arm) / best_oracle:.1%}",
                    "plan expected [95% interval]": f"{plan.total_expected_gain:.1f} [{lo:.1f}, {hi:.1f}]",
                    "true in interval": "yes" if lo <= value <= hi else "no",
                    "LP rel. gap": f"{plan.allocation.rel_gap:.1e}",
                })
            log.print(f"  synthetic seed {seed}: {scenario} done")
    print(f"### Synthetic program: {n:,} voters per seed, plans on the grouped hold-out\n")
    print("Costs per attempt: Mail 0.6, Phone 1.5, Text 0.1, Canvass 4 (the generator's run config); budgets "
          "in cost units as a share of the hold-out's voters. Capacities: text 10%, phone 5%, canvass 3% of the "
          "hold-out. Contact rates: phone 0.55 and canvass 0.75 in the new program (the experiment reached "
          "about 0.37 and 0.60). Shares are true gains (from the generator) relative to the oracle plan's.\n")
    print(pd.DataFrame(rows).to_markdown(index=False))
    print(f"\nSelected by grouped CV: {'; '.join(chosen)}.\n")
    print("### Contact-rate model on the synthetic hold-out (P(reached | attempted))\n")
    print(pd.DataFrame(rate_rows).to_markdown(index=False))
    print()


def only(gain: np.ndarray, j: int) -> np.ndarray:
    out = np.full_like(gain, np.nan)
    out[:, j] = gain[:, j]
    return out


def realized(true_gain: np.ndarray, arm: np.ndarray) -> float:
    picked = arm >= 0
    return float(true_gain[picked, arm[picked]].sum())


def random_targeting(rng, m, j, cost, channels, budget, limits) -> np.ndarray:
    """Random voters, all given arm ``j``, as many as the budget and the arm's channel allow."""
    k = int(min(m, budget // cost[j], limits.get(channels[j]) if limits.get(channels[j]) is not None else m))
    arm = np.full(m, -1)
    arm[rng.permutation(m)[:k]] = j
    return arm


def true_gains(model, truth: pd.DataFrame, costs: ProgramCosts, slugs, channels) -> np.ndarray:
    """The generator's expected gain of an attempt: P_plan(reached) x the true uplift if reached."""
    out = np.empty((len(truth), len(slugs)))
    limits = costs.limits(model)
    for j, (slug, channel) in enumerate(zip(slugs, channels, strict=True)):
        rate = limits[channel].contact_rate if channel in limits else None
        p = truth[f"p_reach_{slug}"].to_numpy()
        if rate is not None:
            p = np.minimum(1.0, p * rate / model.contact_rate_info[channel]["reached_rate"])
        out[:, j] = p * truth[f"tau_reached_voted_{slug}"].to_numpy()
    return out


def contact_rate_quality(model, X, test, truth, seed) -> list[dict]:
    rows = []
    predicted = model.predict_contact_rate(X)
    gains = expected_gains(model, X)
    for channel, p in predicted.items():
        arm = next(a for a in model.arms if a.channel == channel)
        j = model.arms.index(arm)
        rows_mask = (test.arm == arm.label).to_numpy() & (test.attempted == 1).to_numpy()
        y = test.reached.to_numpy()[rows_mask]
        p_true = truth[f"p_reach_{arm.slug}"].to_numpy()
        if_reached = gains.itt[:, j] / gains.p_reached[:, j]
        true_if_reached = truth[f"tau_reached_voted_{arm.slug}"].to_numpy()
        rows.append({
            "seed": seed, "channel": channel, "attempted hold-out rows": int(rows_mask.sum()),
            "AUC (model)": f"{roc_auc_score(y, p[rows_mask]):.3f}",
            "AUC (true P)": f"{roc_auc_score(y, p_true[rows_mask]):.3f}",
            "mean abs. error vs true P": f"{np.abs(p - p_true).mean():.3f}",
            "observed / predicted rate": f"{y.mean():.3f} / {p[rows_mask].mean():.3f}",
            "uplift if reached: Spearman vs truth": f"{spearmanr(if_reached, true_if_reached).statistic:.2f}",
            "mean uplift if reached (model / truth)": f"{if_reached.mean():.3f} / {true_if_reached.mean():.3f}",
        })
    return rows


# -- solver: time and certificate against the size of the segment -------------------------------
def solver(sizes: list[int], repeats: int) -> None:
    """Random gains (84% of the pairs positive), 4 arms on 4 channels; budgets of 2% and 20% of the voters."""
    cost = np.array([1.0, 1.5, 0.1, 4.0])
    channels = ["mail", "phone", "text", "canvass"]
    rows = []
    for n in sizes:
        gain = np.random.default_rng(n).normal(0.03, 0.03, (n, 4))
        runs = repeats if n <= 100_000 else 1
        for fraction in (0.02, 0.2):
            for label, capacities in (("budget only", {}), ("budget + 4 capacities (8% each)",
                                                             dict.fromkeys(channels, int(0.08 * n)))):
                methods = {"column generation": Allocator(fraction * n, capacities),
                           "full LP (baseline)": Allocator(fraction * n, capacities, start_factor=np.inf)}
                for name, allocator in methods.items():
                    times, result = [], None
                    for _ in range(runs):
                        started = time.perf_counter()
                        result = allocator.solve(gain, cost, channels)
                        times.append(time.perf_counter() - started)
                    rows.append({"voters": f"{n:,}", "budget": f"{fraction:.0%}", "limits": label, "method": name,
                                 "pairs (positive)": f"{result.candidates:,}", "LP columns": f"{result.columns:,}",
                                 "LP solves": result.rounds, "median s": f"{np.median(times):.1f}", "runs": runs,
                                 "rel. gap to LP bound": f"{result.rel_gap:.1e}"})
                    log.print(f"  solver {n:,} {fraction:.0%} {label} {name}: {np.median(times):.1f} s")
    print("### Allocation solver: time and optimality certificate\n")
    print(pd.DataFrame(rows).to_markdown(index=False))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "ggl2008.yaml")
    parser.add_argument("--costs", type=Path, default=ROOT / "configs" / "costs.yaml")
    parser.add_argument("--synthetic-n", type=int, default=50_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--boot", type=int, default=1000, help="cluster-bootstrap resamples (GGL)")
    parser.add_argument("--uplift", help='JSON overrides of the synthetic run config\'s uplift block, '
                        'e.g. \'{"turnout_score_feature": true}\'')
    parser.add_argument("--skip-ggl", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--solver-sizes", type=int, nargs="*", default=[55_000, 1_000_000],
                        help="segment sizes of the solver timing (none: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="solver timing repeats (segments <= 100k)")
    args = parser.parse_args()
    command = " ".join([f"PERSUADE_THREADS={os.environ.get('PERSUADE_THREADS', '2')}", ".venv/bin/python",
                        "bench/plan_bench.py", *sys.argv[1:]])
    print(f"Command: `{command}`\n")
    if not args.skip_ggl:
        ggl(args.config, args.costs, args.boot, seed=20060808)
    if not args.skip_synthetic:
        synthetic(args.synthetic_n, args.seeds, json.loads(args.uplift) if args.uplift else None)
    if args.solver_sizes:
        solver(args.solver_sizes, args.repeats)


if __name__ == "__main__":
    main()
