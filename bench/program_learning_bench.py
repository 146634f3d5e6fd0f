"""Does a past program's data, with its recorded propensities, help the next model? On synthetic truth.

Per seed, on the synthetic campaign (``features.synthetic``, every voter's true effect known):

1. **(a) experiment alone**: the real pipeline (``training.fit.fit_and_evaluate``) trains
   on a randomized experiment (40% control, 15% per arm).
2. **The program**: other voters of the same generator are ranked by model (a)'s served
   uplift (``--targeting model``) or by past turnout (``--targeting habitual``, a rule
   that targets the voters contact moves least); the top ``--target`` share is targeted
   with its best arm, the plan's design
   (``serving.plan_design.randomize``) holds out ``--holdout`` of them and explores
   ``--explore`` of the rest, and 30% of the voters may not get Text (probability 0, as
   consent would). Outcomes are drawn from the truth (``training.program_simulation``) and
   the program is written as a plan file, outcomes and voters.
3. **(b) experiment + program**: trained with the program read through ``programs:``
   (``training.programs.load_programs``), each program row with its recorded propensities
   (rows with limited overlap, ``uplift.min_propensity``, left out of the arms' levels and CV
   metrics; the DR trees weigh every row by its overlap weight); with ``--untrimmed``, also
   **(d)**, the same with ``min_propensity`` 0.
4. **(c) experiment + program, propensities ignored**: the same rows, each program row
   given the program's pooled shares (its share of voters assigned to each arm and to
   control), as if the program had been a randomized experiment with those shares.

Reported per arm: the Spearman correlation of the served uplift with the true effect on a
fresh synthetic test set of ``--n-test`` voters; the program's own average effects
(inverse-propensity weighted with the recorded propensities, and the naive difference in
means) against the truth; each fit's doubly-robust average effect
of the arm on its training rows (``FitResult.arm_effects``) against the true average
effect of the same rows (its bias), and the served model's mean uplift on the test set
against the true mean.

Command (project root; about a minute per fit on one thread; 3 fits per seed)::

    PERSUADE_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/program_learning_bench.py --seeds 1 2 3

``--fits`` with no value leaves out fit c (a and b only: about two thirds of the time).

Markdown tables on stdout, progress on stderr.
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
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from features.config import RunConfig  # noqa: E402
from features.synthetic import make_campaign, synthetic_config  # noqa: E402
from training.fit import fit_and_evaluate  # noqa: E402
from training.learners import Design  # noqa: E402
from training.program_simulation import LABELS, simulate_program  # noqa: E402
from training.programs import ProgramRows, load_programs, overlap_floor, with_programs  # noqa: E402
from training.splits import prepare  # noqa: E402

NAME = "targeted-program"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bench_config(folder: Path, learners: tuple[str, ...] | list[str] = ("x", "dr"), cv_repeats: int | None = 1) -> dict:
    """The synthetic run config with a grid small enough for a minute or two per fit.

    ``cv_repeats``: grouped CV's repeats (1 for time; None: the product's default, 3 at
    this size).
    """
    cfg = synthetic_config(folder)
    cfg["uplift"].update({
        "learners": list(learners), "nuisance_treated_leaves": [15], "turnout_score_feature": False,
        "final": {"learning_rate": 0.03, "min_child_samples": 200},
        "final_sizes": [{"n_estimators": 200, "num_leaves": 8}],
        "arm_rounds": 30,
    })
    cfg["split"] = {"holdout_fraction": 0.2, "folds": 4, "seed": 7, "cv_repeats": cv_repeats}
    return cfg


def uplift(result, voters: pd.DataFrame) -> np.ndarray:
    """The served model's uplift per arm (columns in LABELS order) for raw ``voters``."""
    model = result.model
    X = model.transform(voters)
    scores = model.predict_uplift(X, model.predict_turnout(X) if model.has_turnout else None)
    order = [next(j for j, a in enumerate(model.arms) if a.label == label) for label in LABELS]
    return scores[:, order]


def habitual(campaign) -> np.ndarray:
    """A rule's scores: past turnout first (the most reliable voters), each targeted with Canvass, else Phone, ...

    A common mobilization heuristic, and a poor one here: the true effects peak at a
    baseline turnout near 0.5, so the targeted voters are those contact moves least.
    """
    votes = campaign.voter_file.filter(regex=r"^(primary|general)_").sum(axis=1).to_numpy(dtype=float)
    preference = {"Canvass": 0.3, "Phone": 0.2, "Mail": 0.1, "Text": 0.0}
    return np.column_stack([votes + preference[arm] for arm in LABELS])


def pooled(program: ProgramRows, config: RunConfig) -> ProgramRows:
    """The program with every row given the program's shares of each label (its propensities ignored)."""
    shares = program.frame[config.arm_column].astype(str).value_counts(normalize=True)
    flat = pd.DataFrame({label: np.full(len(program.frame), shares.get(label, 0.0))
                         for label in program.propensities.columns})
    return replace(program, propensities=flat)


def true_training_effects(frame, config, programs, truth: pd.DataFrame) -> dict[str, float]:
    """The true average effect of each arm over the rows of its contrast in a fit (what arm_effects estimates)."""
    rows = with_programs(prepare(frame, config), list(programs), config)
    assigned = rows.prepared.assigned("train", config)
    tau = rows.prepared.train[["voter_id"]].merge(truth, on="voter_id", how="left")
    floor = overlap_floor(rows, config.arm_labels, config.control_label, config.uplift.min_propensity)
    design = Design(config.arm_labels, config.control_label, config.design_shares(), min_propensity=floor)
    return {arm: float(tau[f"tau_voted_{arm.lower()}"].to_numpy()[design.contrast(arm, assigned,
                                                                                  rows.propensities)[0]].mean())
            for arm in config.arm_labels}


def one_seed(seed: int, args, folder: Path) -> list[dict]:
    experiment = make_campaign(args.n, seed=seed)
    frame = experiment.flat
    config = RunConfig.model_validate(bench_config(folder, args.learners, args.cv_repeats))
    fits = {}
    started = time.perf_counter()

    def fit(label, programs=(), config=config):
        t0 = time.perf_counter()
        fits[label] = (fit_and_evaluate(frame, config, programs=programs), programs, config)
        log(f"seed {seed} {label}: {time.perf_counter() - t0:.0f} s, served {fits[label][0].served}")

    fit("a")
    voters = make_campaign(args.n_program, seed=seed + 100)
    scores = uplift(fits["a"][0], voters.voter_file) if args.targeting == "model" else habitual(voters)
    scores[np.random.default_rng(seed).random(len(scores)) < 0.3, LABELS.index("Text")] = np.nan
    program = simulate_program(voters, scores, target_share=args.target, holdout=args.holdout,
                               explore=args.explore, seed=seed)
    entry = program.write(folder / f"seed{seed}", NAME)
    config_b = RunConfig.model_validate({**bench_config(folder, args.learners, args.cv_repeats), "programs": [entry]})
    (rows,) = load_programs(config_b)
    e = {a: (rows.propensities[a] / (rows.propensities[a] + rows.propensities["Control"])).to_numpy()
         for a in LABELS}
    log(f"seed {seed} program: {len(rows.frame):,} voters, assigned {rows.frame.arm.value_counts().to_dict()}; "
        "propensity vs control over voters who could get the arm: "
        + ", ".join(f"{a} {v[v > 0].min():.3f}-{v[v > 0].max():.3f}" for a, v in e.items()))
    out = program_only_effects(seed, rows, program.truth)
    fit("b", [rows])
    if "c" in args.fits:
        fit("c", [pooled(rows, config)])
    if args.untrimmed:
        fit("d", [rows], config.with_uplift(min_propensity=0.0))
    test = make_campaign(args.n_test, seed=seed + 200)
    truth = pd.concat([experiment.truth, program.truth], ignore_index=True)
    holdout = fits["a"][0].prepared.test[["voter_id"]].merge(experiment.truth, on="voter_id", how="left")
    for label, (result, programs, fit_config) in fits.items():
        served = uplift(result, test.voter_file)
        true_rows = true_training_effects(frame, fit_config, programs, truth)
        for j, arm in enumerate(LABELS):
            tau = test.truth[f"tau_voted_{arm.lower()}"].to_numpy()
            effect = result.arm_effects[arm]
            out.append({"seed": seed, "fit": label, "arm": arm, "served": result.served[arm],
                        "spearman": rank_correlation(served[:, j], tau),
                        "model_spearman": rank_correlation(result.test_scores[result.learner][arm].to_numpy(),
                                                           holdout[f"tau_voted_{arm.lower()}"].to_numpy()),
                        "train_ate": effect["ate"], "train_ate_se": effect["se"], "train_true": true_rows[arm],
                        "test_mean": float(served[:, j].mean()), "test_true": float(tau.mean())})
    log(f"seed {seed}: {time.perf_counter() - started:.0f} s")
    return out


def program_only_effects(seed: int, rows: ProgramRows, truth: pd.DataFrame) -> list[dict]:
    """Each arm's average effect from the program's rows alone: inverse-propensity weighted (recorded) and naive.

    Over the voters who could get the arm or control (0 < e < 1): the Hajek estimate with
    the recorded propensities, the difference in means (what pooled shares amount to
    without outcome models), and the true average effect of those voters.
    """
    assigned = rows.frame["arm"].astype(str).to_numpy()
    y = rows.frame["voted"].to_numpy(dtype=float)
    tau = rows.frame[["voter_id"]].merge(truth, on="voter_id", how="left")
    out = []
    for arm in LABELS:
        contrast, e = Design(LABELS, "Control").contrast(arm, assigned, rows.propensities)
        t, c = contrast & (assigned == arm), contrast & (assigned == "Control")
        ipw = np.average(y[t], weights=1 / e[t]) - np.average(y[c], weights=1 / (1 - e[c]))
        out.append({"seed": seed, "fit": "program", "arm": arm, "program_true": tau[f"tau_voted_{arm.lower()}"][
            contrast].mean(), "program_ipw": ipw, "program_naive": y[t].mean() - y[c].mean()})
    return out


def rank_correlation(score: np.ndarray, tau: np.ndarray) -> float:
    """Spearman's rho; 0 for a constant score (every voter tied ranks as random targeting)."""
    return 0.0 if np.ptp(score) == 0 else float(spearmanr(score, tau).statistic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3])
    parser.add_argument("--n", type=int, default=20_000, help="experiment voters")
    parser.add_argument("--n-program", type=int, default=20_000, help="program voters")
    parser.add_argument("--n-test", type=int, default=50_000, help="fresh test voters")
    parser.add_argument("--target", type=float, default=0.3, help="share of the program's voters targeted")
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--explore", type=float, default=0.2)
    parser.add_argument("--targeting", choices=["model", "habitual"], default="model",
                        help="the program's ranking: model (a)'s served uplift, or past turnout (habitual())")
    parser.add_argument("--untrimmed", action="store_true",
                        help="also fit d: + program, recorded propensities, no overlap trimming (min_propensity 0)")
    parser.add_argument("--learners", nargs="+", choices=["t", "x", "dr"], default=["x", "dr"],
                        help="the learners grouped CV chooses among (the config default is t x dr)")
    parser.add_argument("--cv-repeats", type=int, default=1,
                        help="grouped CV's repeats per fit (0: the product's default, 3 at this size)")
    parser.add_argument("--fits", nargs="*", choices=["c"], default=["c"],
                        help="the optional fits besides a and b (default: c; none: --fits)")
    args = parser.parse_args()
    args.cv_repeats = args.cv_repeats or None
    rows = []
    with tempfile.TemporaryDirectory(prefix="program-bench-") as tmp:
        for seed in args.seeds:
            rows += one_seed(seed, args, Path(tmp))
    everything = pd.DataFrame(rows)
    alone = everything[everything.fit == "program"].dropna(axis=1, how="all")
    table = everything[everything.fit != "program"].dropna(axis=1, how="all")
    print("Each arm's average effect from the program's rows alone, percentage points: the true average "
          "effect of its voters who could get the arm, the inverse-propensity (Hajek) estimate with the recorded "
          "propensities, and the difference in means (the propensities ignored)\n")
    print(alone.drop(columns="fit").set_index(["seed", "arm"]).mul(100).to_markdown(floatfmt="+.2f"))
    print()
    table["train_bias"] = table.train_ate - table.train_true
    table["test_bias"] = table.test_mean - table.test_true
    print("Spearman of the served uplift with the true effect on a fresh test set of "
          f"{args.n_test:,} voters (a constant served effect: 0) and of the CV-chosen model's ranking on the "
          "experiment's hold-out (the same voters for a, b and c). a: experiment; b: + program, recorded "
          "propensities (rows with limited overlap out of the levels, uplift.min_propensity); c: + program, "
          "pooled shares; d: as b with min_propensity 0.\n")
    wide = table.pivot_table(index=["seed", "arm"], columns="fit", values=["spearman", "model_spearman"],
                             sort=False)
    served = table.pivot_table(index=["seed", "arm"], columns="fit", values="served", aggfunc="first", sort=False)
    wide.columns = [f"{'served' if v == 'spearman' else 'model'} {f}" for v, f in wide.columns]
    wide = wide.join(served.rename(columns=lambda f: f"choice {f}"))
    print(wide.to_markdown(floatfmt=".3f"))
    print("\nMean over seeds\n")
    print(wide.filter(regex="^(served|model) ").groupby(level="arm", sort=False).mean().to_markdown(floatfmt=".3f"))
    print("\nAverage effect, percentage points: bias of each fit's doubly-robust estimate on its training rows "
          "(estimate minus the true average effect of those rows; its SE in brackets) and of the served "
          "model's mean uplift on the test set (minus the true mean)\n")
    show = table.assign(**{c: table[c] * 100 for c in ("train_ate_se", "train_bias", "test_bias")})
    show["train"] = [f"{b:+.2f} ({se:.2f})" for b, se in zip(show.train_bias, show.train_ate_se, strict=True)]
    bias = show.pivot_table(index=["seed", "arm"], columns="fit", values=["train", "test_bias"], aggfunc="first",
                            sort=False)
    bias.columns = [f"{'train' if v == 'train' else 'test'} {f}" for v, f in bias.columns]
    print(bias.to_markdown(floatfmt="+.2f"))
    means = show.groupby(["arm", "fit"], sort=False)[["train_bias", "test_bias"]].mean().unstack("fit")
    means.columns = [f"{'train' if v == 'train_bias' else 'test'} {f}" for v, f in means.columns]
    print("\nMean bias over seeds (pp)\n")
    print(means.to_markdown(floatfmt="+.2f"))


if __name__ == "__main__":
    main()
