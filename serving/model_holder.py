"""The model the service is serving, and how it is replaced without downtime.

:class:`ModelHolder` follows a registered model by URI (``models:/name@alias`` by default),
proves a candidate version before it serves (:mod:`serving.model_check`: its files against
their checksums, a load and a smoke check in a child process, since a corrupt LightGBM file
can abort the process that loads it; then the same load and smoke check here), and
publishes it as one immutable :class:`ServedModel`. A request takes the current
``ServedModel`` once and uses it to the end, so a swap never mixes two models in one response.

When the alias moves (found by polling, or on ``POST /admin/reload``) the new version is
proven beside the old one, then swapped in with a single assignment. If it fails, the old
model keeps serving, and ``/model`` and the log say which version failed and why; that
version is not retried until the alias moves again or a reload is forced. A worker that
starts on a version that fails serves the newest earlier version of the registered model
that passes the same proof, or stays unready (``/readyz`` 503) without retrying what failed.
The first load happens before the worker takes requests (see :meth:`ModelHolder.start`).

Each candidate is downloaded into a ``persuade-serve-<pid>-*`` temp folder, removed on every
path; folders of processes that are gone (a worker killed mid-download) are removed at start.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from features.drift import no_reference_report
from features.settings import DEFAULT_RELOAD_SECONDS, Settings
from serving import heap
from serving.bundle import ScoringModel
from serving.model_check import CHECK_TIMEOUT, ModelCheckError, SmokeCheckError, prove_in_child, smoke_check
from serving.registry import ModelRef, download_bundle, earlier_versions, resolve
from serving.scoring import SegmentScorer
from serving.store import use_store

logger = logging.getLogger("persuade.serving")

TEMP_PREFIX = "persuade-serve-"
FALLBACK_VERSIONS = 10  # earlier versions a worker with nothing to serve tries, newest first
NO_MODEL = (f"no model is named: set {Settings.variable('model_uri')} (e.g. models:/<model_name>@champion), or start "
            "the service with persuade serve --model URI or --config RUN.yaml")

__all__ = ["ModelHolder", "ServedModel", "SmokeCheckError", "model_card", "smoke_check"]


@dataclass(frozen=True)
class ServedModel:
    """One loaded, checked model and its scorer (never mutated after publishing)."""

    model: ScoringModel
    ref: ModelRef
    scorer: SegmentScorer
    loaded_at: str


def _swap_message(served: ServedModel, old: ServedModel | None) -> str:
    label = served.ref.version or served.ref.uri
    was = None if old is None else old.ref.version or old.ref.uri
    return (f"serving version {label}" if was is None
            else f"reloaded version {label}" if was == label
            else f"serving version {label} (was {was})")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def remove_stale_folders(root: str | Path | None = None) -> int:
    """Remove the ``persuade-serve-<pid>-*`` temp folders of processes that no longer run; returns how many."""
    root = Path(root if root is not None else tempfile.gettempdir())
    removed = 0
    for folder in root.glob(f"{TEMP_PREFIX}*-*"):
        pid = folder.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if folder.is_dir() and pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class ModelHolder:
    """Prove, publish and hot-swap the served model.

    Parameters
    ----------
    uri : str or None
        Model URI: ``models:/name@alias`` (followed when the alias moves), ``models:/name/N``,
        ``runs:/...`` or a local model folder. None: nothing is loaded, and :meth:`status`
        says how to name a model (the service has no default model).
    poll_seconds : float
        How often to check the alias (0 disables polling; ``POST /admin/reload`` still works).
    scorer_factory : callable
        ``(ScoringModel, ModelRef) -> SegmentScorer``; the place to add an eligibility rule.
    check_timeout : float
        Seconds the child process proving a candidate may take.
    """

    def __init__(self, uri: str | None, poll_seconds: float = DEFAULT_RELOAD_SECONDS,
                 scorer_factory: Callable[[ScoringModel, ModelRef], SegmentScorer] = SegmentScorer,
                 check_timeout: float = CHECK_TIMEOUT):
        self.uri = uri
        self.poll_seconds = poll_seconds
        self.scorer_factory = scorer_factory
        self.check_timeout = check_timeout
        self._current: ServedModel | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # (state, message, failed version): one tuple, replaced whole and written before the
        # model it describes, so /model never pairs a new version with the old message
        self._reload: tuple[str, str, str | None] = ("loading", f"loading {uri}" if uri else NO_MODEL, None)
        self._checked_at: str | None = None
        self._alias_version: str | None = None  # the version the URI named at the last check
        self._rejected: dict[str, str] = {}  # version -> why it was refused (forgotten when the alias moves)

    # -- reading ---------------------------------------------------------------------
    @property
    def current(self) -> ServedModel | None:
        """The model to use for one request (take it once per request)."""
        return self._current

    @property
    def ready(self) -> bool:
        return self._current is not None

    def status(self) -> dict[str, Any]:
        """Reload state for ``/model``: ok, failed (an older model serves) or loading."""
        state, message, failed_version = self._reload
        return {"state": state, "source": self.uri, "checked_at": self._checked_at,
                "message": message, "failed_version": failed_version}

    # -- loading ---------------------------------------------------------------------
    def refresh(self, force: bool = False) -> dict[str, Any]:
        """Check the URI; prove and swap in a new version if there is one.

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
        if self.uri is None:
            return self._failed(None, NO_MODEL)
        try:
            use_store()
            ref = resolve(self.uri) if self.uri.startswith("models:/") else None
        except Exception as exc:  # noqa: BLE001 - registry errors come in MLflow's own types
            return self._failed(None, f"cannot resolve {self.uri}: {_short(exc)}")
        version = ref.version if ref is not None else None
        if version != self._alias_version:  # the alias moved: a version refused before may be tried again
            self._alias_version, self._rejected = version, {}
        if not force and old is not None and (ref is None or version == old.ref.version):
            self._reload = ("ok", f"serving version {old.ref.version or old.ref.uri}", None)
            return False
        if not force and version is not None and version in self._rejected:
            return False
        try:
            served = self._prove(ref.uri if ref is not None else self.uri, ref)
        except ModelCheckError as exc:
            message = _refusal(version or self.uri, exc)
            if version is not None:
                self._rejected[version] = message
            fallback = self._last_good(ref) if old is None and ref is not None else None
            if fallback is None:
                return self._failed(version, message)
            self._publish(fallback, ("failed", f"{message}; serving version {fallback.ref.version} instead, "
                                     "the newest earlier version that passed its checks", version))
            logger.warning(self._reload[1])
            return True
        self._publish(served, ("ok", _swap_message(served, old), None))
        return True

    def _prove(self, uri: str, ref: ModelRef | None) -> ServedModel:
        """Download, prove in a child process, load and smoke-check ``uri`` (raises ``ModelCheckError``)."""
        try:
            with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{os.getpid()}-") as tmp:
                bundle, loaded_ref = download_bundle(uri, dst=tmp)
                prove_in_child(bundle, timeout=self.check_timeout)
                model = ScoringModel.load(bundle)
            ref = ref if ref is not None else loaded_ref
            scorer = self.scorer_factory(model, ref)
            smoke_check(scorer)
        except ModelCheckError:
            raise
        except SmokeCheckError as exc:
            raise ModelCheckError(str(exc), smoke=True) from None
        except Exception as exc:  # noqa: BLE001 - any load failure must leave the old model serving
            raise ModelCheckError(_short(exc)) from None
        return ServedModel(model, ref, scorer, _now())

    def _last_good(self, ref: ModelRef) -> ServedModel | None:
        """The newest earlier version of ``ref``'s model that passes its proof (None: none of the last few)."""
        try:
            candidates = earlier_versions(ref)[:FALLBACK_VERSIONS]
        except Exception as exc:  # noqa: BLE001 - registry errors come in MLflow's own types
            logger.warning("cannot list the earlier versions of %s: %s", ref.name, _short(exc))
            return None
        for candidate in candidates:
            if candidate.version in self._rejected:
                continue
            try:
                return self._prove(candidate.uri, candidate)
            except ModelCheckError as exc:
                self._rejected[candidate.version] = _refusal(candidate.version, exc)
                logger.warning(self._rejected[candidate.version])
        return None

    def _publish(self, served: ServedModel, reload: tuple[str, str, str | None]) -> None:
        self._reload = reload  # first the status, then the model it describes
        self._current = served
        heap.settle()  # the new model is never walked by the collector again (serving/heap.py)
        logger.info("model %s version %s loaded and checked; now serving it", served.ref.name,
                    served.ref.version or served.ref.uri)

    def _failed(self, version: str | None, message: str) -> bool:
        current = self._current
        if current is None:
            tried = [v for v in self._rejected if v != version]
            either = f"; earlier versions {', '.join(tried)} failed too" if tried else ""
            self._reload = ("loading", f"{message}{either}; no model is loaded yet", version)
        else:
            label = current.ref.version or current.ref.uri
            self._reload = ("failed", f"{message}; still serving version {label}", version)
        logger.warning(self._reload[1])
        return False

    # -- background polling ----------------------------------------------------------
    def start(self, wait: bool = True) -> None:
        """Load the first model, then keep polling in a daemon thread.

        With ``wait`` the first attempt (fallback included) runs here, so a service worker
        does not take requests before it has a model or knows it has none: while a worker
        that was killed restarts, the other workers take its connections. Without a URI
        there is nothing to poll: the status says so once, and no thread is started.
        """
        if self._thread is not None:
            return
        if self.uri is None:
            self.refresh()
            return
        removed = remove_stale_folders()
        if removed:
            logger.info("removed %d temp folder(s) left by stopped processes", removed)
        if wait:
            self.refresh()
        self._thread = threading.Thread(target=self._run, args=(not wait,), name="persuade-model-holder",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self, first: bool) -> None:
        if first:
            self.refresh()
        while self.poll_seconds > 0 or self._current is None:
            if self._stop.wait(self.poll_seconds if self.poll_seconds > 0 else 5.0):
                return
            self.refresh()


def _refusal(label: str, exc: ModelCheckError) -> str:
    what = "failed its smoke check" if exc.smoke else "failed to load"
    return f"version {label} {what}: {exc}"


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def model_card(served: ServedModel, status: dict[str, Any]) -> dict[str, Any]:
    """``GET /model``: the served version, its arms, features, metrics, drift and the reload state."""
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
        "drift": drift_card(served),
    }


def drift_card(served: ServedModel) -> dict[str, Any]:
    """The voters this worker scored with ``served`` since it was loaded, against the training population
    (:meth:`features.drift.DriftCounts.report`; a model without a drift reference says so)."""
    drift = getattr(served.scorer, "drift", None)
    return {**(drift.report() if drift is not None else no_reference_report()), "since": served.loaded_at}


def _finite_or_none(value: Any) -> float | None:
    number = float(value)
    return number if np.isfinite(number) else None
