"""Provenance of a scored list or a contact plan: which model, input and consent produced it (no personal data).

``persuade score`` writes a :class:`ScoreProvenance` beside its output; ``persuade plan`` stores
:func:`plan_provenance` in the plan file. The list report reads both.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving.bundle import ScoringModel
from serving.registry import ModelRef


@dataclass
class ScoreProvenance:
    """Which model, input and consent table produced a scored list (no personal data).

    Written by ``persuade score`` as ``<output>.provenance.json``. ``drift``: the scored voters
    against the training population (:meth:`features.drift.DriftCounts.report` with each
    column's bins; None when the list was scored on Spark or before drift was recorded).
    """

    model: dict[str, Any]
    input: str
    rows: int
    scored_at: str
    consent: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    drift: dict[str, Any] | None = None

    @staticmethod
    def path_for(scores: str | Path) -> Path:
        scores = Path(scores)
        return scores.with_name(scores.name + ".provenance.json")

    def write(self, scores: str | Path) -> Path:
        path = self.path_for(scores)
        path.write_text(json.dumps(asdict(self), indent=2, default=str))
        return path

    @classmethod
    def read(cls, scores: str | Path) -> ScoreProvenance | None:
        path = cls.path_for(scores)
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path.name}: not a scoring provenance file ({exc})") from None


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def training_facts(model: ScoringModel) -> dict[str, Any]:
    """What the model's metadata says about its training run (for provenance)."""
    meta = model.metadata or {}
    return {"run_id": meta.get("run_id"), "data_sha256": (meta.get("fingerprint") or {}).get("sha256"),
            "code_version": meta.get("code_version"), "learner": meta.get("learner")}


def score_provenance(ref: ModelRef, model: ScoringModel, input_path: str | Path, rows: int,
                     consent: dict[str, Any] | None = None, drift: dict[str, Any] | None = None) -> ScoreProvenance:
    """The provenance of a list scored now by ``model`` (``ref``) from ``input_path`` (``drift``: its report)."""
    return ScoreProvenance(model=ref.as_dict(), input=str(Path(input_path).resolve()), rows=int(rows),
                           scored_at=now_utc(), consent=consent, training=training_facts(model), drift=drift)


def plan_provenance(ref: ModelRef, model: ScoringModel, input_path: str | Path, costs_path: str | Path | None = None,
                    consent_path: str | Path | None = None,
                    consent: dict[str, Any] | None = None) -> dict[str, Any]:
    """The provenance of a contact plan made now (stored in the plan file by ``write_plan``).

    Parameters
    ----------
    ref : ModelRef
        The model version that planned (its ``uri`` lets the list report load it again).
    model : ScoringModel
    input_path : str or Path
        The voter file planned for (stored resolved: the list report re-reads it).
    costs_path, consent_path : str or Path, optional
        The costs file and consent table given to ``persuade plan``.
    consent : dict, optional
        What the consent layer applied (``features.consent.ConsentRules.describe``).

    Returns
    -------
    dict
        JSON-ready: ``model``, ``input``, ``costs``, ``consent``, ``consent_applied``,
        ``planned_at``, ``training`` (no personal data).
    """
    def resolved(path: str | Path | None) -> str | None:
        return str(Path(path).resolve()) if path is not None else None

    return {"model": ref.as_dict(), "input": resolved(input_path), "costs": resolved(costs_path),
            "consent": resolved(consent_path), "consent_applied": consent, "planned_at": now_utc(),
            "training": training_facts(model)}

