"""What the list report reads: the list file (scores or a plan), the model that made it, and the
facts and charts about both.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.consent import (
    needs_consent,
)
from serving.bundle import ScoringModel
from serving.plan_file import PLAN_METADATA_KEY, read_contacts, read_plan_summary
from serving.registry import ModelRef, load_scoring_model
from training import report_html as h
from training.tracking import configure

SCORES_COLUMNS = ("voter_id", "best_arm", "best_uplift")
PLAN_COLUMNS = ("voter_id", "arm", "channel", "expected_gain", "p_reached", "cost")
PLAN_SUMMARY_KEYS = ("voters", "budget", "spent", "total_expected_gain", "suppression", "solver")
PLAN_OUTCOMES = {
    "contacted": "planned to be contacted",
    "randomized_out": "targeted, but held out at random (the program's control group) or drawn to control by the "
                      "exploration",
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
        A plan's stored summary and provenance (:func:`serving.plan_file.read_plan_summary`);
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
        table = pd.read_parquet(path) if plan is None else read_contacts(path)  # a plan's file has every voter
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


def model_uri_for(given: str | None, recorded: Mapping[str, Any] | None, missing: str) -> str:
    """The model to report with: ``given``, else the recorded URI, else ``models:/name/version``."""
    if given:
        return given
    recorded = recorded or {}
    if recorded.get("uri"):
        return str(recorded["uri"])
    if recorded.get("name") and recorded.get("version"):
        return f"models:/{recorded['name']}/{recorded['version']}"
    raise ValueError(f"{missing}; pass --model to say which model produced it")


def load_list_model(uri: str) -> tuple[ScoringModel, ModelRef]:
    configure()
    with tempfile.TemporaryDirectory(prefix="persuade-report-") as tmp:
        return load_scoring_model(uri, Path(tmp) / "model")


def model_facts(model: ScoringModel, ref: ModelRef) -> dict[str, str]:
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


def model_mismatch(ref: ModelRef, recorded: Mapping[str, Any] | None) -> list[str]:
    """A warning when the model given is not the version the provenance records."""
    if not recorded or not recorded.get("version") or ref.version is None:
        return []
    if (recorded.get("name"), str(recorded["version"])) == (ref.name, str(ref.version)):
        return []
    return [h.paragraph(
        f"The provenance records {recorded.get('name') or '-'} version {recorded['version']}, but this report was "
        f"built with {ref.name or ref.uri} version {ref.version} (--model): the reasons below are that model's.",
        "warn")]


def consent_text(consent: Mapping[str, Any] | None) -> str:
    """One line on the consent table applied (``ConsentRules.describe``), or ``none applied``."""
    if not consent:
        return "none applied"
    if consent.get("no_consent"):
        return f"none (--no-consent): arms that need consent dropped ({', '.join(consent.get('dropped_arms', []))})"
    join = consent.get("join") or {}
    joined = (f"; numbers missing {join['phone_missing']:,}, not parseable {join['phone_unparseable']:,}, table "
              f"keys matching no voter {join['table_ids_matching_no_voter'] + join['table_phones_matching_no_voter']:,}"
              if join else "")
    window = (f", phone and text only within {consent['calling_hours']} in each voter's local time (time_zone)"
              if consent.get("calling_hours") else "")
    return (f"{consent.get('table')} (fingerprint {str(consent.get('fingerprint'))[:16]}…), as of "
            f"{consent.get('as_of')}, landline prerecorded cap {consent.get('landline_prerecorded_cap')} per "
            f"{consent.get('window_days')} days{window}{joined}")


def without_consent(model: ScoringModel, made: str, command: str, used: Mapping[str, int] | None = None) -> str:
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


def per_incremental(cost: float, gain: float) -> float:
    return cost / gain if gain > 0 else float("nan")


def bar_chart(labels: Iterable[str], values: Iterable[float], xlabel: str, title: str, color: str = "#1d4fa3",
               size: tuple[float, float] = (6.4, 3.6)) -> bytes:
    """A horizontal bar chart (first label on top) as PNG bytes."""
    fig, ax = plt.subplots(figsize=size)
    ax.barh(list(labels)[::-1], list(values)[::-1], color=color)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return h.png_bytes(fig)


def priority_steps(table: pd.DataFrame, budget: float,
                    shares: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1.0)) -> pd.DataFrame:
    """Contacts, cost and expected gain of the plan's priority order cut at shares of the budget."""
    cost = table.cost.to_numpy(dtype=float).cumsum()
    gain = table.expected_gain.to_numpy(dtype=float).cumsum()
    rows = []
    for share in shares:
        k = int(np.searchsorted(cost, share * budget * (1 + 1e-12), side="right"))
        spend, expected = (float(cost[k - 1]), float(gain[k - 1])) if k else (0.0, 0.0)
        rows.append({"share_of_budget": share, "contacts": k, "cost": spend, "expected_incremental": expected,
                     "cost_per_incremental": per_incremental(spend, expected)})
    return pd.DataFrame(rows)


def priority_chart(table: pd.DataFrame, plan: Mapping[str, Any], units: str) -> bytes:
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

