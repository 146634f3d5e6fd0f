"""Score a segment of voters for the HTTP API: scores, best arm, rank, reasons, summary.

The path of one request (or of one adaptive batch of small requests) is::

    voters (JSON objects) --VoterReader--> VoterBatch --SegmentScorer.score--> SegmentScores
        --SegmentScorer.payload--> the ``POST /score`` response (plain dicts, then JSON)

Everything is vectorized over the segment. Eligibility is one optional step: an
:class:`EligibilityRule` marks arms a voter may not get (consent, do-not-contact); such
an arm never becomes the voter's ``best_arm`` and the response says why. Every segment scored
is counted against the model's drift reference (:mod:`features.drift`; ``GET /model``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from features.drift import DriftCounts
from serving.arms import ArmEnsembles
from serving.bundle import CONTROL_ARM, ArmInfo, ScoringModel, best_arms
from serving.model_ref import ModelRef
from serving.reasons import TopReasons, display_columns, reasons_records, top_reasons
from serving.voters import VoterBatch, VoterReader


@dataclass(frozen=True)
class Eligibility:
    """Which arms each voter may get, and why not.

    Attributes
    ----------
    allowed : ndarray of bool, shape (n, n_arms)
        Columns in the model's arm order.
    reason : ndarray of object, shape (n, n_arms)
        A reason code where ``allowed`` is False (None elsewhere).
    time_zone : ndarray of object, shape (n,), optional
        Each voter's local time zone (None: unknown), when the rule keeps quiet hours for
        some arm (see :func:`features.calling_hours.time_zone_text`).
    """

    allowed: np.ndarray
    reason: np.ndarray
    time_zone: np.ndarray | None = None

    def rows(self, start: int, stop: int) -> Eligibility:
        zones = None if self.time_zone is None else self.time_zone[start:stop]
        return Eligibility(self.allowed[start:stop], self.reason[start:stop], zones)

    @classmethod
    def concat(cls, parts: Sequence[Eligibility]) -> Eligibility:
        """The eligibility of consecutive parts' voters, in order (the inverse of :meth:`rows`)."""
        zones = None if any(p.time_zone is None for p in parts) else np.concatenate([p.time_zone for p in parts])
        return cls(np.concatenate([p.allowed for p in parts]), np.concatenate([p.reason for p in parts]), zones)


class EligibilityRule(Protocol):
    """Decides per voter and arm whether the arm may be used (e.g. consent rules)."""

    def __call__(self, voters: VoterBatch, arms: Sequence[ArmInfo]) -> Eligibility: ...


@dataclass(frozen=True)
class SegmentScores:
    """Scores of ``n`` voters (arrays; arms in the model's order)."""

    ids: np.ndarray
    turnout: np.ndarray
    uplift: np.ndarray
    best_arm: np.ndarray
    best_uplift: np.ndarray
    eligibility: Eligibility | None = None
    reasons: dict[str, TopReasons] | None = None
    values: list[list[Any]] | None = None  # display values of the model features (whole batch)
    offset: int = 0  # row of the first voter in ``values``
    warnings: list[list[str]] | None = None  # each voter's warning codes (serving.voters)

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, start: int, stop: int, explain: bool = True, top_k: int | None = None) -> SegmentScores:
        """Voters ``start:stop`` (one request of a batch), reasons kept only if ``explain``."""
        reasons = None
        if explain and self.reasons is not None:
            reasons = {arm: r.rows(start, stop, top_k) for arm, r in self.reasons.items()}
        return replace(
            self, ids=self.ids[start:stop], turnout=self.turnout[start:stop], uplift=self.uplift[start:stop],
            best_arm=self.best_arm[start:stop], best_uplift=self.best_uplift[start:stop],
            eligibility=self.eligibility.rows(start, stop) if self.eligibility is not None else None,
            reasons=reasons, values=self.values if reasons is not None else None, offset=self.offset + start,
            warnings=None if self.warnings is None else self.warnings[start:stop],
        )


class SegmentScorer:
    """Scores, reasons and the response payload of segments, for one loaded model.

    Parameters
    ----------
    model : ScoringModel
    ref : ModelRef
        The registered version being served (name, version, run id).
    eligibility : EligibilityRule, optional
        Marks arms a voter may not get; none means every arm is allowed.
    passthrough : sequence of str
        Request fields the eligibility rule needs besides the features (never logged).

    Attributes
    ----------
    drift : DriftCounts or None
        The voters scored so far per bin of the model's drift reference (None: the model has none).
    """

    def __init__(self, model: ScoringModel, ref: ModelRef, eligibility: EligibilityRule | None = None,
                 passthrough: Sequence[str] = ()):
        self.model = model
        self.ref = ref
        self.eligibility = eligibility
        self.reader = VoterReader(model, passthrough)
        self.arms = [a.label for a in model.arms]
        self.feature_names = list(model.feature_names)
        self.model_info = {"name": ref.name, "version": ref.version, "run_id": ref.run_id}
        self.ensembles = checked_ensembles(model)
        self.drift = DriftCounts(model.drift_reference) if model.drift_reference is not None else None
        self.score_columns = model.score_columns

    def read(self, voters: Sequence[Mapping[str, Any]]) -> VoterBatch:
        """Validated columns of ``voters`` (raises ``VoterError`` naming index and field)."""
        return self.reader.read(voters)

    def score(self, batch: VoterBatch, explain: bool = False, top_k: int = 5, record: bool = True) -> SegmentScores:
        """Turnout, uplift per arm, best arm and, if ``explain``, the top-k reasons of every arm.

        With ``record`` the voters are counted for drift (:attr:`drift`); a smoke check is not.
        """
        model, ensembles = self.model, self.ensembles
        if ensembles.takes_columns:  # straight to the float matrix: no frame (half a one-voter request's time)
            X = model.pipeline.transform_columns(batch.columns, len(batch), allow_missing=True)
        else:
            X = model.transform(batch.frame(), allow_missing=True)
        Xu, turnout = ensembles.inputs(X)
        uplift = ensembles.uplift(Xu)
        eligibility = self.eligibility(batch, model.arms) if self.eligibility is not None else None
        candidates = uplift if eligibility is None else np.where(eligibility.allowed, uplift, np.nan)
        best_arm, best_uplift = best_arms(candidates, self.arms)
        reasons = values = None
        if explain and len(batch):
            contributions = ensembles.contributions(Xu)
            reasons = {arm: top_reasons(c, top_k) for arm, c in zip(self.arms, contributions, strict=True)}
            values = display_columns(Xu, self.feature_names, model.pipeline.categories_)
        if record and self.drift is not None:  # last: a batch that fails is retried request by request
            self.count_drift(batch, X, Xu, turnout, uplift)
        return SegmentScores(batch.ids, turnout, uplift, best_arm, best_uplift, eligibility, reasons, values,
                             warnings=batch.warnings)

    def count_drift(self, batch: VoterBatch, X: Any, Xu: Any, turnout: np.ndarray, uplift: np.ndarray) -> None:
        """Count ``batch`` in :attr:`drift`: its features (``Xu``, the float matrix, where the model predicts on
        one; else the feature frame ``X``), its raw columns and the model's scores (before eligibility)."""
        arrays = [turnout, *uplift.T] if self.model.has_turnout else list(uplift.T)
        scored = dict(zip(self.score_columns, arrays, strict=True))
        self.drift.add(Xu if isinstance(Xu, np.ndarray) else X, scored, raw=batch.columns)

    def payload(self, scores: SegmentScores) -> dict[str, Any]:
        """The ``POST /score`` response for one request's voters (plain JSON-ready dicts)."""
        rank = ranks(scores.best_uplift)
        arms = self.arms
        allowed = None if scores.eligibility is None else scores.eligibility.allowed
        # an arm a voter may not get has no uplift (null), as in the CLI's scored lists
        uplift_rows = (scores.uplift if allowed is None else np.where(allowed, scores.uplift, np.nan)).tolist()
        records = []
        for i, (vid, turnout, best, best_uplift, r) in enumerate(zip(
                scores.ids.tolist(), scores.turnout.tolist(), scores.best_arm.tolist(),
                scores.best_uplift.tolist(), rank.tolist(), strict=True)):
            records.append({
                "voter_id": vid, "turnout": turnout, "uplift": dict(zip(arms, uplift_rows[i], strict=True)),
                "best_arm": best, "best_uplift": best_uplift, "rank": r,
                "warnings": scores.warnings[i] if scores.warnings is not None else [],
            })
        if not self.model.has_turnout:  # a support model without a turnout model: no turnout field (api.py)
            for record in records:
                del record["turnout"]
        if allowed is not None:
            ok_rows = allowed.tolist()
            why = scores.eligibility.reason.tolist()
            for i, record in enumerate(records):
                record["eligible"] = dict(zip(arms, ok_rows[i], strict=True))
                record["ineligible_reasons"] = {a: w for a, ok, w in zip(arms, ok_rows[i], why[i], strict=True)
                                                if not ok}
            if scores.eligibility.time_zone is not None:
                for record, zone in zip(records, scores.eligibility.time_zone.tolist(), strict=True):
                    record["time_zone"] = zone
        if scores.reasons is not None:
            per_arm = {arm: reasons_records(r, self.feature_names, scores.values, scores.offset)
                       for arm, r in scores.reasons.items()}
            for i, record in enumerate(records):
                record["reasons"] = {arm: per_arm[arm][i] if allowed is None or allowed[i, j] else None
                                     for j, arm in enumerate(arms)}
        return {"model": self.model_info, "scores": records, "summary": self.summary(scores)}

    def summary(self, scores: SegmentScores) -> dict[str, Any]:
        """Voters scored, and per arm over the voters who may get it: how many, expected incremental
        outcomes, mean uplift (null when nobody may); best-arm counts."""
        n = len(scores)
        allowed = np.ones(scores.uplift.shape, dtype=bool) if scores.eligibility is None \
            else scores.eligibility.allowed
        eligible = allowed.sum(axis=0) if n else np.zeros(len(self.arms), dtype=int)
        total = np.where(allowed, scores.uplift, 0.0).sum(axis=0) if n else np.zeros(len(self.arms))
        mean = [_mean(t, k) for t, k in zip(total.tolist(), eligible.tolist(), strict=True)]
        labels, counts = np.unique(scores.best_arm.astype(str), return_counts=True)
        best_counts = dict.fromkeys([*self.arms, CONTROL_ARM], 0)
        best_counts.update(zip(labels.tolist(), counts.tolist(), strict=True))
        return {
            "voters": n,
            "outcome": self.model.outcome.get("kind", "turnout"),
            "eligible_voters": dict(zip(self.arms, eligible.tolist(), strict=True)),
            "expected_incremental": dict(zip(self.arms, total.tolist(), strict=True)),
            "mean_uplift": dict(zip(self.arms, mean, strict=True)),
            "best_arm_counts": best_counts,
        }

    def merge(self, payloads: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The response of a request scored in consecutive slices, from the slices' responses:
        ranks over all its voters, and the summary of all of them."""
        if len(payloads) == 1:
            return payloads[0]
        records = [record for payload in payloads for record in payload["scores"]]
        for record, r in zip(records, ranks(np.array([x["best_uplift"] for x in records])).tolist(), strict=True):
            record["rank"] = r
        parts = [payload["summary"] for payload in payloads]

        def added(key: str) -> dict[str, Any]:
            return {name: sum(part[key][name] for part in parts) for name in parts[0][key]}

        eligible, total = added("eligible_voters"), added("expected_incremental")
        summary = {**parts[0], "voters": len(records), "eligible_voters": eligible, "expected_incremental": total,
                   "mean_uplift": {arm: _mean(total[arm], eligible[arm]) for arm in self.arms},
                   "best_arm_counts": added("best_arm_counts")}
        return {"model": self.model_info, "scores": records, "summary": summary}

    def score_request(self, voters: Sequence[Mapping[str, Any]], explain: bool = False,
                      top_k: int = 5) -> dict[str, Any]:
        """Read, score and build the response of one request (the in-process path)."""
        return self.payload(self.score(self.read(voters), explain, top_k))


def ranks(best_uplift: np.ndarray) -> np.ndarray:
    """Rank 1 = most persuadable: the highest best-arm uplift (ties keep request order)."""
    rank = np.empty(len(best_uplift), dtype=np.int64)
    rank[np.argsort(-best_uplift, kind="stable")] = np.arange(1, len(best_uplift) + 1)
    return rank


def _mean(total: float, count: int) -> float | None:
    """Mean uplift of the voters who may get an arm (None when nobody may)."""
    return total / count if count else None


def checked_ensembles(model: ScoringModel) -> ArmEnsembles:
    """The model's :class:`ArmEnsembles`, its fast paths checked on :func:`probe_segment`."""
    return ArmEnsembles(model, probe=model.transform(probe_segment(model).frame(), allow_missing=True))


def probe_segment(model: ScoringModel, n: int = 12) -> VoterBatch:
    """A small synthetic segment covering each feature's kinds of values, missing included."""
    numeric = np.array([0.0, 1.0, np.nan, 2.0, 5.0, 10.0, -1.0, 0.5, 25.0, 50.0, 80.0, 1000.0])
    columns = {}
    for name in model.input_features:
        cats = model.pipeline.categories_.get(name)
        if cats is not None:
            choices = [*cats, None]
            columns[name] = np.array([choices[i % len(choices)] for i in range(n)], dtype=object)
        else:
            columns[name] = np.resize(numeric, n)
    return VoterBatch(np.array([f"probe-{i}" for i in range(n)], dtype=object), columns)
