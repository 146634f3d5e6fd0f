"""The balance and leakage check (``features/balance.py``): its time on GGL, and how often it refuses.

1. **Time on GGL 2008** (275,141 voters, 8 features, 4 arms, 8,000 clusters): the check
   alone (``check_balance``), median wall and CPU time of ``--repeats`` runs, against the
   rest of ``validate_experiment`` (``balance.enabled: false``) in the same run.
2. **Refusals on randomized data** (the null): surveys randomized by household (``tests/
   survey_frames.py``: a support scale, 5 pre-treatment features) of ``--sizes``
   respondents, ``--reps`` seeds each: the share refused (should be at most about
   2 x ``balance.p_value``: the per-feature and the classifier tests each hold that level),
   the share whose classifier p-value is below 0.05 (at most 0.05: its folds' tests are
   combined by Bonferroni), and the classifier's mean AUC.
3. **Detection**: the same surveys with a post-treatment column (``conversation``: 1 for
   70% of the canvassed, never in control) and with a leak in the spread only (``spread``:
   same mean, three times the spread when canvassed): the share refused by name.

Command (project root; about 2 minutes on a quiet 2-core machine)::

    PERSUADE_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/balance_bench.py

Tables are printed as markdown on stdout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from survey_frames import FEATURES, survey_config, survey_frame  # noqa: E402

from features.balance import check_balance  # noqa: E402
from features.config import RunConfig, load_config  # noqa: E402
from features.schema import validate_experiment  # noqa: E402
from features.tables import load_experiment  # noqa: E402


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def ggl_time(repeats: int) -> pd.DataFrame:
    config = load_config(ROOT / "configs" / "ggl2008.yaml")
    frame = load_experiment(config)
    off = config.model_copy(update={"balance": config.balance.model_copy(update={"enabled": False})})
    rows = []
    for name, fn in (("check_balance", lambda: check_balance(frame, config)),
                     ("validate_experiment without it", lambda: validate_experiment(frame, off))):
        runs = [_timed(fn) for _ in range(repeats)]
        rows.append({"step": name, "rows": len(frame), "wall_s_median": statistics.median(r[0] for r in runs),
                     "cpu_s_median": statistics.median(r[1] for r in runs)})
    table = pd.DataFrame(rows)
    table["cpu_ratio"] = table.cpu_s_median / table.cpu_s_median.iloc[1]
    return table


def refusals(sizes: list[int], reps: int) -> pd.DataFrame:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig.model_validate(survey_config(Path(tmp) / "unused.parquet"))
        for n in sizes:
            for extra in (None, "conversation", "spread"):
                cfg = config.model_copy(update={"features": [*FEATURES, extra] if extra else list(FEATURES)})
                checks = []
                for seed in range(reps):
                    frame = survey_frame(n, seed=1000 + seed)
                    frame["treatment"] = np.where(frame.treatment == 1, "canvass", "no canvass")
                    checks.append(check_balance(frame, cfg))
                rows.append({
                    "respondents": n, "added feature": extra or "(none: randomized)", "seeds": reps,
                    "refused": np.mean([bool(c.refused) for c in checks]),
                    "refused by its name": np.mean([extra in c.refused for c in checks]) if extra else np.nan,
                    "refused it alone": np.mean([set(c.refused) == {extra} for c in checks]) if extra else np.nan,
                    "classifier p<0.05": np.mean([c.auc_p_value < 0.05 for c in checks]),
                    "mean AUC": np.mean([c.auc for c in checks]),
                    "median s": statistics.median(c.seconds for c in checks),
                })
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 5000])
    parser.add_argument("--reps", type=int, default=100)
    args = parser.parse_args()
    print("## Balance check on GGL 2008\n")
    print(ggl_time(args.repeats).to_markdown(index=False, floatfmt=".2f"))
    print("\n## Refusals on randomized surveys, and leaks caught\n")
    print(refusals(args.sizes, args.reps).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
