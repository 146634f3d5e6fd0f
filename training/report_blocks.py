"""Pieces the model report and the list report share: units, SHAP figures, parameter tables, consent tables.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from features.config import GBMParams, RunConfig
from features.consent import (
    REASON_TEXT,
    Arms,
    ConsentTable,
    EligibilityRules,
    Reason,
    arm_deliveries,
    eligibility_for,
    keeps_calling_hours,
    needs_consent,
    rules_table,
    suppression_counts,
)
from features.settings import Settings
from serving.bundle import ScoringModel
from training import report_html as h

REPORT_TAG = "persuade.report"
MAX_DISPLAY = 12
PRIVACY_FOOTER = "Aggregates only: this report contains no voter's row, name, phone number, e-mail or address."


def reports_dir() -> Path:
    """Default folder of written reports: ``$PERSUADE_HOME/reports`` or the project's ``reports/``."""
    return Settings.from_env().home / "reports"


NO_TURNOUT_NOTE = ("This model has no turnout model: its outcome is a support score and it was trained without a "
                   "turnout column (turnout.column), so its scores have no turnout, and this report has no turnout "
                   "SHAP and no turnout calibration section.")


def outcome_units(model: ScoringModel) -> tuple[h.Formatter, str]:
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


def parameter_tables(params: dict[str, str]) -> list[str]:
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


def suppression_pivot(counts: pd.DataFrame) -> pd.DataFrame:
    table = counts.pivot_table(index=["arm", "delivery"], columns="reason", values="voters", aggfunc="sum",
                               fill_value=0, sort=False)
    cols = ["eligible", *[r.value for r in Reason if r.value in table.columns]]
    table = table.reindex(columns=cols).fillna(0).astype(int)
    table.insert(1, "suppressed", table.drop(columns="eligible").sum(axis=1))
    table.columns.name = None
    return table.reset_index()


def reason_legend(codes: Iterable[str]) -> str:
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
    "(unverifiable_phone), and so does a stale table (consent_stale) when dialing lists are made. Then quiet hours: "
    "a phone or text arm the table allows is allowed only inside the calling window in the voter's local time at the "
    "decision time, in every time zone the voter may be in (from the number and the address state); outside it in "
    "some zone it is suppressed (outside_calling_hours), and so it is when neither gives a zone "
    "(unknown_timezone). Scores and plans carry each voter's time_zone so a dialer keeps the window at send time.")


def consent_summary(config: RunConfig, arms: Arms, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """ConsentRules of every voter of ``frame`` under the run's consent settings.

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
    rules = EligibilityRules(spec.landline_prerecorded_cap, spec.cap_window_days, spec.calling_hours)
    eligibility = eligibility_for(frame, arms, table, rules, spec.as_of, config.id_column, spec.phone_column,
                                  state_column=spec.state_column)
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
            f"{spec.landline_prerecorded_cap} per {spec.cap_window_days} days"
            + (f"; phone and text arms only within {spec.calling_hours} in each voter's local time (consent."
               f"calling_hours; the zone from the number and the {spec.state_column!r} column)."
               if any(keeps_calling_hours(d) for d in deliveries) else "."), "note"))
    rules_shown = rules_table()
    body += [h.heading("Voters per arm: eligible and suppressed by reason"), h.table(suppression_pivot(counts)),
             reason_legend(counts.reason), h.heading("The rules (first matching row wins)"),
             h.table(rules_shown[rules_shown.delivery.isin({d.value for d in deliveries})]),
             h.paragraph(CONSENT_READING, "note")]
    return eligibility, counts, "".join(body)

