"""The scoring model: what training produces and every scorer (CLI, HTTP, Spark) loads.

A :class:`ScoringModel` is a directory::

    manifest.json          arms, channels, control label, id column, outcome, metadata
    pipeline.json          the fitted features.FeaturePipeline
    turnout.txt            LightGBM booster: P(turnout) without contact (absent: a support
                           model trained without a turnout column has none)
    turnout_calibration.json   isotonic correction points (or null)
    uplift/<arm_slug>.txt  one LightGBM regressor per arm: the uplift itself
    contact_rate/<channel>.txt  optional: P(reached | attempted) per channel (phone, canvass);
                           its experiment rates are in the manifest's ``contact_rate``
    drift_reference.json   optional: the training population's bins and shares per feature and score
                           (features/drift.py); absent in models saved before it was recorded
    probe_scores.json      written when saved: scores of the probe segment (serving/probe_scores.py)
    checksums.json         written when logged: every file's size and sha256, checked on
                           every load (serving/bundle_checksums.py)

Boosters are LightGBM's own text format, not pickles. Each uplift booster predicts the
uplift directly, so its TreeSHAP contributions plus the base value add up to the
predicted uplift exactly. :meth:`ScoringModel.explain` computes them from lookup tables
(:mod:`serving.treeshap_tables`), checked against LightGBM's ``pred_contrib`` on the
first rows it explains; where the tables do not apply or disagree, ``pred_contrib``.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.config import arm_slug
from features.drift import DriftReference
from features.pipeline import FeaturePipeline
from serving.bundle_checksums import CHECKSUMS, verify_checksums
from serving.treeshap_tables import TreeShapTables, UnsupportedTrees

if TYPE_CHECKING:  # LightGBM is imported where a booster is loaded: a light import for BentoML's arbiter
    import lightgbm as lgb

CONTROL_ARM = "control"
TURNOUT_SCORE = "turnout_score"
DRIFT_REFERENCE = "drift_reference.json"
TABLE_CHECK_ROWS = 64  # rows of the first probe on which a booster's tables are checked against pred_contrib
TABLE_TOLERANCE = 1e-9
# Each uplift booster's checked TreeSHAP tables (None: pred_contrib explains it). Keyed by
# the booster object, so a model rebuilt with other boosters never meets stale tables.
CHECKED_TABLES: weakref.WeakKeyDictionary[lgb.Booster, TreeShapTables | None] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class ArmInfo:
    label: str
    channel: str
    delivery: str
    cost: float = 1.0

    @property
    def slug(self) -> str:
        return arm_slug(self.label)


@dataclass
class ScoringModel:
    """Feature transform + turnout model + one uplift ensemble per arm.

    Parameters
    ----------
    pipeline : FeaturePipeline
        Fitted feature transform shared with training.
    turnout : lightgbm.Booster or None
        Binary classifier of turnout without contact; None for a support model trained
        without a turnout column (its scores then have no ``turnout`` column).
    uplift : dict of str to lightgbm.Booster
        Arm label -> regressor of that arm's uplift against control.
    arms : list of ArmInfo
    control_label : str
    id_column : str
    outcome : dict
        ``{"column": ..., "kind": "turnout"|"support"}``.
    calibration : tuple of lists, optional
        Isotonic points (x, y) applied to the turnout probability.
    turnout_score_feature : bool
        The uplift models take the turnout probability as an extra feature
        (``turnout_score``), appended after the pipeline's columns.
    metadata : dict
        Name, run id, metrics, fingerprint, excluded attributes (free form, JSON).
    contact_rate : dict of str to lightgbm.Booster
        Channel -> classifier of P(reached | attempted) from the contact log (optional;
        a channel without one is taken as always reached).
    contact_rate_info : dict of str to dict
        Channel -> the experiment's ``attempt_rate`` (attempted / assigned) and
        ``reached_rate`` (reached / attempted), used to turn intent-to-treat uplift into
        the uplift of a reached voter (see :mod:`serving.plan_gains`).
    drift_reference : DriftReference, optional
        The training population's bins per feature and score (None: saved before it was recorded).
    """

    pipeline: FeaturePipeline
    turnout: lgb.Booster | None
    uplift: dict[str, lgb.Booster]
    arms: list[ArmInfo]
    control_label: str
    id_column: str
    outcome: dict[str, str]
    calibration: tuple[list[float], list[float]] | None = None
    turnout_score_feature: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    contact_rate: dict[str, lgb.Booster] = field(default_factory=dict)
    contact_rate_info: dict[str, dict[str, float]] = field(default_factory=dict)
    drift_reference: DriftReference | None = None

    # -- scoring -----------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        """Names of the uplift models' features (the columns of :meth:`explain`)."""
        extra = [TURNOUT_SCORE] if self.turnout_score_feature else []
        return self.pipeline.output_columns + extra

    @property
    def input_features(self) -> list[str]:
        return self.pipeline.features

    def transform(self, frame: pd.DataFrame, allow_missing: bool = False) -> pd.DataFrame:
        return self.pipeline.transform(frame, allow_missing=allow_missing)

    @property
    def score_columns(self) -> list[str]:
        """The numbers :meth:`score` gives each voter: ``turnout`` (with a turnout model), ``uplift_<slug>`` per arm."""
        return (["turnout"] if self.has_turnout else []) + [f"uplift_{a.slug}" for a in self.arms]

    @property
    def has_turnout(self) -> bool:
        """Whether the model predicts turnout (a support model may not)."""
        return self.turnout is not None

    def predict_turnout(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated P(turnout) without contact; NaN for every row of a model without a turnout model."""
        if self.turnout is None:
            return np.full(len(X), np.nan)
        p = self.turnout.predict(X)
        if self.calibration is not None:
            xs, ys = self.calibration
            p = np.interp(p, xs, ys)
        return p

    def uplift_inputs(self, X: pd.DataFrame, turnout: np.ndarray | None = None) -> pd.DataFrame:
        """The uplift models' input: ``X`` plus the turnout score when the model uses it."""
        if not self.turnout_score_feature:
            return X
        p = self.predict_turnout(X) if turnout is None else turnout
        return X.assign(**{TURNOUT_SCORE: p})

    def predict_uplift(self, X: pd.DataFrame, turnout: np.ndarray | None = None) -> np.ndarray:
        """(n, n_arms) predicted uplift, columns in ``self.arms`` order."""
        if len(X) == 0:
            return np.zeros((0, len(self.arms)))
        Xu = self.uplift_inputs(X, turnout)
        return np.column_stack([self.uplift[a.label].predict(Xu) for a in self.arms])

    def explain(self, X: pd.DataFrame, arm: str, turnout: np.ndarray | None = None) -> np.ndarray:
        """(n, len(feature_names) + 1) SHAP contributions of ``arm``'s uplift.

        The last column is the base value; each row adds up to the predicted uplift.
        LightGBM's TreeSHAP values, from lookup tables where they apply (see the module
        docstring), else from ``pred_contrib`` itself.
        """
        Xu = self.uplift_inputs(X, turnout)
        booster = self.uplift[arm]
        if not len(Xu) or not self.codes_categories():
            return np.asarray(booster.predict(Xu, pred_contrib=True))
        matrix = self.feature_matrix(Xu)
        tables = shap_tables(booster, matrix)
        if tables is None:
            return np.asarray(booster.predict(matrix, pred_contrib=True))
        return tables.contributions(matrix)

    def codes_categories(self) -> bool:
        """Every booster codes categories as the pipeline does (LightGBM's stored lists)."""
        cats = self.pipeline.categories_
        expected = [cats[c] for c in self.feature_names if c in cats]
        boosters = [b for b in (self.turnout, *self.uplift.values()) if b is not None]
        return all((b.pandas_categorical or []) == expected for b in boosters)

    def feature_matrix(self, X: pd.DataFrame | Mapping[str, np.ndarray | pd.Categorical]) -> np.ndarray:
        """``X`` as the float matrix LightGBM predicts on: categories as their codes,
        unknown or missing as NaN. Only where :meth:`codes_categories` holds.

        ``X`` is a feature frame, or the arrays of ``FeaturePipeline.transform_columns``
        in the same column order (no frame is built for them).
        """
        names = list(X.keys())
        columns = [X[name] for name in names]
        out = np.empty((len(columns[0]) if columns else 0, len(names)), dtype=float)
        for j, col in enumerate(columns):
            if isinstance(col.dtype, pd.CategoricalDtype):
                codes = np.asarray(col.codes if isinstance(col, pd.Categorical) else col.cat.codes)
                out[:, j] = np.where(codes < 0, np.nan, codes)
            elif isinstance(col, np.ndarray):
                out[:, j] = col
            else:
                out[:, j] = col.to_numpy(dtype=float, na_value=np.nan)
        return out

    def predict_contact_rate(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """P(reached | attempted) per channel that has a contact-rate model."""
        return {channel: booster.predict(X) for channel, booster in self.contact_rate.items()}

    def score(self, frame: pd.DataFrame, allow_missing: bool = False) -> pd.DataFrame:
        """Turnout, uplift per arm, best arm and best uplift for each row of ``frame``.

        Columns: ``voter_id``, ``turnout`` (only when the model has a turnout model),
        ``uplift_<arm_slug>`` per arm, ``best_arm`` (``control`` when no arm's uplift is
        positive) and ``best_uplift``.
        """
        X = self.transform(frame, allow_missing=allow_missing)
        return self.score_features(X, frame[self.id_column] if self.id_column in frame else None)

    def score_features(self, X: pd.DataFrame, ids: pd.Series | None = None) -> pd.DataFrame:
        turnout = self.predict_turnout(X) if len(X) else np.zeros(0)
        return self.scores_frame(turnout, self.predict_uplift(X, turnout), ids)

    def scores_frame(self, turnout: np.ndarray, uplift: np.ndarray, ids: pd.Series | None = None) -> pd.DataFrame:
        """The scores table of :meth:`score` from turnout and (n, n_arms) uplift."""
        out = pd.DataFrame(index=pd.RangeIndex(len(turnout)))
        out["voter_id"] = (ids.astype(str).to_numpy() if ids is not None
                           else np.arange(len(turnout)).astype(str))
        if self.has_turnout:
            out["turnout"] = turnout
        for j, arm in enumerate(self.arms):
            out[f"uplift_{arm.slug}"] = uplift[:, j]
        best_arm, best_uplift = best_arms(uplift, [a.label for a in self.arms])
        out["best_arm"] = best_arm
        out["best_uplift"] = best_uplift
        return out

    def fit_drift_reference(self, X: pd.DataFrame) -> ScoringModel:
        """Record the training population for drift: the bins of ``X`` (the training rows' model
        features) and of this model's scores of them (:class:`features.drift.DriftReference`)."""
        self.drift_reference = DriftReference.fit(features=X, scores=self.score_features(X)[self.score_columns])
        return self

    # -- persistence -------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        (path / "uplift").mkdir(parents=True, exist_ok=True)
        (path / CHECKSUMS).unlink(missing_ok=True)  # written when the model is logged, for these files
        manifest = {
            "format": "persuade-scoring-model/1",
            "arms": [asdict(a) for a in self.arms],
            "control_label": self.control_label,
            "id_column": self.id_column,
            "outcome": self.outcome,
            "turnout_score_feature": self.turnout_score_feature,
            "has_turnout": self.has_turnout,
            "metadata": self.metadata,
        }
        if self.contact_rate:
            manifest["contact_rate"] = {c: self.contact_rate_info.get(c, {}) for c in self.contact_rate}
        (path / "manifest.json").write_text(json.dumps(manifest, indent=2, default=_json_default))
        (path / "pipeline.json").write_text(json.dumps(self.pipeline.to_dict(), indent=2))
        if self.turnout is not None:
            self.turnout.save_model(str(path / "turnout.txt"))
        (path / "turnout_calibration.json").write_text(json.dumps(self.calibration))
        for arm in self.arms:
            self.uplift[arm.label].save_model(str(path / "uplift" / f"{arm.slug}.txt"))
        if self.drift_reference is not None:  # optional part, as contact_rate
            (path / DRIFT_REFERENCE).write_text(json.dumps(self.drift_reference.to_dict()))
        if self.contact_rate:  # optional part: older readers ignore it, older bundles lack it
            (path / "contact_rate").mkdir(exist_ok=True)
            for channel, booster in self.contact_rate.items():
                booster.save_model(str(path / "contact_rate" / f"{channel}.txt"))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ScoringModel:
        """Read a bundle, its files first checked against its checksums (``BundleChecksumError``)."""
        import lightgbm as lgb

        path = Path(path)
        verify_checksums(path)
        manifest = json.loads((path / "manifest.json").read_text())
        if manifest.get("format") != "persuade-scoring-model/1":
            raise ValueError(f"{path}: not a persuade scoring model (format {manifest.get('format')!r})")
        arms = [ArmInfo(**a) for a in manifest["arms"]]
        calibration = json.loads((path / "turnout_calibration.json").read_text())
        return cls(
            pipeline=FeaturePipeline.from_dict(json.loads((path / "pipeline.json").read_text())),
            turnout=lgb.Booster(model_file=str(path / "turnout.txt")) if manifest.get("has_turnout", True) else None,
            uplift={a.label: lgb.Booster(model_file=str(path / "uplift" / f"{a.slug}.txt")) for a in arms},
            arms=arms,
            control_label=manifest["control_label"],
            id_column=manifest["id_column"],
            outcome=manifest["outcome"],
            calibration=tuple(calibration) if calibration else None,
            turnout_score_feature=bool(manifest.get("turnout_score_feature", False)),
            metadata=manifest.get("metadata", {}),
            contact_rate={c: lgb.Booster(model_file=str(path / "contact_rate" / f"{c}.txt"))
                          for c in manifest.get("contact_rate", {})},
            contact_rate_info=manifest.get("contact_rate", {}),
            drift_reference=DriftReference.from_dict(json.loads((path / DRIFT_REFERENCE).read_text()))
            if (path / DRIFT_REFERENCE).exists() else None,
        )


def shap_tables(booster: lgb.Booster, probe: np.ndarray) -> TreeShapTables | None:
    """The whole booster's checked tables (:func:`checked_tables` on the first rows of
    ``probe``), built once per booster and kept in :data:`CHECKED_TABLES`."""
    if booster not in CHECKED_TABLES:
        CHECKED_TABLES[booster] = checked_tables(booster, probe[:TABLE_CHECK_ROWS])
    return CHECKED_TABLES[booster]


def checked_tables(booster: lgb.Booster, probe: np.ndarray, start_iteration: int = 0,
                   num_iteration: int | None = None) -> TreeShapTables | None:
    """The booster's TreeSHAP tables if they apply and equal ``pred_contrib`` on ``probe``, else None."""
    try:
        tables = TreeShapTables(booster, start_iteration, num_iteration)
    except UnsupportedTrees:
        return None
    own = booster.predict(probe, pred_contrib=True, start_iteration=start_iteration, num_iteration=num_iteration)
    ok = np.allclose(tables.contributions(probe), own, rtol=0, atol=TABLE_TOLERANCE)
    return tables if ok else None


def best_arms(uplift: np.ndarray, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Best arm label per row (``control`` if no uplift is positive) and its uplift.

    NaN uplift (an arm not allowed for that voter) never wins.
    """
    n = uplift.shape[0]
    if n == 0:
        return np.array([], dtype=object), np.zeros(0)
    masked = np.where(np.isnan(uplift), -np.inf, uplift)
    idx = masked.argmax(axis=1)
    top = masked[np.arange(n), idx]
    arm = np.where(top > 0, np.asarray(labels, dtype=object)[idx], CONTROL_ARM)
    return arm, np.where(top > 0, top, 0.0)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj)}")
