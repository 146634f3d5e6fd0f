"""The model the service is serving, and how it is replaced without downtime.

:class:`ModelHolder` loads a registered model by URI (``models:/name@alias`` by default),
checks it on a small synthetic segment (the *smoke check*), and publishes it as one
immutable :class:`ServedModel`. A request takes the current ``ServedModel`` once and
uses it to the end, so a swap never mixes two models in one response.

When the alias moves (found by polling, or on ``POST /admin/reload``) the new version is
loaded and smoke-checked beside the old one, then swapped in with a single assignment.
If it fails to load or fails the check, the old model keeps serving, and ``/model`` and
the log say which version failed and why; that version is not retried until the alias
moves again or a reload is forced.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from serving.bundle import ScoringModel
from serving.registry import ModelRef, load_scoring_model, resolve
from serving.scoring import SegmentScorer, probe_segment
from serving.store import use_store

logger = logging.getLogger("persuade.serving")

DEFAULT_MODEL_URI = "models:/persuade-ggl2008@champion"
SMOKE_TOLERANCE = 1e-6


class SmokeCheckError(RuntimeError):
    """A loaded model gives unusable scores or explanations."""


@dataclass(frozen=True)
class ServedModel:
    """One loaded, checked model and its scorer (never mutated after publishing)."""

    model: ScoringModel
    ref: ModelRef
    scorer: SegmentScorer
    loaded_at: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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
    scores = scorer.score(batch, explain=True, top_k=len(model.feature_names))
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


class ModelHolder:
    """Load, check, publish and hot-swap the served model.

    Parameters
    ----------
    uri : str
        Model URI: ``models:/name@alias`` (followed when the alias moves), ``models:/name/N``,
        ``runs:/...`` or a local model folder.
    poll_seconds : float
        How often to check the alias (0 disables polling; ``POST /admin/reload`` still works).
    scorer_factory : callable
        ``(ScoringModel, ModelRef) -> SegmentScorer``; the place to add an eligibility rule.
    """

    def __init__(self, uri: str = DEFAULT_MODEL_URI, poll_seconds: float = 30.0,
                 scorer_factory: Callable[[ScoringModel, ModelRef], SegmentScorer] = SegmentScorer):
        self.uri = uri
        self.poll_seconds = poll_seconds
        self.scorer_factory = scorer_factory
        self._current: ServedModel | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = "loading"
        self._message = f"loading {uri}"
        self._checked_at: str | None = None
        self._failed_version: str | None = None

    # -- reading ---------------------------------------------------------------------
    @property
    def current(self) -> ServedModel | None:
        """The model to use for one request (take it once per request)."""
        return self._current

    @property
    def ready(self) -> bool:
        return self._current is not None

    def status(self) -> dict[str, Any]:
        """Reload state for ``/model``: ok, failed (old model kept) or loading."""
        return {"state": self._state, "source": self.uri, "checked_at": self._checked_at,
                "message": self._message, "failed_version": self._failed_version}

    # -- loading ---------------------------------------------------------------------
    def refresh(self, force: bool = False) -> dict[str, Any]:
        """Check the URI; load, check and swap in a new version if there is one.

        Parameters
        ----------
        force : bool
            Reload even if the version is unchanged or failed before.

        Returns
        -------
        dict
            :meth:`status` after the attempt, plus ``changed`` (a new version was swapped in).
        """
        with self._lock:
            changed = self._refresh(force)
        return {**self.status(), "changed": changed}

    def _refresh(self, force: bool) -> bool:
        self._checked_at = _now()
        old = self._current
        try:
            use_store()
            ref = resolve(self.uri) if self.uri.startswith("models:/") else None
        except Exception as exc:  # noqa: BLE001 - registry errors come in MLflow's own types
            return self._failed(None, f"cannot resolve {self.uri}: {_short(exc)}")
        version = ref.version if ref is not None else None
        if not force and old is not None and (ref is None or version == old.ref.version):
            self._state, self._failed_version = "ok", None
            self._message = f"serving version {old.ref.version or old.ref.uri}"
            return False
        if not force and version is not None and version == self._failed_version:
            return False
        target = ref.uri if ref is not None else self.uri
        try:
            with tempfile.TemporaryDirectory(prefix="persuade-serve-") as tmp:
                model, loaded_ref = load_scoring_model(target, dst=tmp)
            if ref is not None:
                loaded_ref = ref
            scorer = self.scorer_factory(model, loaded_ref)
            smoke_check(scorer)
        except SmokeCheckError as exc:
            return self._failed(version, f"version {version or target} failed its smoke check: {exc}")
        except Exception as exc:  # noqa: BLE001 - any load failure must leave the old model serving
            return self._failed(version, f"version {version or target} failed to load: {_short(exc)}")
        self._current = ServedModel(model, loaded_ref, scorer, _now())
        self._state, self._failed_version = "ok", None
        label = loaded_ref.version or loaded_ref.uri
        was = None if old is None else old.ref.version or old.ref.uri
        self._message = (f"serving version {label}" if was is None
                         else f"reloaded version {label}" if was == label
                         else f"serving version {label} (was {was})")
        logger.info("model %s version %s loaded and checked; now serving it", loaded_ref.name, label)
        return True

    def _failed(self, version: str | None, message: str) -> bool:
        old = self._current
        self._failed_version = version
        if old is None:
            self._state, self._message = "loading", f"{message}; no model is loaded yet"
        else:
            self._state = "failed"
            self._message = f"{message}; still serving version {old.ref.version or old.ref.uri}"
        logger.warning(self._message)
        return False

    # -- background polling ----------------------------------------------------------
    def start(self) -> None:
        """Load the first model and keep polling, in a daemon thread (returns at once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="persuade-model-holder", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        self.refresh()
        while self.poll_seconds > 0 or self._current is None:
            if self._stop.wait(self.poll_seconds if self.poll_seconds > 0 else 5.0):
                return
            self.refresh()


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def model_card(served: ServedModel, status: dict[str, Any]) -> dict[str, Any]:
    """``GET /model``: the served version, its arms, features, metrics and the reload state."""
    model, ref, meta = served.model, served.ref, served.model.metadata
    return {
        "name": ref.name or meta.get("name"),
        "version": ref.version,
        "run_id": ref.run_id or meta.get("run_id"),
        "uri": ref.uri,
        "loaded_at": served.loaded_at,
        "learner": meta.get("learner"),
        "outcome": dict(model.outcome),
        "has_turnout": model.has_turnout,
        "control_label": model.control_label,
        "arms": [{"label": a.label, "slug": a.slug, "channel": a.channel, "delivery": a.delivery, "cost": a.cost}
                 for a in model.arms],
        "input_features": list(model.input_features),
        "features": list(model.feature_names),
        "excluded": dict(meta.get("excluded", {})),
        "metrics": {k: _finite_or_none(v) for k, v in meta.get("metrics", {}).items()},
        "fingerprint": dict(meta.get("fingerprint", {})),
        "gates": {k: bool(v) for k, v in meta.get("gates", {}).items()},
        "reload": status,
    }


def _finite_or_none(value: Any) -> float | None:
    number = float(value)
    return number if np.isfinite(number) else None
