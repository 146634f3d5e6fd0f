"""What drift counting adds to a ``POST /score`` request (``GET /model``'s drift, ``features/drift.py``).

The service counts every scored segment against the model's drift reference inside
``SegmentScorer.score``. Measured in process on the small synthetic model that
``bench/measure_bench.py`` trains (``train_small``: 10 raw features + 1 derived, one of them
categorical, 4 arms with a turnout model), for requests of 1 and 1,000 voters:

1. the counting alone (``SegmentScorer.count_drift``: ``DriftCounts.add`` of the service's
   float matrix, scores and raw columns), median of many calls;
2. ``SegmentScorer.score`` with counting on and off (``record``), calls interleaved, medians:
   the difference is the added time per request, and its share of the scoring step;
3. ``DriftCounts.add`` on a made-up reference of 60 numeric features and 5 scores, to show how
   the cost grows with the number of columns.

Usage::

    PERSUADE_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/drift_bench.py [--repeats 2000]

Timings are medians on a shared machine; compare numbers of one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from measure_bench import train_small  # noqa: E402 - the same small synthetic model

from features.drift import DriftCounts, DriftReference  # noqa: E402
from features.synthetic import make_campaign  # noqa: E402
from serving.model_ref import ModelRef  # noqa: E402
from serving.scoring import SegmentScorer  # noqa: E402


def median_us(call, repeats: int) -> float:
    """Median wall time of ``call()`` in microseconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def interleaved_us(calls: dict, repeats: int) -> dict[str, float]:
    """Median wall time in microseconds of each of ``calls``, run in turn so that load hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) * 1e6 for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2000, help="calls per measure (1,000-voter requests: a tenth)")
    args = parser.parse_args()
    model, seconds = train_small(4000, seed=3)
    print(f"small model trained in {seconds:.0f} s: {len(model.feature_names)} features, {len(model.arms)} arms")
    voters = make_campaign(3000, seed=11).voter_file
    scorer = SegmentScorer(model, ModelRef("bench", "1", None, "models:/bench/1"))
    results = {}
    for size in (1, 1000):
        repeats = args.repeats if size == 1 else max(args.repeats // 10, 20)
        batch = scorer.read(json.loads(voters.head(size).to_json(orient="records")))
        X = model.transform(batch.frame(), allow_missing=True)  # what SegmentScorer.score computes first
        Xu, turnout = scorer.ensembles.inputs(X)
        inputs = (batch, X, Xu, turnout, scorer.ensembles.uplift(Xu))
        add = median_us(lambda a=inputs: scorer.count_drift(*a), repeats)
        timed = interleaved_us({"on": lambda b=batch: scorer.score(b),
                                "off": lambda b=batch: scorer.score(b, record=False)}, repeats)
        results[f"{size} voter{'s' if size > 1 else ''}"] = {
            "count_drift (us)": round(add, 1), "score, counting (us)": round(timed["on"], 1),
            "score, not counting (us)": round(timed["off"], 1), "difference (us)": round(timed["on"] - timed["off"], 1),
            "count_drift / score": f"{add / timed['off']:.1%}"}
    rng = np.random.default_rng(0)
    wide = pd.DataFrame(rng.normal(size=(5000, 60)), columns=[f"f{i}" for i in range(60)])
    reference = DriftReference.fit(features=wide, scores=pd.DataFrame(rng.normal(size=(5000, 5)),
                                                                        columns=[f"s{i}" for i in range(5)]))
    counts = DriftCounts(reference)
    for size in (1, 1000):
        matrix, scores = wide.to_numpy()[:size], {f"s{i}": rng.normal(size=size) for i in range(5)}
        repeats = args.repeats if size == 1 else max(args.repeats // 10, 20)
        results.setdefault("60 features + 5 scores, DriftCounts.add (us)", {})[str(size)] = round(
            median_us(lambda m=matrix, s=scores: counts.add(m, s), repeats), 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
