"""The model report (``persuade report --run RUN_ID``): what a training run produced and why it
targets whom.

The model card, global SHAP for turnout and each arm's uplift, each arm's CV choice against the
references, Qini curves and decile tables, turnout calibration, the fairness audit and the consent
suppression counts (a support model without a turnout model has no turnout SHAP and no calibration
section, and the report says why). It is logged to the run at :data:`MODEL_REPORT_ARTIFACT`
(``report/model_report.html``), where the service finds the champion's report. Aggregates only.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import matplotlib

matplotlib.use("Agg")
import mlflow
import numpy as np
import pandas as pd
import yaml
from mlflow.tracking import MlflowClient
from pydantic import ValidationError

from features.attrition import observed_rows
from features.config import RunConfig
from features.fingerprint import data_fingerprint
from features.tables import load_experiment
from serving.bundle import ScoringModel
from serving.model_report import MODEL_REPORT_ARTIFACT, REPORT_DIR
from serving.registry import load_scoring_model
from training import report_html as h
from training.data_checks import data_checks_section
from training.fairness import FairnessAudit
from training.report_blocks import (
    NO_TURNOUT_NOTE,
    PRIVACY_FOOTER,
    REPORT_TAG,
    consent_summary,
    outcome_units,
    parameter_tables,
    reports_dir,
    shap_figures,
)
from training.splits import prepare
from training.tracking import PROJECT_ROOT, configure


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
        right = [h.heading("Learner and parameters"), *parameter_tables(run.params)]
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
        fmt, _ = outcome_units(model)
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
        fmt, _ = outcome_units(model)
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


# what each uplift.selection_metric scores on a held-out fold, in the report's words
METRIC_MEANING = {
    "dr_qini": "the doubly-robust Qini coefficient of each held-out fold (the area between its Qini curve "
               "from AIPW scores and random targeting, per voter)",
    "qini": "the Qini coefficient of each held-out fold's outcomes (per voter)",
    "policy_value": "the doubly-robust incremental outcomes per voter captured above random by contacting "
                    "the top of each held-out fold, averaged over the budgets",
}


def _reference_tables(run: RunArtifacts) -> list[str]:
    """The per-arm grouped-CV choice against the references, and the hold-out policy value at each budget."""
    body = []
    cv = run.csv("selection_cv_arms.csv")
    if cv is not None:
        shown = cv.assign(value=cv.value * 1000, se=cv.se * 1000, gap=cv.gap * 1000, gap_se=cv.gap_se * 1000)
        shown = shown[["arm", "candidate", "value", "se", "gap", "gap_se", "chosen", "stability"]]
        body += [h.heading("Each arm against the references (grouped CV ×1000)"), h.paragraph(
            "Candidates, simplest first: constant (each arm's average effect for everyone, which ranks as random "
            "targeting); with a turnout model, equally simple (nothing learned from the outcomes but each arm's "
            "level, or a shape of the turnout score alone): turnout_05 (the average effect times the fixed rule "
            "0.5 - |p - 0.5| of the turnout score p: voters near 50% turnout first), the turnout shape (the average "
            "effect times a shape of the turnout score learned from the outcomes) and, for arms whose contact log "
            "says who was reached, turnout_05_reach (the rule times each voter's chance of being reached); the "
            "first two continued on the features per arm (turnout_05_boosted, turnout_shape_boosted), equally "
            "simple; the model, and the model with arm-specific trees. Value: "
            + METRIC_MEANING.get(run.params.get("selection_metric", ""), "the run's selection metric")
            + "; gap: below the best candidate, paired by fold. Each arm "
            "serves the simplest candidate within one standard error of the best (of equally simple ones, the "
            "better); stability is the share of CV repeats that would have chosen the same."),
            h.table(shown, {c: h.number(3) for c in ("value", "se", "gap", "gap_se")} | {"stability": h.number(2)},
                    row_class=lambda r: "ref" if r["chosen"] else "")]
    policy = run.csv("holdout_policy_value.csv")
    if policy is not None:
        shown = policy.assign(**{c: policy[c] * 1000 for c in ("gain", "low", "high", "se")})
        body += [h.heading("Hold-out: incremental outcomes ×1000 per voter above random, by budget"),
                 h.table(shown, {c: h.number(3) for c in ("gain", "low", "high", "se")} | {"budget": h.number(2)})]
    return body

