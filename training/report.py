"""The compliance reviewer's explanation reports (self-contained HTML).

- :class:`ModelReport` (``persuade report --run RUN_ID``): what a training run produced
  and why it targets whom: the model card, global SHAP for turnout and each arm's
  uplift, Qini curves and decile tables, turnout calibration, the fairness audit and the
  consent suppression counts (a support model without a turnout model has no turnout
  SHAP and no calibration section, and the report says why). It is logged to the run at
  :data:`MODEL_REPORT_ARTIFACT` (``report/model_report.html``), where the service finds the champion's report.
- :class:`ListReport` (``persuade report --scores scores.parquet``): one scored list:
  how many voters were scored, suppressed (by reason) and targeted per arm, the top
  reasons behind targeting, the expected incremental outcomes, and which model, data
  and consent table produced it (read from the :class:`ScoreProvenance` file that
  ``persuade score`` writes beside its output). Given a contact plan
  (``persuade plan``, recognised by its ``persuade.plan`` metadata) it reports the plan
  instead: voters considered, suppressed by reason and contacted per arm and channel,
  budget and spend, the expected incremental outcomes with their interval, the
  solver's bound and gap, the top reasons behind the contacts, and its provenance
  (:func:`plan_provenance`).

Reports hold aggregates only: no voter's row, name, phone number, e-mail or address.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from features.attrition import observed_rows
from features.config import GBMParams, RunConfig
from features.consent import (
    REASON_TEXT,
    Arms,
    ConsentTable,
    EligibilityRules,
    Reason,
    arm_deliveries,
    eligibility_for,
    needs_consent,
    rules_table,
    suppression_counts,
)
from features.fingerprint import data_fingerprint
from features.tables import load_experiment
from serving.batch import input_columns, open_dataset
from serving.bundle import CONTROL_ARM, ScoringModel
from serving.flavor import ModelRef, load_scoring_model
from serving.model_report import MODEL_REPORT_ARTIFACT, REPORT_DIR
from serving.plan_sensitivity import sensitivity_verdict
from serving.planning import PLAN_METADATA_KEY, SUPPRESSION_KEYS, read_plan_summary
from training import report_html as h
from training.data_checks import data_checks_section
from training.fairness import FairnessAudit
from training.fit import prepare
from training.tracking import PROJECT_ROOT, configure

REPORT_TAG = "persuade.report"
MAX_DISPLAY = 12
PRIVACY_FOOTER = "Aggregates only: this report contains no voter's row, name, phone number, e-mail or address."


def reports_dir() -> Path:
    """Default folder of written reports: ``$PERSUADE_HOME/reports`` or the project's ``reports/``."""
    home = os.environ.get("PERSUADE_HOME")
    return (Path(home) if home else PROJECT_ROOT) / "reports"


# -- provenance of a scored list --------------------------------------------------------
@dataclass
class ScoreProvenance:
    """Which model, input and consent table produced a scored list (no personal data).

    Written by ``persuade score`` as ``<output>.provenance.json``.
    """

    model: dict[str, Any]
    input: str
    rows: int
    scored_at: str
    consent: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)

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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _training_facts(model: ScoringModel) -> dict[str, Any]:
    """What the model's metadata says about its training run (for provenance)."""
    meta = model.metadata or {}
    return {"run_id": meta.get("run_id"), "data_sha256": (meta.get("fingerprint") or {}).get("sha256"),
            "code_version": meta.get("code_version"), "learner": meta.get("learner")}


def score_provenance(ref: ModelRef, model: ScoringModel, input_path: str | Path, rows: int,
                     consent: dict[str, Any] | None = None) -> ScoreProvenance:
    """The provenance of a list scored now by ``model`` (``ref``) from ``input_path``."""
    return ScoreProvenance(model=ref.as_dict(), input=str(Path(input_path).resolve()), rows=int(rows),
                           scored_at=_now(), consent=consent, training=_training_facts(model))


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
        What the consent layer applied (``features.consent.Eligibility.describe``).

    Returns
    -------
    dict
        JSON-ready: ``model``, ``input``, ``costs``, ``consent``, ``consent_applied``,
        ``planned_at``, ``training`` (no personal data).
    """
    def resolved(path: str | Path | None) -> str | None:
        return str(Path(path).resolve()) if path is not None else None

    return {"model": ref.as_dict(), "input": resolved(input_path), "costs": resolved(costs_path),
            "consent": resolved(consent_path), "consent_applied": consent, "planned_at": _now(),
            "training": _training_facts(model)}


# -- shared pieces --------------------------------------------------------------------
NO_TURNOUT_NOTE = ("This model has no turnout model: its outcome is a support score and it was trained without a "
                   "turnout column (turnout.column), so its scores have no turnout, and this report has no turnout "
                   "SHAP and no turnout calibration section.")


def _units(model: ScoringModel) -> tuple[h.Formatter, str]:
    if model.outcome.get("kind") == "turnout":
        return h.pp(2), "votes"
    return h.number(3), "support points"


def _numeric(X: pd.DataFrame) -> pd.DataFrame:
    """Feature values as numbers (category codes) for SHAP's colour scale."""
    out = X.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.CategoricalDtype):
            codes = out[col].cat.codes.astype(float)
            out[col] = codes.where(codes >= 0, np.nan)
    return out.astype(float)


def shap_figures(contrib: np.ndarray, X: pd.DataFrame, names: list[str], title: str) -> tuple[bytes, bytes]:
    """(bar, beeswarm) PNGs of SHAP contributions (last column of ``contrib``: base value)."""
    import shap  # slow to import: only the model report draws with it
    explanation = shap.Explanation(values=contrib[:, :-1], base_values=contrib[:, -1],
                                   data=_numeric(X).to_numpy(), feature_names=names)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    shap.plots.bar(explanation, max_display=MAX_DISPLAY, ax=ax, show=False)
    ax.set_title(f"{title}: mean |SHAP|", fontsize=11)
    bar = h.png_bytes(fig)
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    shap.plots.beeswarm(explanation, max_display=MAX_DISPLAY, ax=ax, show=False, plot_size=None)
    ax.set_title(f"{title}: SHAP per voter", fontsize=11)
    return bar, h.png_bytes(plt.gcf())


def _parameter_tables(params: dict[str, str]) -> list[str]:
    """Run parameters: LightGBM settings per model role side by side, then the others."""
    roles = {"final": "uplift (final)", "arm": "uplift (per arm)", "nuisance": "outcome (nuisance)",
             "turnout": "turnout"}
    grid: dict[str, dict[str, str]] = {}
    other = {}
    for key, value in sorted(params.items()):
        role, _, name = key.partition("_")
        if role in roles and name in GBMParams.model_fields:
            grid.setdefault(name, {})[roles[role]] = value
        else:
            other[key] = value
    out = [h.key_values(other)]
    if grid:
        logged = {role for cells in grid.values() for role in cells}  # no turnout column without a turnout model
        frame = pd.DataFrame.from_dict(grid, orient="index").reindex(columns=[r for r in roles.values() if r in logged])
        out.append(h.table(frame.rename_axis("LightGBM parameter").reset_index().fillna("-")))
    return out


def _suppression_pivot(counts: pd.DataFrame) -> pd.DataFrame:
    table = counts.pivot_table(index=["arm", "delivery"], columns="reason", values="voters", aggfunc="sum",
                               fill_value=0, sort=False)
    cols = ["eligible", *[r.value for r in Reason if r.value in table.columns]]
    table = table.reindex(columns=cols).fillna(0).astype(int)
    table.insert(1, "suppressed", table.drop(columns="eligible").sum(axis=1))
    table.columns.name = None
    return table.reset_index()


def _reason_legend(codes: Iterable[str]) -> str:
    """What each consent reason code among ``codes`` means."""
    codes = set(codes)
    used = [r for r in Reason if r.value in codes]
    return h.key_values({r.value: REASON_TEXT[r] for r in used}) if used else ""


CONSENT_READING = (
    "How the table is read: a decision is per voter and number dialed. Consent and line type recorded with a "
    "number apply to that number only (a new number carries nothing from an old one; consent rows without a number "
    "grant nothing); the landline prerecorded cap counts calls per line. Do-not-contact and revocations apply "
    "whatever their date; only consents wait for their timestamp. Timestamps without a zone, epoch numbers and "
    "day/month dates are refused. A missing or unparseable number suppresses automated contact "
    "(unverifiable_phone), and so does a stale table (consent_stale) when dialing lists are made.")


def consent_summary(config: RunConfig, arms: Arms, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Eligibility of every voter of ``frame`` under the run's consent settings.

    Returns the eligibility frame, the suppression counts (arm, delivery, reason,
    voters) and the HTML of the report's consent section. Without a configured consent
    table nobody is on a do-not-contact list and nobody has consent: arms that need
    consent are suppressed for everybody; arms that do not (mail, canvass, live calls)
    suppress nobody.
    """
    spec = config.consent
    table = None
    if spec.table is not None:
        table = ConsentTable.read(config.resolve(spec.table), id_column=config.id_column,
                                  phone_column=spec.phone_column, time_zone=spec.time_zone)
    rules = EligibilityRules(spec.landline_prerecorded_cap, spec.cap_window_days)
    eligibility = eligibility_for(frame, arms, table, rules, spec.as_of, config.id_column, spec.phone_column)
    counts = suppression_counts(eligibility, arms)
    deliveries = {d for _, _, d in arm_deliveries(arms)}
    consent_needed = sorted(d.value for d in deliveries if needs_consent(d))
    body = []
    if not consent_needed:
        body.append(h.paragraph(
            f"Every arm is delivered by {', '.join(sorted(d.value for d in deliveries))}, which needs no consent: "
            f"no voter is suppressed for lack of consent.", "note"))
    if table is None:
        body.append(h.paragraph(
            "No consent table is configured (consent.table): no do-not-contact list was applied"
            + (f", and every voter is suppressed from {', '.join(consent_needed)} (no consent on record)."
               if consent_needed else "."),
            "warn" if consent_needed else "note"))
    else:
        when = spec.as_of.isoformat() if spec.as_of else "the time of this report"
        body.append(h.paragraph(
            f"Consent table {Path(spec.table).name} (fingerprint {table.fingerprint()[:16]}…, events: "
            f"{', '.join(f'{k} {v:,}' for k, v in table.counts().items())}), applied as of {when} to all "
            f"{len(frame):,} voters of the data; landline prerecorded cap "
            f"{spec.landline_prerecorded_cap} per {spec.cap_window_days} days.", "note"))
    rules_shown = rules_table()
    body += [h.heading("Voters per arm: eligible and suppressed by reason"), h.table(_suppression_pivot(counts)),
             _reason_legend(counts.reason), h.heading("The rules (first matching row wins)"),
             h.table(rules_shown[rules_shown.delivery.isin({d.value for d in deliveries})]),
             h.paragraph(CONSENT_READING, "note")]
    return eligibility, counts, "".join(body)


# -- the model report -----------------------------------------------------------------
@dataclass
class RunArtifacts:
    """What a training run logged, downloaded."""

    run_id: str
    folder: Path
    config: RunConfig
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    fingerprint: dict[str, Any]
    validation: dict[str, Any]
    features: dict[str, Any]
    gates: dict[str, Any]
    versions: list[str]

    def csv(self, name: str) -> pd.DataFrame | None:
        path = self.folder / "evaluation" / name
        return pd.read_csv(path) if path.exists() else None

    def png(self, name: str) -> bytes | None:
        path = self.folder / "plots" / name
        return path.read_bytes() if path.exists() else None


def fetch_run(run_id: str, client: MlflowClient, dst: Path, data_root: Path | None = None) -> RunArtifacts:
    """Download a run's logged artifacts (not its model) and read its config."""
    try:
        run = client.get_run(run_id)
    except Exception as exc:  # noqa: BLE001 - MLflow raises its own types for unknown runs
        raise LookupError(f"run {run_id!r} not found in the tracking store: {exc}") from None
    logged = {a.path for a in client.list_artifacts(run_id)}
    if "config.yaml" not in logged:
        raise LookupError(f"run {run_id!r} has no config.yaml: not a persuade training run")
    for part in ("config.yaml", "data", "features.json", "evaluation", "plots"):
        if part in logged:
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=part, dst_path=str(dst))
    raw = yaml.safe_load((dst / "config.yaml").read_text())
    try:
        config = RunConfig.model_validate({**raw, "base_dir": data_root or PROJECT_ROOT})
    except ValidationError as exc:
        raise ValueError(f"run {run_id}: its logged config.yaml no longer validates: {exc}") from None
    versions = [str(v.version) for v in client.search_model_versions(f"run_id='{run_id}'")]

    def read(name: str) -> dict:
        path = dst / name
        return json.loads(path.read_text()) if path.exists() else {}

    return RunArtifacts(run_id, dst, config, dict(run.data.tags), dict(run.data.params), dict(run.data.metrics),
                        read("data/fingerprint.json"), read("data/validation.json"), read("features.json"),
                        read("evaluation/gates.json"), versions)


class ModelReport:
    """The explanation report of one training run.

    Parameters
    ----------
    shap_rows : int
        Hold-out rows sampled for the global SHAP plots.
    seed : int
        Seed of that sample.
    data_root : Path, optional
        Folder against which the run config's relative data paths resolve (default:
        the project root, as at training time).

    Attributes
    ----------
    fairness_ : DataFrame
        The fairness audit table (after :meth:`build`).
    suppression_ : DataFrame
        Consent suppression counts (arm, delivery, reason, voters).
    card_ : dict
        The model card's facts.
    """

    def __init__(self, shap_rows: int = 2000, seed: int = 0, data_root: Path | None = None):
        self.shap_rows = shap_rows
        self.seed = seed
        self.data_root = data_root

    def build(self, run_id: str, client: MlflowClient | None = None) -> str:
        """The report's HTML for run ``run_id``."""
        if self.shap_rows < 10:
            raise ValueError(f"shap_rows must be at least 10, got {self.shap_rows}")
        client = client or configure()
        with tempfile.TemporaryDirectory(prefix="persuade-report-") as tmp:
            run = fetch_run(run_id, client, Path(tmp), self.data_root)
            model, _ = load_scoring_model(f"runs:/{run_id}/model", Path(tmp) / "model")
            return self._build(run, model)

    def write(self, run_id: str, output: str | Path | None = None, log_to_run: bool = True,
              client: MlflowClient | None = None) -> Path:
        """Build the report, write it to ``output`` and log it to the run (``report/``)."""
        client = client or configure()
        text = self.build(run_id, client)
        output = Path(output) if output else reports_dir() / f"model_report_{run_id}.html"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        if log_to_run:
            with tempfile.TemporaryDirectory(prefix="persuade-report-") as tmp:
                folder = Path(tmp)
                (folder / Path(MODEL_REPORT_ARTIFACT).name).write_text(text, encoding="utf-8")
                self.fairness_.to_csv(folder / "fairness.csv", index=False)
                self.suppression_.to_csv(folder / "consent_suppression.csv", index=False)
                for name in ("model_report.html", "fairness.csv", "consent_suppression.csv"):
                    client.log_artifact(run_id, str(folder / name), REPORT_DIR)
            client.set_tag(run_id, REPORT_TAG, MODEL_REPORT_ARTIFACT)
        return output

    # -- sections --------------------------------------------------------------------
    def _build(self, run: RunArtifacts, model: ScoringModel) -> str:
        config = run.config
        frame = load_experiment(config)
        current = data_fingerprint(frame, config)
        prep = prepare(observed_rows(frame, config), config)  # the rows the run fitted (outcome.missing: drop)
        test = prep.test
        X = model.transform(test)
        turnout = model.predict_turnout(X)
        labels = [a.label for a in model.arms]
        uplift = pd.DataFrame(model.predict_uplift(X, turnout), columns=labels)

        eligibility, suppression, consent_note = consent_summary(config, model.arms, frame)
        self.suppression_ = suppression
        held = eligibility.set_index("voter_id").loc[test[config.id_column].astype(str).to_numpy()]
        allowed = pd.DataFrame({a.label: held[f"eligible_{a.slug}"].to_numpy(dtype=bool) for a in model.arms})
        audit = FairnessAudit.from_config(config)
        self.fairness_ = audit.audit(test, uplift, prep.assigned("test", config),
                                     test[config.outcome.column].to_numpy(dtype=float), config.control_label, allowed)

        sections = [
            self._card(run, model, current),
            self._shap(model, X, turnout),
            data_checks_section(run.folder / "data"),  # attrition per arm, balance and leakage
            self._evaluation(run, model),
            *([self._calibration(run)] if model.has_turnout else []),  # no turnout model: _shap says so
            self._fairness(audit, model),
            h.Section("consent", "Consent and suppression", consent_note),
        ]
        name = run.config.model_name
        versions = ", ".join(run.versions) or "not registered"
        return h.page(
            f"Model report: {name}",
            f"run {run.run_id} · version {versions} · learner {run.tags.get('persuade.learner', '?')} · "
            f"generated {datetime.now(UTC).isoformat(timespec='seconds')}",
            sections,
            footer=PRIVACY_FOOTER,
        )

    def _card(self, run: RunArtifacts, model: ScoringModel, current: dict) -> h.Section:
        config = run.config
        fp = run.fingerprint
        data = config.data
        sources = {k: Path(v).name for k, v in data.model_dump().items() if v is not None}
        matches = current["sha256"] == fp.get("sha256")
        self.card_ = {
            "run id": run.run_id,
            "registered model": f"{config.model_name} version {', '.join(run.versions) or '-'}",
            "config": config.name,
            "outcome": f"{config.outcome.column} ({config.outcome.kind})",
            "data source": ", ".join(f"{k}: {v}" for k, v in sources.items()),
            "data fingerprint (sha256)": fp.get("sha256", "?"),
            "rows": f"{fp.get('rows', 0):,}",
            "learner": run.tags.get("persuade.learner", "?"),
            "code version": run.tags.get("persuade.code_version", "?"),
            "split": f"grouped by {config.group_column}: {config.split.holdout_fraction:.0%} of groups held out, "
                     f"{config.split.folds} folds, seed {config.split.seed}",
        }
        left = [h.key_values(self.card_)]
        if matches:
            left.append(h.paragraph("The data read for this report has the fingerprint the run was trained on.",
                                    "note"))
        else:
            left.append(h.paragraph(
                f"The data read for this report does not match the training fingerprint (now "
                f"{current['sha256'][:12]}…, {current['rows']:,} rows): the hold-out figures below are computed "
                f"on the current data.", "bad"))
        arms = pd.DataFrame([{"arm": label, "channel": spec.channel.value,
                              "delivery": spec.resolved_delivery.value, "cost": spec.cost,
                              "rows": fp.get("rows_per_arm", {}).get(label, 0)}
                             for label, spec in config.arms.items()]
                            + [{"arm": f"{config.control_label} (control)", "channel": "-", "delivery": "-",
                                "cost": 0.0, "rows": fp.get("rows_per_arm", {}).get(config.control_label, 0)}])
        left += [h.heading("Arms and rows per arm"), h.table(arms, {"cost": h.number(2)})]
        feats = run.features
        left += [h.heading("Features used"), h.paragraph(", ".join(feats.get("features", model.feature_names)))]
        excluded = pd.DataFrame([{"column": k, "why it is excluded": v}
                                 for k, v in feats.get("excluded", {}).items()])
        left.append(h.heading("Attributes excluded, and why"))
        left.append(h.table(excluded) if len(excluded) else h.paragraph("None."))
        right = [h.heading("Learner and parameters"), *_parameter_tables(run.params)]
        gates = pd.DataFrame([{"gate": g, "passed": v.get("passed"), "detail": v.get("detail", "")}
                              for g, v in run.gates.items()])
        if len(gates):
            right += [h.heading("Promotion gates"),
                      h.table(gates, row_class=lambda r: "" if r["passed"] else "flag")]
        body = [h.columns("".join(left), "".join(right))]
        return h.Section("card", "Model card", "".join(body))

    def _shap(self, model: ScoringModel, X: pd.DataFrame, turnout: np.ndarray) -> h.Section:
        rng = np.random.default_rng(self.seed)
        rows = np.sort(rng.choice(len(X), min(self.shap_rows, len(X)), replace=False))
        Xs = X.iloc[rows]
        names = list(model.pipeline.output_columns)
        scale, unit = (100.0, "percentage points") if model.outcome.get("kind") == "turnout" else (1.0, "points")
        body = [h.paragraph(
            f"TreeSHAP contributions on {len(rows):,} randomly sampled hold-out voters. Bars: mean absolute "
            f"contribution (what drives the score overall); beeswarm: one dot per voter, colour = feature value "
            f"(red high, blue low), position = how much it moved that voter's score. "
            + ("Turnout contributions are in log-odds; " if model.has_turnout else "")
            + f"uplift contributions are in {unit} and add up to the predicted uplift.")]
        if model.has_turnout:
            contrib = np.asarray(model.turnout.predict(Xs, pred_contrib=True))
            bar, bee = shap_figures(contrib, Xs, names, "Turnout (no contact)")
            body += [h.heading("Turnout"), h.figures([h.image(bar, "SHAP bar: turnout"),
                                                       h.image(bee, "SHAP beeswarm: turnout")])]
        else:
            body.append(h.paragraph(NO_TURNOUT_NOTE, "note"))
        Xu = model.uplift_inputs(Xs, turnout[rows])
        for arm in model.arms:
            contrib = model.explain(Xs, arm.label, turnout[rows]) * scale
            bar, bee = shap_figures(contrib, Xu, model.feature_names,
                                    f"Uplift of {arm.label} ({'pp' if scale == 100 else 'points'})")
            body += [h.heading(f"Uplift: {arm.label} ({arm.delivery})"),
                     h.figures([h.image(bar, f"SHAP bar: {arm.label}"),
                                h.image(bee, f"SHAP beeswarm: {arm.label}")])]
        return h.Section("shap", "What drives the scores (global SHAP)", "".join(body))

    def _evaluation(self, run: RunArtifacts, model: ScoringModel) -> h.Section:
        fmt, _ = _units(model)
        body = [h.paragraph(
            "How each arm's served ranking was chosen against the references a campaign already has (grouped "
            "CV on the training groups), how it does on the grouped hold-out, Qini curves against the references "
            "(plain T-learner, turnout closest to 0.5 when the model has a turnout model, random) and the observed "
            "uplift by decile of predicted uplift.")]
        body += _reference_tables(run)
        holdout = run.csv("holdout_qini.csv")
        if holdout is not None and {"ranking", "arm", "qini"} <= set(holdout.columns):
            pivot = (holdout.pivot(index="ranking", columns="arm", values="qini") * 1000).reset_index()
            pivot.columns.name = None
            body += [h.heading("Hold-out Qini ×1000 by ranking and arm"),
                     h.table(pivot, {c: h.number(3) for c in pivot.columns if c != "ranking"})]
        ate = run.csv("ate.csv")
        if ate is not None:
            body += [h.heading("Average effect per arm: predicted vs observed (hold-out)"),
                     h.table(ate, {c: fmt for c in ate.columns if c not in ("arm", "consistent")})]
        for arm in model.arms:
            images = [h.image(png, f"{kind}: {arm.label}") for kind, png in (
                ("Qini curves", run.png(f"qini_{arm.slug}.png")),
                ("Uplift by decile", run.png(f"deciles_{arm.slug}.png"))) if png is not None]
            body += [h.heading(f"{arm.label}"), h.figures(images)]
            deciles = run.csv(f"deciles_{arm.slug}.csv")
            if deciles is not None:
                body.append(h.table(deciles, {"predicted_uplift": fmt, "observed_uplift": fmt,
                                              "observed_se": fmt}))
        return h.Section("evaluation", "Qini curves and deciles", "".join(body))

    def _calibration(self, run: RunArtifacts) -> h.Section:
        body = [h.paragraph("Predicted vs observed turnout by decile of predicted probability, on hold-out "
                            "control voters (after the isotonic correction when the run applied one).")]
        png = run.png("turnout_calibration.png")
        if png is not None:
            body.append(h.figures([h.image(png, "Turnout calibration")]))
        table = run.csv("turnout_calibration.csv")
        if table is not None:
            body.append(h.table(table, {"predicted": h.number(3), "observed": h.number(3)}))
        auc = run.metrics.get("turnout_auc")
        brier = run.metrics.get("turnout_brier")
        if auc is not None:
            body.append(h.paragraph(f"Turnout AUC {auc:.3f}, Brier score {brier:.4f} (hold-out control)."))
        return h.Section("calibration", "Turnout calibration", "".join(body))

    def _fairness(self, audit: FairnessAudit, model: ScoringModel) -> h.Section:
        fmt, _ = _units(model)
        table = self.fairness_
        low, high = audit.band
        flagged = table[table.flag == "outside band"]
        body = [h.paragraph(
            f"Each arm (and 'any arm': the best arm's uplift) targets the top {audit.budget_fraction:.0%} of the "
            f"hold-out voters by predicted uplift, after consent suppression; only voters with a positive predicted "
            f"uplift are targeted. Per protected group: the targeting rate and its ratio to the reference group "
            f"(bold), flagged when outside {low:g}–{high:g}; the mean predicted uplift; the observed uplift "
            f"(arm minus control among the group's hold-out voters, and among its targeted voters). Groups under "
            f"{audit.min_group_size} voters are shown but not flagged. Protected attributes: "
            f"{', '.join(audit.attributes) or 'none configured'} (never model features)."),
        ]
        if not audit.attributes:
            body.append(h.paragraph("No protected attributes are configured: nothing to audit.", "warn"))
        elif len(flagged):
            body.append(h.paragraph(f"{len(flagged)} group(s) outside the band: "
                                    + "; ".join(f"{r.arm} / {r.attribute}={r.group} ratio {r.ratio_to_reference:.2f}"
                                                for r in flagged.itertuples()), "bad"))
        else:
            body.append(h.paragraph("No group's targeting ratio is outside the band.", "note"))
        body.append(h.table(
            table,
            {"targeting_rate": h.pct(1), "ratio_to_reference": h.number(2), "mean_predicted_uplift": fmt,
             "observed_uplift": fmt, "observed_uplift_targeted": fmt},
            row_class=lambda r: "flag" if r["flag"] == "outside band" else ("ref" if r["reference"] else ""),
            hide=["reference"]))
        return h.Section("fairness", "Fairness audit", "".join(body))


def _reference_tables(run: RunArtifacts) -> list[str]:
    """The per-arm grouped-CV choice against the references, and the hold-out policy value at each budget."""
    body = []
    cv = run.csv("selection_cv_arms.csv")
    if cv is not None:
        shown = cv.assign(value=cv.value * 1000, se=cv.se * 1000, gap=cv.gap * 1000, gap_se=cv.gap_se * 1000)
        shown = shown[["arm", "candidate", "value", "se", "gap", "gap_se", "chosen", "stability"]]
        body += [h.heading("Each arm against the references (grouped CV ×1000)"), h.paragraph(
            "Candidates, simplest first: constant (each arm's average effect for everyone, which ranks as random "
            "targeting), turnout shape (the average effect times a shape of the turnout score alone; only with a "
            "turnout model), the model, "
            "and the model with arm-specific trees. Value: the doubly-robust incremental outcomes per voter "
            "captured above random by contacting the top of each held-out fold, averaged over the budgets; gap: "
            "below the best candidate, paired by fold. Each arm serves the simplest candidate within one standard "
            "error of the best; stability is the share of CV repeats that would have chosen the same."),
            h.table(shown, {c: h.number(3) for c in ("value", "se", "gap", "gap_se")} | {"stability": h.number(2)},
                    row_class=lambda r: "ref" if r["chosen"] else "")]
    policy = run.csv("holdout_policy_value.csv")
    if policy is not None:
        shown = policy.assign(**{c: policy[c] * 1000 for c in ("gain", "low", "high", "se")})
        body += [h.heading("Hold-out: incremental outcomes ×1000 per voter above random, by budget"),
                 h.table(shown, {c: h.number(3) for c in ("gain", "low", "high", "se")} | {"budget": h.number(2)})]
    return body


# -- the list report ------------------------------------------------------------------
SCORES_COLUMNS = ("voter_id", "best_arm", "best_uplift")
PLAN_COLUMNS = ("voter_id", "arm", "channel", "expected_gain", "p_reached", "cost")
PLAN_SUMMARY_KEYS = ("voters", "budget", "spent", "total_expected_gain", "suppression", "solver")
PLAN_OUTCOMES = {
    "contacted": "planned to be contacted",
    "not_eligible": "every arm with a positive expected gain is one they may not get",
    "no_positive_gain": "no arm is expected to help",
    "over_budget": "a positive expected gain with an allowed arm, but the budget or a channel's capacity went "
                   "to better uses",
}


@dataclass
class ListFile:
    """A list to report on: scores (``persuade score``) or a contact plan (``persuade plan``).

    Attributes
    ----------
    path : Path
    table : DataFrame
        The file's rows (scores per voter, or the plan's contacts in priority order).
    plan : dict or None
        A plan's stored summary and provenance (:func:`serving.planning.read_plan_summary`);
        None for scores.
    """

    path: Path
    table: pd.DataFrame
    plan: dict[str, Any] | None = None

    @classmethod
    def read(cls, path: str | Path) -> ListFile:
        """Read a scores or plan parquet file; anything else is a ``ValueError`` naming the file.

        Parameters
        ----------
        path : str or Path
            A plan is recognised by its ``persuade.plan`` metadata, scores by their columns.

        Returns
        -------
        ListFile
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"list not found: {path}")
        try:
            metadata = pq.read_schema(str(path)).metadata or {}
        except (pa.ArrowException, OSError) as exc:
            raise ValueError(f"{path.name}: not a parquet file ({exc})") from None
        plan = read_plan_summary(path) if PLAN_METADATA_KEY in metadata else None
        table = pd.read_parquet(path)
        if plan is None:
            missing = [c for c in SCORES_COLUMNS if c not in table.columns]
            if missing:
                raise ValueError(f"{path.name}: not a persuade scores file or plan (missing the score columns "
                                 f"{missing}, and no {PLAN_METADATA_KEY.decode()} metadata)")
            return cls(path, table)
        missing = [c for c in PLAN_COLUMNS if c not in table.columns]
        missing += [f"summary.{k}" for k in PLAN_SUMMARY_KEYS if k not in plan]
        if missing:
            raise ValueError(f"{path.name}: not a complete persuade plan (missing {missing})")
        return cls(path, table, plan)


def _model_uri(given: str | None, recorded: Mapping[str, Any] | None, missing: str) -> str:
    """The model to report with: ``given``, else the recorded URI, else ``models:/name/version``."""
    if given:
        return given
    recorded = recorded or {}
    if recorded.get("uri"):
        return str(recorded["uri"])
    if recorded.get("name") and recorded.get("version"):
        return f"models:/{recorded['name']}/{recorded['version']}"
    raise ValueError(f"{missing}; pass --model to say which model produced it")


def _load_model(uri: str) -> tuple[ScoringModel, ModelRef]:
    configure()
    with tempfile.TemporaryDirectory(prefix="persuade-report-") as tmp:
        return load_scoring_model(uri, Path(tmp) / "model")


def _model_facts(model: ScoringModel, ref: ModelRef) -> dict[str, str]:
    """The model card's short form: version, training run, data fingerprint, learner, code."""
    meta = model.metadata or {}
    details = [f"final models: {meta['final_size']} trees x leaves"] if meta.get("final_size") else []
    if meta.get("turnout_score_feature"):
        details.append("turnout score as a feature")
    return {
        "model": f"{ref.name or '-'} version {ref.version or '-'} ({ref.uri})",
        "training run": ref.run_id or meta.get("run_id", "-"),
        "training data fingerprint (sha256)": (meta.get("fingerprint") or {}).get("sha256", "-"),
        "learner": meta.get("learner", "-") + (f" ({', '.join(details)})" if details else ""),
        "code version": meta.get("code_version", "-"),
    }


def _model_mismatch(ref: ModelRef, recorded: Mapping[str, Any] | None) -> list[str]:
    """A warning when the model given is not the version the provenance records."""
    if not recorded or not recorded.get("version") or ref.version is None:
        return []
    if (recorded.get("name"), str(recorded["version"])) == (ref.name, str(ref.version)):
        return []
    return [h.paragraph(
        f"The provenance records {recorded.get('name') or '-'} version {recorded['version']}, but this report was "
        f"built with {ref.name or ref.uri} version {ref.version} (--model): the reasons below are that model's.",
        "warn")]


def _consent_text(consent: Mapping[str, Any] | None) -> str:
    """One line on the consent table applied (``Eligibility.describe``), or ``none applied``."""
    if not consent:
        return "none applied"
    if consent.get("no_consent"):
        return f"none (--no-consent): arms that need consent dropped ({', '.join(consent.get('dropped_arms', []))})"
    join = consent.get("join") or {}
    joined = (f"; numbers missing {join['phone_missing']:,}, not parseable {join['phone_unparseable']:,}, table "
              f"keys matching no voter {join['table_ids_matching_no_voter'] + join['table_phones_matching_no_voter']:,}"
              if join else "")
    return (f"{consent.get('table')} (fingerprint {str(consent.get('fingerprint'))[:16]}…), as of "
            f"{consent.get('as_of')}, landline prerecorded cap {consent.get('landline_prerecorded_cap')} per "
            f"{consent.get('window_days')} days{joined}")


def _without_consent(model: ScoringModel, made: str, command: str, used: Mapping[str, int] | None = None) -> str:
    """The call-out of a list made without eligibility (``made``: "This list was scored", ...).

    ``used`` (arm -> contacts) names how many contacts a plan makes with arms that need consent.
    """
    needing = [a.label for a in model.arms if needs_consent(a.delivery)]
    if needing:
        arms = ", ".join(f"{a} ({used.get(a, 0):,} contacts planned)" if used is not None else a for a in needing)
        return h.paragraph(f"{made} without eligibility (no --consent): nobody was suppressed, and {arms} must not "
                           f"be used from it (they need consent).", "bad")
    return h.paragraph(f"Every arm is delivered by {', '.join(sorted({a.delivery for a in model.arms}))}, which "
                       f"needs no consent; no do-not-contact list was applied ({command} with --consent to apply "
                       f"one).", "note")


def _per_incremental(cost: float, gain: float) -> float:
    return cost / gain if gain > 0 else float("nan")


def _bar_chart(labels: Iterable[str], values: Iterable[float], xlabel: str, title: str, color: str = "#1d4fa3",
               size: tuple[float, float] = (6.4, 3.6)) -> bytes:
    """A horizontal bar chart (first label on top) as PNG bytes."""
    fig, ax = plt.subplots(figsize=size)
    ax.barh(list(labels)[::-1], list(values)[::-1], color=color)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return h.png_bytes(fig)


def _priority_steps(table: pd.DataFrame, budget: float,
                    shares: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1.0)) -> pd.DataFrame:
    """Contacts, cost and expected gain of the plan's priority order cut at shares of the budget."""
    cost = table.cost.to_numpy(dtype=float).cumsum()
    gain = table.expected_gain.to_numpy(dtype=float).cumsum()
    rows = []
    for share in shares:
        k = int(np.searchsorted(cost, share * budget * (1 + 1e-12), side="right"))
        spend, expected = (float(cost[k - 1]), float(gain[k - 1])) if k else (0.0, 0.0)
        rows.append({"share_of_budget": share, "contacts": k, "cost": spend, "expected_incremental": expected,
                     "cost_per_incremental": _per_incremental(spend, expected)})
    return pd.DataFrame(rows)


def _priority_chart(table: pd.DataFrame, plan: Mapping[str, Any], units: str) -> bytes:
    """Cumulative expected gain against cumulative cost along the plan's priority order."""
    x = np.r_[0.0, table.cost.to_numpy(dtype=float).cumsum()]
    y = np.r_[0.0, table.expected_gain.to_numpy(dtype=float).cumsum()]
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    ax.plot(x, y, color="#1d4fa3", lw=2, label="plan, highest gain per cost first")
    ax.axvline(plan["budget"], color="#777", ls="--", lw=1, label=f"budget {plan['budget']:,.0f}")
    bound = plan["solver"].get("lp_bound")
    if bound is not None:
        ax.axhline(bound, color="#2e7d32", ls=":", lw=1.2, label="LP bound: no plan gains more")
    interval = plan.get("interval")
    if interval:
        ax.errorbar([x[-1]], [y[-1]], yerr=[[max(y[-1] - interval["low"], 0)], [max(interval["high"] - y[-1], 0)]],
                    fmt="o", color="#c62828", capsize=4, label="total, 95% interval")
    ax.set_xlabel("cumulative cost (budget units)")
    ax.set_ylabel(f"cumulative expected incremental {units}")
    ax.set_title("Expected gain along the priority order")
    ax.legend(fontsize=8, loc="upper left")  # the curve is concave: nothing above it on the left
    return h.png_bytes(fig)


class ListReport:
    """The explanation report of one scored list or contact plan.

    Parameters
    ----------
    explain_rows : int
        Targeted voters per arm sampled to tally the top reasons behind targeting.
    seed : int
        Seed of that sample.

    Attributes
    ----------
    summary_ : DataFrame
        Per arm (after :meth:`build`): voters eligible, suppressed and targeted, expected
        incremental outcomes and cost for scores; contacts, cost, expected incremental
        outcomes and expected reached for a plan.
    """

    def __init__(self, explain_rows: int = 2000, seed: int = 0):
        self.explain_rows = explain_rows
        self.seed = seed

    def build(self, scores_path: str | Path, model_uri: str | None = None,
              input_path: str | Path | None = None) -> str:
        """The report's HTML for the scores or the plan at ``scores_path``.

        Parameters
        ----------
        scores_path : str or Path
            Scores (``persuade score``) or a contact plan (``persuade plan``).
        model_uri : str, optional
            The model that produced the list (default: from its provenance).
        input_path : str or Path, optional
            The voter file it was made from, to explain the targeting (default: from its
            provenance).

        Returns
        -------
        str
            A self-contained HTML document (aggregates only).
        """
        listed = ListFile.read(scores_path)
        if listed.plan is not None:
            return self._build_plan(listed, model_uri, input_path)
        return self._build_scores(listed, model_uri, input_path)

    def write(self, scores_path: str | Path, output: str | Path | None = None, model_uri: str | None = None,
              input_path: str | Path | None = None) -> Path:
        """Build the report and write it (default: ``<list stem>_report.html`` beside the list)."""
        text = self.build(scores_path, model_uri, input_path)
        scores_path = Path(scores_path)
        output = Path(output) if output else scores_path.with_name(f"{scores_path.stem}_report.html")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        return output

    @staticmethod
    def _page(title: str, subtitle: str, ref: ModelRef, sections: list[h.Section]) -> str:
        return h.page(title, f"{subtitle} by {ref.name or ref.uri} version {ref.version or '-'} · generated {_now()}",
                      sections, footer=PRIVACY_FOOTER)

    @staticmethod
    def _provenance(title: str, head: Mapping[str, str], model: ScoringModel, ref: ModelRef,
                    recorded: Mapping[str, Any] | None, tail: Mapping[str, str], notes: list[str]) -> h.Section:
        facts = {**head, **_model_facts(model, ref), **tail}
        return h.Section("provenance", title, h.key_values(facts) + "".join([*_model_mismatch(ref, recorded), *notes]))

    # -- a scored list ------------------------------------------------------------------
    def _build_scores(self, listed: ListFile, model_uri: str | None, input_path: str | Path | None) -> str:
        scores, path = listed.table, listed.path
        provenance = ScoreProvenance.read(path)
        recorded = provenance.model if provenance else None
        missing = (f"{path.name}: no provenance file ({ScoreProvenance.path_for(path).name})" if provenance is None
                   else f"{path.name}: its provenance names no model")
        model, ref = _load_model(_model_uri(model_uri, recorded, missing))
        tail: dict[str, str] = {}
        notes = []
        if provenance is not None:
            tail = {"input file": Path(provenance.input).name, "scored at": provenance.scored_at,
                    "consent table": _consent_text(provenance.consent)}
        else:
            notes.append(h.paragraph("No provenance file was found beside the scores: the model was given on the "
                                     "command line.", "warn"))
        source = input_path or (provenance.input if provenance else None)
        self.summary_ = self._summary(scores, model)
        sections = [
            self._provenance("Which data and model produced this list",
                             {"scores file": path.name, "voters scored": f"{len(scores):,}"},
                             model, ref, recorded, tail, notes),
            self._targeting(scores, model),
            self._suppression(scores, model),
            self._reasons(scores.voter_id, scores.best_arm, model, source, "targeted"),
        ]
        return self._page(f"List report: {path.name}", f"{len(scores):,} voters scored", ref, sections)

    def _summary(self, scores: pd.DataFrame, model: ScoringModel) -> pd.DataFrame:
        rows = []
        n = len(scores)
        for arm in model.arms:
            elig_col = f"eligible_{arm.slug}"
            eligible = int(scores[elig_col].sum()) if elig_col in scores.columns else n
            target = scores.best_arm == arm.label
            expected = float(scores.loc[target, "best_uplift"].sum())
            cost = arm.cost * int(target.sum())
            rows.append({"arm": arm.label, "delivery": arm.delivery, "eligible": eligible,
                         "suppressed": n - eligible, "targeted": int(target.sum()),
                         "share_targeted": target.mean() if n else 0.0,
                         "mean_uplift_targeted": float(scores.loc[target, "best_uplift"].mean()) if target.any()
                         else float("nan"),
                         "expected_incremental": expected, "cost": cost,
                         "cost_per_incremental": _per_incremental(cost, expected)})
        control = scores.best_arm == CONTROL_ARM
        rows.append({"arm": "control (contact nobody)", "delivery": "-", "eligible": n, "suppressed": 0,
                     "targeted": int(control.sum()), "share_targeted": control.mean() if n else 0.0,
                     "mean_uplift_targeted": 0.0, "expected_incremental": 0.0, "cost": 0.0,
                     "cost_per_incremental": float("nan")})
        return pd.DataFrame(rows)

    @staticmethod
    def _budgets(scores: pd.DataFrame, model: ScoringModel,
                 shares: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)) -> pd.DataFrame:
        """Expected incremental outcomes and cost when contacting the top share of the list by best uplift."""
        costs = {a.label: a.cost for a in model.arms}
        ranked = scores[scores.best_arm != CONTROL_ARM].sort_values("best_uplift", ascending=False, kind="stable")
        uplift = ranked.best_uplift.to_numpy()
        cost = ranked.best_arm.map(costs).fillna(0.0).to_numpy(dtype=float)
        rows = []
        for share in shares:
            k = min(round(share * len(scores)), len(ranked))
            gain, spend = float(uplift[:k].sum()), float(cost[:k].sum())
            rows.append({"share_of_list": share, "voters_contacted": k, "expected_incremental": gain, "cost": spend,
                         "cost_per_incremental": _per_incremental(spend, gain)})
        return pd.DataFrame(rows)

    def _targeting(self, scores: pd.DataFrame, model: ScoringModel) -> h.Section:
        fmt, units = _units(model)
        s = self.summary_
        total = float(s.expected_incremental.sum())
        body = [
            h.paragraph(f"Each voter is targeted with the arm of the highest positive predicted uplift among the arms "
                        f"they may get; 'control' means no eligible arm is expected to help. Expected incremental "
                        f"outcomes: the sum of the targeted voters' predicted uplift, in {units}."),
            h.table(s, {"share_targeted": h.pct(1), "mean_uplift_targeted": fmt,
                        "expected_incremental": h.number(1), "cost": h.number(2),
                        "cost_per_incremental": h.number(2)}),
            h.paragraph(f"Expected incremental {units} if every targeted voter is contacted: {total:,.1f}.", "note"),
            h.heading("At a contact budget: the most persuadable voters first"),
            h.table(self._budgets(scores, model), {"share_of_list": h.pct(0), "voters_contacted": h.number(0),
                                                   "expected_incremental": h.number(1), "cost": h.number(2),
                                                   "cost_per_incremental": h.number(2)}),
            h.figures([h.image(_bar_chart(s.arm, s.targeted, "voters targeted", "Targeted voters per arm"),
                               "Targeted voters per arm")]),
        ]
        return h.Section("targeting", "Scored, targeted and expected outcomes", "".join(body))

    def _suppression(self, scores: pd.DataFrame, model: ScoringModel) -> h.Section:
        if not all(f"eligible_{a.slug}" in scores.columns for a in model.arms):
            return h.Section("suppression", "Consent suppression",
                             _without_consent(model, "This list was scored", "score"))
        counts = suppression_counts(scores, model.arms)
        return h.Section("suppression", "Consent suppression", h.table(_suppression_pivot(counts))
                         + _reason_legend(counts.reason))

    # -- a contact plan -----------------------------------------------------------------
    def _build_plan(self, listed: ListFile, model_uri: str | None, input_path: str | Path | None) -> str:
        table, plan, path = listed.table, listed.plan, listed.path
        provenance = plan.get("provenance") or {}
        recorded = provenance.get("model")
        model, ref = _load_model(_model_uri(model_uri, recorded, f"{path.name}: the plan's provenance names no "
                                                                 f"model (no uri, nor name and version)"))
        costs, consent, applied = (provenance.get(k) for k in ("costs", "consent", "consent_applied"))
        tail = {"input file": Path(provenance["input"]).name if provenance.get("input") else "-",
                "costs file": Path(costs).name if costs else "the model's costs per arm, no channel capacities",
                "consent table": _consent_text(applied) if applied or not consent else Path(consent).name,
                "planned at": provenance.get("planned_at", "-")}
        notes = [] if provenance else [h.paragraph("The plan records no provenance: the model was given on the "
                                                   "command line.", "warn")]
        self.summary_ = self._plan_arms(table, model)
        sections = [
            self._provenance("Which data and model produced this plan",
                             {"plan file": path.name, "voters considered": f"{plan['voters']:,}"},
                             model, ref, recorded, tail, notes),
            self._plan_outcomes(table, plan, model),
            self._plan_suppression(plan, model, bool(consent or applied)),
            self._reasons(table.voter_id, table.arm, model, input_path or provenance.get("input"), "contacted"),
        ]
        return self._page(f"Plan report: {path.name}",
                          f"{plan['voters']:,} voters considered, {len(table):,} contacts planned", ref, sections)

    @staticmethod
    def _plan_arms(table: pd.DataFrame, model: ScoringModel) -> pd.DataFrame:
        """Contacts, cost and expected outcomes per arm of the plan, and their total."""
        def row(label: str, channel: str, delivery: str, part: pd.DataFrame) -> dict[str, Any]:
            gain, cost = float(part.expected_gain.sum()), float(part.cost.sum())
            return {"arm": label, "channel": channel, "delivery": delivery, "contacts": len(part),
                    "share_of_contacts": len(part) / len(table) if len(table) else 0.0, "cost": cost,
                    "expected_incremental": gain,
                    "mean_gain_per_contact": gain / len(part) if len(part) else float("nan"),
                    "expected_reached": float(part.p_reached.sum()),
                    "cost_per_incremental": _per_incremental(cost, gain)}

        rows = [row(a.label, a.channel, a.delivery, table[table.arm == a.label]) for a in model.arms]
        return pd.DataFrame([*rows, row("total", "-", "-", table)])

    @staticmethod
    def _plan_checks(table: pd.DataFrame, plan: Mapping[str, Any], model: ScoringModel) -> str:
        """Whether the plan's rows add up to its stored summary (a file edited afterwards does not)."""
        problems = []
        contacted = plan["suppression"].get("contacted")
        if contacted is None or len(table) != int(contacted):
            problems.append(f"{len(table):,} rows but {contacted} contacts recorded")
        for name, value in (("spent", table.cost.sum()), ("total_expected_gain", table.expected_gain.sum())):
            if not np.isclose(float(value), float(plan[name]), rtol=1e-9, atol=1e-6):
                problems.append(f"rows add up to {name} {float(value):,.4f}, recorded {float(plan[name]):,.4f}")
        unknown = sorted(set(table.arm.astype(str)) - {a.label for a in model.arms})
        if unknown:
            problems.append(f"arms {unknown} are not arms of this model")
        if problems:
            return h.paragraph("The plan's rows do not match its stored summary: " + "; ".join(problems) + ".", "bad")
        return h.paragraph("The plan's rows add up to its stored summary (contacts, spend, expected gain).", "note")

    def _plan_outcomes(self, table: pd.DataFrame, plan: Mapping[str, Any], model: ScoringModel) -> h.Section:
        fmt, units = _units(model)
        solver = plan["solver"]
        interval = plan.get("interval")
        spent, budget = float(plan["spent"]), float(plan["budget"])
        totals = {
            "voters considered": f"{plan['voters']:,}",
            "voters contacted": f"{plan['suppression'].get('contacted', len(table)):,}",
            "budget": f"{budget:,.2f}",
            "spent": f"{spent:,.2f} ({spent / budget:.1%} of the budget)" if budget > 0 else f"{spent:,.2f}",
            f"expected incremental {units}": f"{plan['total_expected_gain']:,.2f}",
            "95% interval": f"{interval['low']:,.2f} to {interval['high']:,.2f}" if interval
            else "none (the model carries no hold-out deciles)",
            "LP bound (no plan gains more)": f"{solver.get('lp_bound', float('nan')):,.2f}",
            "gap to the bound": f"{solver.get('gap', float('nan')):,.4f} ({solver.get('rel_gap', float('nan')):.2e} "
                                f"relative)",
            "solver": f"{solver.get('method', '-')}; {solver.get('lp_solves', '-')} LP solves, "
                      f"{solver.get('fractional_voters', '-')} fractional voters",
        }
        channels = pd.DataFrame.from_dict(plan.get("channels") or {}, orient="index")
        channels = channels.rename_axis("channel").reset_index().rename(
            columns={"expected_gain": "expected_incremental"})
        money = {"cost": h.number(2), "expected_incremental": h.number(2), "expected_reached": h.number(1),
                 "cost_per_incremental": h.number(2)}
        body = [
            h.paragraph(f"The plan contacts each chosen voter once, with one arm, so that the expected incremental "
                        f"{units} are as large as possible within the budget and channel capacities; contacts are "
                        f"listed by expected gain per unit cost. Expected gain of a contact: its predicted uplift, "
                        f"scaled by the program's chance of reaching the voter where the channel has a contact-rate "
                        f"model. The LP bound certifies the plan: no plan within these limits is expected to gain "
                        f"more."),
            h.columns(h.key_values(totals), self._plan_checks(table, plan, model)),
            h.heading("Contacts per arm"),
            h.table(self.summary_, {"share_of_contacts": h.pct(1), "mean_gain_per_contact": fmt, **money},
                    row_class=lambda r: "ref" if r["arm"] == "total" else ""),
            h.heading("Contacts per channel"),
            h.table(channels, money) if len(channels) else h.paragraph("Nobody is contacted."),
            *self._plan_sensitivity(plan, units),
            h.heading("If the budget were cut: the plan's priority order"),
            h.paragraph("Contacts in priority order until the share of the budget is spent (the plan itself, cut "
                        "short; a plan re-solved for a smaller budget may do slightly better)."),
            h.table(_priority_steps(table, budget), {"share_of_budget": h.pct(0), "contacts": h.number(0), **money}),
        ]
        arms = self.summary_.iloc[:-1]
        images = [h.image(_bar_chart(arms.arm, arms.contacts, "contacts planned", "Contacts per arm"),
                          "Contacts per arm")]
        if len(table):
            images.insert(0, h.image(_priority_chart(table, plan, units), "Expected gain along the priority order",
                                     "Each step is one contact; the curve flattens as less efficient contacts "
                                     "are added."))
        body.append(h.figures(images))
        return h.Section("plan", "Budget, contacts and expected outcomes", "".join(body))

    @staticmethod
    def _plan_sensitivity(plan: Mapping[str, Any], units: str) -> list[str]:
        """The plan's dependence on each arm's average effect (``persuade plan --sensitivity``)."""
        head = h.heading("If an arm's average effect were at an end of its 95% interval")
        rows = plan.get("sensitivity")
        if not rows:
            return [head, h.paragraph("Not computed for this plan: `persuade plan --sensitivity` re-plans with each "
                                      "arm's average effect at either end of its interval and records what the plan "
                                      "would lose.", "note")]
        frame = pd.DataFrame(rows)
        frame["replan_contacts_per_arm"] = [", ".join(f"{a} {n:,}" for a, n in mix.items()) or "nobody"
                                            for mix in frame.replan_contacts_per_arm]
        frame = frame.rename(columns={"scale": "gains_x", "replan_contacts_per_arm": "replan_contacts",
                                      "regret": f"plan_loses_{units}", "regret_share": "plan_loses_share"})
        return [head, h.paragraph(
            "Each arm's average effect was measured on the randomized training voters, with sampling error (its 95% "
            "interval). Each row re-plans with one arm's expected gains scaled to an end of that interval and "
            f"reports what keeping this plan would cost if that were the truth. {sensitivity_verdict(rows)}"),
            h.table(frame[["arm", "side", "gains_x", "voters_moved", "replan_contacts", f"plan_loses_{units}",
                           "plan_loses_share"]],
                    {"gains_x": h.number(2), "voters_moved": h.number(0), f"plan_loses_{units}": h.number(2),
                     "plan_loses_share": h.pct(1)})]

    @staticmethod
    def _plan_suppression(plan: Mapping[str, Any], model: ScoringModel, consent_applied: bool) -> h.Section:
        counts = plan["suppression"]
        voters = max(int(plan["voters"]), 1)
        outcomes = pd.DataFrame([{"outcome": k, "voters": int(counts.get(k, 0)),
                                  "share_of_considered": int(counts.get(k, 0)) / voters, "meaning": PLAN_OUTCOMES[k]}
                                 for k in SUPPRESSION_KEYS])
        body = [h.heading("Every voter considered, once"), h.table(outcomes, {"share_of_considered": h.pct(1)})]
        not_allowed = pd.DataFrame(sorted((plan.get("not_allowed") or {}).items(), key=lambda kv: -kv[1]),
                                   columns=["reason", "voter_arm_pairs"])
        if not consent_applied:
            body.append(_without_consent(model, "This plan was made", "plan", plan.get("contacts_per_arm") or {}))
        body.append(h.heading("(voter, arm) pairs not allowed, by reason"))
        if len(not_allowed):
            body += [h.paragraph("A voter counts once per arm they may not get; such an arm is never planned for "
                                 "them."), h.table(not_allowed), _reason_legend(not_allowed.reason)]
        else:
            body.append(h.paragraph("None: every arm was allowed for every voter."))
        return h.Section("suppression", "Voters considered, suppressed and contacted", "".join(body))

    # -- shared -------------------------------------------------------------------------
    def _reasons(self, voter_ids: pd.Series, arms: pd.Series, model: ScoringModel,
                 source: str | Path | None, who: str) -> h.Section:
        """The top SHAP reason of sampled voters per arm (``arms``: each voter's arm), tallied."""
        title = "Top reasons behind targeting"
        if source is None or not Path(source).exists():
            named = f" ({Path(source).name})" if source is not None else ""
            return h.Section("reasons", title, h.paragraph(
                f"The input voter file{named} is not available: pass --input to explain the targeting.", "warn"))
        fmt, _ = _units(model)
        dataset = open_dataset(Path(source))
        features = dataset.to_table(columns=input_columns(model, dataset)).to_pandas()
        features[model.id_column] = features[model.id_column].astype(str)
        features = features.drop_duplicates(model.id_column).set_index(model.id_column)
        voter_ids = voter_ids.astype(str).to_numpy()
        arms = arms.astype(str).to_numpy()
        rng = np.random.default_rng(self.seed)
        body = [h.paragraph(
            f"For up to {self.explain_rows:,} sampled voters {who} with each arm, the feature with the largest "
            f"positive SHAP contribution to that arm's uplift (the top reason), tallied.")]
        images = []
        for arm in model.arms:
            ids = voter_ids[arms == arm.label]
            ids = ids[pd.Index(ids).isin(features.index)]
            if len(ids) == 0:
                body += [h.heading(arm.label), h.paragraph(f"Nobody is {who} with this arm.")]
                continue
            ids = rng.choice(ids, min(self.explain_rows, len(ids)), replace=False)
            X = model.transform(features.loc[ids].reset_index())
            contrib = model.explain(X, arm.label)[:, :-1]
            names = np.asarray(model.feature_names)
            top = names[contrib.argmax(axis=1)]
            tally = (pd.DataFrame({"reason": top, "contribution": contrib.max(axis=1)})
                     .groupby("reason").agg(voters=("contribution", "size"), mean_contribution=("contribution", "mean"))
                     .sort_values("voters", ascending=False).reset_index())
            tally.insert(2, "share", tally.voters / len(ids))
            body += [h.heading(f"{arm.label}: {len(ids):,} {who} voters explained"),
                     h.table(tally, {"share": h.pct(1), "mean_contribution": fmt})]
            shown = tally.head(8)
            images.append(h.image(_bar_chart(shown.reason, shown.share * 100, f"% of {who} voters",
                                             f"Top reason: {arm.label}", "#2e7d32", (5.6, 3.2)),
                                  f"Top reasons: {arm.label}"))
        body.append(h.figures(images))
        return h.Section("reasons", title, "".join(body))
