"""Batch-scoring benchmark: the local engine, batch explanations and the Spark engine.

Measures, in one run, on a GGL-shaped synthetic voter file
(:mod:`features.synthetic_voterfile`) and a registered GGL model:

1. **Local engine without explanations** on ``--rows`` voters (10 million): rows/s and
   peak RSS of ``serving.batch.score_file`` (parquet in, parquet out, streamed in
   chunks), with and without scoring each distinct feature vector once, against the
   baseline of calling the underlying LightGBM boosters' ``predict`` on the same rows
   already in memory as a float matrix. Goals: peak RSS < 2 GB, >= 60% of the baseline.
2. **Top-5 explanations** on ``--explain-rows`` voters: the local engine with
   ``explain=5`` end to end (read, score, explain, write) against
   ``shap.TreeExplainer(booster).shap_values`` alone on the same rows in memory, each
   row explained for the same arm (its highest uplift). Goal: not slower than shap.
3. **Spark** ``local[2]`` against the local engine on ``--spark-rows`` voters (1 million).

Timings are medians of ``--repeats`` runs, baseline and engine alternating in the same
process; peak RSS is measured in a fresh child process per engine, so one run's memory
does not hide in another's. Tables are printed as markdown on stdout.

Usage (train and promote a GGL model into a store first)::

    export PERSUADE_HOME=/tmp/persuade-ggl
    .venv/bin/persuade train --config configs/ggl2008.yaml && .venv/bin/persuade promote --name persuade-ggl2008
    .venv/bin/python bench/score_bench.py            # 10M / 1M / 1M rows, 3 repeats
    .venv/bin/python bench/score_bench.py --quick    # 1M / 200k / 200k rows, 2 repeats

LightGBM threads follow ``PERSUADE_THREADS`` (default 2) through ``OMP_NUM_THREADS``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("PERSUADE_THREADS", "2"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from features.synthetic_voterfile import write_voter_file  # noqa: E402
from serving.batch import distinct_rows, score_file, top_reasons  # noqa: E402
from serving.bundle import ScoringModel  # noqa: E402

err = Console(stderr=True)
TOP_K = 5
RSS_GOAL_MB = 2048
THROUGHPUT_GOAL = 0.60


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux: VmHWM, which starts afresh at exec; ru_maxrss would
    carry over the parent's peak into a child process."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def progress(label: str) -> Progress:
    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=err, transient=True)


def with_rows_progress(label: str, total: int, run: Callable[[Callable[[int], None]], object]) -> float:
    """Run ``run(on_chunk)`` under a rows/s progress bar; return its wall time."""
    with progress(label) as bar:
        task = bar.add_task(label, total=total, rate="")
        started = time.perf_counter()

        def advance(n: int) -> None:
            bar.advance(task, n)
            rate = bar.tasks[0].completed / max(time.perf_counter() - started, 1e-9)
            bar.update(task, rate=f"{rate:,.0f} rows/s")

        run(advance)
        return time.perf_counter() - started


def voter_file(workdir: Path, n: int, seed: int) -> Path:
    path = workdir / f"voters_{n}_{seed}.parquet"
    if not path.exists():
        with_rows_progress(f"writing {n:,} synthetic voters", n,
                           lambda advance: write_voter_file(path, n, seed=seed, on_chunk=advance))
    return path


def features_in_memory(model: ScoringModel, path: Path) -> pd.DataFrame:
    return model.transform(pd.read_parquet(path, columns=model.input_features))


def predict_in_memory(model: ScoringModel, X: np.ndarray) -> None:
    """The baseline: the underlying boosters' predict on a float matrix already in memory.

    The uplift boosters get the (calibrated) turnout score as their last column when the
    model uses it, as the engine gives it to them.
    """
    turnout = model.predict_turnout(X)
    Xu = np.column_stack([X, turnout]) if model.turnout_score_feature else X
    for arm in model.arms:
        model.uplift[arm.label].predict(Xu)


# -- child processes: peak RSS of one engine run --------------------------------------------
def child(kind: str, model_dir: Path, path: Path, out: Path) -> None:
    model = ScoringModel.load(model_dir)
    started = time.perf_counter()
    if kind == "predict":
        predict_in_memory(model, features_in_memory(model, path).to_numpy(np.float64))
    else:
        score_file(model, path, out, dedupe=(kind == "engine"))
    print(json.dumps({"seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb()}))


def child_rss(kind: str, model_dir: Path, path: Path, workdir: Path) -> float:
    err.print(f"peak RSS: {kind} in a child process ...")
    proc = subprocess.run([sys.executable, __file__, "--child", kind, "--model-dir", str(model_dir),
                           "--input", str(path), "--out", str(workdir / f"child_{kind}.parquet")],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"]


# -- sections ------------------------------------------------------------------------------
def local_section(model: ScoringModel, model_dir: Path, workdir: Path, rows: int, repeats: int) -> str:
    path = voter_file(workdir, rows, seed=0)
    err.print(f"loading {rows:,} voters' features into memory for the baseline ...")
    frame = features_in_memory(model, path)
    distinct = distinct_rows(frame.iloc[:200_000])
    n_distinct = len(distinct[0]) if distinct is not None else min(rows, 200_000)
    X = frame.to_numpy(np.float64)
    del frame
    times: dict[str, list[float]] = {"predict": [], "engine": [], "engine_rowwise": []}
    out = workdir / "scores.parquet"
    for r in range(repeats):
        err.print(f"repeat {r + 1}/{repeats}")
        times["predict"].append(timed(lambda: predict_in_memory(model, X)))
        times["engine"].append(with_rows_progress(
            "local engine", rows, lambda advance: score_file(model, path, out, on_chunk=advance)))
        times["engine_rowwise"].append(with_rows_progress(
            "local engine (dedupe off)", rows,
            lambda advance: score_file(model, path, out, on_chunk=advance, dedupe=False)))
    rss = {kind: child_rss(kind, model_dir, path, workdir) for kind in ("predict", "engine", "engine_rowwise")}
    med = {k: statistics.median(v) for k, v in times.items()}
    base = rows / med["predict"]
    labels = {
        "predict": "LightGBM `predict` on the rows in memory (baseline)",
        "engine": "local engine `score_file` (default: each distinct feature vector once)",
        "engine_rowwise": "local engine `score_file(dedupe=False)` (every row through LightGBM)",
    }
    lines = [f"### Local engine, no explanations: {rows:,} voters, chunks of 200,000\n",
             "| run | median s | rows/s | vs baseline | peak RSS (MB, own process) |",
             "|---|---:|---:|---:|---:|"]
    for kind, label in labels.items():
        rate = rows / med[kind]
        lines.append(f"| {label} | {med[kind]:.2f} | {rate:,.0f} | {rate / base:.2f}x | {rss[kind]:,.0f} |")
    for kind in ("engine", "engine_rowwise"):
        ratio = (rows / med[kind]) / base
        lines.append(f"\n- {labels[kind]}: peak RSS {rss[kind]:,.0f} MB "
                     f"({'meets' if rss[kind] < RSS_GOAL_MB else 'MISSES'} < {RSS_GOAL_MB} MB), "
                     f"throughput {ratio:.0%} of the baseline "
                     f"({'meets' if ratio >= THROUGHPUT_GOAL else 'MISSES'} >= {THROUGHPUT_GOAL:.0%}).")
    lines.append(f"- distinct feature vectors in the first chunk of 200,000 voters: {n_distinct:,}")
    lines.append(f"- all runs (s): {json.dumps({k: [round(t, 2) for t in v] for k, v in times.items()})}")
    return "\n".join(lines) + "\n"


def shap_top_arm(model: ScoringModel, X: pd.DataFrame, arm_of_row: np.ndarray, turnout: np.ndarray,
                 explainers: dict) -> dict[str, np.ndarray]:
    """shap.TreeExplainer values for every row, for the arm the engine explains for it."""
    out = {}
    for arm in model.arms:
        rows = np.flatnonzero(arm_of_row == arm.label)
        if rows.size:
            Xa = model.uplift_inputs(X.iloc[rows], turnout[rows])
            out[arm.label] = np.asarray(explainers[arm.label].shap_values(Xa))
    return out


def explain_section(model: ScoringModel, workdir: Path, rows: int, repeats: int) -> str:
    import shap

    path = voter_file(workdir, rows, seed=1)
    X = features_in_memory(model, path)
    turnout = model.predict_turnout(X)
    uplift = model.predict_uplift(X, turnout)
    arm_of_row = np.array([a.label for a in model.arms], dtype=object)[uplift.argmax(axis=1)]
    explainers = {a.label: shap.TreeExplainer(model.uplift[a.label]) for a in model.arms}
    out = workdir / "explained.parquet"
    times: dict[str, list[float]] = {"shap": [], "engine": [], "engine_rowwise": []}
    for r in range(repeats):
        err.print(f"repeat {r + 1}/{repeats}")
        times["shap"].append(timed(lambda: shap_top_arm(model, X, arm_of_row, turnout, explainers)))
        times["engine"].append(with_rows_progress(
            f"local engine, top {TOP_K} reasons", rows,
            lambda advance: score_file(model, path, out, on_chunk=advance, explain=TOP_K)))
        times["engine_rowwise"].append(with_rows_progress(
            f"local engine, top {TOP_K} reasons (dedupe off)", rows,
            lambda advance: score_file(model, path, out, on_chunk=advance, explain=TOP_K, dedupe=False)))
    # Same numbers: the engine's reasons, put back in feature order, are shap's values.
    names = model.feature_names
    ours = top_reasons(model, X, uplift, turnout, len(names))
    position = {name: i for i, name in enumerate(names)}
    full = np.zeros((rows, len(names)))
    for j in range(len(names)):
        cols = ours[f"reason_{j + 1}"].astype(str).map(position).to_numpy()
        full[np.arange(rows), cols] = ours[f"reason_{j + 1}_contribution"].to_numpy()
    gap = max(float(np.abs(full[arm_of_row == arm] - phi[:, :len(names)]).max())
              for arm, phi in shap_top_arm(model, X, arm_of_row, turnout, explainers).items())
    med = {k: statistics.median(v) for k, v in times.items()}
    base = rows / med["shap"]
    labels = {
        "shap": "`shap.TreeExplainer(booster).shap_values` alone, rows in memory (baseline)",
        "engine": f"local engine `score_file(explain={TOP_K})`: read, score, explain, write",
        "engine_rowwise": f"local engine `score_file(explain={TOP_K}, dedupe=False)`",
    }
    lines = [f"### Top-{TOP_K} explanations: {rows:,} voters, each explained for its highest-uplift arm\n",
             "| run | median s | voters explained/s | vs shap |", "|---|---:|---:|---:|"]
    for kind, label in labels.items():
        rate = rows / med[kind]
        lines.append(f"| {label} | {med[kind]:.2f} | {rate:,.0f} | {rate / base:.2f}x |")
    for kind in ("engine", "engine_rowwise"):
        ratio = (rows / med[kind]) / base
        lines.append(f"\n- {labels[kind]}: {ratio:.2f}x shap's rate "
                     f"({'meets' if ratio >= 1.0 else 'MISSES'} the goal: not slower than shap).")
    lines.append(f"- largest |engine contribution - shap value| over all rows and features: {gap:.2e}")
    lines.append(f"- all runs (s): {json.dumps({k: [round(t, 2) for t in v] for k, v in times.items()})}")
    return "\n".join(lines) + "\n"


def spark_section(model: ScoringModel, workdir: Path, rows: int, repeats: int) -> str:
    from serving.spark import score_dataset, spark_session

    path = voter_file(workdir, rows, seed=2)
    started = time.perf_counter()
    spark = spark_session("local[2]")
    startup = time.perf_counter() - started
    local_out, spark_out = workdir / "local.parquet", workdir / "spark.parquet"
    times: dict[str, list[float]] = {"local": [], "spark": []}
    try:
        cold = with_rows_progress("spark local[2] (first run)", rows, lambda advance: score_dataset(
            model, path, spark_out, spark=spark, on_chunk=advance))
        for r in range(repeats):
            err.print(f"repeat {r + 1}/{repeats}")
            times["local"].append(with_rows_progress(
                "local engine", rows, lambda advance: score_file(model, path, local_out, on_chunk=advance)))
            times["spark"].append(with_rows_progress(
                "spark local[2]", rows, lambda advance: score_dataset(model, path, spark_out, spark=spark,
                                                                      on_chunk=advance)))
    finally:
        spark.stop()
    a = pd.read_parquet(local_out).sort_values("voter_id").reset_index(drop=True)
    b = pd.read_parquet(spark_out).sort_values("voter_id").reset_index(drop=True)
    numeric = [c for c in a.columns if pd.api.types.is_float_dtype(a[c])]
    gap = float(np.abs(a[numeric].to_numpy() - b[numeric].to_numpy()).max())
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [f"### Spark `local[2]` against the local engine: {rows:,} voters\n",
             "| engine | median s | rows/s | vs local engine |", "|---|---:|---:|---:|"]
    for kind, label in (("local", "local engine `score_file`"), ("spark", "Spark `score_dataset`, local[2], warm")):
        lines.append(f"| {label} | {med[kind]:.2f} | {rows / med[kind]:,.0f} | {med['local'] / med[kind]:.2f}x |")
    lines.append(f"\n- Spark session start: {startup:.1f} s; first (cold) Spark run: {cold:.1f} s "
                 "(Python workers start, model broadcast); not in the medians.")
    lines.append(f"- largest |Spark - local| over all score columns: {gap:.1e}; same columns: "
                 f"{list(a.columns) == list(b.columns)}")
    lines.append(f"- all runs (s): {json.dumps({k: [round(t, 2) for t in v] for k, v in times.items()})}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/persuade-ggl2008@champion", help="GGL model URI or folder.")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--explain-rows", type=int, default=1_000_000)
    parser.add_argument("--spark-rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1M / 200k / 200k rows, 2 repeats.")
    parser.add_argument("--no-spark", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None, help="Keep voter files here (reused).")
    parser.add_argument("--child", choices=["predict", "engine", "engine_rowwise"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.model_dir, args.input, args.out)
        return
    if args.quick:
        args.rows, args.explain_rows, args.spark_rows, args.repeats = 1_000_000, 200_000, 200_000, 2

    from serving.registry import load_scoring_model
    from serving.store import use_store

    with tempfile.TemporaryDirectory(prefix="persuade-score-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        use_store()
        model, ref = load_scoring_model(args.model, dst=workdir / "model")
        root = Path(args.model) if Path(args.model).exists() else workdir / "model"
        model_dir = next(root.rglob("manifest.json")).parent  # the bundle, for the child processes
        load0 = os.getloadavg()
        cmd = "python bench/score_bench.py" + (" --quick" if args.quick else "")
        out = [f"## Batch scoring (`{cmd}`)\n",
               f"- model: {ref.name or ref.uri} v{ref.version or '-'}: turnout {model.turnout.num_trees()} trees, "
               f"uplift {', '.join(f'{a.label} {model.uplift[a.label].num_trees()}' for a in model.arms)} trees; "
               f"features {model.feature_names}",
               f"- machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
               f"LightGBM threads (OMP_NUM_THREADS) {os.environ['OMP_NUM_THREADS']}; "
               f"load average at start {load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f}\n"]
        out.append(local_section(model, model_dir, workdir, args.rows, args.repeats))
        out.append(explain_section(model, workdir, args.explain_rows, args.repeats))
        if not args.no_spark:
            out.append(spark_section(model, workdir, args.spark_rows, args.repeats))
        load1 = os.getloadavg()
        out.append(f"Load average at the end: {load1[0]:.1f} / {load1[1]:.1f} / {load1[2]:.1f} "
                   f"(on {os.cpu_count()} cores; above {os.cpu_count()} means other work shared the machine).\n")
        rows_meta = pq.ParquetFile(voter_file(workdir, args.rows, seed=0)).metadata
        out.append(f"Voter file: {rows_meta.num_rows:,} rows in {rows_meta.num_row_groups} row groups, "
                   f"{sum(rows_meta.row_group(i).total_byte_size for i in range(rows_meta.num_row_groups)) / 1e6:,.0f}"
                   " MB uncompressed.\n")
        print("\n".join(out))


if __name__ == "__main__":
    main()
