"""The pre-fit data checks of a run, where people read them: attrition per arm and the
balance and leakage table (``features/attrition.py``, ``features/balance.py``).

- :func:`log_data_checks`: MLflow artifacts ``data/attrition.csv``, ``data/balance.csv``
  and ``data/data_checks.json`` (the summaries);
- :func:`data_checks_metadata`: the summaries kept in the scoring model's metadata;
- :func:`data_checks_tables`: the ``persuade train`` output;
- :func:`data_checks_section`: the model report's section, read from the logged artifacts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from rich.table import Table

from features.schema import ValidationReport
from training import report_html as h

ATTRITION_CSV, BALANCE_CSV, SUMMARY_JSON = "attrition.csv", "balance.csv", "data_checks.json"
SHOWN_ROWS = 15  # rows of the balance table in the report and the CLI, largest |SMD| first


def data_checks_metadata(validation: ValidationReport) -> dict[str, Any]:
    """Attrition per arm (with its test) and the balance summary, JSON-ready."""
    out: dict[str, Any] = {}
    if validation.attrition is not None:
        out["attrition"] = {"per_arm": validation.attrition.to_records(), "p_value": validation.attrition.p_value}
    if validation.balance is not None:
        out["balance"] = validation.balance.summary()
    return out


def log_data_checks(validation: ValidationReport, folder: Path) -> None:
    """Write the two tables and the summaries into ``folder`` and log them under ``data/``."""
    folder.mkdir(parents=True, exist_ok=True)
    if validation.attrition is not None:
        validation.attrition.table.to_csv(folder / ATTRITION_CSV, index=False)
    if validation.balance is not None:
        validation.balance.table.to_csv(folder / BALANCE_CSV, index=False)
    (folder / SUMMARY_JSON).write_text(json.dumps(data_checks_metadata(validation), indent=2))
    mlflow.log_artifacts(str(folder), "data")


def _largest(balance: pd.DataFrame) -> pd.DataFrame:
    return balance.reindex(balance["smd"].abs().sort_values(ascending=False).index).head(SHOWN_ROWS)


def _balance_sentence(summary: dict[str, Any]) -> str:
    auc, p = summary.get("classifier_auc"), summary.get("classifier_p_value")
    classifier = (f"a grouped-CV classifier of assigned vs control on the features reaches AUC {auc:.3f} "
                  f"(one-sided p={p:.2g}; 0.5 is chance)" if auc is not None else "no classifier (fewer than 2 groups)")
    smd = summary["max_abs_smd"]
    largest = f"{smd:.3f} ({summary['max_abs_smd_at']})" if smd is not None else "none measured"
    return (f"{summary['features']} features checked in {summary['seconds']:.1f} s: largest |standardized mean "
            f"difference| {largest}; {classifier}. "
            f"No feature predicts the assigned arm beyond chance.")


def data_checks_tables(validation: ValidationReport) -> list[Table | str]:
    """What ``persuade train`` prints: a line and a table of attrition per arm, then one line on balance."""
    out: list[Table | str] = []
    attrition = validation.attrition
    if attrition is not None and attrition.missing:
        p = f"chi-square p={attrition.p_value:.3g}" if attrition.p_value is not None else "no test"
        # a line, not the table's title: a title longer than the table wraps inside its width
        out.append(f"Outcome attrition per arm ({attrition.missing:,} rows dropped; {p}):")
        table = Table()
        for col in ("arm", "assigned", "observed", "missing", "rate"):
            table.add_column(col, justify="left" if col == "arm" else "right")
        for r in attrition.table.itertuples():
            table.add_row(str(r.arm), f"{r.assigned:,}", f"{r.observed:,}", f"{r.missing:,}", f"{r.missing_rate:.1%}")
        out.append(table)
    if validation.balance is not None:
        out.append("balance: " + _balance_sentence(validation.balance.summary()))
    return out


def data_checks_section(folder: Path) -> h.Section:
    """The model report's section, from a run's downloaded ``data/`` artifacts (``folder``)."""
    title = "Data checks: attrition and balance"
    summary_path = folder / SUMMARY_JSON
    if not summary_path.exists():
        return h.Section("data-checks", title, h.paragraph(
            "This run logged no attrition or balance table (it predates these checks).", "warn"))
    summary = json.loads(summary_path.read_text())
    body = [h.heading("Outcome attrition per arm")]
    if (folder / ATTRITION_CSV).exists():
        attrition = pd.read_csv(folder / ATTRITION_CSV)
        p = summary.get("attrition", {}).get("p_value")
        body += [h.paragraph(
            "Rows assigned to each arm and those with an observed outcome; rows without one were dropped before "
            "fitting (outcome.missing: drop) after a chi-square test that missingness does not depend on the arm"
            + (f" (p={p:.3g})." if p is not None else ": no outcome was missing.")),
            h.table(attrition, {"missing_rate": h.pct(1)})]
    body.append(h.heading("Balance and leakage of the features"))
    balance = summary.get("balance")
    if balance is None or not (folder / BALANCE_CSV).exists():
        body.append(h.paragraph("The balance check was turned off for this run (balance.enabled: false).", "warn"))
    else:
        body += [h.paragraph(
            _balance_sentence(balance) + " Standardized mean difference (SMD): arm mean minus control mean over "
            "their pooled standard deviation (categoricals one-hot; '(missing)' is the share of missing values); "
            "p: the difference's test with clusters of the group column, adjusted (Bonferroni) over all rows. A "
            "feature is refused when an |SMD| exceeds balance.max_abs_smd beyond chance, or when the classifier "
            f"predicts assignment beyond chance through it. The {SHOWN_ROWS} largest differences:"),
            h.table(_largest(pd.read_csv(folder / BALANCE_CSV).fillna({"level": ""})),
                    {"mean_arm": h.number(3), "mean_control": h.number(3), "smd": h.number(3),
                     "p_value": h.number(4), "p_adjusted": h.number(4)})]
    return h.Section("data-checks", title, "".join(body))
