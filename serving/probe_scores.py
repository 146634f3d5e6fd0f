"""The probe segment's scores: recorded when a model is saved, compared when it is proven.

:func:`record_probe_scores` runs in :func:`serving.flavor.save_model`, on the model as it
is in memory, and writes ``probe_scores.json`` into the bundle (before its checksums).
:func:`check_probe_scores` runs in the proof of :mod:`serving.model_check`: a bundle whose
files do not hold the trained model (two arm files swapped before logging, say) gives other
scores and is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from serving.bundle import ScoringModel
from serving.scoring import probe_segment

PROBE_SCORES = "probe_scores.json"
PROBE_TOLERANCE = 1e-9  # the probe's scores against those recorded at logging (a text round trip is exact)


class SmokeCheckError(RuntimeError):
    """A loaded model gives unusable scores or explanations."""


def probe_scores(model: ScoringModel) -> dict:
    """Turnout, uplift per arm and contact rate per channel of the probe segment (JSON-ready)."""
    X = model.transform(probe_segment(model).frame(), allow_missing=True)
    turnout = model.predict_turnout(X)
    uplift = model.predict_uplift(X, turnout)
    return {
        "turnout": turnout.tolist() if model.has_turnout else None,
        "uplift": {arm.label: uplift[:, j].tolist() for j, arm in enumerate(model.arms)},
        "contact_rate": {channel: np.asarray(p).tolist() for channel, p in model.predict_contact_rate(X).items()},
    }


def record_probe_scores(model: ScoringModel, folder: str | Path) -> Path:
    """Write the probe segment's scores of ``model`` (as trained, in memory) into the bundle at ``folder``."""
    path = Path(folder) / PROBE_SCORES
    path.write_text(json.dumps(probe_scores(model)))
    return path


def check_probe_scores(model: ScoringModel, folder: str | Path) -> bool:
    """Compare the loaded model's probe scores with those recorded when it was logged.

    Returns False when the bundle has no recorded scores (logged before they existed).

    Raises
    ------
    SmokeCheckError
        A score is not finite, or differs from the recorded one (names the arm or channel).
    """
    path = Path(folder) / PROBE_SCORES
    if not path.exists():
        return False
    recorded, actual = json.loads(path.read_text()), probe_scores(model)
    pairs = [("turnout", recorded.get("turnout"), actual["turnout"])]
    pairs += [(f"arm {arm!r}", recorded.get("uplift", {}).get(arm), got) for arm, got in actual["uplift"].items()]
    pairs += [(f"contact rate {channel!r}", recorded.get("contact_rate", {}).get(channel), got)
              for channel, got in actual["contact_rate"].items()]
    for what, expected, got in pairs:
        if got is None and expected is None:
            continue
        if expected is None or got is None or len(expected) != len(got):
            raise SmokeCheckError(f"{what}: the bundle does not match the probe scores recorded when it was logged")
        got, expected = np.asarray(got, dtype=float), np.asarray(expected, dtype=float)
        if not np.isfinite(got).all():
            raise SmokeCheckError(f"{what}: not finite on the probe segment")
        gap = float(np.max(np.abs(got - expected), initial=0.0))
        if not gap <= PROBE_TOLERANCE:
            raise SmokeCheckError(f"{what}: scores differ from those recorded when the model was logged "
                                  f"(gap {gap:.3g} on the probe segment)")
    return True
