"""Do the test champion's fixed choices still equal what its whole grid chooses?

``tests/conftest.py`` trains the synthetic champion with two of its grid's choices fixed
(``CHAMPION_CHOICES``: the treated outcome models' leaves and whether the final models see
the turnout score) because choosing them costs a second nested cross-fit. That is sound
only while the whole grid makes the same choices and so serves the same model. A change
to the learners, the features or the selection can move them; this script says whether it
did.

It trains the 50,000-voter campaign of the tests (seed 1) twice with the pipeline
``persuade train`` runs (``training.fit.fit_and_evaluate``, one grouped-CV repeat as the
fixture): with the whole grid, and with ``CHAMPION_CHOICES`` fixed. It prints both runs'
choices and the largest difference between their served uplift on the hold-out, and exits
1 when the choices differ.

Command (project root; about 10 minutes on two threads)::

    PERSUADE_THREADS=2 OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/champion_choices_bench.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import CHAMPION_CHOICES, SYNTHETIC_N  # noqa: E402

from features.config import load_config  # noqa: E402
from features.synthetic import make_campaign  # noqa: E402
from features.tables import load_experiment  # noqa: E402
from training.fit import SERVED, fit_and_evaluate  # noqa: E402


def fit(folder: Path, label: str, fixed: dict | None):
    """Fit the campaign's config with one CV repeat, and ``fixed`` choices if given."""
    raw = yaml.safe_load((folder / "synthetic_voted.yaml").read_text())
    raw["split"]["cv_repeats"] = 1
    raw["uplift"].update(fixed or {})
    path = folder / f"{label}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    config = load_config(path)
    started = time.perf_counter()
    result = fit_and_evaluate(load_experiment(config), config,
                              progress=lambda s: print(f"  {label} {time.perf_counter() - started:5.0f}s {s}",
                                                       file=sys.stderr, flush=True))
    return result, time.perf_counter() - started


def choices(result) -> dict:
    return {"nuisance_treated_leaves": result.nuisance_treated_leaves,
            "turnout_score_feature": result.turnout_score_feature, "learner": result.learner,
            "final_size": str(result.final_size), "served": dict(result.served)}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="persuade-champion-") as tmp:
        folder = Path(tmp)
        make_campaign(SYNTHETIC_N, seed=1).write(folder, outcome="voted")
        whole, whole_s = fit(folder, "whole grid", None)
        fixed, fixed_s = fit(folder, "fixed choices", CHAMPION_CHOICES)
    chosen, kept = choices(whole), choices(fixed)
    gap = max(float(np.max(np.abs(whole.test_scores[SERVED][arm].to_numpy()
                                  - fixed.test_scores[SERVED][arm].to_numpy())))
              for arm in whole.served)
    print("| choice | whole grid | CHAMPION_CHOICES fixed |\n|---|---|---|")
    for key in chosen:
        print(f"| {key} | {chosen[key]} | {kept[key]} |")
    print(f"\ntraining: whole grid {whole_s:.0f} s, fixed {fixed_s:.0f} s; largest difference of the served "
          f"uplift on the hold-out: {gap:.3g}")
    same = chosen == kept
    print("the fixed choices are the whole grid's" if same
          else "the whole grid now chooses otherwise: update CHAMPION_CHOICES in tests/conftest.py")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
