"""Which tree sizes make explanations affordable: voters explained per second vs hold-out Qini.

On GGL, the run config ``configs/ggl2008.yaml`` is refitted with variants of its
``uplift.final`` (the final uplift models' tree count and leaves per tree) through
``training.fit.fit_and_evaluate`` -- the same fit, learner selection and grouped hold-out
as ``persuade train``. For each variant it reports the selected model's hold-out Qini
per arm, whether it still beats both references on Neighbors and Self (the foundation
issue's Qini goal), and explanation throughput on the hold-out voters:

- *top 5, best arm, per voter*: the batch engine's reasons (``serving.batch.top_reasons``)
  with every voter computed on its own, as a service sees unique requests;
- *top 5, best arm, batch*: the same with each distinct feature vector explained once
  (the batch engine's default);
- *every arm, per voter*: TreeSHAP of every arm's uplift for every voter (what the
  service's ``explain`` returns).

One table, for the batch-scoring and the service issues alike. Throughputs are medians
of ``--repeats`` runs in this process.

Usage::

    .venv/bin/python bench/tree_size_bench.py            # 8 variants (about 45 minutes on a quiet machine)
    .venv/bin/python bench/tree_size_bench.py --quick    # 3 variants
    .venv/bin/python bench/tree_size_bench.py --grid 100x2,400x4

LightGBM threads follow ``PERSUADE_THREADS`` (default 2).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("PERSUADE_THREADS", "2"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from features.config import RunConfig, load_config  # noqa: E402
from features.schema import validate_experiment  # noqa: E402
from features.tables import load_experiment  # noqa: E402
from serving.batch import top_reasons  # noqa: E402
from training.fit import FitResult, fit_and_evaluate  # noqa: E402

err = Console(stderr=True)
FULL_GRID = [(100, 2), (200, 2), (400, 2), (200, 4), (400, 4), (200, 8), (400, 8), (300, 31)]
QUICK_GRID = [(100, 2), (400, 2), (200, 8)]
GOAL_ARMS = ("Neighbors", "Self")
REFERENCES = ("t_default", "turnout_05")
TOP_K = 5


def parse_grid(text: str) -> list[tuple[int, int]]:
    """``"100x2,400x4"`` -> ``[(100, 2), (400, 4)]`` (trees x leaves)."""
    grid = []
    for item in text.split(","):
        try:
            trees, leaves = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"grid item {item!r} is not TREESxLEAVES (e.g. 400x2)") from None
        if trees < 1 or leaves < 2:
            raise argparse.ArgumentTypeError(f"grid item {item!r}: need trees >= 1 and leaves >= 2")
        grid.append((trees, leaves))
    return grid


def variant(config: RunConfig, trees: int, leaves: int) -> RunConfig:
    """``config`` with the final uplift models' tree count and leaves replaced."""
    final = config.uplift.final.model_copy(update={"n_estimators": trees, "num_leaves": leaves})
    uplift = config.uplift.model_copy(update={"final": final, "final_sizes": []})  # this size only
    return config.model_copy(update={"uplift": uplift})


def rate(n: int, seconds: list[float]) -> float:
    return n / statistics.median(seconds)


def measure(result: FitResult, repeats: int) -> dict[str, float]:
    """Voters explained (and scored) per second on the hold-out voters."""
    model = result.model
    X = result.prepared.X_test
    turnout = model.predict_turnout(X)
    uplift = model.predict_uplift(X, turnout)
    times: dict[str, list[float]] = {"score": [], "row": [], "batch": [], "every": []}
    for _ in range(repeats):
        for key, run in (
            ("score", lambda: model.score_features(X)),
            ("row", lambda: top_reasons(model, X, uplift, turnout, TOP_K, dedupe=False)),
            ("batch", lambda: top_reasons(model, X, uplift, turnout, TOP_K, dedupe=True)),
            ("every", lambda: [model.explain(X, a.label, turnout) for a in model.arms]),
        ):
            started = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - started)
    return {key: rate(len(X), t) for key, t in times.items()}


def row(trees: int, leaves: int, result: FitResult, speed: dict[str, float], baseline: bool) -> str:
    model = result.model
    arms = [a.label for a in model.arms]
    qini = {a: result.arm_metrics[a]["qini"] * 1000 for a in arms}
    refs = result.holdout["qini"].unstack("arm").loc[list(REFERENCES)] * 1000
    beats = all(qini[a] > refs[a].max() for a in GOAL_ARMS if a in qini)
    leaves_used = np.mean([t["num_leaves"] for t in model.uplift[arms[0]].dump_model()["tree_info"]])
    name = f"{trees} x {leaves}" + (" (config)" if baseline else "")
    return (f"| {name} | {result.learner} | {model.uplift[arms[0]].num_trees()} | {leaves_used:.1f} | "
            + " | ".join(f"{qini[a]:.3f}" for a in arms)
            + f" | {'yes' if beats else 'no'} | {speed['score']:,.0f} | {speed['row']:,.0f} | "
              f"{speed['batch']:,.0f} | {speed['every']:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "ggl2008.yaml")
    parser.add_argument("--grid", type=parse_grid, default=None, help="TREESxLEAVES,... (default: 8 variants)")
    parser.add_argument("--quick", action="store_true", help=f"grid {QUICK_GRID}, 2 repeats")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    grid = args.grid or (QUICK_GRID if args.quick else FULL_GRID)
    repeats = 2 if args.quick else args.repeats

    config = load_config(args.config)
    frame = load_experiment(config)
    validate_experiment(frame, config)
    base = (config.uplift.final.n_estimators, config.uplift.final.num_leaves)
    load0 = os.getloadavg()
    rows = []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err) as bar:
        task = bar.add_task("tree sizes", total=len(grid))
        for trees, leaves in grid:
            bar.update(task, description=f"{trees} trees x {leaves} leaves")
            result = fit_and_evaluate(
                frame, variant(config, trees, leaves),
                progress=lambda step, t=trees, lv=leaves: bar.update(task, description=f"{t} x {lv}: {step}"))
            bar.update(task, description=f"{trees} x {leaves}: timing explanations")
            rows.append(row(trees, leaves, result, measure(result, repeats), (trees, leaves) == base))
            bar.advance(task)
    arms = list(config.arm_labels)
    n_test = len(result.prepared.X_test)
    refs = result.holdout["qini"].unstack("arm").loc[list(REFERENCES)] * 1000
    load1 = os.getloadavg()
    cmd = "python bench/tree_size_bench.py" + (" --quick" if args.quick else "")
    out = [
        f"## Tree size vs explanation throughput and Qini on GGL (`{cmd}`)\n",
        f"Final uplift models (`uplift.final` of {args.config.name}: trees x max leaves) refitted with "
        f"`training.fit.fit_and_evaluate`; Qini x1000 of the selected learner on the grouped hold-out; "
        f"throughput on the {n_test:,} hold-out voters, median of {repeats}. \"Beats refs\": Qini above both "
        f"the plain T-learner and turnout-closest-to-0.5 for {' and '.join(GOAL_ARMS)}.\n",
        "| trees x leaves | learner | trees per arm | mean leaves | "
        + " | ".join(f"Qini {a}" for a in arms)
        + " | beats refs | scored/s | top-5 best arm, per voter /s | top-5 best arm, batch /s"
          " | every arm, per voter /s |",
        "|---|---|---:|---:|" + "---:|" * len(arms) + "---|---:|---:|---:|---:|",
        *rows,
        "| references (same split) | | | | " + " | ".join(
            " / ".join(f"{refs.loc[r, a]:.3f}" for r in REFERENCES) for a in arms) + " | | | | | |",
        f"\nReferences row: hold-out Qini x1000 of {' / '.join(REFERENCES)} (plain T-learner with default "
        "LightGBM / turnout closest to 0.5); they do not depend on the final models' size.",
        f"\nMachine: {os.cpu_count()} cores, LightGBM threads {os.environ['OMP_NUM_THREADS']} "
        f"(training: PERSUADE_THREADS={os.environ.get('PERSUADE_THREADS', '2')}); load average "
        f"{load0[0]:.1f} at start, {load1[0]:.1f} at the end.\n",
    ]
    print("\n".join(out))


if __name__ == "__main__":
    main()
