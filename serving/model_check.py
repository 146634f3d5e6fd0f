"""Proving a model before it serves: checksums, a load and a smoke check in a child process.

A corrupt LightGBM file can abort the process that loads it (one ``leaf_value`` of ``nan``
ends in ``[Fatal] Model format error`` and ``terminate called``): no ``except`` catches that.
:func:`prove_in_child` therefore loads a candidate bundle in a separate Python process
(``python -m serving.model_check <bundle or model folder>``), which

1. loads the model through the flavor (:func:`serving.flavor.load_model`), its files first
   checked against the bundle's checksums (:mod:`serving.bundle_checksums`),
2. runs :func:`smoke_check` on the probe segment (:func:`serving.scoring.probe_segment`),
3. compares the probe segment's scores with those recorded when the model was saved
   (``probe_scores.json``, :mod:`serving.probe_scores`, from the model in memory, so a
   bundle whose files do not hold the trained model is refused).

The child prints one result line; a child that dies (a signal, a non-zero exit without a
result) or hangs is a refusal too, with LightGBM's last ``[Fatal]`` line as the reason.
A passed proof is remembered by the bundle's checksums (:mod:`serving.proof_memory`), so
the same bytes are not proven twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from serving.flavor import bundle_path, load_model
from serving.model_ref import ModelRef
from serving.probe_scores import PROBE_SCORES, SmokeCheckError, check_probe_scores, record_probe_scores
from serving.proof_memory import is_recorded, proof_key, record
from serving.scoring import SegmentScorer, probe_segment
from serving.store import PROJECT_ROOT

__all__ = ["CHECK_TIMEOUT", "PROBE_SCORES", "ModelCheckError", "SmokeCheckError", "check_bundle",
           "prove_in_child", "record_probe_scores", "smoke_check"]

SMOKE_TOLERANCE = 1e-6  # reasons must add up to the uplift
CHECK_TIMEOUT = 180.0  # seconds a child may take (imports, load, smoke check)
RESULT = "persuade-model-check: "  # prefix of the child's result line on stdout


class ModelCheckError(RuntimeError):
    """A candidate model failed its proof; ``smoke`` tells a failed smoke check from a failed load."""

    def __init__(self, message: str, *, smoke: bool = False):
        super().__init__(message)
        self.smoke = smoke


def smoke_check(scorer: SegmentScorer) -> None:
    """Score and explain a probe segment; raise :class:`SmokeCheckError` if anything is off.

    Checked on :func:`~serving.scoring.probe_segment`: turnout is a probability (for a model
    that has a turnout model), every uplift is finite, every arm's reasons add up to its uplift
    (base value + all contributions, to 1e-6).
    """
    model = scorer.model
    if not model.arms:
        raise SmokeCheckError("the model has no arms")
    batch = probe_segment(model)
    scores = scorer.score(batch, explain=True, top_k=len(model.feature_names), record=False)  # not a voter: no drift
    turnout = scores.turnout
    if model.has_turnout and not (np.isfinite(turnout).all() and ((turnout >= 0) & (turnout <= 1)).all()):
        raise SmokeCheckError("turnout is not a probability on the smoke segment")
    if scores.uplift.shape != (len(batch), len(model.arms)) or not np.isfinite(scores.uplift).all():
        raise SmokeCheckError("uplift is not finite on the smoke segment")
    for j, arm in enumerate(scorer.arms):
        reasons = scores.reasons[arm]
        total = reasons.base_value + reasons.contribution.sum(axis=1)
        gap = float(np.max(np.abs(total - scores.uplift[:, j])))
        if not gap <= SMOKE_TOLERANCE:
            raise SmokeCheckError(f"arm {arm!r}: reasons do not add up to the uplift (gap {gap:.3g})")


def prove_in_child(bundle: str | Path, *, timeout: float = CHECK_TIMEOUT) -> None:
    """Prove the bundle at ``bundle`` in a child process (see the module docstring).

    Raises
    ------
    ModelCheckError
        The bundle failed a check, or the child died or hung (the message says which and why).

    Notes
    -----
    A bundle whose exact bytes passed before (its checksums verified now, the same
    LightGBM and Python) is not proven again: :mod:`serving.proof_memory`.
    """
    key = proof_key(bundle)  # the files verified once, before the child: the bytes it proves
    if key is not None and is_recorded(key):
        return
    env = {**os.environ, "PERSUADE_THREADS": "1", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    command = [sys.executable, "-m", "serving.model_check", str(Path(bundle).resolve())]
    try:
        done = subprocess.run(command, capture_output=True, text=True, errors="replace", env=env,
                              cwd=PROJECT_ROOT, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ModelCheckError(f"the check process did not finish within {timeout:.0f} s") from None
    lines = done.stdout.splitlines()
    result = next((json.loads(line[len(RESULT):]) for line in reversed(lines) if line.startswith(RESULT)), None)
    if result is not None and done.returncode == 0 and result.get("ok"):
        if key is not None:
            record(key)
        return
    if result is not None and not result.get("ok"):
        raise ModelCheckError(result.get("error", "unknown error"), smoke=result.get("stage") == "smoke")
    code = done.returncode
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    fatal = [line.strip() for line in [*lines, *done.stderr.splitlines()] if "[Fatal]" in line]
    reason = f" ({fatal[-1][:200]})" if fatal else ""
    raise ModelCheckError(f"the check process {how} while loading the model{reason}")


def check_bundle(bundle: str | Path) -> dict:
    """The child's work: checksums, load, smoke check, recorded probe scores. Never raises.

    ``bundle`` is a bundle folder or a local model folder; either is loaded through the
    flavor (:func:`serving.flavor.load_model`), which finds the bundle the same way.
    """
    stage = "load"
    try:
        model = load_model(str(bundle))  # checksums first
        stage = "smoke"
        smoke_check(SegmentScorer(model, ModelRef(None, None, None, str(bundle))))
        check_probe_scores(model, bundle_path(bundle))
    except Exception as exc:  # noqa: BLE001 - every failure is the answer, not a crash
        text = f"{exc}" if isinstance(exc, (SmokeCheckError, ValueError)) else f"{type(exc).__name__}: {exc}"
        return {"ok": False, "stage": stage, "error": " ".join(text.split())[:500]}
    return {"ok": True}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m serving.model_check BUNDLE_OR_MODEL_FOLDER", file=sys.stderr)
        return 2
    result = check_bundle(args[0])
    print(RESULT + json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
